/**
 * `npm run bench`: the rUS check under load, against a bare node:http baseline measured in
 * the same run (the machines are shared and noisy: only ratios within one run mean much).
 * Every server runs as its own process; autocannon drives it from this one. Everything is on
 * 127.0.0.1, bounded in time and count. Writes its results into docs/benchmarks.md.
 *
 * Knobs: BENCH_DATABASE_URL (an admin URL; a database is created and dropped),
 * BENCH_DURATION (seconds per scenario, default 10), BENCH_SCALE=0 (skip 10k vs 1M keys),
 * BENCH_RSS_KEYS (distinct keys for the memory run, default 1000000; 0 skips it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { createKeyHasher, keyHint } from '../src/domain/virtual-key.ts';
import { openDatabase, migrate } from '../src/store/db.ts';
import { VirtualKeysRepo } from '../src/store/virtual-keys-repo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const SCALE = process.env.BENCH_SCALE !== '0';
const RSS_KEYS = Number(process.env.BENCH_RSS_KEYS ?? 1_000_000);
const CONNECTIONS = 50;
const SECRET = randomBytes(32).toString('hex');
const SERVER = 'rm.example.com';
const hashKey = createKeyHasher(SECRET);

const children = new Set<ChildProcess>();
const databases = new Set<string>();

// ---------------------------------------------------------------- databases and seeding

function dbUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function serverVersion(): Promise<string> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return String((await c.query('show server_version')).rows[0].server_version).split(' ')[0]!;
  } finally {
    await c.end();
  }
}

const vkey = (i: number) => `bench-key-${i.toString(36).padStart(6, '0')}`;

/** A fresh database with the schema and `count` virtual keys (vkey(0) .. vkey(count - 1)). */
async function seededDatabase(count: number): Promise<string> {
  const name = `entgate_bench_${randomBytes(5).toString('hex')}`;
  await adminQuery(`create database ${name}`);
  databases.add(name);
  const url = dbUrl(name);
  const db = await openDatabase({ databaseUrl: url, dataDir: '/nonexistent' });
  await migrate(db);
  await db.close();

  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const ent = await c.query(
      "insert into entitlements (server_pattern, class, real_key) values ($1, 'myProduct', '03d59e663c1af9ac33a9949d1193505a8460731e') returning id",
      [SERVER],
    );
    const entId = ent.rows[0].id as number;
    await c.query("insert into products (code, entitlement_id) values ('GOLD', $1)", [entId]);
    const BATCH = 10_000;
    for (let start = 0; start < count; start += BATCH) {
      const n = Math.min(BATCH, count - start);
      const hashes: string[] = [];
      const hints: string[] = [];
      for (let i = start; i < start + n; i++) {
        hashes.push(hashKey(vkey(i)));
        hints.push(keyHint(vkey(i)));
      }
      await c.query(
        'insert into virtual_keys (entitlement_id, key_hash, key_hint) select $1, h, k from unnest($2::text[], $3::text[]) as t(h, k)',
        [entId, hashes, hints],
      );
    }
    await c.query('analyze');
  } finally {
    await c.end();
  }
  return url;
}

// ---------------------------------------------------------------- processes

interface Proc {
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

function startProcess(args: string[], env: Record<string, string>, readyMsg: string): Promise<Proc> {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    children.delete(child);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start`)), 60_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const m = JSON.parse(line) as { msg?: string; url?: string };
        if (m.msg === readyMsg && m.url) {
          clearTimeout(timer);
          resolve({ child, url: m.url, stop });
        }
      } catch {
        // not JSON
      }
    });
    void exited.then(() => reject(new Error(`${args.join(' ')} exited before it was ready`)));
  });
}

const startBaseline = () => startProcess(['bench/baseline-server.mjs'], {}, 'baseline listening');
const startEntgate = (databaseUrl: string, env: Record<string, string> = {}) =>
  startProcess(
    ['src/cli/entgate.js', 'serve'],
    { PORT: '0', HOST: '127.0.0.1', DATABASE_URL: databaseUrl, ENTGATE_KEY_SECRET: SECRET, LOG_LEVEL: 'info', ...env },
    'entgate listening',
  );

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

// ---------------------------------------------------------------- load

interface Load {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  wrong: number;
  errors: number;
}

async function drive(
  name: string,
  url: string,
  nextPath: () => string,
  expect: number,
  opts: { duration?: number; amount?: number; connections?: number } = {},
): Promise<Load> {
  const result = await autocannon({
    url,
    connections: opts.connections ?? CONNECTIONS,
    ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.duration ?? DURATION }),
    requests: [{ method: 'GET', setupRequest: (req: autocannon.Request) => ({ ...req, path: nextPath() }) }],
  });
  const stats = (result as unknown as { statusCodeStats: Record<string, { count: number }> }).statusCodeStats;
  let ok = 0;
  let total = 0;
  for (const [code, { count }] of Object.entries(stats)) {
    total += count;
    if (Number(code) === expect) ok += count;
  }
  return {
    name,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: total,
    wrong: total - ok,
    errors: result.errors + result.timeouts,
  };
}

const cycle = (keys: string[]) => {
  let i = 0;
  return () => `/?server=${SERVER};class=myProduct;key=${keys[i++ % keys.length]};remote_ip=10.0.0.1`;
};
const randomOf = (count: number) => () => `/?server=${SERVER};key=${vkey(Math.floor(Math.random() * count))}`;

/**
 * The crm resolver against a CRM in its own process: warm hits through the CRM path (decision
 * cache warm) next to warm hits through the postgres path, and uncached CRM lookups at 10
 * connections next to the CRM alone at 10 connections (its own latency, to subtract).
 */
async function crmScenarios(databaseUrl: string, customers: string[], baselineRps: number, postgresWarmRps: number): Promise<Row[]> {
  const crm = await startProcess(['bench/fake-crm-server.mjs'], {}, 'crm listening');
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-'));
  const optionsFile = join(dir, 'resolvers.json');
  writeFileSync(
    optionsFile,
    JSON.stringify({ crm: { url: `${crm.url}/customers/{key}`, statusPath: 'customer.status', productsPath: 'customer.products', maxConcurrency: 64 } }),
  );
  const rows: Row[] = [];
  try {
    const warm = await startEntgate(databaseUrl, { ENTGATE_RESOLVERS: 'crm', ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile });
    await warmUp(warm.url, cycle(customers), 200);
    const crmWarm = await drive('warm hits, crm resolver', warm.url, cycle(customers), 200);
    await warm.stop();
    rows.push({ load: crmWarm, baseline: baselineRps, target: 0.6, vs: { name: 'warm hits (postgres)', rps: postgresWarmRps, target: 0.9 } });

    const crmAlone = await drive('the CRM alone (10 connections)', crm.url, () => `/customers/c${Math.floor(Math.random() * 1e9)}`, 200, { connections: 10 });
    const cold = await startEntgate(databaseUrl, { ENTGATE_RESOLVERS: 'crm', ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile, ENTGATE_CACHE_MAX_ENTRIES: '0' });
    await warmUp(cold.url, randomCustomers, 200);
    const crmCold = await drive('uncached crm lookups (10 connections)', cold.url, randomCustomers, 200, { connections: 10 });
    await cold.stop();
    rows.push({ load: crmAlone, baseline: baselineRps }, { load: crmCold, baseline: baselineRps, minus: crmAlone });
  } finally {
    await crm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

const randomCustomers = () => `/?server=${SERVER};key=c${Math.floor(Math.random() * 1e9)}`;

interface Scale {
  http: Load;
  lookupP50Us: number;
  lookupP99Us: number;
}

/**
 * The lookup itself, timed with a microsecond clock: the repository's query for random keys,
 * one at a time over a real connection, after a warm-up pass (autocannon's latencies are whole
 * milliseconds, too coarse to compare). Then the check over HTTP at 10 connections, for scale.
 */
async function measureScale(databaseUrl: string, count: number): Promise<Scale> {
  const db = await openDatabase({ databaseUrl, dataDir: '/nonexistent', poolMax: 1 });
  const repo = new VirtualKeysRepo(db);
  const times: number[] = [];
  try {
    for (let i = 0; i < 6000; i++) {
      const hash = hashKey(vkey(Math.floor(Math.random() * count)));
      const t = process.hrtime.bigint();
      const found = await repo.findMappingByHash(hash);
      if (i >= 1000) times.push(Number(process.hrtime.bigint() - t) / 1000);
      if (!found) throw new Error('a seeded key was not found');
    }
  } finally {
    await db.close();
  }
  times.sort((a, b) => a - b);
  const p = await startEntgate(databaseUrl, { ENTGATE_CACHE_MAX_ENTRIES: '0' });
  try {
    await warmUp(p.url, randomOf(count), 200);
    const http = await drive(`uncached, ${count.toLocaleString('en')} keys`, p.url, randomOf(count), 200, { connections: 10 });
    return { http, lookupP50Us: times[Math.floor(times.length * 0.5)]!, lookupP99Us: times[Math.floor(times.length * 0.99)]! };
  } finally {
    await p.stop();
  }
}

async function warmUp(url: string, nextPath: () => string, expect: number): Promise<void> {
  await drive('warm-up', url, nextPath, expect, { duration: 2 });
}

// ---------------------------------------------------------------- the run

interface Row {
  load: Load;
  baseline: number;
  target?: number;
  /** A second comparison, against another scenario of the same run. */
  vs?: { name: string; rps: number; target: number };
  /** A scenario whose latency is part of this one (the CRM's own), to subtract. */
  minus?: Load;
}

async function main(): Promise<void> {
  const started = Date.now();
  console.log(`seeding 100,000 virtual keys on ${new URL(ADMIN_URL).host}…`);
  const mainDb = await seededDatabase(100_000);
  const hot = Array.from({ length: 1000 }, (_, i) => vkey(i * 97));
  const unknown = Array.from({ length: 1000 }, (_, i) => `unknown-key-${i}`);
  const rows: Row[] = [];

  const baselineProc = await startBaseline();
  await warmUp(baselineProc.url, cycle(hot), 200);
  const baseline = await drive('bare node:http (baseline)', baselineProc.url, cycle(hot), 200);
  await baselineProc.stop();
  rows.push({ load: baseline, baseline: baseline.rps });
  console.log(`baseline: ${baseline.rps.toFixed(0)} req/s`);

  const cached = await startEntgate(mainDb);
  await warmUp(cached.url, cycle(hot), 200);
  rows.push({ load: await drive('warm hits', cached.url, cycle(hot), 200), baseline: baseline.rps, target: 0.6 });
  await warmUp(cached.url, cycle(unknown), 404);
  rows.push({ load: await drive('unknown keys (negative cache)', cached.url, cycle(unknown), 404), baseline: baseline.rps, target: 0.5 });
  await cached.stop();

  const uncached = await startEntgate(mainDb, { ENTGATE_CACHE_MAX_ENTRIES: '0' });
  await warmUp(uncached.url, randomOf(100_000), 200);
  rows.push({
    load: await drive('uncached lookups (PostgreSQL)', uncached.url, randomOf(100_000), 200),
    baseline: baseline.rps,
    target: 0.15,
  });
  await uncached.stop();
  rows.push(...(await crmScenarios(mainDb, hot, baseline.rps, rows[1]!.load.rps)));
  for (const r of rows) console.log(formatRow(r));

  let scale: { small: Scale; large: Scale } | undefined;
  if (SCALE) {
    console.log('scaling: seeding 10,000 and 1,000,000 keys…');
    const smallDb = await seededDatabase(10_000);
    const largeDb = await seededDatabase(1_000_000);
    scale = { small: await measureScale(smallDb, 10_000), large: await measureScale(largeDb, 1_000_000) };
    console.log(`scaling: lookup p50 ${scale.small.lookupP50Us.toFixed(0)} µs (10k) vs ${scale.large.lookupP50Us.toFixed(0)} µs (1M)`);
  }

  let rss: { samples: [number, number][]; requests: Load } | undefined;
  if (RSS_KEYS > 0) {
    console.log(`memory: ${RSS_KEYS.toLocaleString('en')} distinct unknown keys through the default cache…`);
    const p = await startEntgate(mainDb);
    const samples: [number, number][] = [[0, rssMiB(p.child.pid!)]];
    let sent = 0;
    const timer = setInterval(() => samples.push([sent, rssMiB(p.child.pid!)]), 1000);
    try {
      const load = await drive('distinct unknown keys', p.url, () => `/?server=${SERVER};key=distinct-${sent++}`, 404, {
        amount: RSS_KEYS,
      });
      samples.push([sent, rssMiB(p.child.pid!)]);
      rss = { samples, requests: load };
    } finally {
      clearInterval(timer);
      await p.stop();
    }
  }

  const report = render(await serverVersion(), rows, scale, rss, (Date.now() - started) / 1000);
  console.log(`\n${report}`);
  const docPath = new URL('../docs/benchmarks.md', import.meta.url);
  const doc = readFileSync(docPath, 'utf8');
  const marker = '<!-- results -->';
  writeFileSync(docPath, `${doc.slice(0, doc.indexOf(marker) + marker.length)}\n\n${report}\n`);
  console.log('results written to docs/benchmarks.md');
}

function formatRow(r: Row): string {
  const ratio = r.load.rps / r.baseline;
  return `${r.load.name}: ${r.load.rps.toFixed(0)} req/s, p50 ${r.load.p50} ms, p99 ${r.load.p99} ms, ratio ${ratio.toFixed(2)}`;
}

function render(
  pgVersion: string,
  rows: Row[],
  scale: { small: Scale; large: Scale } | undefined,
  rss: { samples: [number, number][]; requests: Load } | undefined,
  seconds: number,
): string {
  const lines: string[] = [];
  const cpu = cpus();
  lines.push(
    `Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${seconds.toFixed(0)} s: ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ` +
      `${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, PostgreSQL ${pgVersion}; ${CONNECTIONS} connections, ${DURATION} s per scenario.`,
    '',
    '| Scenario | req/s | p50 ms | p99 ms | ratio to baseline | target | result |',
    '|---|---:|---:|---:|---:|---|---|',
  );
  for (const r of rows) {
    const ratio = r.load.rps / r.baseline;
    const valid = r.load.wrong === 0 && r.load.errors === 0;
    let verdict = '';
    if (!valid) verdict = `INVALID: ${r.load.wrong} wrong statuses, ${r.load.errors} errors`;
    else if (r.target !== undefined) {
      const ratioOk = ratio >= r.target;
      const p99Ok = r.load.p99 <= 10;
      verdict = ratioOk && p99Ok ? 'PASS' : `FAIL (${[!ratioOk && 'ratio', !p99Ok && 'p99'].filter(Boolean).join(', ')})`;
    }
    lines.push(
      `| ${r.load.name} | ${r.load.rps.toFixed(0)} | ${r.load.p50} | ${r.load.p99} | ${ratio.toFixed(2)} | ${
        r.target === undefined ? '' : `≥ ${r.target.toFixed(2)}, p99 ≤ 10 ms`
      } | ${verdict} |`,
    );
  }
  const notes = rows.filter((r) => r.vs || r.minus);
  if (notes.length > 0) lines.push('');
  for (const r of notes) {
    if (r.vs) {
      const ratio = r.load.rps / r.vs.rps;
      lines.push(
        `- ${r.load.name}: ${ratio.toFixed(2)} of ${r.vs.name} (target ≥ ${r.vs.target}): ${r.load.wrong + r.load.errors > 0 ? 'INVALID' : ratio >= r.vs.target ? 'PASS' : 'FAIL'}.`,
      );
    }
    if (r.minus) {
      lines.push(
        `- ${r.load.name}: p50 ${r.load.p50} ms with the CRM's own p50 of ${r.minus.p50} ms at the same concurrency: entgate adds ~${Math.max(0, r.load.p50 - r.minus.p50)} ms ` +
          `(${r.load.rps.toFixed(0)} checks/s against ${r.minus.rps.toFixed(0)} CRM requests/s alone; whole-millisecond resolution).`,
      );
    }
  }
  if (scale) {
    const ratio = scale.large.lookupP50Us / scale.small.lookupP50Us;
    const { small, large } = scale;
    const valid = small.http.wrong + large.http.wrong + small.http.errors + large.http.errors === 0;
    lines.push(
      '',
      'Lookup latency against the number of stored keys (cache off): the lookup query timed alone, one at a time, and the check over HTTP at 10 connections:',
      '',
      '| Keys | lookup p50 µs | lookup p99 µs | check req/s | check p50 ms | check p99 ms |',
      '|---:|---:|---:|---:|---:|---:|',
      `| 10,000 | ${small.lookupP50Us.toFixed(0)} | ${small.lookupP99Us.toFixed(0)} | ${small.http.rps.toFixed(0)} | ${small.http.p50} | ${small.http.p99} |`,
      `| 1,000,000 | ${large.lookupP50Us.toFixed(0)} | ${large.lookupP99Us.toFixed(0)} | ${large.http.rps.toFixed(0)} | ${large.http.p50} | ${large.http.p99} |`,
      '',
      `Lookup p50 ratio 1M / 10k: ${ratio.toFixed(2)} (target ≤ 1.5): ${!valid ? 'INVALID' : ratio <= 1.5 ? 'PASS' : 'FAIL'}.`,
    );
  }
  if (rss) {
    const at = (n: number) => rss.samples.reduce((best, s) => (Math.abs(s[0] - n) < Math.abs(best[0] - n) ? s : best));
    const total = rss.samples[rss.samples.length - 1]![0];
    const peak = Math.max(...rss.samples.map((s) => s[1]));
    const mark = at(total * 0.3);
    const end = rss.samples[rss.samples.length - 1]!;
    const growth = end[1] / mark[1];
    const valid = rss.requests.wrong === 0 && rss.requests.errors === 0;
    lines.push(
      '',
      `Memory: ${total.toLocaleString('en')} distinct unknown keys through the default cache (100,000 entries), ${rss.requests.rps.toFixed(0)} req/s:`,
      '',
      '| keys sent | RSS MiB |',
      '|---:|---:|',
      ...[rss.samples[0]!, at(total * 0.1), mark, at(total * 0.6), end].map((s) => `| ${s[0].toLocaleString('en')} | ${s[1].toFixed(0)} |`),
      '',
      `Peak ${peak.toFixed(0)} MiB. Growth from ${mark[0].toLocaleString('en')} keys to the end: ×${growth.toFixed(2)} ` +
        `(bounded if ≤ 1.25 once the cache is full): ${!valid ? 'INVALID' : growth <= 1.25 ? 'PASS' : 'FAIL'}.`,
    );
  }
  return lines.join('\n');
}

async function cleanup(): Promise<void> {
  for (const child of children) child.kill('SIGKILL');
  for (const name of databases) await adminQuery(`drop database if exists ${name} with (force)`).catch(() => {});
}

process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

try {
  await main();
} finally {
  await cleanup();
}
