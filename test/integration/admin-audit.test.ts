import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets } from '../helpers/databases.ts';
import { serviceFixture, AUTH } from '../helpers/service.ts';

/** The admin audit: a write is acknowledged only once it is recorded; no value can erase it. */
for (const target of databaseTargets) {
  describe(`admin audit on ${target.name}`, () => {
    const fixture = serviceFixture({}, target);
    const api = () => request(fixture.svc.server);
    const knex = () => fixture.svc.db.knex;
    const adminEvents = async () => (await knex()('admin_events').orderBy('id').select('method', 'route', 'target', 'status')) as Record<string, unknown>[];

    it('when a write cannot be recorded, then it is refused with 503 and Retry-After and does not take effect', async () => {
      await knex().raw('alter table admin_events rename to admin_events_away');
      try {
        const res = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'refused.example.com', key: 'k-refused' });
        assert.equal(res.status, 503, JSON.stringify(res.body));
        assert.equal(res.body.code, 'audit_unavailable');
        assert.ok(Number(res.headers['retry-after']) > 0);
        assert.equal((await knex()('entitlements').where('server_pattern', 'refused.example.com')).length, 0);
        // Reads are not writes: they are answered.
        await api().get('/admin/v1/entitlements').set(AUTH).expect(200);
      } finally {
        await knex().raw('alter table admin_events_away rename to admin_events');
      }
      // The refusal itself is recorded once the table is back (its batch was retried, not dropped).
      const deadline = Date.now() + 30_000;
      while (!(await adminEvents()).some((e) => e.status === 503) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual((await adminEvents()).filter((e) => e.status === 503), [{ method: 'POST', route: '/admin/v1/entitlements', target: null, status: 503 }]);
    });

    it("when an admin's writes include a NUL byte, then every write is recorded once, the NUL as U+FFFD", async () => {
      await knex()('admin_events').delete();
      const created = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'audited.example.com', key: 'k-audited' }).expect(201);
      const nul = await api().delete('/admin/v1/products/%00').set(AUTH);
      assert.ok(nul.status < 500, `${nul.status} ${JSON.stringify(nul.body)}`);
      await api().delete(`/admin/v1/entitlements/${created.body.id}`).set(AUTH).expect(204);
      const deadline = Date.now() + 30_000;
      let rows = await adminEvents();
      // Each write's row is claimed before it runs (status 102); its outcome follows through the queue.
      while ((rows.length < 3 || rows.some((r) => r.status === 102)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        rows = await adminEvents();
      }
      assert.deepEqual(rows, [
        { method: 'POST', route: '/admin/v1/entitlements', target: `id=${created.body.id}`, status: 201 },
        { method: 'DELETE', route: '/admin/v1/products/:code', target: 'code=\ufffd', status: nul.status },
        { method: 'DELETE', route: '/admin/v1/entitlements/:id', target: `id=${created.body.id}`, status: 204 },
      ]);
    });
  });
}
