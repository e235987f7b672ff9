import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { ENTGATE_BIN, REPO_ROOT } from '../helpers/process.ts';

/**
 * Logging never holds the service (issue 13). `entgate serve` runs with its stdout on a pipe
 * whose only reader is another process: one that goes away, one that stops reading. A
 * server whose log reader stopped reading used to hang for ever at exit (pino's exit flush
 * retried `write(1)` every 100 ms, on EAGAIN, then on EPIPE once the reader was gone) and
 * no longer answered SIGTERM.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const READY_MS = 120_000;
/** The server's own bound is ENTGATE_SHUTDOWN_TIMEOUT_MS (8 s) + 2 s; room for a loaded machine. */
const STOP_MS = 30_000;

/**
 * Reads the server's stdout (its stdin) up to the "listening" line, passes that line on (to
 * the test, on its stdout), then exits or stops reading. It ends when the test does.
 */
const READER = `
const mode = process.argv[1];
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500);
let buf = '';
const onData = (d) => {
  buf += d;
  const i = buf.indexOf('"msg":"entgate listening"');
  const end = buf.indexOf('\\n', i);
  if (i < 0 || end < 0) return;
  process.stdin.off('data', onData);
  process.stdin.pause();
  process.stdout.write(buf.slice(buf.lastIndexOf('\\n', i) + 1, end + 1), () => { if (mode === 'exits') process.exit(0); });
};
process.stdin.on('data', onData);
`;

interface LoggedServer {
  server: ChildProcess;
  reader: ChildProcess;
  url: string;
  stderr(): string;
  exited: Promise<void>;
  readerExited: Promise<void>;
}

/** `entgate serve` whose stdout is a pipe read only by a reader process that `exits` or `stalls` once the server listens. */
async function startWithLogReader(env: Record<string, string>, mode: 'exits' | 'stalls'): Promise<LoggedServer> {
  const reader = spawn(process.execPath, ['-e', READER, mode], { stdio: ['pipe', 'pipe', 'ignore'] });
  const readerExited = new Promise<void>((r) => reader.once('exit', () => r()));
  // The server gets the pipe's other end; the test keeps none of it: the reader is the only one.
  const server = spawn(process.execPath, [ENTGATE_BIN, 'serve'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', reader.stdin!, 'pipe'],
  });
  reader.stdin!.destroy();
  let stderr = '';
  server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => server.once('exit', () => r()));
  let line = '';
  reader.stdout!.on('data', (d: Buffer) => (line += d.toString()));
  for (const deadline = Date.now() + READY_MS; !line.endsWith('\n'); ) {
    if (server.exitCode !== null || Date.now() > deadline) {
      server.kill('SIGKILL');
      reader.kill('SIGKILL');
      throw new Error(`server did not start (exit ${server.exitCode}):\n${stderr}`);
    }
    await sleep(50);
  }
  const { url } = JSON.parse(line) as { url: string };
  return { server, reader, url, stderr: () => stderr, exited, readerExited };
}

/** SIGTERM, then how long the process took to go (null: still there after STOP_MS). */
async function terminate(s: LoggedServer, meanwhile?: () => Promise<void>): Promise<number | null> {
  const started = Date.now();
  s.server.kill('SIGTERM');
  await meanwhile?.();
  const gone = await Promise.race([s.exited.then(() => true), sleep(STOP_MS).then(() => false)]);
  return gone ? Date.now() - started : null;
}

const admin = async (url: string, path: string, body: unknown) => {
  const res = await fetch(`${url}/admin/v1${path}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201);
  return (await res.json()) as { id: number };
};

/** Log lines of about 8 KiB each (a request line logs its path) until `bytes` were logged. */
async function logLines(url: string, bytes: number): Promise<void> {
  const path = `/not-here/${'x'.repeat(8000)}`;
  for (let sent = 0; sent < bytes; sent += 8 * 8100) {
    await Promise.all(Array.from({ length: 8 }, () => fetch(`${url}${path}`).then((r) => r.arrayBuffer())));
  }
}

/** The server answers: /healthz, and an rUS check granted. Returns /healthz's body. */
async function answers(url: string): Promise<{ logging?: { output: string; dropped: number; buffered: number; failures?: string[] } }> {
  const check = await fetch(`${url}/?server=rm.example.com;key=log-test-key`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(check.status, 200);
  assert.match(await check.text(), /<key>log-real-key<\/key>/);
  const health = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(health.status, 200);
  return (await health.json()) as Awaited<ReturnType<typeof answers>>;
}

async function grantable(url: string) {
  const ent = await admin(url, '/entitlements', { server: 'rm.example.com', key: 'log-real-key' });
  await admin(url, '/virtual-keys', { entitlementId: ent.id, key: 'log-test-key' });
}

describe('logging never holds the server', () => {
  let dir: string;
  const started: LoggedServer[] = [];
  // A data folder each: a server that does not stop holds its own.
  const env = () => ({ DATA_DIR: join(dir, `data-${started.length}`), ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN });
  before(() => {
    dir = tempDir();
  });
  after(() => {
    // A server the fix did not free is killed here, so that the suite ends.
    for (const s of started) {
      s.server.kill('SIGKILL');
      s.reader.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers with its log reader gone (logging on stderr, lost lines counted) and stops on SIGTERM', async (t) => {
    const s = await startWithLogReader(env(), 'exits');
    started.push(s);
    await s.readerExited;
    await grantable(s.url);
    await logLines(s.url, 100_000);
    const health = await answers(s.url);
    const ms = await terminate(s);
    assert.notEqual(ms, null, `still running ${STOP_MS} ms after SIGTERM`);
    assert.equal(s.server.exitCode, 0, s.stderr());
    t.diagnostic(`stopped ${ms} ms after SIGTERM`);
    t.diagnostic(`/healthz logging: ${JSON.stringify(health.logging)}`);
    assert.equal(health.logging?.output, 'stderr');
    assert.deepEqual(health.logging?.failures, ['stdout: EPIPE']);
    assert.ok(health.logging!.dropped >= 1, JSON.stringify(health.logging));
    assert.match(s.stderr(), /"msg":"log output stdout failed: logging to stderr"/);
    assert.match(s.stderr(), /"msg":"request"/);
    assert.match(s.stderr(), /"msg":"entgate stopped"/);
  });

  it('answers while its log reader does not read, drops past 1 MiB waiting, and stops on SIGTERM', async (t) => {
    const s = await startWithLogReader(env(), 'stalls');
    started.push(s);
    await grantable(s.url);
    // More than the pipe (64 KiB, a socket pair's few hundred) and the 1 MiB kept for it.
    await logLines(s.url, 3 * 1024 * 1024);
    const health = await answers(s.url);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    const ms = await terminate(s);
    if (ms === null) {
      // What was reported: the reader then goes away, and the process still does not stop.
      s.reader.kill('SIGKILL');
      const gone = await Promise.race([s.exited.then(() => true), sleep(5000).then(() => false)]);
      assert.fail(`still running ${STOP_MS} ms after SIGTERM, its log reader alive but not reading; ${gone ? 'gone' : 'still running 5 s'} after the reader went away`);
    }
    assert.equal(s.server.exitCode, 0, s.stderr());
    t.diagnostic(`stopped ${ms} ms after SIGTERM`);
    t.diagnostic(`/healthz logging: ${JSON.stringify(health.logging)}`);
    assert.equal(health.logging?.output, 'stdout');
    assert.ok(health.logging!.dropped > 0, JSON.stringify(health.logging));
    assert.ok(health.logging!.buffered <= 1024 * 1024 + 16 * 1024, JSON.stringify(health.logging));
    assert.equal(Number(/^entgate_log_lines_dropped_total (\d+)$/m.exec(metrics)?.[1]), health.logging!.dropped);
    assert.equal(s.reader.exitCode, null, 'the reader was alive throughout');
  });

  it('stops on SIGTERM when its log reader stalls, then goes away during the stop (logging the rest on stderr)', async (t) => {
    const s = await startWithLogReader(env(), 'stalls');
    started.push(s);
    await grantable(s.url);
    await logLines(s.url, 3 * 1024 * 1024);
    await answers(s.url);
    const ms = await terminate(s, async () => {
      await sleep(200);
      s.reader.kill('SIGKILL');
    });
    assert.notEqual(ms, null, `still running ${STOP_MS} ms after SIGTERM, its log reader gone`);
    assert.equal(s.server.exitCode, 0, s.stderr());
    t.diagnostic(`stopped ${ms} ms after SIGTERM`);
    assert.match(s.stderr(), /"msg":"log output stdout failed: logging to stderr"/);
    assert.match(s.stderr(), /"msg":"entgate stopped"/);
  });
});
