/**
 * What a large CSV import costs everyone else (`node --import tsx bench/import.ts`): an
 * entgate process on PGlite and one on PostgreSQL each import 200,000 and then 600,000 rows
 * through `POST /admin/v1/virtual-keys/import` while two clients keep asking the rUS check,
 * one a cached key (answered from memory) and one unknown keys (a database lookup each).
 * Printed: the import's time and status, the worst and 99th-percentile latency of each kind
 * of check during it, and the server's peak RSS (sampled every 50 ms). Figures, not a verdict.
 * The cached key's cache entry outlives the run (ENTGATE_CACHE_TTL_SECONDS=3600).
 *
 * Environment: BENCH_DATABASE_URL (PostgreSQL admin URL), BENCH_IMPORT_ROWS (comma-separated
 * sizes, default 200000,600000), BENCH_IMPORT_ENGINES (pglite,postgres).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Databases } from './lib/database.ts';
import { rssMiB, startServer, stopAll, type ServerProcess } from './lib/processes.ts';
import { httpText } from './lib/http.ts';

const TOKEN = randomBytes(16).toString('hex');
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const SIZES = (process.env.BENCH_IMPORT_ROWS ?? '200000,600000').split(',').map(Number);
const ENGINES = (process.env.BENCH_IMPORT_ENGINES ?? 'pglite,postgres').split(',');

interface Checker {
  stop(): Promise<{ count: number; worstMs: number; p99Ms: number; statuses: Record<number, number> }>;
}

/** One client asking the check back to back on a keep-alive connection. */
function checker(base: string, query: () => string): Checker {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const url = new URL(base);
  const times: number[] = [];
  const statuses: Record<number, number> = {};
  let running = true;
  const one = () =>
    new Promise<void>((resolve) => {
      const started = performance.now();
      const req = request({ agent, host: url.hostname, port: url.port, path: `/?${query()}` }, (res) => {
        res.resume();
        res.on('end', () => {
          times.push(performance.now() - started);
          statuses[res.statusCode ?? 0] = (statuses[res.statusCode ?? 0] ?? 0) + 1;
          resolve();
        });
      });
      // A check held past the server's request timeout is dropped: it counts, with its wait.
      req.on('error', () => {
        times.push(performance.now() - started);
        statuses[0] = (statuses[0] ?? 0) + 1;
        resolve();
      });
      req.end();
    });
  const loop = (async () => {
    while (running) {
      await one();
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      agent.destroy();
      const sorted = [...times].sort((a, b) => a - b);
      return {
        count: sorted.length,
        worstMs: sorted.at(-1) ?? 0,
        p99Ms: sorted[Math.floor(sorted.length * 0.99)] ?? 0,
        statuses,
      };
    },
  };
}

function csvOf(rows: number, entitlementId: number, tag: string): string {
  const lines = ['key,entitlement_id,customer_ref'];
  for (let i = 0; i < rows; i++) lines.push(`imp-${tag}-${i.toString(36).padStart(6, '0')}-${randomBytes(4).toString('hex')},${entitlementId},customer ${i}`);
  return `${lines.join('\n')}\n`;
}

async function admin(server: ServerProcess, method: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.url}/admin/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** The import as a plain request, with no client-side timeout (fetch gives up after 300 s without headers). */
function post(url: string, body: string): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  const headers = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/csv', 'Content-Length': Buffer.byteLength(body) };
  return httpText({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers }, body);
}

async function scenario(engine: string, rows: number, dbs: Databases): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'entgate-bench-import-'));
  const env: Record<string, string> = {
    HOST: '127.0.0.1',
    ENTGATE_ADMIN_TOKEN: TOKEN,
    ENTGATE_KEY_SECRET: randomBytes(32).toString('hex'),
    ENTGATE_GUESS_BUDGET: '0',
    // The cached key stays cached for the whole run (the default 30 s would send it to the
    // database mid-import, where it measures what the uncached client measures).
    ENTGATE_CACHE_TTL_SECONDS: '3600',
    LOG_LEVEL: 'warn',
    // The import of the code before streaming took longer than the default 30 s to answer.
    ENTGATE_REQUEST_TIMEOUT_MS: '600000',
  };
  if (engine === 'postgres') env.DATABASE_URL = await dbs.create();
  else env.DATA_DIR = dataDir;
  const server = await startServer(`entgate (${engine})`, ['src/cli/entgate-dev.js', 'serve'], env, '/readyz');
  try {
    const ent = await admin(server, 'POST', '/entitlements', { server: 'rm.example.com', key: 'real-key' });
    if (ent.status !== 201) throw new Error(`entitlement: ${ent.status} ${JSON.stringify(ent.body)}`);
    await admin(server, 'POST', '/virtual-keys', { entitlementId: ent.body.id, key: 'cached-key' });
    const warm = await fetch(`${server.url}/?server=rm.example.com;key=cached-key`);
    if (warm.status !== 200) throw new Error(`cached key answered ${warm.status}`);
    const csv = csvOf(rows, ent.body.id, randomBytes(2).toString('hex'));

    let peak = rssMiB(server.pid);
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, rssMiB(server.pid));
      } catch {
        // exited
      }
    }, 50);
    const cached = checker(server.url, () => 'server=rm.example.com;key=cached-key');
    let n = 0;
    const uncached = checker(server.url, () => `server=rm.example.com;key=unknown-${n++}-${randomBytes(4).toString('hex')}`);
    await new Promise((r) => setTimeout(r, 500));
    const started = performance.now();
    const res = await post(`${server.url}/admin/v1/virtual-keys/import`, csv).catch(async (err: Error) => {
      // The clients stop with the import, whatever happened to it (or the run never ends).
      clearInterval(sampler);
      await Promise.all([cached.stop(), uncached.stop()]);
      throw err;
    });
    const answer = JSON.parse(res.text) as { imported?: number; code?: string };
    const seconds = (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 500));
    const [c, u] = [await cached.stop(), await uncached.stop()];
    clearInterval(sampler);
    const fmt = (x: Awaited<ReturnType<Checker['stop']>>) =>
      `${x.count} checks, worst ${x.worstMs.toFixed(0)} ms, p99 ${x.p99Ms.toFixed(1)} ms, statuses ${JSON.stringify(x.statuses)} (0: connection dropped)`;
    return [
      `| ${engine} | ${rows.toLocaleString('en')} | ${res.status} ${answer.imported ?? answer.code} in ${seconds.toFixed(1)} s | ${peak.toFixed(0)} MiB |`,
      `|   | cached | ${fmt(c)} | |`,
      `|   | uncached | ${fmt(u)} | |`,
    ].join('\n');
  } catch (err) {
    throw new Error(`${(err as Error).message}; the server's last words: ${server.output().slice(-3000)}`);
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dbs = new Databases(ADMIN_URL);
  const out = ['| engine | rows | import | peak RSS |', '|---|---|---|---|'];
  try {
    for (const engine of ENGINES) {
      for (const rows of SIZES) {
        const line = await scenario(engine, rows, dbs);
        process.stderr.write(`${line}\n`);
        out.push(line);
      }
    }
  } finally {
    await stopAll();
    await dbs.dropAll();
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch(async (err: Error) => {
  await stopAll();
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
