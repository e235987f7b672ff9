/**
 * Issue 12, point 5: an entgate process under steady keep-alive load receives SIGTERM. Counts,
 * per restart, the requests sent on accepted connections that were reset (ECONNRESET, socket
 * hang up) rather than answered; new connections refused after the listener closed (or reset
 * in the kernel's backlog as it closed, never accepted) are counted apart: a balancer retries
 * those elsewhere.
 *
 *   node --import tsx bench/restart-resets.ts
 *
 * BENCH_CONNECTIONS (50) keep-alive clients, BENCH_RESTARTS (3); PGlite in a temporary directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, stopAll } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const RESTARTS = Number(process.env.BENCH_RESTARTS ?? 3);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function get(agent: Agent, port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.statusCode)));
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    // A reset on a fresh connection is one the listener never accepted (still in the kernel's
    // backlog when it closed): to the client, a refused connection.
    req.on('error', (err: NodeJS.ErrnoException) => resolve(req.reusedSocket ? (err.code ?? err.message) : `fresh ${err.code ?? err.message}`));
    req.end();
  });
}

async function restartOnce(dir: string): Promise<{ answered: number; resets: number; refused: number; other: string[]; exit: number | null }> {
  const server = await startServer('entgate', ['src/cli/entgate-dev.js', 'serve'], { HOST: '127.0.0.1', DATA_DIR: dir, LOG_LEVEL: 'error' }, '/healthz');
  const port = Number(new URL(server.url).port);
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  let answered = 0;
  let resets = 0;
  let refused = 0;
  const other: string[] = [];
  let stopped = false;
  const client = async (c: number) => {
    for (let i = 0; !stopped; i++) {
      const r = await get(agent, port, `/?server=rm.example.com;class=c;key=k-${c}-${i % 20};remote_ip=10.8.${c}.1`);
      if (r === '200' || r === '404') answered++;
      else if (r === 'ECONNREFUSED' || r.startsWith('fresh ')) {
        refused++;
        return; // the listener is closed: a balancer sends this one elsewhere
      } else if (r === 'ECONNRESET' || r === 'socket hang up' || r === 'EPIPE') resets++;
      else other.push(r);
    }
  };
  const clients = Array.from({ length: CONNECTIONS }, (_, c) => client(c));
  await sleep(2000);
  const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
  server.child.kill('SIGTERM');
  const exit = await exited;
  await Promise.race([Promise.all(clients), sleep(5000)]);
  stopped = true;
  agent.destroy();
  await stopAll();
  return { answered, resets, refused, other, exit };
}

async function main(): Promise<{ markdown: string; valid: boolean }> {
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-restart-'));
  try {
    const rows: string[] = [];
    let total = 0;
    for (let r = 1; r <= RESTARTS; r++) {
      const o = await restartOnce(dir);
      total += o.resets;
      rows.push(`restart ${r}: answered ${o.answered}, reset ${o.resets}, refused or reset before accepted (new connections) ${o.refused}, other ${o.other.length} ${o.other.slice(0, 3).join(' ')}, exit ${o.exit}`);
    }
    return { markdown: `${rows.join('\n')}\nresets per restart at ${CONNECTIONS} keep-alive connections: ${(total / RESTARTS).toFixed(1)}`, valid: true };
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runStandalone(import.meta.url, main);
