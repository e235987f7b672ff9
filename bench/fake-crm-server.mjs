// The benchmark's CRM: GET /customers/:id answers an active customer holding product GOLD.
// A real HTTP server in its own process, on 127.0.0.1:$PORT.
import { createServer } from 'node:http';

const server = createServer((req, res) => {
  const id = req.url.split('/')[2]?.split('?')[0] ?? '';
  const body = JSON.stringify({ customer: { id, status: 'active', products: ['GOLD'] } });
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 5000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
