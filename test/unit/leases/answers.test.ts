import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { acquireAnswer, heartbeatAnswer, refusalError, releaseAnswer, REFUSAL_STATUS } from '../../../src/leases/routes.ts';
import { LeaseRefusal } from '../../../src/leases/outcomes.ts';
import { ownerOfNewPool, poolNameOf, POOL_NAME } from '../../../src/leases/pool-kinds.ts';
import type { Lease, Pool } from '../../../src/leases/repo.ts';

const at = new Date('2026-12-11T10:00:00.000Z');
const pool: Pool = {
  id: 1,
  name: 'cad',
  kind: 'named',
  seats: 2,
  defaultTtlSeconds: 60,
  maxTtlSeconds: 600,
  heartbeatIntervalSeconds: 20,
  requireSignedRequests: false,
  anonymous: false,
  virtualKeyId: null,
  sesApplication: null,
  licenceCapacity: null,
  createdAt: at,
  updatedAt: at,
};
const lease: Lease = {
  id: 'e478e0f9-a773-4dc7-9588-37bb36d22e7f',
  pool: 'cad',
  clientId: 'job-42',
  acquiredAt: at,
  renewedAt: at,
  expiresAt: new Date(at.getTime() + 30_000),
  releasedAt: null,
  ttlSeconds: 30,
  clientAddress: '203.0.113.7',
  metadata: { pid: 1 },
  credential: 'token:7',
};
const view = {
  leaseId: lease.id,
  pool: 'cad',
  clientId: 'job-42',
  acquiredAt: '2026-12-11T10:00:00.000Z',
  renewedAt: '2026-12-11T10:00:00.000Z',
  expiresAt: '2026-12-11T10:00:30.000Z',
  ttlSeconds: 30,
  heartbeatIntervalSeconds: 10,
  metadata: { pid: 1 },
};

describe('lease outcomes in HTTP', () => {
  it('answers a new lease 201, a lease given back 200, both with the lease (never its address or credential)', () => {
    assert.deepEqual(acquireAnswer({ kind: 'granted', lease, pool, created: true }), { status: 201, body: view });
    assert.deepEqual(acquireAnswer({ kind: 'granted', lease, pool, created: false }), { status: 200, body: view });
  });

  it('answers a full pool 409 no_seat_available with Retry-After, seats and in use', () => {
    assert.deepEqual(acquireAnswer({ kind: 'no_seat', pool: 'cad', seats: 2, inUse: 2, retryAfterSeconds: 29 }), {
      status: 409,
      headers: { 'Retry-After': '29' },
      body: { code: 'no_seat_available', message: 'all 2 seats of pool cad are in use', pool: 'cad', seats: 2, inUse: 2, retryAfterSeconds: 29 },
    });
  });

  it('answers a heartbeat 200 with the lease, a release 204 without a body', () => {
    assert.deepEqual(heartbeatAnswer({ kind: 'renewed', lease, pool }), { status: 200, body: view });
    assert.deepEqual(releaseAnswer({ kind: 'released' }), { status: 204 });
  });

  it('replays a kept answer as it was, marked Idempotent-Replayed', () => {
    const replayed = { kind: 'replayed' as const, answer: { status: 201, body: view } };
    const expected = { status: 201, body: view, headers: { 'Idempotent-Replayed': 'true' } };
    assert.deepEqual(acquireAnswer(replayed), expected);
    assert.deepEqual(heartbeatAnswer(replayed), expected);
    assert.deepEqual(releaseAnswer({ kind: 'replayed', answer: { status: 204 } }), { status: 204, headers: { 'Idempotent-Replayed': 'true' } });
  });

  it('gives each refusal its status, with its code and message', () => {
    const statuses = Object.entries(REFUSAL_STATUS).map(([code, status]) => `${status} ${code}`);
    assert.deepEqual(statuses.sort(), [
      '401 bad_signature',
      '401 client_credential_required',
      '401 request_expired',
      '401 request_replayed',
      '401 signed_request_required',
      '401 unknown_client_key',
      '403 insufficient_scope',
      '403 not_entitled',
      '403 not_lease_holder',
      '409 client_id_in_use',
      '410 lease_expired',
      '410 lease_released',
      '410 lease_revoked',
      '422 idempotency_key_reused',
    ]);
    const error = refusalError(new LeaseRefusal('not_entitled', 'pool vk-3 is not acquired by name'));
    assert.deepEqual([error.status, error.code, error.message, error.expose], [403, 'not_entitled', 'pool vk-3 is not acquired by name', true]);
  });
});

describe('pool kinds', () => {
  it('names owned pools for people: vk-<id>, ses-<application>', () => {
    assert.equal(poolNameOf({ kind: 'virtual_key', virtualKeyId: 42 }), 'vk-42');
    assert.equal(poolNameOf({ kind: 'ses_application', application: 'contosoapp' }), 'ses-contosoapp');
  });

  it("makes an admin's ses-<application> pool that application's, any other name a named pool, and keeps vk- names for keys", () => {
    assert.deepEqual(ownerOfNewPool('ses-contosoapp'), { kind: 'ses_application', application: 'contosoapp' });
    assert.deepEqual(ownerOfNewPool('sessions'), { kind: 'named' });
    assert.deepEqual(ownerOfNewPool('cad'), { kind: 'named' });
    assert.doesNotMatch('vk-7', POOL_NAME);
    assert.match('ses-contosoapp', POOL_NAME);
  });
});
