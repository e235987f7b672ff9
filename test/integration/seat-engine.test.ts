import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { rawToken, writeKeys } from '../helpers/ses.ts';
import type { RunningService } from '../../src/service.ts';

const LATEST = '9999-09-09.99.99';
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const LIMITS = { default_ttl_seconds: 300, max_ttl_seconds: 604_800, heartbeat_interval_seconds: 100 };

/** SES and the /v1 lease protocol take seats through one engine; a pool's kind, a column, says whose seats they are. */
for (const target of databaseTargets) {
  describe(`one seat engine for SES and /v1 leases on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    let keys: ReturnType<typeof writeKeys>;
    let clientToken: string;
    const api = () => request(svc.server);
    const token = (app: string) => rawToken({ app, sign: { key: keys.rsaSign.privateKey, alg: 'RS512' }, encrypt: { key: keys.rsaEnc.publicKey } });
    const sesAcquire = async (applicationId: string) =>
      api()
        .post(`/softwareEntitlements?api-version=${LATEST}`)
        .set('Content-Type', 'application/json')
        .send(JSON.stringify({ token: await token(applicationId), applicationId, duration: 'PT10M' }));
    const v1Acquire = (pool: string, clientId: string) => api().post('/v1/leases').set(bearer(clientToken)).send({ pool, clientId });
    const kindOf = async (name: string) =>
      (await svc.db.knex('lease_pools').where({ name }).first('kind', 'ses_application', 'virtual_key_id')) as Record<string, unknown> | undefined;

    before(async () => {
      keys = writeKeys(tempDir());
      db = await target.create();
      svc = await startTestService(db, {
        ENTGATE_SES_SIGNING_KEYS: keys.signingFiles.join(','),
        ENTGATE_SES_DECRYPTION_KEYS: keys.decryptionFiles.join(','),
        ENTGATE_SES_REQUIRE_ENCRYPTED: 'false',
        ENTGATE_LEASE_TIDY_SECONDS: '3600',
      });
      const made = await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'seat-client', scopes: ['leases:client'] });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      clientToken = made.body.token;
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it("counts SES acquires against the seats an admin set on the application's pool, which /v1 clients cannot take", async () => {
      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'ses-sharedapp', seats: 2 }).expect(201);
      assert.deepEqual(await kindOf('ses-sharedapp'), { kind: 'ses_application', ses_application: 'sharedapp', virtual_key_id: null });

      const first = await sesAcquire('SharedApp');
      assert.equal(first.status, 200, JSON.stringify(first.body));
      // A client token holds named pools' seats, not an application's: refused before any seat is counted.
      const byName = await v1Acquire('ses-sharedapp', 'intruder');
      assert.deepEqual([byName.status, byName.body.code], [403, 'not_entitled']);
      assert.equal((await sesAcquire('SharedApp')).status, 200);
      const third = await sesAcquire('SharedApp');
      assert.deepEqual([third.status, third.body.code], [403, 'EntitlementDenied']);

      const pool = (await api().get('/admin/v1/pools/ses-sharedapp').set(AUTH)).body;
      assert.deepEqual([pool.seats, pool.inUse, pool.leases[0].leaseId], [2, 2, first.body.entitlementId]);
      const events = (await api().get('/admin/v1/lease-events?pool=ses-sharedapp').set(AUTH)).body.items as { type: string; reason: string | null; clientId: string }[];
      assert.deepEqual(
        events.map((e) => `${e.type}${e.reason ? `:${e.reason}` : ''}`).reverse(),
        ['acquired', 'acquired', 'denied:no_seat_available'],
        'the /v1 refusal took no seat and left no event',
      );

      // The admin's seats apply to the next SES acquire; the pool stays the application's.
      await api().patch('/admin/v1/pools/ses-sharedapp').set(AUTH).send({ seats: 3 }).expect(200);
      assert.equal((await sesAcquire('SharedApp')).status, 200);
      const anonymous = await api().patch('/admin/v1/pools/ses-sharedapp').set(AUTH).send({ anonymous: true });
      assert.deepEqual([anonymous.status, anonymous.body.code], [400, 'invalid_request']);
      assert.equal((await api().post('/admin/v1/pools').set(AUTH).send({ name: 'ses-other', seats: 1, anonymous: true })).status, 400);
    });

    it('makes an application pool on first use as data: kind and application, the name only shown', async () => {
      assert.equal((await sesAcquire('FirstUseApp')).status, 200);
      assert.deepEqual(await kindOf('ses-firstuseapp'), { kind: 'ses_application', ses_application: 'firstuseapp', virtual_key_id: null });
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'seat-real' });
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'seat-key-0001', maxConcurrentLeases: 1 });
      assert.equal((await api().post('/v1/leases').send({ virtualKey: 'seat-key-0001', clientId: 'ws' })).status, 201);
      assert.deepEqual(await kindOf(`vk-${vk.body.id}`), { kind: 'virtual_key', ses_application: null, virtual_key_id: vk.body.id });
    });

    it('decides by the kind column, not by the name', async () => {
      const knex = svc.db.knex;
      // An application's pool whose name does not say so (made in SQL: the API names them ses-<application>).
      await knex('lease_pools').insert({ name: 'renamed-app', kind: 'ses_application', ses_application: 'renamedapp', seats: 1, ...LIMITS });
      const granted = await sesAcquire('RenamedApp');
      assert.equal(granted.status, 200, JSON.stringify(granted.body));
      assert.equal((await sesAcquire('RenamedApp')).status, 403, 'its one seat is taken');
      assert.equal(await kindOf('ses-renamedapp'), undefined, 'found by its application, not made again by name');
      assert.equal((await api().get('/admin/v1/pools/renamed-app').set(AUTH)).body.inUse, 1);
      const byName = await v1Acquire('renamed-app', 'intruder');
      assert.deepEqual([byName.status, byName.body.code], [403, 'not_entitled']);

      // A named pool whose name merely looks like an application's (again only in SQL) is an ordinary named pool.
      await knex('lease_pools').insert({ name: 'ses-lookalike', kind: 'named', seats: 1, ...LIMITS });
      const named = await v1Acquire('ses-lookalike', 'a');
      assert.deepEqual([named.status, named.body.pool], [201, 'ses-lookalike']);
      const full = await v1Acquire('ses-lookalike', 'b');
      assert.deepEqual([full.status, full.body.code, full.headers['retry-after'] !== undefined], [409, 'no_seat_available', true]);
    });

    it("renews and releases through SES only the leases of applications' pools", async () => {
      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'plain', seats: 1 }).expect(201);
      const lease = (await v1Acquire('plain', 'one')).body;
      const renew = await api()
        .post(`/softwareEntitlements/${lease.leaseId}?api-version=${LATEST}`)
        .set('Content-Type', 'application/json')
        .send(JSON.stringify({ duration: 'PT1M' }));
      assert.deepEqual([renew.status, renew.body.code], [404, 'NotFound']);
      const release = await api().delete(`/softwareEntitlements/${lease.leaseId}?api-version=${LATEST}`);
      assert.deepEqual([release.status, release.body.code], [404, 'NotFound']);
      assert.equal((await api().get('/admin/v1/pools/plain').set(AUTH)).body.inUse, 1, 'the /v1 lease is still live');

      const entitlement = (await sesAcquire('RenewApp')).body.entitlementId as string;
      const renewed = await api()
        .post(`/softwareEntitlements/${entitlement}?api-version=${LATEST}`)
        .set('Content-Type', 'application/json')
        .send(JSON.stringify({ duration: 'PT1M' }));
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      await api().delete(`/softwareEntitlements/${entitlement}?api-version=${LATEST}`).expect(204);
      const again = await api().delete(`/softwareEntitlements/${entitlement}?api-version=${LATEST}`);
      assert.equal(again.status, 204, 'releasing a released entitlement is still 204, as before');
      const late = await api()
        .post(`/softwareEntitlements/${entitlement}?api-version=${LATEST}`)
        .set('Content-Type', 'application/json')
        .send(JSON.stringify({ duration: 'PT1M' }));
      assert.deepEqual([late.status, late.body.code], [409, 'AlreadyReleased']);
    });
  });
}
