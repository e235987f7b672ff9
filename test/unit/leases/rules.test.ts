import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { endedAs, heartbeatFor, isLive, resolveTtl, retryAfterSeconds, CLIENT_ID } from '../../../src/leases/rules.ts';
import { POOL_NAME } from '../../../src/leases/pool-kinds.ts';

const pool = { seats: 3, defaultTtlSeconds: 60, maxTtlSeconds: 300, heartbeatIntervalSeconds: 20 };
const at = (ms: number) => new Date(ms);

describe('lease live-ness', () => {
  it('when now is before expiry and the lease is not released, then it is live; at the expiry instant it is not', () => {
    const lease = { expiresAt: at(10_000), releasedAt: null };
    assert.equal(isLive(lease, at(9_999)), true);
    assert.equal(isLive(lease, at(10_000)), false);
    assert.equal(isLive(lease, at(10_001)), false);
    assert.equal(endedAs(lease, at(9_999)), null);
    assert.equal(endedAs(lease, at(10_000)), 'expired');
  });

  it('when a lease is released, then it is dead whatever its expiry, and ended as released', () => {
    const lease = { expiresAt: at(10_000), releasedAt: at(5_000) };
    assert.equal(isLive(lease, at(6_000)), false);
    assert.equal(endedAs(lease, at(6_000)), 'released');
    assert.equal(endedAs(lease, at(20_000)), 'released');
  });

  it('for any times, a lease is live exactly when unreleased and before its expiry, and ended otherwise', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e12 }), fc.integer({ min: 0, max: 1e12 }), fc.option(fc.integer({ min: 0, max: 1e12 })), (now, exp, rel) => {
        const lease = { expiresAt: at(exp), releasedAt: rel === null ? null : at(rel) };
        assert.equal(isLive(lease, at(now)), rel === null && now < exp);
        assert.equal(endedAs(lease, at(now)), rel !== null ? 'released' : now >= exp ? 'expired' : null);
      }),
    );
  });
});

describe('TTL bounds', () => {
  it('when no TTL is asked, then the fallback (a lease\'s own) or the pool default applies, never above the maximum', () => {
    assert.deepEqual(resolveTtl(undefined, pool), { ttlSeconds: 60 });
    assert.deepEqual(resolveTtl(undefined, pool, 90), { ttlSeconds: 90 });
    assert.deepEqual(resolveTtl(undefined, { ...pool, maxTtlSeconds: 30 }, 90), { ttlSeconds: 30 });
  });

  it('when a TTL is asked within 1 to the maximum, then it is granted as asked', () => {
    for (const t of [1, 59, 300]) assert.deepEqual(resolveTtl(t, pool), { ttlSeconds: t });
  });

  it('when a TTL is out of range or not whole, then it is refused, not clamped', () => {
    for (const t of [0, -1, 301, 1.5, Number.NaN, Infinity]) {
      const r = resolveTtl(t, pool);
      assert.ok('problem' in r, String(t));
      assert.match(r.problem, /from 1 to 300/);
    }
  });

  it('the heartbeat hint is the pool\'s, but always under a third of the TTL, and at least 1 s', () => {
    assert.equal(heartbeatFor(60, pool), 20);
    assert.equal(heartbeatFor(300, pool), 20);
    assert.equal(heartbeatFor(30, pool), 10);
    assert.equal(heartbeatFor(2, pool), 1);
    fc.assert(
      fc.property(fc.integer({ min: 3, max: 86_400 }), fc.integer({ min: 1, max: 86_400 }), (ttl, hint) => {
        const h = heartbeatFor(ttl, { ...pool, heartbeatIntervalSeconds: hint });
        assert.ok(h >= 1 && h * 3 <= ttl && h <= hint);
      }),
    );
  });
});

describe('retry-after, names', () => {
  it('tells a refused client the seconds until the earliest live lease expires, at least 1', () => {
    assert.equal(retryAfterSeconds(at(10_500), at(0)), 11);
    assert.equal(retryAfterSeconds(at(10_000), at(0)), 10);
    assert.equal(retryAfterSeconds(at(100), at(0)), 1);
    assert.equal(retryAfterSeconds(null, at(0)), 1);
  });

  it('keeps vk- for the pools of virtual keys and refuses names that are not plain', () => {
    for (const ok of ['cad', 'app-1', 'a.b_c', '9']) assert.match(ok, POOL_NAME);
    for (const bad of ['vk-1', 'Cad', '-a', '', 'a b', 'a'.repeat(64), 'é']) assert.doesNotMatch(bad, POOL_NAME);
    for (const bad of ['', 'a b', 'x'.repeat(129), 'tab\t']) assert.doesNotMatch(bad, CLIENT_ID);
  });
});
