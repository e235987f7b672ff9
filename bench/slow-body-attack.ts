/**
 * Issue 12, point 2, scaled to loopback: slow-body POSTs to /v1/leases and
 * /softwareEntitlements (each declares 60 KB and sends a byte a second) against one entgate
 * process whose concurrency cap is lowered, while rUS checks arrive on fresh connections as
 * Conary sends them. Prints how many checks were answered (200/404) and how many got 503,
 * and what became of the slow bodies.
 *
 *   node --import tsx bench/slow-body-attack.ts
 *
 * BENCH_SLOW (300) slow bodies, BENCH_CHECKS (78) checks, BENCH_CAP (200) for
 * ENTGATE_MAX_CONCURRENT_REQUESTS; PGlite in a temporary directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, stopAll } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';

const SLOW = Number(process.env.BENCH_SLOW ?? 300);
const CHECKS = Number(process.env.BENCH_CHECKS ?? 78);
const CAP = Number(process.env.BENCH_CAP ?? 200);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One raw request; resolves with the status line's code, or the error's code. */
function rawRequest(port: number, head: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    const done = (what: string) => {
      clearTimeout(timer);
      s.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    s.setEncoding('latin1');
    s.on('connect', () => s.write(head));
    s.on('data', (d: string) => {
      data += d;
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(data);
      if (m) done(m[1]!);
    });
    s.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? 'error'));
    s.on('close', () => done(data === '' ? 'closed' : 'garbled'));
  });
}

/** A slow body: the head, then a byte a second; resolves with the answer's status (or how it ended). */
function slowBody(port: number, i: number, stop: Promise<void>): Promise<string> {
  const path = i % 2 === 0 ? '/v1/leases' : '/softwareEntitlements?api-version=2018-08-01.7.0';
  return new Promise((resolve) => {
    const s: Socket = connect(port, '127.0.0.1');
    let data = '';
    let ended = false;
    const end = (what: string) => {
      if (ended) return;
      ended = true;
      clearInterval(drip);
      s.destroy();
      resolve(what);
    };
    s.setEncoding('latin1');
    s.on('connect', () => s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{`));
    const drip = setInterval(() => s.writable && s.write('a'), 1000);
    s.on('data', (d: string) => {
      data += d;
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(data);
      if (m) end(m[1]!);
    });
    s.on('error', (err: NodeJS.ErrnoException) => end(err.code ?? 'error'));
    s.on('close', () => end(data === '' ? 'closed without answer' : 'garbled'));
    void stop.then(() => end('still open'));
  });
}

const tally = (xs: string[]) => Object.entries(xs.reduce<Record<string, number>>((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {})).map(([k, n]) => `${k}: ${n}`).join(', ');

async function main(): Promise<{ markdown: string; valid: boolean }> {
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-slow-'));
  try {
    const server = await startServer(
      'entgate',
      ['src/cli/entgate-dev.js', 'serve'],
      { HOST: '127.0.0.1', DATA_DIR: dir, LOG_LEVEL: 'error', ENTGATE_MAX_CONCURRENT_REQUESTS: String(CAP) },
      '/healthz',
    );
    const port = Number(new URL(server.url).port);
    let release!: () => void;
    const stop = new Promise<void>((r) => (release = r));
    const slow: Promise<string>[] = [];
    for (let i = 0; i < SLOW; i++) {
      slow.push(slowBody(port, i, stop));
      if (i % 50 === 49) await sleep(50);
    }
    await sleep(1500);
    // Conary: a fresh connection per check, no timeout of its own (5 s here).
    const checks: Promise<string>[] = [];
    for (let i = 0; i < CHECKS; i++) {
      checks.push(rawRequest(port, `GET /?server=rm.example.com;class=c;key=unknown-${i};remote_ip=10.9.${i >> 8}.${i & 255} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 5000));
      await sleep(25);
    }
    const answers = await Promise.all(checks);
    const answered = answers.filter((a) => a === '200' || a === '404').length;
    // Leave the slow bodies up to 40 s (the default request timeout is 30 s) to see how they end.
    await Promise.race([Promise.all(slow), sleep(40_000)]);
    release();
    const ends = await Promise.all(slow);
    return {
      markdown:
        `slow bodies: ${SLOW} (cap ${CAP}); rUS checks: ${CHECKS}, answered 200/404: ${answered}, 503: ${answers.filter((a) => a === '503').length}` +
        ` (all: ${tally(answers)}); slow bodies ended: ${tally(ends)}`,
      valid: true,
    };
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runStandalone(import.meta.url, main);
