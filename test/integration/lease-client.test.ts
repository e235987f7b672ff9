import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import * as openpgp from 'openpgp';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';
import { LeaseClient, LeaseLostError, LeaseRequestError, NoSeatAvailableError } from '../../src/index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('LeaseClient against a real server', () => {
  let db: TestDatabase;
  let svc: RunningService;
  let client: LeaseClient;
  const admin = () => request(svc.server);

  before(async () => {
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db);
    const token = await admin().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'lib-client', scopes: ['leases:client'] }).expect(201);
    client = new LeaseClient({ baseUrl: svc.url, token: token.body.token });
    await admin().post('/admin/v1/pools').set(AUTH).send({ name: 'lib', seats: 1, defaultTtlSeconds: 3, heartbeatIntervalSeconds: 1 }).expect(201);
  });
  after(async () => {
    await svc?.close();
    await db?.drop();
  });

  it('acquires, refuses with NoSeatAvailableError, heartbeats and releases', async () => {
    const lease = await client.acquire({ pool: 'lib', clientId: 'one', idempotencyKey: 'k-1' });
    assert.equal(lease.pool, 'lib');
    await assert.rejects(client.acquire({ pool: 'lib', clientId: 'two' }), (err: unknown) => {
      assert.ok(err instanceof NoSeatAvailableError);
      assert.deepEqual([err.seats, err.inUse, err.status], [1, 1, 409]);
      assert.ok(err.retryAfterSeconds >= 1 && err.retryAfterSeconds <= 3);
      return true;
    });
    const renewed = await client.heartbeat(lease.leaseId, { ttlSeconds: 5 });
    assert.equal(renewed.ttlSeconds, 5);
    await client.release(lease.leaseId);
    await assert.rejects(client.heartbeat(lease.leaseId), (err: unknown) => err instanceof LeaseLostError && err.code === 'lease_released');
    await assert.rejects(client.acquire({ pool: 'missing', clientId: 'x' }), (err: unknown) => err instanceof LeaseRequestError && err.status === 404);
  });

  it('hold keeps a lease alive past its TTL, and reports its loss once', async () => {
    const lost: string[] = [];
    const held = await client.hold({ pool: 'lib', clientId: 'holder', ttlSeconds: 3 }, { onLost: (e) => lost.push(e.code) });
    await sleep(4000);
    const pool = (await admin().get('/v1/pools/lib').set(AUTH)).body;
    assert.deepEqual([pool.inUse, pool.leases[0].leaseId], [1, held.lease.leaseId]);
    await admin().delete(`/admin/v1/leases/${held.lease.leaseId}`).set(AUTH).expect(204);
    await sleep(1500);
    assert.deepEqual(lost, ['lease_released']);
    await held.release();
  });

  it('signs every request when given a key, for pools that require it', async () => {
    const { privateKey, publicKey } = await openpgp.generateKey({ userIDs: [{ name: 'signer' }], format: 'armored' });
    await admin().post('/admin/v1/pools').set(AUTH).send({ name: 'signed-lib', seats: 1, requireSignedRequests: true }).expect(201);
    await admin().post('/admin/v1/client-keys').set(AUTH).send({ clientId: 'signer', publicKey }).expect(201);
    await assert.rejects(client.acquire({ pool: 'signed-lib', clientId: 'signer' }), (err: unknown) => (err as LeaseRequestError).code === 'signed_request_required');
    const signer = new LeaseClient({ baseUrl: svc.url, signingKey: privateKey });
    const lease = await signer.acquire({ pool: 'signed-lib', clientId: 'signer' });
    await signer.heartbeat(lease.leaseId);
    await signer.release(lease.leaseId);
    assert.equal((await admin().get('/v1/pools/signed-lib').set(AUTH)).body.inUse, 0);
  });

  it('sends no credential without a token, and the virtual key with every heartbeat and release of its lease', async () => {
    const anonymous = new LeaseClient({ baseUrl: svc.url, token: '' });
    await assert.rejects(anonymous.acquire({ pool: 'lib', clientId: 'nobody' }), (err: unknown) => (err as LeaseRequestError).code === 'client_credential_required');
    const ent = await admin().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real' }).expect(201);
    await admin().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'lib-key-0001', maxConcurrentLeases: 1 }).expect(201);
    const lease = await anonymous.acquire({ virtualKey: 'lib-key-0001', clientId: 'ws' });
    await anonymous.heartbeat(lease.leaseId);
    await anonymous.release(lease.leaseId);
  });

  it('reports an unreachable server as status 0', async () => {
    const nowhere = new LeaseClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 2000 });
    await assert.rejects(nowhere.acquire({ pool: 'lib', clientId: 'x' }), (err: unknown) => err instanceof LeaseRequestError && err.status === 0);
  });
});
