// The benchmark's baseline: a bare node:http server answering every request with a constant
// entitlement document of the same shape and size as entgate's. Prints its URL when ready.
import { createServer } from 'node:http';

const body = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n<!DOCTYPE entitlement [\n' +
    '    <!ELEMENT entitlement (server, class, key)>\n    <!ELEMENT server (#PCDATA)>\n' +
    '    <!ELEMENT class (#PCDATA)>\n    <!ELEMENT key (#PCDATA)>\n]>\n' +
    '<entitlement><server>rm.example.com</server><class>myProduct</class>' +
    '<key>03d59e663c1af9ac33a9949d1193505a8460731e</key></entitlement>\n',
);
const server = createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/xml; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'baseline listening', url: `http://127.0.0.1:${server.address().port}` }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
