import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { startServerProcess, type ServerProcess } from '../helpers/process.ts';
import { issueLicence } from '../../src/domain/licence.ts';

/**
 * The licence's limits hold across processes: three `entgate serve` on one PostgreSQL, 60
 * clients claiming and releasing an `assigned:` and a `concurrent:` capacity on all three,
 * one process killed with SIGKILL in the middle. What was granted is read back from the
 * database, not from the answers.
 */
const pgTarget = databaseTargets.find((t) => t.name === 'postgres');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const USERS = 5; // assigned:users
const CALLS = 4; // concurrent:calls
const CALL_TTL = 3;
const ASSIGNED_CLIENTS = 40;
const CONCURRENT_CLIENTS = 20;
/** Clients that hold a call through the process that is killed, heartbeating it until then: they die with it. */
const LOYAL_CLIENTS = 2;
const RUN_MS = 9000;
const KILL_AT_MS = 3500;

/** Half-open intervals [start, end): the most that overlap at any instant. */
function maxOverlap(intervals: readonly (readonly [number, number])[]): number {
  const points = intervals.flatMap(([s, e]) => [[s, 1] as const, [e, -1] as const]);
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // at one instant, an end before a start
  let now = 0;
  let most = 0;
  for (const [, d] of points) most = Math.max(most, (now += d));
  return most;
}

interface Tally {
  statuses: Map<string, number>;
  /** Claim ids answered 201 (new), and 200 (held already). */
  created: Map<string, Set<string>>;
  existing: Map<string, Set<string>>;
  /** Requests to the killed process that got no answer. */
  unanswered: number;
  /** concurrent: claims held through the killed process when it died, never released. */
  abandoned: { claimId: string; entity: string }[];
  /** concurrent: claims whose release got no answer at the kill: released, or abandoned. */
  uncertain: { claimId: string; entity: string }[];
}

describe('capacities across three entgate processes on one PostgreSQL, one killed', { skip: pgTarget ? false : 'TEST_DATABASE_URL is not set' }, () => {
  let db: TestDatabase;
  let servers: ServerProcess[] = [];
  let dir: string;
  let sql: pg.Client;

  before(async () => {
    db = await pgTarget!.create();
    dir = tempDir('entgate-capacities-');
    const vendor = generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'vendor.pem'), vendor.publicKey.export({ type: 'spki', format: 'pem' }));
    const env = { ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN, ENTGATE_LEASE_TIDY_SECONDS: '1', ENTGATE_LICENCE_PUBLIC_KEYS: join(dir, 'vendor.pem') };
    servers = [await startServerProcess(env)];
    servers.push(...(await Promise.all([startServerProcess(env), startServerProcess(env)])));
    const licence = await issueLicence(
      { tenant: 'acme', capacities: { 'assigned:users': USERS, 'concurrent:calls': CALLS }, expiresAt: new Date(Date.now() + 86_400_000) },
      vendor.privateKey,
    );
    const installed = await fetch(`${servers[0]!.url}/admin/v1/licence`, { method: 'PUT', headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'text/plain' }, body: licence });
    assert.equal(installed.status, 201, await installed.text());
    sql = new pg.Client({ connectionString: db.env.DATABASE_URL });
    await sql.connect();
  });
  after(async () => {
    await sql?.end();
    await Promise.all(servers.map((s) => s.stop()));
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('never holds more than the licence allows, answers no grant the database lacks, and frees the dead clients\' calls at expiry', async (t) => {
    const made = await fetch(`${servers[0]!.url}/admin/v1/admin-tokens`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'user-service', scopes: ['capacities'] }),
    });
    const auth = { Authorization: `Bearer ${((await made.json()) as { token: string }).token}`, 'Content-Type': 'application/json' };
    const victim = servers[2]!;
    let killedAt = 0;
    const alive = () => servers.filter((s) => s !== victim || killedAt === 0);
    const tally: Tally = { statuses: new Map(), created: new Map(), existing: new Map(), unanswered: 0, abandoned: [], uncertain: [] };
    const note = (capacity: string, status: number, claimId?: string) => {
      const key = `${capacity} ${status}`;
      tally.statuses.set(key, (tally.statuses.get(key) ?? 0) + 1);
      if (claimId && (status === 201 || status === 200)) {
        const into = status === 201 ? tally.created : tally.existing;
        if (!into.has(capacity)) into.set(capacity, new Set());
        into.get(capacity)!.add(claimId);
      }
    };
    /** One request; undefined when the process died under it (or was dead). */
    const send = async (server: ServerProcess, method: string, path: string, body?: unknown) => {
      try {
        const res = await fetch(`${server.url}${path}`, { method, headers: auth, ...(body !== undefined && { body: JSON.stringify(body) }) });
        const text = await res.text();
        return { status: res.status, body: text ? (JSON.parse(text) as { claimId?: string; code?: string }) : {} };
      } catch (err) {
        if (server !== victim) throw err;
        tally.unanswered++;
        return undefined;
      }
    };
    const started = Date.now();
    const running = () => Date.now() - started < RUN_MS;
    const serverOf = (k: number) => {
      const list = alive();
      return list[k % list.length]!;
    };

    // assigned:users: pairs of clients share a user; a request lost with the killed process is sent again elsewhere (claims and releases are idempotent).
    const assignedClient = async (k: number) => {
      const user = `user-${k % (ASSIGNED_CLIENTS / 2)}`;
      const path = `/v1/capacities/assigned:users/claims`;
      const retried = async (method: string, p: string, body?: unknown) => {
        for (;;) {
          const res = await send(serverOf(k), method, p, body);
          if (res) return res;
        }
      };
      while (running()) {
        const got = await retried('POST', path, { id: user });
        note('assigned:users', got.status, got.body.claimId);
        if (got.status === 201 || got.status === 200) {
          await sleep(Math.random() * 40);
          const released = await retried('DELETE', `${path}/${user}`);
          note('assigned:users', released.status);
        } else {
          assert.equal(got.status, 409, JSON.stringify(got.body));
          await sleep(5 + Math.random() * 15);
        }
      }
    };

    // concurrent:calls: a new call id each time; calls held through the killed process are abandoned with their clients.
    const concurrentClient = async (k: number) => {
      const path = `/v1/capacities/concurrent:calls/claims`;
      for (let n = 0; running(); n++) {
        const server = serverOf(k);
        const call = `call-${k}-${n}`;
        const got = await send(server, 'POST', path, { id: call, ttlSeconds: CALL_TTL });
        if (!got) continue; // unknown: if granted, it lapses at its TTL
        note('concurrent:calls', got.status, got.body.claimId);
        if (got.status !== 201) {
          assert.equal(got.status, 409, JSON.stringify(got.body));
          await sleep(5 + Math.random() * 15);
          continue;
        }
        await sleep(50 + Math.random() * 150);
        if (n % 3 === 0) {
          const beat = await send(server, 'POST', `${path}/${call}/heartbeat`, {});
          if (!beat) {
            tally.abandoned.push({ claimId: got.body.claimId!, entity: call });
            continue;
          }
          note('concurrent:calls heartbeat', beat.status);
          await sleep(50);
        }
        const released = await send(server, 'DELETE', `${path}/${call}`);
        // No answer: the release may have committed before the process died, or not.
        if (!released) tally.uncertain.push({ claimId: got.body.claimId!, entity: call });
        else note('concurrent:calls release', released.status);
      }
    };

    // Loyal clients talk to the victim only and hold their call (heartbeats) until it dies with them.
    const holding = new Set<number>();
    const loyalClient = async (k: number) => {
      const path = `/v1/capacities/concurrent:calls/claims`;
      let held: { claimId: string; entity: string } | undefined;
      for (let n = 0; ; n++) {
        if (!held) {
          const call = `loyal-${k}-${n}`;
          const got = await send(victim, 'POST', path, { id: call, ttlSeconds: CALL_TTL });
          if (!got) return;
          note('concurrent:calls', got.status, got.body.claimId);
          if (got.status === 201) held = { claimId: got.body.claimId!, entity: call };
          else await sleep(10);
        } else {
          holding.add(k);
          await sleep(300);
          const beat = await send(victim, 'POST', `${path}/${held.entity}/heartbeat`, {});
          if (!beat) {
            tally.abandoned.push(held);
            return;
          }
          note('concurrent:calls heartbeat', beat.status);
          if (beat.status !== 200) {
            holding.delete(k);
            held = undefined; // lapsed under load: claim anew
          }
        }
      }
    };
    const killer = (async () => {
      await sleep(KILL_AT_MS);
      // Killed while the loyal clients hold their calls (they may need a moment to get a seat).
      for (let i = 0; holding.size < LOYAL_CLIENTS && i < 200; i++) await sleep(25);
      killedAt = Date.now();
      await victim.stop('SIGKILL');
    })();
    await Promise.all([
      ...Array.from({ length: ASSIGNED_CLIENTS }, (_, k) => assignedClient(k)),
      ...Array.from({ length: CONCURRENT_CLIENTS }, (_, k) => concurrentClient(k)),
      ...Array.from({ length: LOYAL_CLIENTS }, (_, k) => loyalClient(k)),
      killer,
    ]);
    t.diagnostic(`answers: ${JSON.stringify(Object.fromEntries([...tally.statuses].sort()))}; unanswered at the kill: ${tally.unanswered}; calls abandoned: ${tally.abandoned.length}`);
    assert.ok(killedAt > 0);
    assert.equal(victim.child.signalCode, 'SIGKILL');

    // ---- assigned:users, from the database
    const micros = (column: string) => `(extract(epoch from ${column}) * 1000000)::bigint`;
    const claims = (
      await sql.query<{ id: string; s: string; e: string | null }>(
        `select id, ${micros('claimed_at')} as s, ${micros('released_at')} as e from capacity_claims where capacity = 'assigned:users'`,
      )
    ).rows;
    const mostUsers = maxOverlap(claims.map((c) => [Number(c.s), c.e === null ? Number.MAX_SAFE_INTEGER : Number(c.e)] as const));
    assert.ok(mostUsers <= USERS, `${mostUsers} assigned:users claims held at once; the licence allows ${USERS}`);
    assert.equal(mostUsers, USERS, 'the run reached the limit');
    const userIds = new Set(claims.map((c) => c.id));
    const createdUsers = tally.created.get('assigned:users') ?? new Set();
    for (const id of createdUsers) assert.ok(userIds.has(id), `claim ${id} was answered 201 but is not in the database`);
    for (const id of tally.existing.get('assigned:users') ?? []) assert.ok(userIds.has(id), `claim ${id} was answered 200 but is not in the database`);
    const unseenUsers = claims.length - createdUsers.size;
    assert.ok(unseenUsers >= 0 && unseenUsers <= tally.unanswered, `${unseenUsers} claims in the database were never answered 201 (${tally.unanswered} requests lost)`);

    // The licence events replay to the same use: in id order, each claim adds one, each release takes one, a refusal is at the limit.
    const events = (
      await sql.query<{ type: string; in_use: number | null; capacity_limit: number | null; entity_id: string }>(
        `select type, in_use, capacity_limit, entity_id from licence_events where capacity = 'assigned:users' order by id`,
      )
    ).rows;
    let inUse = 0;
    for (const [i, e] of events.entries()) {
      if (e.type === 'claimed') inUse++;
      else if (e.type === 'released') inUse--;
      else assert.deepEqual([e.type, e.in_use], ['refused', USERS], `event ${i}`);
      assert.equal(e.in_use, inUse, `event ${i} (${e.type} ${e.entity_id}) says ${e.in_use} in use; the events before it make ${inUse}`);
      assert.equal(e.capacity_limit, USERS);
      assert.ok(inUse >= 0 && inUse <= USERS, `event ${i}: ${inUse} in use`);
    }
    assert.equal(events.filter((e) => e.type === 'claimed').length, claims.length, 'every claim is recorded');
    assert.equal(events.filter((e) => e.type === 'released').length, claims.filter((c) => c.e !== null).length, 'every release is recorded');

    // ---- concurrent:calls, from the database: a lease is held from its acquisition to its release or expiry.
    const leases = (
      await sql.query<{ id: string; client_id: string; s: string; e: string; released: boolean }>(
        `select l.id, l.client_id, ${micros('l.acquired_at')} as s, ${micros('least(l.released_at, l.expires_at)')} as e, l.released_at is not null as released
           from leases l join lease_pools p on p.id = l.pool_id where p.licence_capacity = 'concurrent:calls'`,
      )
    ).rows;
    const mostCalls = maxOverlap(leases.map((l) => [Number(l.s), Number(l.e)] as const));
    assert.ok(mostCalls <= CALLS, `${mostCalls} concurrent:calls held at once; the licence allows ${CALLS}`);
    assert.equal(mostCalls, CALLS, 'the run reached the limit');
    const leaseIds = new Set(leases.map((l) => l.id));
    const createdCalls = tally.created.get('concurrent:calls') ?? new Set();
    for (const id of createdCalls) assert.ok(leaseIds.has(id), `call ${id} was answered 201 but is not in the database`);
    const unseenCalls = leases.length - createdCalls.size;
    assert.ok(unseenCalls >= 0 && unseenCalls <= tally.unanswered, `${unseenCalls} calls in the database were never answered 201`);
    const callEvents = (
      await sql.query<{ type: string; in_use: number | null }>(`select type, in_use from licence_events where capacity = 'concurrent:calls' and type in ('claimed', 'refused')`)
    ).rows;
    assert.ok(callEvents.every((e) => e.in_use !== null && e.in_use <= CALLS && (e.type === 'claimed' ? e.in_use >= 1 : e.in_use === CALLS)));
    assert.equal(callEvents.filter((e) => e.type === 'claimed').length, leases.length, 'every call is recorded');

    // ---- the calls abandoned with the killed process lapse at their TTL, are recorded as expired, and their seats come back.
    assert.ok(tally.abandoned.length >= 1, 'calls were held through the killed process when it died');
    const byId = new Map(leases.map((l) => [l.id, l]));
    for (const a of tally.abandoned) {
      const lease = byId.get(a.claimId)!;
      assert.equal(lease.released, false, `abandoned call ${a.entity} was released`);
      assert.ok(Number(lease.e) <= (killedAt + CALL_TTL * 1000 + 1000) * 1000, `abandoned call ${a.entity} outlived its TTL`);
    }
    for (const u of tally.uncertain) {
      const lease = byId.get(u.claimId)!;
      assert.ok(lease.released || Number(lease.e) <= (killedAt + CALL_TTL * 1000 + 1000) * 1000, `call ${u.entity}, its release unanswered, outlived its TTL`);
    }
    const lastExpiry = Math.max(0, ...leases.filter((l) => !l.released).map((l) => Number(l.e) / 1000));
    await sleep(Math.max(0, lastExpiry - Date.now() + 100));
    const fresh = await Promise.all(
      Array.from({ length: CALLS + 1 }, (_, i) => send(alive()[i % 2]!, 'POST', '/v1/capacities/concurrent:calls/claims', { id: `after-${i}`, ttlSeconds: 30 })),
    );
    assert.deepEqual(fresh.map((r) => r!.status).sort(), [...Array<number>(CALLS).fill(201), 409]);
    const unreleased = leases.filter((l) => !l.released).map((l) => l.id);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const recorded = (await sql.query<{ n: number }>(`select count(*)::int as n from licence_events where capacity = 'concurrent:calls' and type = 'expired'`)).rows[0]!.n;
      if (recorded === unreleased.length) break;
      assert.ok(recorded < unreleased.length && Date.now() < deadline, `${recorded} expiries recorded for ${unreleased.length} lapsed calls`);
      await sleep(200);
    }
    t.diagnostic(
      `assigned:users: ${claims.length} claims, at most ${mostUsers} held at once (limit ${USERS}), ${unseenUsers} never answered 201; ` +
        `concurrent:calls: ${leases.length} calls, at most ${mostCalls} at once (limit ${CALLS}), ${unseenCalls} never answered 201, ` +
        `${unreleased.length} lapsed (${tally.abandoned.length} abandoned with the killed process)`,
    );
  });
});
