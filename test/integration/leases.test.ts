import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import * as openpgp from 'openpgp';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';
import { signRequest } from '../../src/lib/signed-request.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function newKeyPair(name: string) {
  const { privateKey, publicKey } = await openpgp.generateKey({ userIDs: [{ name }], format: 'armored' });
  return { privateKey: await openpgp.readPrivateKey({ armoredKey: privateKey }), publicKey };
}

for (const target of databaseTargets) {
  describe(`floating leases on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    const api = () => request(svc.server);
    const count = async (table: string) => Number((await svc.db.knex(table).count({ n: '*' }))[0]!.n);
    const acquire = (body: object, headers: Record<string, string> = {}) => api().post('/v1/leases').set(headers).send(body);
    // Anonymous unless signed (or an SES pool): these tests are about seats, not credentials (see lease-credentials.test.ts).
    const createPool = async (body: { name: string; seats: number; requireSignedRequests?: boolean; [field: string]: unknown }) => {
      const anonymous = !body.requireSignedRequests && !body.name.startsWith('ses-');
      const res = await api().post('/admin/v1/pools').set(AUTH).send({ ...(anonymous && { anonymous }), ...body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body;
    };
    const eventsOf = async (leaseId: string) =>
      ((await api().get(`/admin/v1/lease-events?leaseId=${leaseId}`).set(AUTH)).body.items as { type: string; reason: string | null }[])
        .map((e) => `${e.type}${e.reason ? `:${e.reason}` : ''}`)
        .reverse();

    before(async () => {
      db = await target.create();
      svc = await startTestService(db, { ENTGATE_LEASE_TIDY_SECONDS: '3600' });
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('grants seats up to the limit, then answers 409 with seats, in use and when to retry', async () => {
      await createPool({ name: 'cad', seats: 2, defaultTtlSeconds: 60 });
      const a = await acquire({ pool: 'cad', clientId: 'host-a', metadata: { pid: 1 } });
      assert.equal(a.status, 201);
      assert.match(a.body.leaseId, /^[0-9a-f-]{36}$/);
      assert.deepEqual([a.body.pool, a.body.clientId, a.body.ttlSeconds, a.body.heartbeatIntervalSeconds, a.body.metadata], ['cad', 'host-a', 60, 20, { pid: 1 }]);
      const expiresIn = Date.parse(a.body.expiresAt) - Date.now();
      assert.ok(expiresIn > 55_000 && expiresIn <= 61_000, String(expiresIn));
      assert.equal((await acquire({ pool: 'cad', clientId: 'host-b', ttlSeconds: 30 })).status, 201);
      const full = await acquire({ pool: 'cad', clientId: 'host-c' });
      assert.equal(full.status, 409);
      assert.deepEqual(
        { code: full.body.code, pool: full.body.pool, seats: full.body.seats, inUse: full.body.inUse },
        { code: 'no_seat_available', pool: 'cad', seats: 2, inUse: 2 },
      );
      assert.ok(full.body.retryAfterSeconds >= 29 && full.body.retryAfterSeconds <= 30, String(full.body.retryAfterSeconds));
      assert.equal(full.headers['retry-after'], String(full.body.retryAfterSeconds));
      const pool = await api().get('/v1/pools/cad').set(AUTH);
      assert.deepEqual([pool.status, pool.body.seats, pool.body.inUse, pool.body.leases.length], [200, 2, 2, 2]);
      assert.equal((await api().get('/v1/pools/cad')).status, 401, 'reading a pool needs the admin token');
      const denied = (await api().get('/admin/v1/lease-events?pool=cad').set(AUTH)).body.items.filter((e: { type: string }) => e.type === 'denied');
      assert.deepEqual(denied.map((e: { clientId: string; reason: string }) => [e.clientId, e.reason]), [['host-c', 'no_seat_available']]);
    });

    it('grants exactly the seats to many concurrent acquires, and lets a client racing itself hold one seat only', async () => {
      await createPool({ name: 'race', seats: 5 });
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => acquire({ pool: 'race', clientId: `c-${i % 25}` })));
      const granted = results.filter((r) => r.status === 201 || r.status === 200);
      assert.equal(results.filter((r) => r.status === 201).length, 5);
      assert.equal(new Set(granted.map((r) => r.body.leaseId)).size, 5, 'twins of a granted client get its lease');
      assert.ok(results.every((r) => [200, 201, 409].includes(r.status)));
      assert.equal((await api().get('/v1/pools/race').set(AUTH)).body.inUse, 5);
    });

    it('gives a client that asks again while its lease is live the same lease, never a second seat', async () => {
      await createPool({ name: 'same', seats: 1 });
      const first = await acquire({ pool: 'same', clientId: 'host-a', ttlSeconds: 10 });
      const again = await acquire({ pool: 'same', clientId: 'host-a', ttlSeconds: 20 });
      assert.deepEqual([first.status, again.status], [201, 200]);
      assert.equal(again.body.leaseId, first.body.leaseId);
      assert.equal(again.body.ttlSeconds, 20);
      assert.equal((await api().get('/v1/pools/same').set(AUTH)).body.inUse, 1);
      assert.deepEqual(await eventsOf(first.body.leaseId), ['acquired', 'renewed:reacquired']);
    });

    it('replays a write with the same Idempotency-Key, refuses the key with another body, and does not keep refusals', async () => {
      await createPool({ name: 'idem', seats: 1 });
      const headers = { 'Idempotency-Key': 'req-1' };
      const [one, two] = await Promise.all([acquire({ pool: 'idem', clientId: 'x' }, headers), acquire({ pool: 'idem', clientId: 'x' }, headers)]);
      assert.deepEqual([one.status, two.status], [201, 201]);
      assert.equal(one.body.leaseId, two.body.leaseId);
      assert.ok(one.headers['idempotent-replayed'] === 'true' || two.headers['idempotent-replayed'] === 'true');
      const reused = await acquire({ pool: 'idem', clientId: 'x', ttlSeconds: 7 }, headers);
      assert.deepEqual([reused.status, reused.body.code], [422, 'idempotency_key_reused']);
      // Keys are scoped to the pool and client: another client's same key is its own.
      const other = await acquire({ pool: 'idem', clientId: 'y' }, headers);
      assert.deepEqual([other.status, other.body.code], [409, 'no_seat_available']);
      assert.ok(other.body.requestId, 'refusals carry the request id like every error');
      const full = await acquire({ pool: 'idem', clientId: 'z' }, { 'Idempotency-Key': 'req-2' });
      assert.equal(full.status, 409);
      await api().delete(`/v1/leases/${one.body.leaseId}`).expect(204);
      const retried = await acquire({ pool: 'idem', clientId: 'z' }, { 'Idempotency-Key': 'req-2' });
      assert.equal(retried.status, 201, 'a refused request may be retried with its key once a seat is free');
      assert.equal((await acquire({ pool: 'idem', clientId: 'z' }, { 'Idempotency-Key': 'bad key' })).body.code, 'invalid_idempotency_key');
    });

    it('extends a lease on heartbeat, answers 410 once it expired or was released, and releases idempotently', async () => {
      await createPool({ name: 'hb', seats: 1, defaultTtlSeconds: 2, heartbeatIntervalSeconds: 1 });
      const lease = (await acquire({ pool: 'hb', clientId: 'c1' })).body;
      assert.equal(lease.heartbeatIntervalSeconds, 1);
      const hb = await api().post(`/v1/leases/${lease.leaseId}/heartbeat`).send({ ttlSeconds: 5 });
      assert.equal(hb.status, 200);
      assert.ok(Date.parse(hb.body.expiresAt) > Date.parse(lease.expiresAt));
      assert.equal(hb.body.ttlSeconds, 5);
      const tooLong = await api().post(`/v1/leases/${lease.leaseId}/heartbeat`).send({ ttlSeconds: 999_999 });
      assert.deepEqual([tooLong.status, tooLong.body.code], [400, 'invalid_request']);
      await api().delete(`/v1/leases/${lease.leaseId}`).expect(204);
      await api().delete(`/v1/leases/${lease.leaseId}`).expect(204);
      const gone = await api().post(`/v1/leases/${lease.leaseId}/heartbeat`).send({});
      assert.deepEqual([gone.status, gone.body.code], [410, 'lease_released']);

      const short = (await acquire({ pool: 'hb', clientId: 'c2', ttlSeconds: 1 })).body;
      await sleep(1100);
      const late = await api().post(`/v1/leases/${short.leaseId}/heartbeat`).send({});
      assert.deepEqual([late.status, late.body.code], [410, 'lease_expired']);
      assert.equal((await api().post('/v1/leases/5b2b6c8e-6f3e-4a59-9a43-0e6f4f1d2c3b/heartbeat').send({})).status, 404);
      assert.equal((await api().delete('/v1/leases/5b2b6c8e-6f3e-4a59-9a43-0e6f4f1d2c3b')).status, 404);
      assert.equal((await api().delete('/v1/leases/not-a-uuid')).status, 400);
    });

    it("frees a dead client's seat the instant its lease expires, and the tidy job records the expiry once", async () => {
      await createPool({ name: 'dead', seats: 1, defaultTtlSeconds: 2, heartbeatIntervalSeconds: 1 });
      const dead = (await acquire({ pool: 'dead', clientId: 'killed', ttlSeconds: 1 })).body;
      assert.equal((await acquire({ pool: 'dead', clientId: 'next' })).status, 409);
      await sleep(Math.max(0, Date.parse(dead.expiresAt) - Date.now()) + 50);
      assert.equal((await acquire({ pool: 'dead', clientId: 'next' })).status, 201, 'free right after expiry, with no sweeper');
      await svc.leases.tidyNow();
      await svc.leases.tidyNow();
      assert.deepEqual(await eventsOf(dead.leaseId), ['acquired', 'expired']);
    });

    it('lets an admin list, force-release, update and delete pools', async () => {
      await createPool({ name: 'adm', seats: 1 });
      const lease = (await acquire({ pool: 'adm', clientId: 'c' })).body;
      const list = await api().get('/admin/v1/pools').set(AUTH);
      assert.equal(list.body.items.find((p: { name: string }) => p.name === 'adm').inUse, 1);
      assert.equal((await api().delete('/admin/v1/pools/adm').set(AUTH)).body.code, 'pool_in_use');
      await api().delete(`/admin/v1/leases/${lease.leaseId}`).set(AUTH).expect(204);
      assert.deepEqual(await eventsOf(lease.leaseId), ['acquired', 'released:forced']);
      const patched = await api().patch('/admin/v1/pools/adm').set(AUTH).send({ seats: 3, defaultTtlSeconds: 30 });
      assert.deepEqual([patched.status, patched.body.seats, patched.body.defaultTtlSeconds], [200, 3, 30]);
      const bad = await api().patch('/admin/v1/pools/adm').set(AUTH).send({ heartbeatIntervalSeconds: 30 });
      assert.deepEqual([bad.status, bad.body.code], [400, 'invalid_request']);
      assert.equal((await api().get('/admin/v1/pools/adm').set(AUTH)).body.heartbeatIntervalSeconds, 20, 'a refused change changes nothing');
      assert.equal((await api().post('/admin/v1/pools').set(AUTH).send({ name: 'adm', seats: 1, anonymous: true })).body.code, 'pool_exists');
      await acquire({ pool: 'adm', clientId: 'c2' }).expect(201);
      await api().delete('/admin/v1/pools/adm?force=true').set(AUTH).expect(204);
      assert.equal((await api().get('/admin/v1/pools/adm').set(AUTH)).status, 404);
    });

    it('refuses bad input with 400 and a stable code, changing nothing', async () => {
      await createPool({ name: 'strict', seats: 1, maxTtlSeconds: 100 });
      const before = [await count('leases'), await count('lease_pools')];
      const bad: [object, string][] = [
        [{ pool: 'strict' }, 'invalid_request'],
        [{ clientId: 'a' }, 'invalid_request'],
        [{ pool: 'strict', virtualKey: 'k', clientId: 'a' }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'has space' }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'a', ttlSeconds: 101 }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'a', ttlSeconds: 0 }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'a', ttlSeconds: '10' }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'a', extra: 1 }, 'invalid_request'],
        [{ pool: 'strict', clientId: 'a', metadata: { big: 'x'.repeat(5000) } }, 'invalid_request'],
        [{ pool: 'Not A Pool', clientId: 'a' }, 'invalid_request'],
      ];
      for (const [body, code] of bad) {
        const res = await acquire(body);
        assert.deepEqual([res.status, res.body.code], [400, code], JSON.stringify(body));
      }
      assert.equal((await acquire({ pool: 'nope', clientId: 'a' })).status, 404);
      const notJson = await api().post('/v1/leases').set('Content-Type', 'application/json').send('{"pool":');
      assert.deepEqual([notJson.status, notJson.body.code], [400, 'invalid_json']);
      const notSigned = await api().post('/v1/leases').set('Content-Type', 'text/plain').send('hello');
      assert.deepEqual([notSigned.status, notSigned.body.code], [400, 'invalid_signed_message']);
      for (const body of [{ name: 'vk-1', seats: 1 }, { name: 'x', seats: 0 }, { name: 'y', seats: 1, defaultTtlSeconds: 10, maxTtlSeconds: 5 }]) {
        assert.equal((await api().post('/admin/v1/pools').set(AUTH).send(body)).status, 400, JSON.stringify(body));
      }
      assert.deepEqual([await count('leases'), await count('lease_pools')], before);
    });

    it("holds a virtual key's leases to its maxConcurrentLeases, following changes to it", async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real' });
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'cust-42', maxConcurrentLeases: 1 });
      assert.equal(vk.body.maxConcurrentLeases, 1);
      const a = await acquire({ virtualKey: 'cust-42', clientId: 'ws-1' });
      assert.deepEqual([a.status, a.body.pool], [201, `vk-${vk.body.id}`]);
      assert.equal((await acquire({ virtualKey: 'cust-42', clientId: 'ws-2' })).status, 409);
      await api().patch(`/admin/v1/virtual-keys/${vk.body.id}`).set(AUTH).send({ maxConcurrentLeases: 2 }).expect(200);
      assert.equal((await acquire({ virtualKey: 'cust-42', clientId: 'ws-2' })).status, 201);
      const seatsFollow = await api().patch(`/admin/v1/pools/vk-${vk.body.id}`).set(AUTH).send({ seats: 9 });
      assert.equal(seatsFollow.status, 400);
      for (const key of ['unknown', 'cust-42-x']) assert.equal((await acquire({ virtualKey: key, clientId: 'c' })).body.code, 'not_entitled');
      await api().patch(`/admin/v1/virtual-keys/${vk.body.id}`).set(AUTH).send({ status: 'suspended' }).expect(200);
      assert.equal((await acquire({ virtualKey: 'cust-42', clientId: 'ws-3' })).body.code, 'not_entitled');
      const noLeases = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'cust-43' });
      assert.equal(noLeases.body.maxConcurrentLeases, null);
      assert.equal((await acquire({ virtualKey: 'cust-43', clientId: 'c' })).status, 403);
    });

    it('keeps the pools of virtual keys and SES applications from being acquired by name', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real-2' });
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'cust-77', maxConcurrentLeases: 2 });
      assert.equal((await acquire({ virtualKey: 'cust-77', clientId: 'a' })).status, 201);
      const byName = await acquire({ pool: `vk-${vk.body.id}`, clientId: 'b' });
      assert.deepEqual([byName.status, byName.body.code], [403, 'not_entitled']);
      await createPool({ name: 'ses-someapp', seats: 2 });
      assert.equal((await acquire({ pool: 'ses-someapp', clientId: 'c' })).status, 403);
    });

    it("ends a revoked key's leases at their next heartbeat", async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real-3' });
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'cust-88', maxConcurrentLeases: 1 });
      const lease = (await acquire({ virtualKey: 'cust-88', clientId: 'a' })).body;
      await api().post(`/v1/leases/${lease.leaseId}/heartbeat`).send({ virtualKey: 'cust-88' }).expect(200);
      await api().patch(`/admin/v1/virtual-keys/${vk.body.id}`).set(AUTH).send({ status: 'revoked' }).expect(200);
      const hb = await api().post(`/v1/leases/${lease.leaseId}/heartbeat`).send({ virtualKey: 'cust-88' });
      assert.deepEqual([hb.status, hb.body.code], [410, 'lease_revoked']);
      assert.equal((await api().get(`/v1/pools/vk-${vk.body.id}`).set(AUTH)).body.inUse, 0);
      assert.deepEqual(await eventsOf(lease.leaseId), ['acquired', 'renewed', 'released:virtual_key_not_entitled']);
    });

    it('records a lease released after it expired as expired only', async () => {
      await createPool({ name: 'late-release', seats: 1, defaultTtlSeconds: 2, heartbeatIntervalSeconds: 1 });
      const lease = (await acquire({ pool: 'late-release', clientId: 'a', ttlSeconds: 1 })).body;
      await sleep(Math.max(0, Date.parse(lease.expiresAt) - Date.now()) + 50);
      await api().delete(`/v1/leases/${lease.leaseId}`).expect(204);
      await svc.leases.tidyNow();
      assert.deepEqual(await eventsOf(lease.leaseId), ['acquired', 'expired']);
    });

    describe('signed requests', () => {
      let alice: Awaited<ReturnType<typeof newKeyPair>>;
      let mallory: Awaited<ReturnType<typeof newKeyPair>>;
      const signed = (text: string) => api().post('/v1/leases').set('Content-Type', 'text/plain').send(text);

      before(async () => {
        [alice, mallory] = await Promise.all([newKeyPair('alice'), newKeyPair('mallory')]);
        await createPool({ name: 'signed', seats: 5, requireSignedRequests: true });
        const reg = await api().post('/admin/v1/client-keys').set(AUTH).send({ clientId: 'alice', publicKey: alice.publicKey });
        assert.equal(reg.status, 201, JSON.stringify(reg.body));
        assert.match(reg.body.fingerprint, /^[0-9a-f]{40,64}$/);
      });

      it('accepts a fresh request signed by the client key, and refuses its replay', async () => {
        const text = await signRequest({ pool: 'signed', clientId: 'alice' }, alice.privateKey);
        const ok = await signed(text);
        assert.equal(ok.status, 201, JSON.stringify(ok.body));
        const replay = await signed(text);
        assert.deepEqual([replay.status, replay.body.code], [401, 'request_replayed']);
        const hb = await api()
          .post(`/v1/leases/${ok.body.leaseId}/heartbeat`)
          .set('Content-Type', 'text/plain')
          .send(await signRequest({ leaseId: ok.body.leaseId }, alice.privateKey));
        assert.equal(hb.status, 200, JSON.stringify(hb.body));
        const release = await api()
          .delete(`/v1/leases/${ok.body.leaseId}`)
          .set('Content-Type', 'text/plain')
          .send(await signRequest({ leaseId: ok.body.leaseId }, alice.privateKey));
        assert.equal(release.status, 204);
      });

      it('replays the stored answer when the same signed message is resent with its Idempotency-Key', async () => {
        const text = await signRequest({ pool: 'signed', clientId: 'alice' }, alice.privateKey);
        const first = await signed(text).set('Idempotency-Key', 'signed-1');
        assert.equal(first.status, 201, JSON.stringify(first.body));
        const again = await signed(text).set('Idempotency-Key', 'signed-1');
        assert.deepEqual([again.status, again.body.leaseId, again.headers['idempotent-replayed']], [201, first.body.leaseId, 'true']);
        const withoutKey = await signed(text);
        assert.equal(withoutKey.body.code, 'request_replayed');
        await api()
          .delete(`/v1/leases/${first.body.leaseId}`)
          .set('Content-Type', 'text/plain')
          .send(await signRequest({ leaseId: first.body.leaseId }, alice.privateKey))
          .expect(204);
      });

      it('refuses unsigned, stale, wrongly signed, tampered and unbound requests with 401, granting nothing', async () => {
        const before = await count('leases');
        const unsigned = await acquire({ pool: 'signed', clientId: 'alice' });
        assert.deepEqual([unsigned.status, unsigned.body.code], [401, 'signed_request_required']);
        const stale = await signed(await signRequest({ pool: 'signed', clientId: 'alice' }, alice.privateKey, Date.now() - 31_000));
        assert.deepEqual([stale.status, stale.body.code], [401, 'request_expired']);
        const future = await signed(await signRequest({ pool: 'signed', clientId: 'alice' }, alice.privateKey, Date.now() + 31_000));
        assert.equal(future.body.code, 'request_expired');
        const forged = await signed(await signRequest({ pool: 'signed', clientId: 'alice' }, mallory.privateKey));
        assert.deepEqual([forged.status, forged.body.code], [401, 'bad_signature']);
        const unknown = await signed(await signRequest({ pool: 'signed', clientId: 'mallory' }, mallory.privateKey));
        assert.deepEqual([unknown.status, unknown.body.code], [401, 'unknown_client_key']);
        const good = await signRequest({ pool: 'signed', clientId: 'alice' }, alice.privateKey);
        const tampered = await signed(good.replace('"alice"', '"alice" ').replace('"clientId":"alice"', '"clientId":"alice","ttlSeconds":9'));
        assert.equal(tampered.status, 401);
        assert.equal(tampered.body.code, 'bad_signature');
        assert.equal(await count('leases'), before);

        const lease = (await signed(good)).body;
        const heartbeatForOther = await api()
          .post(`/v1/leases/${lease.leaseId}/heartbeat`)
          .set('Content-Type', 'text/plain')
          .send(await signRequest({ leaseId: '5b2b6c8e-6f3e-4a59-9a43-0e6f4f1d2c3b' }, alice.privateKey));
        assert.deepEqual([heartbeatForOther.status, heartbeatForOther.body.code], [401, 'bad_signature']);
        const unsignedRelease = await api().delete(`/v1/leases/${lease.leaseId}`);
        assert.deepEqual([unsignedRelease.status, unsignedRelease.body.code], [401, 'signed_request_required']);
      });

      it('refuses a private key or garbage as a client key', async () => {
        const priv = await api().post('/admin/v1/client-keys').set(AUTH).send({ clientId: 'x', publicKey: alice.privateKey.armor() });
        assert.deepEqual([priv.status, priv.body.code], [400, 'private_key_given']);
        const junk = await api().post('/admin/v1/client-keys').set(AUTH).send({ clientId: 'x', publicKey: 'not a key' });
        assert.deepEqual([junk.status, junk.body.code], [400, 'invalid_public_key']);
        const again = await api().post('/admin/v1/client-keys').set(AUTH).send({ clientId: 'alice', publicKey: alice.publicKey });
        assert.deepEqual([again.status, again.body.code], [409, 'client_key_exists']);
      });
    });
  });
}
