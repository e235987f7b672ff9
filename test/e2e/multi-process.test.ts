import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { startServerProcess, type ServerProcess } from '../helpers/process.ts';

const pgTarget = databaseTargets.find((t) => t.name === 'postgres');

async function admin(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: { id: number } }> {
  const res = await fetch(`${url}/admin/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as { id: number } };
}

/** Polls until the check answers `status`; returns how long that took, or fails after `limitMs`. */
async function waitForStatus(url: string, key: string, status: number, limitMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const res = await fetch(`${url}/?server=rm.example.com;key=${key}`);
    if (res.status === status) return Date.now() - started;
    if (Date.now() - started > limitMs) assert.fail(`still ${res.status} after ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('two entgate processes on one PostgreSQL', { skip: pgTarget ? false : 'TEST_DATABASE_URL is not set' }, () => {
  let db: TestDatabase;
  let a: ServerProcess;
  let b: ServerProcess;
  let entitlementId: number;

  before(async () => {
    db = await pgTarget!.create();
    const env = {
      ...db.env,
      ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
      ENTGATE_CACHE_TTL_SECONDS: '60',
      ENTGATE_GUESS_BUDGET: '6',
      ENTGATE_GUESS_COOLDOWN_SECONDS: '3',
      ENTGATE_GUESS_SYNC_MS: '100',
    };
    a = await startServerProcess(env);
    b = await startServerProcess(env);
    entitlementId = (await admin(a.url, 'POST', '/entitlements', { server: 'rm.example.com', key: 'REAL' })).body.id;
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  it('a key revoked through one is denied by the other within 1 s, though it had it cached', async () => {
    const vk = await admin(a.url, 'POST', '/virtual-keys', { entitlementId, key: 'shared-key' });
    assert.equal(vk.status, 201);
    await waitForStatus(b.url, 'shared-key', 200, 1000); // cached in b for 60 s from now
    assert.equal((await admin(a.url, 'PATCH', `/virtual-keys/${vk.body.id}`, { status: 'revoked' })).status, 200);
    const took = await waitForStatus(b.url, 'shared-key', 404, 1000);
    assert.ok(took < 1000);
  });

  it('after its listening connection is cut, a process clears its caches when it reconnects', async () => {
    const vk = await admin(a.url, 'POST', '/virtual-keys', { entitlementId, key: 'cut-key' });
    await waitForStatus(b.url, 'cut-key', 200, 1000);
    const client = new pg.Client({ connectionString: db.env.DATABASE_URL });
    await client.connect();
    try {
      const listeners = "from pg_stat_activity where datname = current_database() and query ilike 'listen %' and pid <> pg_backend_pid()";
      for (let i = 0; i < 40 && Number((await client.query(`select count(*) as n ${listeners}`)).rows[0].n) < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const cut = await client.query(`select pg_terminate_backend(pid) ${listeners}`);
      assert.equal(cut.rowCount, 2, 'both listeners were cut');
    } finally {
      await client.end();
    }
    // Revoked while b cannot hear it: b must not keep granting for the 60 s of its cache.
    assert.equal((await admin(a.url, 'PATCH', `/virtual-keys/${vk.body.id}`, { status: 'revoked' })).status, 200);
    await waitForStatus(b.url, 'cut-key', 404, 5000);
    // And the channel works again afterwards.
    const again = await admin(a.url, 'POST', '/virtual-keys', { entitlementId, key: 'after-key' });
    await waitForStatus(b.url, 'after-key', 200, 1000);
    assert.equal((await admin(a.url, 'PATCH', `/virtual-keys/${again.body.id}`, { status: 'suspended' })).status, 200);
    assert.ok((await waitForStatus(b.url, 'after-key', 404, 1000)) < 1000);
  });

  it('shares guessing budgets: misses on both add up, both refuse, both lift the block', async () => {
    await admin(a.url, 'POST', '/virtual-keys', { entitlementId, key: 'budget-good-key' });
    const at = (url: string, key: string) => fetch(`${url}/?server=rm.example.com;key=${key};remote_ip=203.0.113.50`).then((r) => r.status);
    const refusedOn = async (url: string, limitMs: number) => {
      const started = Date.now();
      while ((await at(url, 'budget-good-key')) !== 404) {
        if (Date.now() - started > limitMs) return false;
        await new Promise((r) => setTimeout(r, 25));
      }
      return true;
    };
    // Three misses on each: neither process alone reaches the budget of six.
    for (let i = 0; i < 3; i++) assert.equal(await at(a.url, `miss-a-${i}`), 404);
    for (let i = 0; i < 3; i++) assert.equal(await at(b.url, `miss-b-${i}`), 404);
    assert.ok(await refusedOn(a.url, 2000), 'a refuses within 2 s');
    assert.ok(await refusedOn(b.url, 2000), 'b refuses within 2 s');
    // Another address is served as usual.
    const other = await fetch(`${b.url}/?server=rm.example.com;key=budget-good-key;remote_ip=203.0.113.51`);
    assert.equal(other.status, 200);
    // Lifted through a: b serves the address again within a second (the invalidation channel).
    const lifted = await fetch(`${a.url}/admin/v1/guess-blocks/203.0.113.50`, { method: 'DELETE', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(lifted.status, 204);
    const started = Date.now();
    while ((await at(b.url, 'budget-good-key')) !== 200) {
      assert.ok(Date.now() - started < 1000, 'b still refuses 1 s after the block was lifted');
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(await at(a.url, 'budget-good-key'), 200);
  });
});
