// The benchmark's baseline: a bare node:http server answering every request with one constant
// entitlement document and 200. The document is rendered by the benchmark with entgate's own
// renderer and handed over base64-encoded in BENCH_BODY, so it has exactly the size of
// entgate's answers. Listens on 127.0.0.1:$PORT.
import { createServer } from 'node:http';

const body = Buffer.from(process.env.BENCH_BODY ?? '', 'base64');
if (body.length === 0) throw new Error('BENCH_BODY (the document, base64) is required');
const server = createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/xml; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 5000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
