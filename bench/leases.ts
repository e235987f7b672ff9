/**
 * The floating-lease scenarios of `npm run bench` (also runnable alone:
 * `node --import tsx bench/leases.ts`): acquire+release cycles per second on one pool with 50
 * concurrent clients, on one entgate process and on three sharing one PostgreSQL database; the
 * over-grant count measured in the database afterwards (must be 0); and, in the same run on
 * the same server, the database's own limit: a plain `INSERT … RETURNING` from 50 clients.
 */
import { randomBytes } from 'node:crypto';
import { Agent } from 'node:http';
import pg from 'pg';
import { Databases, insertsPerSecond, SCRATCH_TABLE, withClient } from './lib/database.ts';
import { LatencyHistogram } from './lib/load.ts';
import { startServer, type ServerProcess } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';
import { httpText } from './lib/http.ts';

const CLIENTS = 50;
const SEATS = 10;
const POOL = 'bench';
/** Statements one cycle costs (read off src/leases): acquire 9 (pool read; BEGIN, lock, clock, own lease, count, insert, event, COMMIT), release 6 (lease and pool read; BEGIN, update, event, COMMIT). */
const STATEMENTS_PER_CYCLE = 15;

interface CycleRun {
  processes: number;
  seconds: number;
  cycles: number;
  refused: number;
  acquire: LatencyHistogram;
  release: LatencyHistogram;
  unexpected: Record<string, number>;
  maxLive: number;
  overGrants: number;
}

export interface LeaseBenchResult {
  runs: CycleRun[];
  insertsPerSecond: number;
  markdown: string;
  valid: boolean;
}

function call(agent: Agent, base: URL, method: string, path: string, body?: string): Promise<{ status: number; text: string }> {
  const headers = body === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
  return httpText({ agent, host: base.hostname, port: base.port, method, path, headers }, body);
}

async function cycles(servers: ServerProcess[], seconds: number, warmupSeconds: number): Promise<Omit<CycleRun, 'maxLive' | 'overGrants' | 'processes'>> {
  const agents = servers.map(() => new Agent({ keepAlive: true, maxSockets: CLIENTS }));
  const bases = servers.map((s) => new URL(s.url));
  const acquire = new LatencyHistogram();
  const release = new LatencyHistogram();
  const unexpected: Record<string, number> = {};
  let measuring = false;
  let done = 0;
  let refused = 0;
  const startAt = Date.now() + warmupSeconds * 1000;
  const endAt = startAt + seconds * 1000;
  let measuredFrom = 0n;
  const client = async (i: number) => {
    const agent = agents[i % servers.length]!;
    const base = bases[i % servers.length]!;
    const body = JSON.stringify({ pool: POOL, clientId: `client-${i}`, ttlSeconds: 60 });
    while (Date.now() < endAt) {
      if (!measuring && Date.now() >= startAt) {
        measuring = true;
        measuredFrom = process.hrtime.bigint();
      }
      let t = process.hrtime.bigint();
      const a = await call(agent, base, 'POST', '/v1/leases', body);
      if (measuring) acquire.record(Number(process.hrtime.bigint() - t) / 1e6);
      if (a.status === 409) {
        if (measuring) refused++;
        continue;
      }
      if (a.status !== 201) {
        unexpected[`acquire ${a.status}`] = (unexpected[`acquire ${a.status}`] ?? 0) + 1;
        continue;
      }
      const { leaseId } = JSON.parse(a.text) as { leaseId: string };
      t = process.hrtime.bigint();
      const r = await call(agent, base, 'DELETE', `/v1/leases/${leaseId}`);
      if (measuring) release.record(Number(process.hrtime.bigint() - t) / 1e6);
      if (r.status !== 204) unexpected[`release ${r.status}`] = (unexpected[`release ${r.status}`] ?? 0) + 1;
      else if (measuring) done++;
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
  const measured = Number(process.hrtime.bigint() - measuredFrom) / 1e9;
  for (const a of agents) a.destroy();
  return { seconds: measured, cycles: done, refused, acquire, release, unexpected };
}

/** The most leases of the pool live at one instant, from the database: [acquired_at, end), ends first on ties. */
async function overGrants(url: string): Promise<{ maxLive: number; overGrants: number }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query(
      `with pool as (select id from lease_pools where name = $1),
            ev as (select acquired_at as t, 1 as d from leases where pool_id = (select id from pool)
                   union all
                   select coalesce(released_at, expires_at), -1 from leases where pool_id = (select id from pool)),
            running as (select sum(d) over (order by t, d rows unbounded preceding) as live from ev)
       select coalesce(max(live), 0)::int as max_live, count(*) filter (where live > $2)::int as over from running`,
      [POOL, SEATS],
    );
    return { maxLive: rows[0].max_live as number, overGrants: rows[0].over as number };
  });
}

/** The database's own limit: one INSERT … RETURNING per request, 50 at a time, from this process. */
async function insertLimit(url: string, seconds: number): Promise<number> {
  await withClient(url, (c) => c.query(SCRATCH_TABLE));
  const pool = new pg.Pool({ connectionString: url, max: CLIENTS });
  try {
    return await insertsPerSecond(async (sql, params) => (await pool.query(sql, params)).rows, CLIENTS, seconds);
  } finally {
    await pool.end();
  }
}

export async function leaseScenarios(seconds: number, adminUrl: string): Promise<LeaseBenchResult> {
  const databases = new Databases(adminUrl);
  const token = randomBytes(16).toString('hex');
  const runs: CycleRun[] = [];
  try {
    let insertsPerSecond = 0;
    for (const processes of [1, 3]) {
      const url = await databases.create();
      const env = { DATABASE_URL: url, DATA_DIR: '/nonexistent', LOG_LEVEL: 'warn', ENTGATE_ADMIN_TOKEN: token, DATABASE_POOL_MAX: '20' };
      const servers: ServerProcess[] = [];
      try {
        servers.push(await startServer(`entgate (leases 1/${processes})`, ['src/cli/entgate-dev.js', 'serve'], env, '/readyz'));
        for (let i = 2; i <= processes; i++) {
          servers.push(await startServer(`entgate (leases ${i}/${processes})`, ['src/cli/entgate-dev.js', 'serve'], env, '/readyz'));
        }
        const created = await fetch(`${servers[0]!.url}/admin/v1/pools`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ name: POOL, seats: SEATS, defaultTtlSeconds: 60, anonymous: true }), // seats, not credentials, are measured
        });
        if (created.status !== 201) throw new Error(`creating the pool answered ${created.status}`);
        process.stdout.write(`leases: ${processes} process(es), ${CLIENTS} clients, ${SEATS} seats, ${seconds} s...\n`);
        const run = await cycles(servers, seconds, 2);
        runs.push({ processes, ...run, ...(await overGrants(url)) });
        if (processes === 1) insertsPerSecond = await insertLimit(url, seconds);
      } finally {
        for (const s of servers) await s.stop();
      }
    }

    const valid = runs.every((r) => Object.keys(r.unexpected).length === 0 && r.cycles > 0);
    const rows = runs.map((r) => {
      const rate = r.cycles / r.seconds;
      const result = Object.keys(r.unexpected).length > 0 ? `INVALID (${JSON.stringify(r.unexpected)})` : r.overGrants === 0 && r.maxLive <= SEATS ? 'PASS' : 'FAIL';
      return (
        `| ${r.processes} | ${rate.toFixed(0)} | ${(r.refused / r.seconds).toFixed(0)} | ${r.acquire.percentile(50).toFixed(2)} / ${r.acquire.percentile(99).toFixed(2)} | ` +
        `${r.release.percentile(50).toFixed(2)} / ${r.release.percentile(99).toFixed(2)} | ${r.maxLive} of ${SEATS} | ${r.overGrants} | ${(rate / insertsPerSecond).toFixed(3)} | ${result} |`
      );
    });
    const markdown = [
      `Floating leases: ${CLIENTS} clients, each looping acquire (\`POST /v1/leases\`, its own clientId) then release (\`DELETE\`); a refused acquire (409, the pool has ${SEATS} seats) is retried at once. Over-grants are counted afterwards in the database: instants at which more leases of the pool were live (from \`acquired_at\` to release or expiry) than it has seats. The database's own limit is a plain \`INSERT … RETURNING\` from ${CLIENTS} clients (\`pg\` pool of ${CLIENTS}) on the same server in the same run: **${insertsPerSecond.toFixed(0)} inserts/s**. A cycle is ${STATEMENTS_PER_CYCLE} statements, acquires on one pool queue on its row lock.`,
      '',
      '| entgate processes | cycles/s | refused/s | acquire p50 / p99 ms | release p50 / p99 ms | most live at once | over-grants | cycles ÷ inserts | result |',
      '|---:|---:|---:|---|---|---|---:|---:|---|',
      ...rows,
      '',
    ].join('\n');
    return { runs, insertsPerSecond, markdown, valid };
  } finally {
    await databases.dropAll();
  }
}

runStandalone(import.meta.url, leaseScenarios);
