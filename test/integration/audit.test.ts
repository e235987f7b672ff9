import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets } from '../helpers/databases.ts';
import { serviceFixture, AUTH } from '../helpers/service.ts';
import { AuditRepo } from '../../src/store/audit.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const target of databaseTargets) {
  describe(`audit on ${target.name}`, () => {
    const fixture = serviceFixture({}, target);
    const api = () => request(fixture.svc.server);
    const audit = (query = '') => api().get(`/admin/v1/audit${query}`).set(AUTH);

    it('pages newest first by cursor, filters, and follows from an id', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real' });
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'audited-key' }).expect(201);
      for (let i = 0; i < 5; i++) await api().get('/?server=rm.example.com;key=audited-key').expect(200);
      for (let i = 0; i < 3; i++) await api().get(`/?server=other.example.com;key=nope-${i}`).expect(404);
      await api().get('/?key=x').expect(400);
      for (let i = 0; i < 100 && (await audit('?limit=1000')).body.items.length < 9; i++) await sleep(20);

      const first = await audit('?limit=4');
      assert.equal(first.status, 200);
      assert.equal(first.body.items.length, 4);
      const ids = first.body.items.map((e: { id: number }) => e.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
      const second = await audit(`?limit=4&cursor=${first.body.nextCursor}`);
      assert.ok(second.body.items.every((e: { id: number }) => e.id < first.body.nextCursor));
      const all = (await audit('?limit=1000')).body;
      assert.equal(all.items.length, 9);
      assert.equal(all.nextCursor, null);

      const granted = (await audit('?decision=granted&keyHint=au')).body.items;
      assert.equal(granted.length, 5);
      assert.ok(granted.every((e: { decision: string; keyHint: string; server: string }) => e.decision === 'granted' && e.keyHint === 'au…' && e.server === 'rm.example.com'));
      assert.equal((await audit('?server=other.example.com')).body.items.length, 3);
      assert.equal((await audit('?decision=invalid')).body.items[0].reason, 'parameter server is required');
      assert.equal((await audit('?since=2999-01-01')).body.items.length, 0);
      assert.equal((await audit('?until=2000-01-01')).body.items.length, 0);

      const oldest = all.items[all.items.length - 1].id;
      const after = (await audit(`?after=${oldest}&limit=3`)).body.items.map((e: { id: number }) => e.id);
      assert.deepEqual(after, [oldest + 1, oldest + 2, oldest + 3].filter((id) => all.items.some((e: { id: number }) => e.id === id)));
      assert.ok(!JSON.stringify(all).includes('audited-key'), 'never the key itself');
    });

    it('refuses bad queries with 400, and answers only with the admin token', async () => {
      for (const q of ['?limit=0', '?limit=1001', '?decision=maybe', '?since=yesterday', '?cursor=abc', '?cursor=5&after=3', '?bogus=1']) {
        const res = await audit(q);
        assert.equal(res.status, 400, q);
      }
      assert.equal((await api().get('/admin/v1/audit')).status, 401);
    });

    it('purges events older than the retention, in batches, and keeps the rest', async () => {
      const knex = fixture.svc.db.knex;
      await knex.raw(
        `insert into check_events (occurred_at, decision, latency_us)
         select clock_timestamp() - make_interval(days => 100), 'denied', 1 from generate_series(1, 25)`,
      );
      await knex.raw(
        `insert into lease_events (occurred_at, type, pool) select clock_timestamp() - make_interval(days => 100), 'denied', 'p' from generate_series(1, 3)`,
      );
      const before = Number((await knex('check_events').count({ n: '*' }))[0]!.n);
      const purged = await new AuditRepo(knex).purge(90, 10);
      assert.equal(purged, 28);
      assert.equal(Number((await knex('check_events').count({ n: '*' }))[0]!.n), before - 25);
      assert.equal(await new AuditRepo(knex).purge(90, 10), 0);
    });
  });
}
