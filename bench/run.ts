/**
 * `npm run bench`: the rUS check under load, against a bare node:http baseline measured in
 * the same run (the machines are shared and noisy: only ratios within one run mean much).
 * Every server (the baseline, each entgate configuration, the fake CRM) runs as its own
 * process on 127.0.0.1; autocannon drives them from this process. Every phase is bounded in
 * time and count; servers are stopped and databases dropped on the way out, also on failure
 * and on Ctrl-C. Writes its results between the markers of docs/benchmarks.md.
 *
 * Knobs (environment):
 *   BENCH_DATABASE_URL   admin URL of a PostgreSQL it may create databases on
 *                        (default postgres://postgres@127.0.0.1:5432/postgres)
 *   BENCH_DURATION       seconds per measured scenario (default 10), after a 2 s warm-up
 *   BENCH_SCALE=0        skip 10,000 vs 1,000,000 keys
 *   BENCH_RSS_KEYS       distinct unknown keys for the memory run (default 1000000; 0 skips it)
 *   BENCH_CRM=0          skip the crm resolver scenarios
 *   BENCH_LEASES=0       skip the floating-lease scenarios (bench/leases.ts)
 *   BENCH_SES=0          skip the software entitlement token scenarios (bench/ses.ts)
 *   BENCH_CAPACITIES=0   skip the capacities scenario (bench/capacities.ts; its own block of the page)
 *   BENCH_CAPACITIES_DURATION  seconds measured per capacities run (default 8; 1 to 60)
 *   BENCH_STARTUP=0      skip the start-up and CLI figures (bench/startup.ts)
 *   BENCH_STARTUP_RUNS   runs per start-up and CLI figure (default 5)
 *   BENCH_STARTUP_DIST   a compiled build to measure too (a directory holding src/cli/main.js;
 *                        default dist/, when it holds one)
 *   BENCH_CHECKS=0       skip the rUS check scenarios (the main table, crm, scaling, memory);
 *                        the results section of docs/benchmarks.md is then left as it is
 *   BENCH_NO_DOC=1       print the results without writing docs/benchmarks.md
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createKeyHasher } from '../src/domain/virtual-key.ts';
import { renderEntitlementDocument } from '../src/domain/entitlement-document.ts';
import { openDatabase } from '../src/store/db.ts';
import { VirtualKeysRepo } from '../src/store/virtual-keys-repo.ts';
import { Databases, seedEntitlements, seedKeys, type EntitlementSeed } from './lib/database.ts';
import { combine, describe, drive, type LoadResult, type LoadSpec } from './lib/load.ts';
import { killAllNow, rssMiB, startServer, stopAll, type ServerProcess } from './lib/processes.ts';
import { leaseScenarios } from './leases.ts';
import { sesScenarios } from './ses.ts';
import { capacitiesDuration, capacityScenarios, type CapacityBenchResult } from './capacities.ts';
import { startupScenarios } from './startup.ts';
import {
  renderResults,
  rssVerdict,
  STARTUP_BLOCK,
  CAPACITIES_BLOCK,
  scaleVerdict,
  scenarioVerdict,
  writeResults,
  type RssResult,
  type RssSample,
  type ScaleResult,
  type ScenarioRow,
} from './lib/report.ts';

// ---------------------------------------------------------------- settings

function numberEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number from ${min} to ${max}`);
  return n;
}

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DURATION = numberEnv('BENCH_DURATION', 10, 1, 120);
const SCALE = process.env.BENCH_SCALE !== '0';
const RSS_KEYS = Math.floor(numberEnv('BENCH_RSS_KEYS', 1_000_000, 0, 5_000_000));
const CRM = process.env.BENCH_CRM !== '0';
const LEASES = process.env.BENCH_LEASES !== '0';
const SES = process.env.BENCH_SES !== '0';
const CAPACITIES = process.env.BENCH_CAPACITIES !== '0';
const CAPACITIES_DURATION = capacitiesDuration();
const STARTUP = process.env.BENCH_STARTUP !== '0';
const CHECKS = process.env.BENCH_CHECKS !== '0';
const WRITE_DOC = process.env.BENCH_NO_DOC !== '1';
const CONNECTIONS = 50;
const SCALE_CONNECTIONS = 10;
const WARMUP_SECONDS = 2;
const MAIN_KEYS = 100_000;
const HOT_KEYS = 1_000;
const SCALE_SMALL = 10_000;
const SCALE_LARGE = 1_000_000;
/** Bounds of the memory run and of the whole benchmark. */
const RSS_MAX_SECONDS = 240;
const RUN_MAX_SECONDS = 20 * 60 + (STARTUP ? 20 * 60 : 0) + (CAPACITIES ? 5 * 60 + 6 * CAPACITIES_DURATION : 0);

const SECRET = randomBytes(32).toString('hex');
const ADMIN_TOKEN = randomBytes(16).toString('hex');
const SERVER = 'rm.example.com';
const CLASS = 'myProduct';
const hashKey = createKeyHasher(SECRET);

/** Virtual keys of 27 characters, like generated ones (160 bits, base64url). */
const KEY_TAIL = 'q7mZ2pLr4sT9wYc3N';
const virtualKey = (i: number) => `vk${i.toString(36).padStart(8, '0')}${KEY_TAIL}`;
const unknownKey = (i: number) => `uk${i.toString(36).padStart(8, '0')}${KEY_TAIL}`;
const RUN_TAG = randomBytes(4).toString('hex');
const distinctUnknownKey = (i: number) => `rs${RUN_TAG}${i.toString(36).padStart(8, '0')}${KEY_TAIL.slice(0, 9)}`;
const checkPath = (key: string, remoteIp = '1.2.3.4') => `/?server=${SERVER};class=${CLASS};key=${key};remote_ip=${remoteIp}`;
/** One of 65,536 client addresses, in turn. */
const spreadAddress = (n: number) => `10.${(n >> 8) & 255}.${n & 255}.9`;

/** A few entitlements; every real key is 40 hex digits, so every document has one size. */
const ENTITLEMENTS: EntitlementSeed[] = [
  { serverPattern: SERVER, class: CLASS, realKey: randomBytes(20).toString('hex'), description: 'bench: exact host' },
  { serverPattern: '*.example.com', class: CLASS, realKey: randomBytes(20).toString('hex'), description: 'bench: domain pattern' },
  { serverPattern: '*', class: CLASS, realKey: randomBytes(20).toString('hex'), description: 'bench: every server' },
  { serverPattern: 'RM.Example.com', class: CLASS, realKey: randomBytes(20).toString('hex'), description: 'bench: exact host, other case' },
];
const DOCUMENTS = ENTITLEMENTS.map((e) => renderEntitlementDocument({ server: SERVER, class: e.class, key: e.realKey, timeout: null }));

const dbs = new Databases(ADMIN_URL);
const tempDirs: string[] = [];
const notes: string[] = [];

const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

// ---------------------------------------------------------------- servers

const entgateEnv = (databaseUrl: string, env: Record<string, string>) => ({
  HOST: '127.0.0.1',
  DATABASE_URL: databaseUrl,
  ENTGATE_KEY_SECRET: SECRET,
  ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
  LOG_LEVEL: 'warn',
  // Every scenario sends its checks from one client address; with guessing budgets on, the
  // unknown-key scenarios would measure the refusal of that address instead. Budgets have
  // scenarios of their own (guessScenarios), with them on.
  ENTGATE_GUESS_BUDGET: '0',
  ...env,
});

const startEntgate = (name: string, databaseUrl: string, env: Record<string, string> = {}) =>
  startServer(name, ['src/cli/entgate-dev.js', 'serve'], entgateEnv(databaseUrl, env), '/readyz');

/** A new database, migrated by starting entgate on it once (it migrates on start). */
async function migratedDatabase(): Promise<string> {
  const url = await dbs.create();
  const server = await startEntgate('entgate (migrations)', url);
  await server.stop();
  return url;
}

/** After a scenario: a server that died is a finding, with its last words. */
function checkAlive(server: ServerProcess): void {
  if (!server.exited()) return;
  const tail = server.output().trim().split('\n').slice(-5).join(' | ');
  const note = `${server.name} exited during the run (exit ${server.child.exitCode ?? server.child.signalCode}): ${tail.slice(0, 800)}`;
  notes.push(note);
  log(`WARNING: ${note}`);
}

// ---------------------------------------------------------------- load

async function measure(spec: Omit<LoadSpec, 'connections'> & { connections?: number }, server?: ServerProcess): Promise<LoadResult> {
  const connections = spec.connections ?? CONNECTIONS;
  const warm = await drive({ ...spec, name: `${spec.name} (warm-up)`, connections, duration: WARMUP_SECONDS, amount: undefined });
  if (!warm.valid) log(`  warm-up: ${describe(warm)}`);
  const result = await drive({ ...spec, connections, duration: spec.amount === undefined ? (spec.duration ?? DURATION) : undefined });
  log(`  ${describe(result)}`);
  if (server) checkAlive(server);
  return result;
}

const cycle = (paths: string[]) => {
  let i = 0;
  return () => paths[i++ % paths.length]!;
};

/** One check by hand before a scenario: its status, and for a grant the exact document. */
async function expectAnswer(server: ServerProcess, key: string, status: number): Promise<void> {
  const res = await fetch(`${server.url}${checkPath(key)}`, { signal: AbortSignal.timeout(10_000) });
  const body = await res.text();
  if (res.status !== status) throw new Error(`${server.name}: ${key.slice(0, 4)}… answered ${res.status}, expected ${status}`);
  if (status === 200 && !DOCUMENTS.includes(body)) throw new Error(`${server.name}: the document is not the expected one:\n${body}`);
}

// ---------------------------------------------------------------- phases

async function mainScenarios(mainUrl: string) {
  const hotPaths = Array.from({ length: HOT_KEYS }, (_, i) => checkPath(virtualKey(i * 97)));
  const unknownPaths = Array.from({ length: HOT_KEYS }, (_, i) => checkPath(unknownKey(i)));
  const randomPath = (count: number) => () => checkPath(virtualKey(Math.floor(Math.random() * count)));

  // The baseline runs before and after the main entgate scenarios; both runs are pooled, so
  // that drift on the machine during those minutes weighs on both sides of the ratios.
  const bareBody = { BENCH_BODY: Buffer.from(DOCUMENTS[0]!).toString('base64') };
  const measureBaseline = async (when: string) => {
    log(`baseline (${when}): bare node:http answering a ${Buffer.byteLength(DOCUMENTS[0]!)}-byte document`);
    const bare = await startServer('baseline', ['bench/baseline-server.mjs'], bareBody, '/');
    try {
      return await measure({ name: `bare node:http (baseline, ${when})`, url: bare.url, path: cycle(hotPaths), expect: 200 }, bare);
    } finally {
      await bare.stop();
    }
  };
  const baselineRuns = [await measureBaseline('before')];

  log('entgate, default cache: warm hits, then unknown keys');
  const cached = await startEntgate('entgate (default cache)', mainUrl);
  const rows: ScenarioRow[] = [];
  try {
    await expectAnswer(cached, virtualKey(0), 200);
    await expectAnswer(cached, unknownKey(0), 404);
    rows.push({
      load: await measure({ name: 'warm hits', url: cached.url, path: cycle(hotPaths), expect: 200 }, cached),
      minRatio: 0.6,
      p99Target: true,
    });
    rows.push({
      load: await measure({ name: 'unknown keys (negative cache)', url: cached.url, path: cycle(unknownPaths), expect: 404 }, cached),
      minRatio: 0.5,
      p99Target: true,
    });
  } finally {
    await cached.stop();
  }

  rows.push(...(await guessScenarios(mainUrl, hotPaths)));

  log('entgate, cache off: every check is a PostgreSQL lookup');
  const uncached = await startEntgate('entgate (cache off)', mainUrl, { ENTGATE_CACHE_MAX_ENTRIES: '0' });
  try {
    rows.push({
      load: await measure({ name: 'uncached lookups (PostgreSQL)', url: uncached.url, path: randomPath(MAIN_KEYS), expect: 200 }, uncached),
      minRatio: 0.15,
      p99Target: true,
    });
  } finally {
    await uncached.stop();
  }
  baselineRuns.push(await measureBaseline('after'));
  const [before, after] = baselineRuns as [LoadResult, LoadResult];
  const baseline = combine('bare node:http (baseline)', baselineRuns);
  const drift = after.rps / before.rps - 1;
  notes.push(
    `Baseline before the entgate scenarios ${before.rps.toFixed(0)} req/s, after them ${after.rps.toFixed(0)} req/s ` +
      `(${drift >= 0 ? '+' : ''}${(drift * 100).toFixed(0)}%); the table pools both.` +
      (Math.abs(drift) > 0.15 ? ' The machine drifted by more than 15% meanwhile: ratios of this run are less reliable.' : ''),
  );
  return { baseline, rows, hotPaths };
}

/**
 * Guessing budgets on (the default budget): unknown keys spread over 65,536 client addresses,
 * so that none reaches its budget and every failure is counted and written (a distributed
 * guesser, the costly case); then an address past its budget presenting valid keys (refused
 * before any lookup).
 */
async function guessScenarios(mainUrl: string, hotPaths: string[]): Promise<ScenarioRow[]> {
  log('entgate, guessing budgets on: unknown keys from many addresses, then a refused address');
  const server = await startEntgate('entgate (guessing budgets on)', mainUrl, { ENTGATE_GUESS_BUDGET: '30' });
  const rows: ScenarioRow[] = [];
  try {
    let n = 0;
    rows.push({
      load: await measure(
        { name: 'unknown keys, 65,536 addresses (budgets counting)', url: server.url, path: () => checkPath(unknownKey(n % HOT_KEYS), spreadAddress(n++)), expect: 404 },
        server,
      ),
      minRatio: 0.5,
      p99Target: true,
    });
    for (let i = 0; i < 30; i++) await expectAnswer(server, unknownKey(i), 404);
    await expectAnswer(server, virtualKey(0), 404);
    rows.push({
      load: await measure({ name: 'valid keys from an address past its budget', url: server.url, path: cycle(hotPaths), expect: 404 }, server),
      minRatio: 0.6,
      p99Target: true,
    });
  } finally {
    await server.stop();
  }
  return rows;
}

/**
 * The crm resolver against a CRM in its own process: warm hits through the CRM path (decision
 * cache warm), and uncached CRM lookups at 10 connections next to the CRM alone at 10
 * connections (its own latency, to subtract).
 */
async function crmScenarios(mainUrl: string, hotPaths: string[], postgresWarmRps: number): Promise<ScenarioRow[]> {
  log('crm resolver: a fake CRM in its own process');
  const crm = await startServer('fake CRM', ['bench/fake-crm-server.mjs'], {}, '/customers/ready');
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-'));
  tempDirs.push(dir);
  const optionsFile = join(dir, 'resolvers.json');
  writeFileSync(
    optionsFile,
    JSON.stringify({ crm: { url: `${crm.url}/customers/{key}`, statusPath: 'customer.status', productsPath: 'customer.products', maxConcurrency: 64 } }),
  );
  const crmEnv = { ENTGATE_RESOLVERS: 'crm', ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile };
  const randomCustomer = () => checkPath(`c${Math.floor(Math.random() * 1e9)}`);
  const rows: ScenarioRow[] = [];
  try {
    const warm = await startEntgate('entgate (crm, default cache)', mainUrl, crmEnv);
    try {
      rows.push({
        load: await measure({ name: 'warm hits, crm resolver', url: warm.url, path: cycle(hotPaths), expect: 200 }, warm),
        minRatio: 0.6,
        p99Target: true,
        vs: { name: 'warm hits (postgres)', rps: postgresWarmRps, minRatio: 0.9 },
      });
    } finally {
      await warm.stop();
    }
    const alone = await measure({
      name: 'the CRM alone',
      url: crm.url,
      path: () => `/customers/c${Math.floor(Math.random() * 1e9)}`,
      expect: 200,
      connections: SCALE_CONNECTIONS,
    });
    rows.push({ load: alone, connections: SCALE_CONNECTIONS });
    const cold = await startEntgate('entgate (crm, cache off)', mainUrl, { ...crmEnv, ENTGATE_CACHE_MAX_ENTRIES: '0' });
    try {
      const load = await measure(
        { name: 'uncached crm lookups', url: cold.url, path: randomCustomer, expect: 200, connections: SCALE_CONNECTIONS },
        cold,
      );
      rows.push({ load, connections: SCALE_CONNECTIONS });
      notes.push(
        `uncached crm lookups: p50 ${load.p50.toFixed(2)} ms against the CRM's own ${alone.p50.toFixed(2)} ms at the same concurrency: ` +
          `entgate adds ~${(load.p50 - alone.p50).toFixed(2)} ms per check (${load.rps.toFixed(0)} checks/s, ${alone.rps.toFixed(0)} CRM requests/s alone).`,
      );
    } finally {
      await cold.stop();
    }
  } finally {
    await crm.stop();
  }
  return rows;
}

/** The lookup query alone, timed one at a time from here, after a warm-up (µs). */
async function timeLookups(databaseUrl: string, count: number): Promise<{ p50: number; p99: number }> {
  const db = await openDatabase({ databaseUrl, dataDir: '/nonexistent', poolMax: 1 });
  const repo = new VirtualKeysRepo(db);
  const times: number[] = [];
  try {
    for (let i = 0; i < 5500; i++) {
      const hash = hashKey(virtualKey(Math.floor(Math.random() * count)));
      const t = process.hrtime.bigint();
      const found = await repo.findMappingByHash(hash);
      if (i >= 500) times.push(Number(process.hrtime.bigint() - t) / 1000);
      if (!found) throw new Error('a seeded key was not found');
    }
  } finally {
    await db.close();
  }
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length * 0.5)]!, p99: times[Math.floor(times.length * 0.99)]! };
}

async function scalePhase(entitlementsFor: (url: string) => Promise<number[]>): Promise<ScaleResult> {
  const sizes = [SCALE_SMALL, SCALE_LARGE] as const;
  const urls: string[] = [];
  for (const count of sizes) {
    const t = Date.now();
    const url = await migratedDatabase();
    await seedKeys(url, count, virtualKey, hashKey, await entitlementsFor(url));
    log(`scaling: ${count.toLocaleString('en')} keys seeded in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    urls.push(url);
  }
  const lookups = [await timeLookups(urls[0]!, SCALE_SMALL), await timeLookups(urls[1]!, SCALE_LARGE)];
  log(`scaling: the lookup query alone, p50 ${lookups[0]!.p50.toFixed(0)} µs (10k) vs ${lookups[1]!.p50.toFixed(0)} µs (1M)`);

  const servers: ServerProcess[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      servers.push(await startEntgate(`entgate (cache off, ${sizes[i]!.toLocaleString('en')} keys)`, urls[i]!, { ENTGATE_CACHE_MAX_ENTRIES: '0' }));
    }
    const spec = (i: number, name: string): LoadSpec => ({
      name,
      url: servers[i]!.url,
      path: () => checkPath(virtualKey(Math.floor(Math.random() * sizes[i]!))),
      expect: 200,
      connections: SCALE_CONNECTIONS,
    });
    for (let i = 0; i < 2; i++) await drive({ ...spec(i, 'warm-up'), duration: WARMUP_SECONDS });
    // A B B A: both databases see the same share of the machine's drift.
    const runs: LoadResult[][] = [[], []];
    const half = Math.max(1, Math.round(DURATION / 2));
    for (const i of [0, 1, 1, 0]) {
      const r = await drive({ ...spec(i, `uncached, ${sizes[i]!.toLocaleString('en')} keys`), duration: half });
      log(`  ${describe(r)}`);
      runs[i]!.push(r);
    }
    servers.forEach(checkAlive);
    const [small, large] = [0, 1].map((i) => combine(`uncached, ${sizes[i]!.toLocaleString('en')} keys`, runs[i]!));
    return {
      small: { keys: SCALE_SMALL, load: small!, lookupP50Us: lookups[0]!.p50, lookupP99Us: lookups[0]!.p99 },
      large: { keys: SCALE_LARGE, load: large!, lookupP50Us: lookups[1]!.p50, lookupP99Us: lookups[1]!.p99 },
      connections: SCALE_CONNECTIONS,
      rounds: 2,
    };
  } finally {
    for (const s of servers) await s.stop();
  }
}

async function rssPhase(mainUrl: string): Promise<RssResult> {
  log(`memory: ${RSS_KEYS.toLocaleString('en')} distinct unknown keys through the default cache`);
  const server = await startEntgate('entgate (default cache, memory run)', mainUrl);
  try {
    const sample = (keys: number): RssSample => ({ keys, mib: server.exited() ? Number.NaN : rssMiB(server.pid) });
    const start = sample(0);
    let peak = start;
    let sent = 0;
    let at200k: RssSample | undefined;
    let mid: RssSample | undefined;
    const midAt = Math.floor(RSS_KEYS / 2);
    const timer = setInterval(() => {
      const s = sample(sent);
      if (s.mib > peak.mib) peak = s;
    }, 1000);
    let load: LoadResult;
    try {
      load = await drive({
        name: 'distinct unknown keys',
        url: server.url,
        path: () => {
          const n = sent++;
          if (n === 200_000) at200k = sample(n);
          if (n === midAt) mid = sample(n);
          return checkPath(distinctUnknownKey(n));
        },
        expect: 404,
        connections: CONNECTIONS,
        amount: RSS_KEYS,
        maxSeconds: RSS_MAX_SECONDS,
      });
    } finally {
      clearInterval(timer);
    }
    const end = sample(Math.min(sent, load.responses));
    if (end.mib > peak.mib) peak = end;
    log(`  ${describe(load)}`);
    checkAlive(server);
    let health: Record<string, unknown> | undefined;
    try {
      const res = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5000) });
      health = (await res.json()) as Record<string, unknown>;
    } catch {
      // reported as absent
    }
    const result: RssResult = { load, start, at200k, mid, end, peak, target: RSS_KEYS, health };
    log(`  RSS MiB: start ${start.mib.toFixed(0)}, 200k ${at200k?.mib.toFixed(0)}, mid ${mid?.mib.toFixed(0)}, end ${end.mib.toFixed(0)}, peak ${peak.mib.toFixed(0)}`);
    return result;
  } finally {
    await server.stop();
  }
}

/** The capacities scenario, its figures written to their own block of docs/benchmarks.md. */
async function capacitiesPhase(): Promise<CapacityBenchResult | undefined> {
  if (!CAPACITIES) return undefined;
  const result = await capacityScenarios(CAPACITIES_DURATION, ADMIN_URL);
  console.log(`\n${result.markdown}\n`);
  if (WRITE_DOC) {
    writeResults(fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url)), result.markdown, CAPACITIES_BLOCK);
    log('capacities figures written to docs/benchmarks.md');
  }
  return result;
}

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const started = Date.now();
  const load0 = loadavg();
  const postgres = await dbs.serverVersion();
  log(`entgate bench: ${cpus().length} CPUs, Node ${process.version}, PostgreSQL ${postgres} at ${new URL(ADMIN_URL).host}`);
  const leftovers = await dbs.leftovers();
  if (leftovers.length > 0) {
    log(`note: databases of an earlier run that was killed are still there (not touched; drop them if no benchmark is running): ${leftovers.join(', ')}`);
  }

  // First, while no other server of the run is up: start-up times are the most sensitive to load.
  const startup = STARTUP ? await startupScenarios(ADMIN_URL) : undefined;
  if (startup) {
    console.log(`\n${startup.markdown}\n`);
    if (WRITE_DOC) {
      writeResults(fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url)), startup.markdown, STARTUP_BLOCK);
      log('start-up figures written to docs/benchmarks.md');
    }
  }
  if (!CHECKS) {
    log('BENCH_CHECKS=0: no rUS check scenarios (the results section of docs/benchmarks.md is left as it is)');
    const leases = LEASES ? await leaseScenarios(DURATION, ADMIN_URL) : undefined;
    const ses = SES ? await sesScenarios(DURATION, ADMIN_URL) : undefined;
    for (const r of [leases, ses]) if (r) console.log(`\n${r.markdown}\n`);
    const capacities = await capacitiesPhase();
    if ([startup, leases, ses, capacities].some((r) => r && !r.valid)) process.exitCode = 2;
    return;
  }

  const entitlementsFor = (url: string) => seedEntitlements(url, ENTITLEMENTS);
  let t = Date.now();
  const mainUrl = await migratedDatabase();
  await seedKeys(mainUrl, MAIN_KEYS, virtualKey, hashKey, await entitlementsFor(mainUrl));
  log(`seeded ${MAIN_KEYS.toLocaleString('en')} virtual keys over ${ENTITLEMENTS.length} entitlements in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  const { baseline, rows, hotPaths } = await mainScenarios(mainUrl);
  const extra = CRM ? await crmScenarios(mainUrl, hotPaths, rows[0]!.load.rps) : [];
  t = Date.now();
  const scale = SCALE ? await scalePhase(entitlementsFor) : undefined;
  if (scale) log(`scaling phase took ${((Date.now() - t) / 1000).toFixed(0)} s`);
  const rss = RSS_KEYS > 0 ? await rssPhase(mainUrl) : undefined;
  const leases = LEASES ? await leaseScenarios(DURATION, ADMIN_URL) : undefined;
  const ses = SES ? await sesScenarios(DURATION, ADMIN_URL) : undefined;
  const capacities = await capacitiesPhase();

  const cpu = cpus();
  const results = renderResults(
    {
      date: new Date(),
      seconds: (Date.now() - started) / 1000,
      cpus: cpu.length,
      model: cpu[0]?.model.trim() ?? 'unknown CPU',
      memGiB: totalmem() / 2 ** 30,
      node: process.version,
      postgres,
      loadavg: load0,
      connections: CONNECTIONS,
      duration: DURATION,
    },
    baseline,
    rows,
    extra,
    scale,
    rss,
    notes,
  ) + [leases, ses].map((r) => (r ? `\n\n${r.markdown.trimEnd()}` : '')).join('');
  console.log(`\n${results}\n`);
  if (WRITE_DOC) {
    writeResults(fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url)), results);
    log('results written to docs/benchmarks.md');
  }

  const verdicts = [
    ...[...rows, ...extra].map((r) => scenarioVerdict(r, baseline.rps, baseline.valid)),
    ...(scale ? [scaleVerdict(scale).verdict] : []),
    ...(rss ? [rssVerdict(rss).verdict] : []),
    ...[leases, ses, capacities].flatMap((r) => (r ? [...r.markdown.matchAll(/\| (PASS|FAIL|INVALID[^|]*) \|$/gm)].map((m) => m[1]!) : [])),
  ];
  const failed = verdicts.filter((v) => v.startsWith('FAIL')).length;
  const invalid = verdicts.filter((v) => v.startsWith('INVALID')).length + (baseline.valid ? 0 : 1);
  log(`${verdicts.filter((v) => v === 'PASS').length} PASS, ${failed} FAIL, ${invalid} INVALID`);
  if (invalid > 0) process.exitCode = 2;
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAll();
    const left = await dbs.dropAll();
    if (left.length > 0) console.error(`could not drop ${left.join(', ')}: drop them by hand`);
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the servers and dropping the databases…`);
    const force = setTimeout(() => {
      killAllNow();
      process.exit(130);
    }, 20_000);
    void cleanup().finally(() => {
      clearTimeout(force);
      process.exit(130);
    });
  });
}
process.on('exit', killAllNow);
const watchdog = setTimeout(() => {
  console.error(`the benchmark ran for more than ${RUN_MAX_SECONDS / 60} minutes: giving up`);
  void cleanup().finally(() => process.exit(3));
}, RUN_MAX_SECONDS * 1000);
watchdog.unref();

try {
  await main();
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  await cleanup();
}
process.exit(process.exitCode ?? 0);
