/**
 * The capacities scenario of `npm run bench` (also runnable alone:
 * `node --import tsx bench/capacities.ts`): `assigned:` claims and releases through the HTTP
 * API from 50 concurrent clients, each looping "claim a random user id of a pool of ids, then
 * release it", on one capacity whose limit (20) is below the number of clients, so that claims
 * are refused (409 capacity_exceeded) and an over-grant would be possible. Run on the embedded
 * database (one entgate process, as the default install runs it) and on PostgreSQL (one
 * process, then three sharing one database).
 *
 * After each run the database is asked: the most claims held at one instant, from the claims'
 * own times (`capacity_claims.claimed_at` to `released_at`), and the most in use that the
 * claim function recorded (`licence_events.in_use`), each against the limit; and whether every
 * answer the clients got is a row there (201s = claims, 409s = refusal events, 204s =
 * releases). Throughput is set against the database's own limit in the same run, at the same
 * concurrency: a plain `INSERT … RETURNING` into a scratch table from 50 concurrent callers
 * (PostgreSQL: a `pg` pool of 50 from this process, before and after the entgate runs;
 * embedded: the same data folder opened with PGlite in this process, as the server opens it).
 *
 * The servers are `node src/cli/entgate-dev.js serve` (`npm run dev`: the sources, as every
 * benchmark runs them, so that a stale dist/ never hides a change) with the settings a user
 * gives: ENTGATE_LICENCE_PUBLIC_KEYS (an Ed25519 key made here), ENTGATE_ADMIN_TOKEN, DATA_DIR
 * or DATABASE_URL, and the defaults otherwise (DATABASE_POOL_MAX 10). The licence is installed
 * with `PUT /admin/v1/licence` and the clients hold a stored credential of scope
 * `capacities`, made with `POST /admin/v1/admin-tokens`, as a service of the installation would.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { issueLicence } from '../src/domain/licence.ts';
import { Databases, insertsPerSecond, SCRATCH_TABLE, withClient, type Query } from './lib/database.ts';
import { httpText } from './lib/http.ts';
import { LatencyHistogram } from './lib/load.ts';
import { cpuSeconds, startServer, type ServerProcess } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';

const CLIENTS = 50;
const LIMIT = 20;
const CAPACITY = 'assigned:users';
/** User ids the clients draw from: two clients seldom draw the same one (20 held of 10,000). */
const USER_IDS = 10_000;
const WARMUP_SECONDS = 2;
/** PGlite's first start (initdb in WASM and the migrations) takes 9 s on a quiet machine. */
const EMBEDDED_START_TIMEOUT_MS = 180_000;
const LOCK_SAMPLE_MS = 200;
/** How long a PGlite opened by the benchmark runs before it is timed (its WebAssembly is optimised as it runs). */
const PGLITE_WARMUP_MS = 4000;

interface Counts {
  granted: number;
  /** 200: the id was held already (another client drew it too). */
  existing: number;
  refused: number;
  released: number;
  /** 404 on release: the other client holding the same id released it first. */
  notHeld: number;
}

interface ClientRun {
  seconds: number;
  /** Answers of the measured window. */
  measured: Counts;
  /** Answers of the whole run, warm-up included: what the database must hold. */
  total: Counts;
  claim: LatencyHistogram;
  refusal: LatencyHistogram;
  release: LatencyHistogram;
  unexpected: Record<string, number>;
  cpu: { entgate: number; postgres: number | null; clients: number };
  /** PostgreSQL only: backends of the database waiting on a lock, and active, on average. */
  lockWaiters: number | null;
  active: number | null;
  /** The 1-minute load average when the run started. */
  load: number;
}

interface Ledger {
  /** The most claims held at one instant, from capacity_claims (releases first on ties). */
  maxHeld: number;
  /** Instants at which more than the limit were held. */
  overGrants: number;
  /** The most in use recorded by a claim (licence_events, type claimed). */
  maxInUse: number;
  /** Claim events recording more in use than the limit. */
  overInUse: number;
  claims: number;
  claimedEvents: number;
  refusedEvents: number;
  releasedEvents: number;
  releasedRows: number;
  heldAtEnd: number;
  /** Median time between two successive decisions on the capacity (claimed, refused, released events), ms. */
  gapMs: number;
}

interface Run extends ClientRun {
  database: 'embedded (PGlite)' | 'PostgreSQL';
  processes: number;
  ledger: Ledger;
  /** Claim and release function calls per second from one caller, after the run: the most decisions one capacity's lock lets through. */
  decisionsAlone: number;
  /** Answers the database does not account for, or accounts for without an answer. */
  mismatches: string[];
}

interface InsertRate {
  perSecond: number;
  /** One caller, one insert at a time (each commit on its own). */
  serialPerSecond: number;
}

export interface CapacityBenchResult {
  runs: Run[];
  markdown: string;
  valid: boolean;
}

// ---------------------------------------------------------------- the clients

const emptyCounts = (): Counts => ({ granted: 0, existing: 0, refused: 0, released: 0, notHeld: 0 });

/** Sums CPU seconds of the PostgreSQL backends connected to one database (their /proc entries). */
async function backendCpu(admin: pg.Client | undefined, database: string | undefined): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  if (!admin || !database) return out;
  const { rows } = await admin.query('select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [database]);
  for (const r of rows) {
    try {
      out.set(r.pid as number, cpuSeconds(r.pid as number));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * 50 clients, client i on server i mod n, each with a keep-alive connection: claim a random
 * user id; on 201 or 200 release it; on 409 draw another at once. Everything is counted;
 * latencies and the measured counts only in the window after the warm-up.
 */
async function drive(servers: ServerProcess[], credential: string, seconds: number, postgres?: { adminUrl: string; database: string }): Promise<ClientRun> {
  const agents = servers.map(() => new Agent({ keepAlive: true, maxSockets: CLIENTS }));
  const bases = servers.map((s) => new URL(s.url));
  const claimPath = `/v1/capacities/${encodeURIComponent(CAPACITY)}/claims`;
  const auth = `Bearer ${credential}`;
  const claim = new LatencyHistogram();
  const refusal = new LatencyHistogram();
  const release = new LatencyHistogram();
  const measured = emptyCounts();
  const total = emptyCounts();
  const unexpected: Record<string, number> = {};
  const odd = (what: string) => (unexpected[what] = (unexpected[what] ?? 0) + 1);
  const admin = postgres ? new pg.Client({ connectionString: postgres.adminUrl }) : undefined;
  await admin?.connect();

  let measuring = false;
  let measuredFrom = 0n;
  let measuredTo = 0n;
  let cpuFrom = { entgate: 0, postgres: new Map<number, number>(), clients: 0 };
  let cpuTo = { entgate: 0, postgres: new Map<number, number>(), clients: 0 };
  const cpuNow = async () => ({ entgate: servers.reduce((s, p) => s + cpuSeconds(p.pid), 0), postgres: await backendCpu(admin, postgres?.database), clients: cpuSeconds('self') });
  const load = loadavg()[0]!;
  const startAt = Date.now() + WARMUP_SECONDS * 1000;
  const endAt = startAt + seconds * 1000;
  const lockSamples: { waiting: number; active: number }[] = [];
  // The window: from the end of the warm-up to endAt; answers arriving after it (the last
  // requests in flight) are not counted.
  const startMeasuring = async () => {
    cpuFrom = await cpuNow();
    measuredFrom = process.hrtime.bigint();
    measuring = true;
  };
  const stopMeasuring = async () => {
    measuring = false;
    measuredTo = process.hrtime.bigint();
    cpuTo = await cpuNow();
  };
  const sampleLocks = async () => {
    if (!admin || !postgres) return;
    while (Date.now() < endAt) {
      if (measuring) {
        const { rows } = await admin.query(
          `select count(*) filter (where wait_event_type = 'Lock')::int as waiting, count(*) filter (where state = 'active')::int as active
             from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
          [postgres.database],
        );
        lockSamples.push({ waiting: rows[0].waiting as number, active: rows[0].active as number });
      }
      await new Promise((r) => setTimeout(r, LOCK_SAMPLE_MS));
    }
  };
  const at = (time: number, f: () => Promise<void>) => new Promise<void>((resolve, reject) => setTimeout(() => f().then(resolve, reject), time - Date.now()));
  const measuredWindow = Promise.all([at(startAt, startMeasuring), at(endAt, stopMeasuring)]);

  const call = async (i: number, method: string, path: string, body?: string) => {
    const headers: Record<string, string | number> = { Authorization: auth };
    if (body !== undefined) Object.assign(headers, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    const base = bases[i % servers.length]!;
    const t = process.hrtime.bigint();
    const answer = await httpText({ agent: agents[i % servers.length], host: base.hostname, port: base.port, method, path, headers }, body);
    return { ...answer, ms: Number(process.hrtime.bigint() - t) / 1e6 };
  };
  const count = (field: keyof Counts) => {
    total[field]++;
    if (measuring) measured[field]++;
  };
  const client = async (i: number) => {
    while (Date.now() < endAt) {
      const user = `user-${Math.floor(Math.random() * USER_IDS)}`;
      try {
        const c = await call(i, 'POST', claimPath, JSON.stringify({ id: user }));
        if (c.status === 409) {
          count('refused');
          if (measuring) refusal.record(c.ms);
          continue;
        }
        if (c.status !== 201 && c.status !== 200) {
          odd(`claim ${c.status} ${c.text.slice(0, 80)}`);
          continue;
        }
        count(c.status === 201 ? 'granted' : 'existing');
        if (measuring) claim.record(c.ms);
        const r = await call(i, 'DELETE', `${claimPath}/${user}`);
        if (r.status === 204) count('released');
        else if (r.status === 404) count('notHeld');
        else odd(`release ${r.status} ${r.text.slice(0, 80)}`);
        if (measuring) release.record(r.ms);
      } catch (err) {
        odd(`error ${(err as Error).message.slice(0, 80)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  try {
    await Promise.all([...Array.from({ length: CLIENTS }, (_, i) => client(i)), measuredWindow, sampleLocks()]);
    let pgCpu = 0;
    for (const [pid, s] of cpuTo.postgres) pgCpu += s - (cpuFrom.postgres.get(pid) ?? 0);
    const mean = (f: (s: { waiting: number; active: number }) => number) => (lockSamples.length ? lockSamples.reduce((a, s) => a + f(s), 0) / lockSamples.length : null);
    return {
      seconds: Number(measuredTo - measuredFrom) / 1e9,
      measured,
      total,
      claim,
      refusal,
      release,
      unexpected,
      cpu: { entgate: cpuTo.entgate - cpuFrom.entgate, postgres: postgres ? pgCpu : null, clients: cpuTo.clients - cpuFrom.clients },
      lockWaiters: mean((s) => s.waiting),
      active: mean((s) => s.active),
      load,
    };
  } finally {
    for (const a of agents) a.destroy();
    await admin?.end();
  }
}

// ---------------------------------------------------------------- the database's account

/** What the database holds of the run: the most held at once (two ways), and the rows to match the answers against. */
async function ledger(query: Query): Promise<Ledger> {
  const [timeline] = await query(
    `with ev as (select claimed_at as t, 1 as d from capacity_claims where capacity = $1
                 union all
                 select released_at, -1 from capacity_claims where capacity = $1 and released_at is not null),
          running as (select sum(d) over (order by t, d rows unbounded preceding) as held from ev)
     select coalesce(max(held), 0)::int as max_held, count(*) filter (where held > $2)::int as over from running`,
    [CAPACITY, LIMIT],
  );
  const [events] = await query(
    `select coalesce(max(in_use) filter (where type = 'claimed'), 0)::int as max_in_use,
            count(*) filter (where type = 'claimed' and in_use > capacity_limit)::int as over_in_use,
            count(*) filter (where type = 'claimed')::int as claimed,
            count(*) filter (where type = 'refused')::int as refused,
            count(*) filter (where type = 'released')::int as released
       from licence_events where capacity = $1`,
    [CAPACITY],
  );
  const [claims] = await query(
    `select count(*)::int as claims, count(released_at)::int as released, count(*) filter (where released_at is null)::int as held
       from capacity_claims where capacity = $1`,
    [CAPACITY],
  );
  const [spacing] = await query(
    `select coalesce(percentile_cont(0.5) within group (order by gap), 0)::float8 as gap_ms
       from (select extract(epoch from occurred_at - lag(occurred_at) over (order by id)) * 1000 as gap
               from licence_events where capacity = $1) g
      where gap is not null`,
    [CAPACITY],
  );
  return {
    maxHeld: timeline!.max_held as number,
    overGrants: timeline!.over as number,
    maxInUse: events!.max_in_use as number,
    overInUse: events!.over_in_use as number,
    claims: claims!.claims as number,
    claimedEvents: events!.claimed as number,
    refusedEvents: events!.refused as number,
    releasedEvents: events!.released as number,
    releasedRows: claims!.released as number,
    heldAtEnd: claims!.held as number,
    gapMs: spacing!.gap_ms as number,
  };
}

/** Each answer the clients got against its row: a claim row and event per 201, a refusal event per 409, a release per 204. */
function mismatches(total: Counts, l: Ledger): string[] {
  const pairs: [string, number, number][] = [
    ['201 answers / capacity_claims rows', total.granted, l.claims],
    ['201 answers / claimed events', total.granted, l.claimedEvents],
    ['409 answers / refused events', total.refused, l.refusedEvents],
    ['204 answers / released events', total.released, l.releasedEvents],
    ['204 answers / released claims', total.released, l.releasedRows],
    ['claims held at the end / 0', l.heldAtEnd, 0],
  ];
  return pairs.filter(([, a, b]) => a !== b).map(([what, a, b]) => `${what}: ${a} ≠ ${b}`);
}

// ---------------------------------------------------------------- the baseline

const DECISIONS_SECONDS = 2;

/**
 * The claim and release functions alone, after the run: one caller claiming an id (a new one
 * each time, as the clients draw theirs) and releasing it, for 2 s after `warmupMs`, straight
 * through SQL. Each call holds the capacity's row lock until its commit, so this is about the
 * most decisions per second one capacity can take, whatever the number of clients and processes.
 */
async function decisionsAlone(query: Query, warmupMs: number): Promise<number> {
  let probe = 0;
  const call = async (sql: string, expected: string) => {
    const [row] = await query(sql, [CAPACITY, `bench-probe-${probe}`]);
    const outcome = (row!.r as { outcome: string }).outcome;
    if (outcome !== expected) throw new Error(`${sql.slice(7, 30)}… answered ${outcome}`);
  };
  const warmEnd = Date.now() + warmupMs;
  const end = warmEnd + DECISIONS_SECONDS * 1000;
  let n = 0;
  let from = 0n;
  while (Date.now() < end) {
    if (from === 0n && Date.now() >= warmEnd) from = process.hrtime.bigint();
    await call(`select entgate_capacity_claim($1, $2, null, gen_random_uuid(), null, '{}'::jsonb, 'bench', 'bench', '{}'::json) as r`, 'acquired');
    await call(`select entgate_capacity_release($1, $2, null, null, 'bench') as r`, 'released');
    probe++;
    if (from !== 0n) n += 2;
  }
  return n / (Number(process.hrtime.bigint() - from) / 1e9);
}

/** The database's own limit at 50 callers, and one caller's (each commit on its own: what work serialised on one lock gets at best). */
async function insertRates(query: Query, seconds: number): Promise<InsertRate> {
  await query(SCRATCH_TABLE);
  const perSecond = await insertsPerSecond(query, CLIENTS, seconds);
  const serialPerSecond = await insertsPerSecond(query, 1, Math.min(seconds, 2));
  return { perSecond, serialPerSecond };
}

async function withPgPool<T>(url: string, use: (query: Query) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: url, max: CLIENTS });
  try {
    return await use(async (sql, params) => (await pool.query(sql, params)).rows);
  } finally {
    await pool.end();
  }
}

async function withPglite<T>(dataDir: string, use: (query: Query) => Promise<T>): Promise<T> {
  const db = new PGlite(dataDir);
  await db.waitReady;
  try {
    return await use(async (sql, params) => (await db.query<Record<string, unknown>>(sql, params)).rows);
  } finally {
    await db.close();
  }
}

// ---------------------------------------------------------------- set-up

interface Setup {
  dir: string;
  env: Record<string, string>;
  licence: string;
}

async function setUp(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-capacities-'));
  const vendor = generateKeyPairSync('ed25519');
  const publicKey = join(dir, 'vendor.pem');
  writeFileSync(publicKey, vendor.publicKey.export({ format: 'pem', type: 'spki' }));
  const licence = await issueLicence(
    { tenant: 'bench', capacities: { [CAPACITY]: LIMIT }, expiresAt: new Date(Date.now() + 86_400_000) },
    vendor.privateKey,
  );
  const env = {
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    ENTGATE_ADMIN_TOKEN: randomBytes(16).toString('hex'),
    ENTGATE_LICENCE_PUBLIC_KEYS: publicKey,
  };
  return { dir, env, licence };
}

async function admin(server: ServerProcess, token: string, method: string, path: string, body: string, contentType: string): Promise<unknown> {
  const res = await fetch(`${server.url}/admin/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': contentType },
    body,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`${method} /admin/v1${path} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as unknown;
}

/** Installs the licence and makes the clients' credential (scope capacities) through the admin API; checks the capacity is there, empty. */
async function prepare(server: ServerProcess, setup: Setup): Promise<string> {
  const bootstrap = setup.env.ENTGATE_ADMIN_TOKEN!;
  await admin(server, bootstrap, 'PUT', '/licence', setup.licence, 'application/jwt');
  const made = (await admin(server, bootstrap, 'POST', '/admin-tokens', JSON.stringify({ name: 'bench-capacities', scopes: ['capacities'] }), 'application/json')) as {
    token: string;
  };
  const res = await fetch(`${server.url}/v1/capacities`, { headers: { Authorization: `Bearer ${made.token}` }, signal: AbortSignal.timeout(30_000) });
  const { items } = (await res.json()) as { items: { name: string; limit: number; inUse: number }[] };
  const capacity = items.find((c) => c.name === CAPACITY);
  if (res.status !== 200 || capacity?.limit !== LIMIT || capacity.inUse !== 0) throw new Error(`GET /v1/capacities answered ${res.status}: ${JSON.stringify(items)}`);
  return made.token;
}

const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] capacities: ${msg}`);

function logRun(r: ClientRun, label: string): void {
  const m = r.measured;
  const rate = (n: number) => (n / r.seconds).toFixed(0);
  log(
    `${label}: ${rate(m.granted)} claims/s granted, ${rate(m.refused)} refused/s, ${rate(m.released)} releases/s; ` +
      `claim p50 ${r.claim.percentile(50).toFixed(2)} ms${Object.keys(r.unexpected).length ? `; UNEXPECTED ${JSON.stringify(r.unexpected)}` : ''}`,
  );
}

// ---------------------------------------------------------------- the scenario

async function embeddedRun(setup: Setup, seconds: number): Promise<{ run: Run; inserts: InsertRate }> {
  const dataDir = join(setup.dir, 'data');
  log('embedded database: first start (initdb and migrations in PGlite)...');
  const server = await startServer('entgate (capacities, embedded)', ['src/cli/entgate-dev.js', 'serve'], { ...setup.env, DATA_DIR: dataDir }, '/readyz', {
    timeoutMs: EMBEDDED_START_TIMEOUT_MS,
  });
  let clients: ClientRun;
  try {
    const credential = await prepare(server, setup);
    log(`embedded database, 1 process: ${CLIENTS} clients, limit ${LIMIT}, ${seconds} s...`);
    clients = await drive([server], credential, seconds);
    logRun(clients, 'embedded, 1 process');
  } finally {
    await server.stop();
  }
  // The folder is the server's no longer: open it here, count, then measure the baseline on it.
  return withPglite(dataDir, async (query) => {
    const l = await ledger(query);
    // A PGlite just opened runs its WebAssembly unoptimised for a while (V8 tiers it up as it
    // runs): a long warm-up first, which also warms the inserts that follow.
    const decisions = await decisionsAlone(query, PGLITE_WARMUP_MS);
    const inserts = await insertRates(query, seconds);
    log(`embedded: INSERT … RETURNING through PGlite in this process, ${inserts.perSecond.toFixed(0)}/s at ${CLIENTS} callers, ${inserts.serialPerSecond.toFixed(0)}/s at 1`);
    log(`embedded: the claim and release functions alone, one caller: ${decisions.toFixed(0)} calls/s`);
    return { run: { ...clients, database: 'embedded (PGlite)', processes: 1, ledger: l, decisionsAlone: decisions, mismatches: mismatches(clients.total, l) }, inserts };
  });
}

async function postgresRun(setup: Setup, databases: Databases, processes: number, seconds: number, insertsBefore: boolean): Promise<{ run: Run; url: string; inserts?: InsertRate }> {
  const url = await databases.create();
  const env = { ...setup.env, DATABASE_URL: url };
  const servers: ServerProcess[] = [];
  try {
    // One at a time: the first applies the migrations.
    for (let i = 1; i <= processes; i++) servers.push(await startServer(`entgate (capacities, PostgreSQL ${i}/${processes})`, ['src/cli/entgate-dev.js', 'serve'], env, '/readyz'));
    const credential = await prepare(servers[0]!, setup);
    let inserts: InsertRate | undefined;
    if (insertsBefore) {
      inserts = await withPgPool(url, (query) => insertRates(query, seconds));
      log(`PostgreSQL: INSERT … RETURNING from a pg pool of ${CLIENTS}, ${inserts.perSecond.toFixed(0)}/s (1 caller: ${inserts.serialPerSecond.toFixed(0)}/s)`);
    }
    log(`PostgreSQL, ${processes} process(es): ${CLIENTS} clients, limit ${LIMIT}, ${seconds} s...`);
    const clients = await drive(servers, credential, seconds, { adminUrl: databases.adminUrl, database: new URL(url).pathname.slice(1) });
    logRun(clients, `PostgreSQL, ${processes} process(es)`);
    for (const s of servers) {
      if (s.exited()) clients.unexpected[`${s.name} exited`] = 1;
    }
    const { l, decisions } = await withClient(url, async (c) => {
      const query: Query = async (sql, params) => (await c.query(sql, params)).rows;
      return { l: await ledger(query), decisions: await decisionsAlone(query, 500) };
    });
    log(`PostgreSQL: the claim and release functions alone, one caller: ${decisions.toFixed(0)} calls/s`);
    return { run: { ...clients, database: 'PostgreSQL', processes, ledger: l, decisionsAlone: decisions, mismatches: mismatches(clients.total, l) }, url, ...(inserts && { inserts }) };
  } finally {
    for (const s of servers) await s.stop();
  }
}

export async function capacityScenarios(seconds: number, adminUrl: string): Promise<CapacityBenchResult> {
  const databases = new Databases(adminUrl);
  const setup = await setUp();
  const load0 = loadavg();
  const started = Date.now();
  try {
    const embedded = await embeddedRun(setup, seconds);
    const one = await postgresRun(setup, databases, 1, seconds, true);
    const three = await postgresRun(setup, databases, 3, seconds, false);
    // The baseline again, after the entgate runs (their servers stopped), on the last run's database: both pooled.
    const after = await withPgPool(three.url, (query) => insertRates(query, seconds));
    log(`PostgreSQL: INSERT … RETURNING again after the runs, ${after.perSecond.toFixed(0)}/s (1 caller: ${after.serialPerSecond.toFixed(0)}/s)`);
    const before = one.inserts!;
    const pgInserts: InsertRate = { perSecond: (before.perSecond + after.perSecond) / 2, serialPerSecond: (before.serialPerSecond + after.serialPerSecond) / 2 };
    const runs = [embedded.run, one.run, three.run];
    const markdown = render(runs, [embedded.inserts, pgInserts, pgInserts], { before, after }, { load0, load1: loadavg(), seconds, took: (Date.now() - started) / 1000 });
    const valid = runs.every((r) => Object.keys(r.unexpected).length === 0 && r.mismatches.length === 0 && r.measured.granted > 0 && r.measured.refused > 0);
    return { runs, markdown, valid };
  } finally {
    await databases.dropAll();
    rmSync(setup.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the report

const int = (v: number) => Math.round(v).toLocaleString('en');
/** Answers slower than the histogram's last bucket (2 s) show as "> 2000". */
const ms = (v: number) => (v >= 1999.99 ? '> 2000' : v.toFixed(1));
const ms2 = (h: LatencyHistogram) => `${ms(h.percentile(50))} / ${ms(h.percentile(99))}`;

function verdict(r: Run): string {
  const problems = [...Object.entries(r.unexpected).map(([k, n]) => `${n}× ${k}`), ...r.mismatches];
  if (r.measured.granted === 0 || r.measured.refused === 0) problems.push(r.measured.granted === 0 ? 'no claim granted' : 'no claim refused');
  if (problems.length > 0) return `INVALID (${problems.join('; ').replaceAll('|', '/').slice(0, 300)})`;
  return r.ledger.overGrants === 0 && r.ledger.overInUse === 0 && r.ledger.maxHeld <= LIMIT ? 'PASS' : 'FAIL';
}

function render(
  runs: Run[],
  inserts: InsertRate[],
  pg: { before: InsertRate; after: InsertRate },
  m: { load0: number[]; load1: number[]; seconds: number; took: number },
): string {
  const load = (l: number[]) => l.map((v) => v.toFixed(2)).join(' / ');
  const L: string[] = [
    `Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (${Math.round(m.took)} s in all), load average ${load(m.load0)} at the start and ${load(m.load1)} at the end. ` +
      `${CLIENTS} clients, each looping: claim \`${CAPACITY}\` for a random id of ${int(USER_IDS)} (\`POST /v1/capacities/${CAPACITY}/claims {"id"}\`), then release it (\`DELETE …/claims/<id>\`); ` +
      `a refused claim (409 \`capacity_exceeded\`: the licence allows ${LIMIT}) draws another id at once. ${m.seconds} s measured after a ${WARMUP_SECONDS} s warm-up.`,
    '',
    '| database | entgate processes | claims granted/s | refused/s | releases/s | claim p50 / p99 ms | refusal p50 / p99 ms | release p50 / p99 ms | INSERT … RETURNING/s (50 callers) | granted ÷ inserts | requests ÷ inserts |',
    '|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|',
  ];
  runs.forEach((r, i) => {
    const per = (n: number) => n / r.seconds;
    const requests = per(r.measured.granted + r.measured.existing + r.measured.refused + r.measured.released + r.measured.notHeld);
    L.push(
      `| ${r.database} | ${r.processes} | ${int(per(r.measured.granted))} | ${int(per(r.measured.refused))} | ${int(per(r.measured.released))} | ${ms2(r.claim)} | ${ms2(r.refusal)} | ${ms2(r.release)} | ` +
        `${int(inserts[i]!.perSecond)} | ${(per(r.measured.granted) / inserts[i]!.perSecond).toFixed(3)} | ${(requests / inserts[i]!.perSecond).toFixed(3)} |`,
    );
  });
  L.push(
    '',
    `Over-grants, counted in the database after each run: the most claims held at one instant from the claims' own times (\`capacity_claims\`, \`claimed_at\` to \`released_at\`, releases first on ties), ` +
      `and the most in use that a claim recorded (\`licence_events.in_use\`), against the limit of ${LIMIT}; then every answer of the run (warm-up included) against its rows.`,
    '',
    '| database | entgate processes | claims (rows) | refusals (events) | most held at once | most in use recorded | over-grants (timeline / events) | answers = rows | result |',
    '|---|---:|---:|---:|---|---|---:|---|---|',
  );
  for (const r of runs) {
    const l = r.ledger;
    L.push(
      `| ${r.database} | ${r.processes} | ${int(l.claims)} | ${int(l.refusedEvents)} | ${l.maxHeld} of ${LIMIT} | ${l.maxInUse} of ${LIMIT} | ${l.overGrants} / ${l.overInUse} | ` +
        `${r.mismatches.length === 0 ? 'yes' : r.mismatches.join('; ')} | ${verdict(r)} |`,
    );
  }
  L.push('');
  for (const r of runs) {
    const cycles = r.measured.granted + r.measured.existing;
    const requests = r.measured.granted + r.measured.existing + r.measured.refused + r.measured.released + r.measured.notHeld;
    const perRequest = (s: number) => ((s / requests) * 1e6).toFixed(0);
    const cores = (r.cpu.entgate + (r.cpu.postgres ?? 0) + r.cpu.clients) / r.seconds;
    L.push(
      `- ${r.database}, ${r.processes} process${r.processes > 1 ? 'es' : ''} (1-minute load average ${r.load.toFixed(1)} at its start): ` +
        `${int(requests / r.seconds)} requests/s, each one call of the claim or release function under the capacity's row lock; ` +
        `those functions alone, called one after the other from here after the run, take ${int(r.decisionsAlone)} calls/s (${(1000 / r.decisionsAlone).toFixed(2)} ms each): ` +
        `at that pace the run's calls would fill ${Math.round(((requests / r.seconds) * 100) / r.decisionsAlone)}% of its time. ` +
        `Successive decisions ${r.ledger.gapMs.toFixed(1)} ms apart (median, \`licence_events\`)` +
        `${r.lockWaiters !== null ? `; ${r.lockWaiters.toFixed(1)} of the database's backends waiting on a lock and ${r.active!.toFixed(1)} active, on average (sampled every ${LOCK_SAMPLE_MS} ms)` : ''}. ` +
        `CPU per request: ${perRequest(r.cpu.entgate)} µs in entgate${r.processes > 1 ? ' (its processes together)' : ''}` +
        `${r.cpu.postgres !== null ? `, ${perRequest(r.cpu.postgres)} µs in its PostgreSQL backends` : ' (PGlite included)'}, ${perRequest(r.cpu.clients)} µs in the clients: ` +
        `${cores.toFixed(2)} of the ${cpus().length} cores busy with these. ` +
        `${int(cycles)} claims held${r.measured.existing ? ` (${r.measured.existing} of them answered 200: another client held the same id)` : ''}, ${int(r.measured.refused)} refused.`,
    );
  }
  L.push(
    `- INSERT … RETURNING on PostgreSQL: ${int(pg.before.perSecond)}/s before the entgate runs, ${int(pg.after.perSecond)}/s after (the table uses their mean); ` +
      `one caller alone, each insert its own commit: ${int(pg.before.serialPerSecond)}/s and ${int(pg.after.serialPerSecond)}/s. ` +
      `Embedded: ${int(inserts[0]!.perSecond)}/s at 50 callers, ${int(inserts[0]!.serialPerSecond)}/s at one (PGlite has one connection: callers queue in this process).`,
  );
  return L.join('\n');
}

/** Seconds measured per run: BENCH_CAPACITIES_DURATION, 1 to 60 (default 8: the whole scenario then takes 1 to 2 minutes). */
export function capacitiesDuration(): number {
  const raw = process.env.BENCH_CAPACITIES_DURATION;
  if (raw === undefined || raw === '') return 8;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 1 || n > 60) throw new Error('BENCH_CAPACITIES_DURATION must be a number from 1 to 60');
  return n;
}

runStandalone(import.meta.url, (_seconds, adminUrl) => capacityScenarios(capacitiesDuration(), adminUrl));
