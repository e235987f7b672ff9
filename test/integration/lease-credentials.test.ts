import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { serviceFixture, startTestService, recordingLogger, AUTH, ADMIN_TOKEN } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';
import * as leaseCredentials from '../../migrations/20261210000000_lease_credentials.ts';

const BUDGET = { ENTGATE_GUESS_BUDGET: '5', ENTGATE_GUESS_WINDOW_SECONDS: '60', ENTGATE_GUESS_COOLDOWN_SECONDS: '60', ENTGATE_GUESS_SYNC_MS: '100' };
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

for (const target of databaseTargets) {
  describe(`lease credentials and guessing on ${target.name}`, () => {
    const fixture = serviceFixture({ ...BUDGET, ENTGATE_LEASE_TIDY_SECONDS: '3600' }, target);
    const api = () => request(fixture.svc.server);
    const clientToken = async (name: string, scopes = ['leases:client']) => {
      const res = await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name, scopes });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.token as string;
    };

    it('counts unknown virtual keys at /v1/leases against the guessing budget, refuses a blocked caller before the lookup and records both', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real-entitlement' }).expect(201);
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'right-key-0001', maxConcurrentLeases: 5 }).expect(201);
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await api().post('/v1/leases').send({ virtualKey: `wrong-key-${i}`, clientId: 'guesser' });
        answers.push(`${res.status} ${res.body.code}`);
      }
      // Past the budget even the right key is refused, with the very answer an unknown key gets.
      const blocked = await api().post('/v1/leases').send({ virtualKey: 'right-key-0001', clientId: 'guesser' });
      answers.push(`${blocked.status} ${blocked.body.code}`);
      assert.deepEqual(answers, Array(6).fill('403 not_entitled'));
      assert.equal(blocked.body.message, 'this virtual key holds no floating leases');
      // The same budget as the rUS check: that address is refused there too.
      await api().get('/?server=rm.example.com;key=right-key-0001;remote_ip=127.0.0.1').expect(404);
      await api().get('/?server=rm.example.com;key=right-key-0001;remote_ip=198.51.100.1').expect(200);

      await fixture.svc.events.flush();
      const rows = (await fixture.svc.db.knex('check_events').where({ resolver: 'lease-endpoint' }).orderBy('id').select('reason', 'remote_ip', 'decision')) as {
        reason: string;
        remote_ip: string;
        decision: string;
      }[];
      assert.deepEqual(
        rows.map((r) => `${r.decision} ${r.reason} ${r.remote_ip}`),
        [...Array(5).fill('denied unknown_key 127.0.0.1'), 'denied guess_budget_exceeded 127.0.0.1'],
      );
      const blocks = await api().get('/admin/v1/guess-blocks').set(AUTH).expect(200);
      assert.ok(JSON.stringify(blocks.body).includes('127.0.0.1'), JSON.stringify(blocks.body));
    });

    it('refuses a pool to a caller without a credential unless the pool is anonymous', async () => {
      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'closed', seats: 3 }).expect(201);
      const res = await api().post('/v1/leases').send({ pool: 'closed', clientId: 'intruder', ttlSeconds: 3600 });
      assert.deepEqual([res.status, res.body.code], [401, 'client_credential_required']);
      assert.equal(Number((await fixture.svc.db.knex('leases').count({ n: '*' }))[0]!.n), 0);

      const open = await api().post('/admin/v1/pools').set(AUTH).send({ name: 'open', seats: 1, anonymous: true }).expect(201);
      assert.equal(open.body.anonymous, true);
      const lease = await api().post('/v1/leases').send({ pool: 'open', clientId: 'anyone' }).expect(201);
      await api().post(`/v1/leases/${lease.body.leaseId}/heartbeat`).send({}).expect(200);
      await api().delete(`/v1/leases/${lease.body.leaseId}`).expect(204);
      assert.equal((await api().get('/admin/v1/pools/closed').set(AUTH)).body.anonymous, false);
      await api().patch('/admin/v1/pools/open').set(AUTH).send({ anonymous: false }).expect(200);
      assert.equal((await api().post('/v1/leases').send({ pool: 'open', clientId: 'anyone' })).status, 401);
      const both = await api().post('/admin/v1/pools').set(AUTH).send({ name: 'both', seats: 1, anonymous: true, requireSignedRequests: true });
      assert.deepEqual([both.status, both.body.code], [400, 'invalid_request']);
    });

    it('binds a lease to the client token that acquired it: heartbeat, release and re-acquire need the same token', async () => {
      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'tokened', seats: 2 }).expect(201);
      const alice = await clientToken('client-alice');
      const mallory = await clientToken('client-mallory');
      const reader = await clientToken('reader-only', ['read']);
      const lease = await api().post('/v1/leases').set(bearer(alice)).send({ pool: 'tokened', clientId: 'ws-1' }).expect(201);
      const id = lease.body.leaseId as string;
      const codes = async (headers: Record<string, string>) => {
        const hb = await api().post(`/v1/leases/${id}/heartbeat`).set(headers).send({});
        const rel = await api().delete(`/v1/leases/${id}`).set(headers);
        return [`${hb.status} ${hb.body.code}`, `${rel.status} ${rel.body.code}`];
      };
      assert.deepEqual(await codes({}), ['401 client_credential_required', '401 client_credential_required']);
      assert.deepEqual(await codes(bearer(mallory)), ['403 not_lease_holder', '403 not_lease_holder']);
      assert.deepEqual(await codes(bearer('egt_' + 'x'.repeat(43))), ['401 unauthorized', '401 unauthorized']);
      // The same clientId under another token neither renews nor learns the lease.
      const twin = await api().post('/v1/leases').set(bearer(mallory)).send({ pool: 'tokened', clientId: 'ws-1' });
      assert.deepEqual([twin.status, twin.body.code, twin.body.leaseId], [409, 'client_id_in_use', undefined]);
      const scope = await api().post('/v1/leases').set(bearer(reader)).send({ pool: 'tokened', clientId: 'ws-2' });
      assert.deepEqual([scope.status, scope.body.code], [403, 'insufficient_scope']);
      // A client token opens no admin route.
      await api().get('/admin/v1/pools').set(bearer(alice)).expect(403);

      await api().post(`/v1/leases/${id}/heartbeat`).set(bearer(alice)).send({}).expect(200);
      assert.equal((await api().post('/v1/leases').set(bearer(alice)).send({ pool: 'tokened', clientId: 'ws-1' })).status, 200);
      await api().delete(`/v1/leases/${id}`).set(bearer(alice)).expect(204);
      // A revoked client token holds nothing any more.
      const again = await api().post('/v1/leases').set(bearer(alice)).send({ pool: 'tokened', clientId: 'ws-1' }).expect(201);
      await api().delete('/admin/v1/admin-tokens/client-alice').set(AUTH).expect(204);
      assert.equal((await api().post(`/v1/leases/${again.body.leaseId}/heartbeat`).set(bearer(alice)).send({})).status, 401);
    });

    it('accepts the Bearer scheme in any case (RFC 7235), for admin and client tokens', async () => {
      await api().get('/admin/v1/pools').set({ Authorization: `bearer ${ADMIN_TOKEN}` }).expect(200);
      await api().get('/admin/v1/pools').set({ Authorization: `BEARER ${ADMIN_TOKEN}` }).expect(200);
      const token = await clientToken('client-lower');
      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'lower', seats: 1 }).expect(201);
      await api().post('/v1/leases').set({ Authorization: `bearer ${token}` }).send({ pool: 'lower', clientId: 'c' }).expect(201);
    });
  });

  describe(`virtual-key lease holders on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    const api = () => request(svc.server);
    before(async () => {
      db = await target.create();
      svc = await startTestService(db, { ENTGATE_LEASE_TIDY_SECONDS: '3600' });
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it("renews and releases a virtual key's lease only with that key", async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'vk.example.com', key: 'vk-entitlement' }).expect(201);
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'seat-key-0001', maxConcurrentLeases: 1 }).expect(201);
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'other-key-001', maxConcurrentLeases: 1 }).expect(201);
      const lease = await api().post('/v1/leases').send({ virtualKey: 'seat-key-0001', clientId: 'ws' }).expect(201);
      const id = lease.body.leaseId as string;
      const hb = (body: object) => api().post(`/v1/leases/${id}/heartbeat`).send(body);
      assert.deepEqual([(await hb({})).status, (await hb({})).body.code], [401, 'client_credential_required']);
      assert.deepEqual([(await hb({ virtualKey: 'other-key-001' })).status, (await hb({ virtualKey: 'other-key-001' })).body.code], [403, 'not_lease_holder']);
      await hb({ virtualKey: 'seat-key-0001' }).expect(200);
      await api().delete(`/v1/leases/${id}`).send({}).expect(401);
      await api().delete(`/v1/leases/${id}`).send({ virtualKey: 'seat-key-0001' }).expect(204);
    });

    it('keeps pools made before the migration working as explicitly anonymous, and warns about them at start', async () => {
      const knex = svc.db.knex;
      // The schema as it was: no anonymous pools, no credentials.
      await leaseCredentials.down(knex);
      await knex('lease_pools').insert({ name: 'legacy', seats: 2, default_ttl_seconds: 60, max_ttl_seconds: 600, heartbeat_interval_seconds: 20, require_signed: false });
      await knex('lease_pools').insert({ name: 'legacy-signed', seats: 2, default_ttl_seconds: 60, max_ttl_seconds: 600, heartbeat_interval_seconds: 20, require_signed: true });
      await leaseCredentials.up(knex);
      const pools = (await api().get('/admin/v1/pools').set(AUTH)).body.items as { name: string; anonymous: boolean }[];
      assert.deepEqual(
        pools.filter((p) => p.name.startsWith('legacy')).map((p) => [p.name, p.anonymous]),
        [
          ['legacy', true],
          ['legacy-signed', false],
        ],
      );
      await api().post('/v1/leases').send({ pool: 'legacy', clientId: 'old-client' }).expect(201);

      await svc.close();
      const { logger, lines } = recordingLogger();
      svc = await startTestService(db, {}, logger);
      const warning = lines().find((l) => l.msg.includes('anonymous')) as { msg: string; pools?: string[] } | undefined;
      assert.deepEqual(warning?.pools, ['legacy']);
    });
  });
}
