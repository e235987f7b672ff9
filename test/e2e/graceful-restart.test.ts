import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { startServerProcess } from '../helpers/process.ts';

/**
 * A rolling restart denies nobody: an `entgate serve` process under steady keep-alive load
 * gets SIGTERM. Every request sent on a connection the server had accepted gets a complete
 * answer (no reset, no "socket hang up"); only new connections after the listener closed are
 * refused, which a load balancer retries elsewhere. Answers after the signal carry
 * `Connection: close`, and the process exits 0.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw connection and everything it received. */
async function rawConnection(port: number): Promise<{ socket: Socket; data: () => string; clear: () => void; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1');
  let data = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (data += d));
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, data: () => data, clear: () => (data = ''), closed };
}

/** Waits (bounded) for a complete answer with a Content-Length, or the end of the connection. */
async function answerOn(c: { data: () => string; closed: Promise<void> }, boundMs = 20_000): Promise<string> {
  let closed = false;
  void c.closed.then(() => (closed = true));
  const complete = () => {
    const d = c.data();
    const end = d.indexOf('\r\n\r\n');
    const length = end < 0 ? null : /\r\ncontent-length: *(\d+)/i.exec(d.slice(0, end));
    return length !== null && d.length - end - 4 >= Number(length[1]);
  };
  for (const deadline = Date.now() + boundMs; !closed && !complete() && Date.now() < deadline; ) await sleep(10);
  return c.data();
}

/** Whether a new connection is refused: the listener is closed. */
const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });

describe('SIGTERM under keep-alive load', () => {
  const dir = tempDir();
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('answers every request on accepted connections, with Connection: close, and exits 0', async () => {
    const server = await startServerProcess({
      DATA_DIR: join(dir, 'data'),
      ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
      // Long enough that the idle connection below is still open when it is used after the
      // signal, on however slow a machine; the drain is bounded by the shutdown timeout.
      ENTGATE_KEEP_ALIVE_TIMEOUT_MS: '20000',
      ENTGATE_SHUTDOWN_TIMEOUT_MS: '15000',
      ENTGATE_BODY_TIMEOUT_MS: '60000',
    });
    const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
    const port = Number(new URL(server.url).port);

    // An idle keep-alive connection, answered once before the signal.
    const idle = await rawConnection(port);
    idle.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await answerOn(idle), /^HTTP\/1\.1 200 [^]*\r\nConnection: keep-alive\r\n/i);
    // A request in flight at the signal: half its body sent.
    const inFlight = await rawConnection(port);
    const body = JSON.stringify({ pool: 'nope', clientId: 'c1' });
    inFlight.socket.write(`POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);

    // Steady load: 8 clients, each on keep-alive connections, one request after another.
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const outcomes: string[] = [];
    let closeHeaders = 0;
    const get = (path: string) =>
      new Promise<string>((resolve) => {
        const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
          if (res.headers.connection === 'close') closeHeaders++;
          res.resume();
          res.on('end', () => resolve(String(res.statusCode)));
          res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        });
        // A reset on a fresh connection was never accepted (in the kernel's backlog as the
        // listener closed): for the client, a refused connection.
        req.on('error', (err: NodeJS.ErrnoException) => resolve(`${req.reusedSocket ? '' : 'fresh '}${err.code ?? err.message}`));
        req.end();
      });
    const client = async (c: number) => {
      for (let i = 0; ; i++) {
        const r = await get(`/?server=rm.example.com;class=c;key=k-${c}-${i % 10};remote_ip=10.7.${c}.${i % 200}`);
        outcomes.push(r);
        if (r === 'ECONNREFUSED' || r.startsWith('fresh ')) return; // a new connection after the listener closed
        if (outcomes.length > 100_000) return;
      }
    };
    const clients = Array.from({ length: 8 }, (_, c) => client(c));
    for (let i = 0; i < 3000 && outcomes.length < 200; i++) await sleep(10);
    assert.ok(outcomes.length >= 200, 'the load is running');

    server.child.kill('SIGTERM');
    let closedListener = false;
    for (let i = 0; i < 2000 && !closedListener; i++) {
      closedListener = await refused(port);
      if (!closedListener) await sleep(10);
    }
    assert.ok(closedListener, 'the listener closes: new connections are refused');

    // After the listener closed: a request on the idle keep-alive connection is answered.
    idle.clear();
    idle.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const late = await answerOn(idle);
    assert.match(late, /^HTTP\/1\.1 200 [^]*\r\nConnection: close\r\n/i, `a request on an idle keep-alive connection after the signal: ${JSON.stringify(late.slice(0, 120))}`);
    await idle.closed;
    // The request in flight at the signal is answered when its body completes, and told to close.
    inFlight.socket.write(body.slice(5));
    const answered = await answerOn(inFlight);
    assert.match(answered, /^HTTP\/1\.1 404 [^]*\r\nConnection: close\r\n/i, `the request in flight: ${JSON.stringify(answered.slice(0, 120))}`);

    await Promise.all(clients);
    agent.destroy();
    const count = (what: string) => outcomes.filter((o) => o === what).length;
    const resets = outcomes.filter((o) => o !== '404' && o !== '200' && o !== 'ECONNREFUSED' && !o.startsWith('fresh '));
    assert.deepEqual(resets, [], `resets: ${resets.length} of ${outcomes.length} requests`);
    assert.ok(count('404') >= 200, 'the checks were answered');
    assert.ok(closeHeaders >= 1, 'answers after the signal carry Connection: close');
    assert.equal(await exited, 0, server.output());
    assert.match(server.output(), /"msg":"entgate stopped"/);
  });
});
