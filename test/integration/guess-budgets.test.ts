import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';
import { guessSubject } from '../../src/domain/guess-guard.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BUDGET = { ENTGATE_GUESS_BUDGET: '5', ENTGATE_GUESS_WINDOW_SECONDS: '60', ENTGATE_GUESS_COOLDOWN_SECONDS: '2', ENTGATE_GUESS_SYNC_MS: '100', ENTGATE_GUESS_DELAY_MS: '200' };
const SERVER = 'rm.example.com';

async function seed(svc: RunningService, keys: Record<string, 'active' | 'revoked'>): Promise<void> {
  const ent = await request(svc.server).post('/admin/v1/entitlements').set(AUTH).send({ server: SERVER, key: 'real-entitlement' }).expect(201);
  for (const [key, status] of Object.entries(keys)) {
    const vk = await request(svc.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key }).expect(201);
    if (status === 'revoked') await request(svc.server).patch(`/admin/v1/virtual-keys/${vk.body.id}`).set(AUTH).send({ status: 'revoked' }).expect(200);
  }
}

const check = (svc: RunningService, key: string, remoteIp?: string) =>
  request(svc.server).get(`/?server=${SERVER};key=${key}${remoteIp === undefined ? '' : `;remote_ip=${remoteIp}`}`);

/** Polls until `ok` holds, for at most `ms`. */
async function eventually(ok: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ok()) return true;
    await sleep(50);
  }
  return ok();
}

for (const target of databaseTargets) {
  describe(`guessing budgets on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    before(async () => {
      db = await target.create();
      svc = await startTestService(db, BUDGET);
      await seed(svc, { 'good-key-0001': 'active', 'revoked-key-01': 'revoked' });
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('blocks an address past its budget without asking the resolvers, and only that address', async () => {
      for (let i = 0; i < 5; i++) await check(svc, `guess-${i}`, '203.0.113.7').expect(404);
      const calls = svc.chain.getStats().resolverCalls;
      const misses = svc.cache.misses;
      const blocked = await check(svc, 'good-key-0001', '203.0.113.7');
      assert.equal(blocked.status, 404, 'even a valid key is refused while cooling down');
      await check(svc, 'guess-new', '203.0.113.7').expect(404);
      assert.equal(svc.chain.getStats().resolverCalls, calls, 'no resolver was asked');
      assert.equal(svc.cache.misses, misses, 'no key was looked up');
      await check(svc, 'good-key-0001', '203.0.113.8').expect(200);

      await svc.events.flush();
      const events = (await request(svc.server).get('/admin/v1/audit?limit=3').set(AUTH)).body.items as { reason: string; remoteIp: string }[];
      assert.deepEqual(
        events.map((e) => [e.reason, e.remoteIp]),
        [
          [null, '203.0.113.8'],
          ['guess_budget_exceeded', '203.0.113.7'],
          ['guess_budget_exceeded', '203.0.113.7'],
        ],
      );
      const metrics = (await request(svc.server).get('/metrics')).text;
      assert.match(metrics, /entgate_checks_total\{decision="denied",reason="guess_budget_exceeded"\} 2\n/);
      assert.match(metrics, /entgate_guess_blocks_total [1-9]/);
      assert.match(metrics, /entgate_guess_blocked_addresses [1-9]/);

      // The block is shared: it is in the database, listed through the admin API.
      const listed = await eventually(async () => {
        const items = (await request(svc.server).get('/admin/v1/guess-blocks').set(AUTH).expect(200)).body.items as { subject: string; failures: number }[];
        return items.some((b) => b.subject === '203.0.113.7' && b.failures >= 5);
      });
      assert.ok(listed, 'the block is listed');
    });

    it('ends the block after the cool-down', async () => {
      for (let i = 0; i < 5; i++) await check(svc, `cool-${i}`, '198.51.100.20').expect(404);
      await check(svc, 'good-key-0001', '198.51.100.20').expect(404);
      await sleep(2200);
      await check(svc, 'good-key-0001', '198.51.100.20').expect(200);
    });

    it('counts neither grants nor known keys refused for another reason', async () => {
      for (let i = 0; i < 20; i++) await check(svc, 'good-key-0001', '192.0.2.50').expect(200);
      for (let i = 0; i < 20; i++) await check(svc, 'revoked-key-01', '192.0.2.50').expect(404);
      for (let i = 0; i < 4; i++) await check(svc, `miss-${i}`, '192.0.2.50').expect(404);
      await check(svc, 'good-key-0001', '192.0.2.50').expect(200);
      await check(svc, 'miss-4', '192.0.2.50').expect(404);
      await check(svc, 'good-key-0001', '192.0.2.50').expect(404);
    });

    it('counts an IPv6 /64 as one address', async () => {
      for (let i = 0; i < 5; i++) await check(svc, `v6-${i}`, `2001:db8:aa:bb::${i + 1}`).expect(404);
      await check(svc, 'good-key-0001', '2001:db8:aa:bb:ffff::9').expect(404);
      await check(svc, 'good-key-0001', '2001:db8:aa:bc::1').expect(200);
    });

    it('never refuses a valid key through a rUS host that sends no remote_ip: past its budget, its unknown keys are held instead', async () => {
      const delayed = async () => Number(/entgate_guess_delayed_answers_total (\d+)/.exec((await request(svc.server).get('/metrics')).text)?.[1]);
      const before = await delayed();
      // Thirty-odd unknown keys from one client behind an older repository (no remote_ip)...
      for (let i = 0; i < 8; i++) await check(svc, `nohost-${i}`).expect(404);
      // ...and every other customer behind it is still granted, at once.
      for (let i = 0; i < 3; i++) await check(svc, 'good-key-0001').expect(200);
      await check(svc, 'good-key-0001', '192.0.2.99').expect(200);
      assert.ok((await delayed()) - before >= 8 - 5, 'the unknown keys past the budget were held');
      await svc.events.flush();
      const reasons = (await svc.db.knex('check_events').whereNull('remote_ip').orderBy('id', 'desc').limit(4).select('reason')).map((e) => e.reason);
      assert.deepEqual(reasons, [null, null, null, 'unknown_key'], 'recorded as what they were, never guess_budget_exceeded');
    });

    it('lifts a block through the admin API at once; refuses bad subjects and needs the write scope', async () => {
      for (let i = 0; i < 5; i++) await check(svc, `lift-${i}`, '198.51.100.77').expect(404);
      await check(svc, 'good-key-0001', '198.51.100.77').expect(404);
      await eventually(async () => (await request(svc.server).get('/admin/v1/guess-blocks').set(AUTH)).body.items.some((b: { subject: string }) => b.subject === '198.51.100.77'));
      const reader = (await request(svc.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'block-reader', scopes: ['read'] }).expect(201)).body.token;
      await request(svc.server).delete('/admin/v1/guess-blocks/198.51.100.77').set({ Authorization: `Bearer ${reader}` }).expect(403);
      await request(svc.server).delete('/admin/v1/guess-blocks/198.51.100.77').set(AUTH).expect(204);
      await check(svc, 'good-key-0001', '198.51.100.77').expect(200);
      await request(svc.server).delete('/admin/v1/guess-blocks/198.51.100.77').set(AUTH).expect(404);
      const bad = await request(svc.server).delete(`/admin/v1/guess-blocks/${encodeURIComponent('robert; drop table')}`).set(AUTH);
      assert.equal(bad.status, 400);
      assert.equal(bad.body.code, 'invalid_request');
      await request(svc.server).delete(`/admin/v1/guess-blocks/${encodeURIComponent('caller 127.0.0.1')}`).set(AUTH).expect(204);
      await check(svc, 'good-key-0001').expect(200);
    });
  });
}

describe('guessing budgets turned off', () => {
  it('never blocks with ENTGATE_GUESS_BUDGET=0', async () => {
    const db = await databaseTargets[0]!.create();
    const svc = await startTestService(db, { ...BUDGET, ENTGATE_GUESS_BUDGET: '0' });
    try {
      await seed(svc, { 'good-key-0001': 'active' });
      for (let i = 0; i < 40; i++) await check(svc, `x-${i}`, '203.0.113.1').expect(404);
      await check(svc, 'good-key-0001', '203.0.113.1').expect(200);
    } finally {
      await svc.close();
      await db.drop();
    }
  });
});

describe('guessSubject', () => {
  it('takes IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64, and the caller without remote_ip', () => {
    assert.equal(guessSubject('203.0.113.9', '10.0.0.1'), '203.0.113.9');
    assert.equal(guessSubject('::ffff:203.0.113.9', '10.0.0.1'), '203.0.113.9');
    assert.equal(guessSubject('2001:db8:0:1:2:3:4:5', null), '2001:db8:0:1::/64');
    assert.equal(guessSubject('2001:DB8:0:1::', null), '2001:db8:0:1::/64');
    assert.equal(guessSubject(undefined, '10.0.0.1'), 'caller 10.0.0.1');
    assert.equal(guessSubject(undefined, null), undefined);
  });
});

if (databaseTargets.some((t) => t.name === 'postgres')) {
  describe('guessing budgets across two processes on one PostgreSQL', () => {
    it('adds failures seen by both instances, blocks on both, and lifts on both', async () => {
      const db = await databaseTargets.find((t) => t.name === 'postgres')!.create();
      // A long cool-down: the block must not lapse by itself while a loaded machine waits for a
      // sync, and lifting it below must be the lift, not the clock.
      const settings = { ...BUDGET, ENTGATE_GUESS_COOLDOWN_SECONDS: '120' };
      const a = await startTestService(db, settings);
      const b = await startTestService(db, settings);
      try {
        await seed(a, { 'good-key-0001': 'active' });
        // Three on one, three on the other: neither reaches 5 alone.
        for (let i = 0; i < 3; i++) await check(a, `a-${i}`, '203.0.113.200').expect(404);
        for (let i = 0; i < 3; i++) await check(b, `b-${i}`, '203.0.113.200').expect(404);
        const blockedOn = async (svc: RunningService) => (await check(svc, 'good-key-0001', '203.0.113.200')).status === 404;
        // Instances share their counts every ENTGATE_GUESS_SYNC_MS: each blocks within a few syncs, not at once.
        assert.ok(await eventually(() => blockedOn(a)), 'blocked on a');
        assert.ok(await eventually(() => blockedOn(b)), 'blocked on b');
        await check(a, 'good-key-0001', '203.0.113.201').expect(200);

        await request(b.server).delete('/admin/v1/guess-blocks/203.0.113.200').set(AUTH).expect(204);
        assert.ok(await eventually(async () => !(await blockedOn(a)), 2000), 'lifted on a within 2 s');
        await check(b, 'good-key-0001', '203.0.113.200').expect(200);
      } finally {
        await a.close();
        await b.close();
        await db.drop();
      }
    });
  });
}
