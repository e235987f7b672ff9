import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compileMapping, decide, type CheckDecision } from '../../../src/domain/check.ts';
import type { KeyMapping } from '../../../src/domain/types.ts';

const T0 = Date.parse('2027-01-01T00:00:00Z');

function mapping(over: Partial<Omit<KeyMapping, 'entitlement'>> = {}, ent: Partial<KeyMapping['entitlement']> = {}) {
  return compileMapping({
    virtualKeyId: 7,
    status: 'active',
    notBefore: null,
    expiresAt: null,
    allowedCidrs: [],
    cacheTimeout: null,
    retry: true,
    ...over,
    entitlement: { server: 'rm.example.com', class: 'myProduct', key: 'REALKEY', ...ent },
  });
}

const opts = { requireClassMatch: false };
const reason = (d: CheckDecision) => (d.granted ? 'granted' : d.reason);
const req = (over: Partial<{ server: string; class: string; key: string; remoteIp: string }> = {}) => ({
  server: 'rm.example.com',
  key: 'vk',
  ...over,
});

describe('decide', () => {
  it('grants with the requested server echoed and the real class and key', () => {
    const d = decide(req({ server: 'RM.Example.com' }), mapping(), T0, opts);
    assert.deepEqual(d, {
      granted: true,
      virtualKeyId: 7,
      entitlement: { server: 'RM.Example.com', class: 'myProduct', key: 'REALKEY', timeout: null },
    });
  });

  it('denies an unknown key', () => {
    assert.deepEqual(decide(req(), undefined, T0, opts), { granted: false, virtualKeyId: null, reason: 'unknown_key' });
  });

  it('denies revoked and suspended keys, before any other rule', () => {
    const expired = { expiresAt: T0 - 1 };
    assert.equal(reason(decide(req(), mapping({ status: 'revoked', ...expired }), T0, opts)), 'revoked');
    assert.equal(reason(decide(req(), mapping({ status: 'suspended', ...expired }), T0, opts)), 'suspended');
  });

  it('treats not_before as inclusive and expires_at as exclusive, to the millisecond', () => {
    const m = mapping({ notBefore: T0, expiresAt: T0 + 1000 });
    assert.equal(reason(decide(req(), m, T0 - 1, opts)), 'not_yet_valid');
    assert.equal(reason(decide(req(), m, T0, opts)), 'granted');
    assert.equal(reason(decide(req(), m, T0 + 999, opts)), 'granted');
    assert.equal(reason(decide(req(), m, T0 + 1000, opts)), 'expired');
  });

  it('matches exact, *.domain and * server patterns', () => {
    const exact = mapping();
    assert.equal(reason(decide(req({ server: 'other.example.com' }), exact, T0, opts)), 'server_not_covered');
    const glob = mapping({}, { server: '*.example.com' });
    assert.equal(reason(decide(req({ server: 'a.example.com' }), glob, T0, opts)), 'granted');
    assert.equal(reason(decide(req({ server: 'a.b.EXAMPLE.com' }), glob, T0, opts)), 'granted');
    assert.equal(reason(decide(req({ server: 'example.com' }), glob, T0, opts)), 'server_not_covered');
    assert.equal(reason(decide(req({ server: 'badexample.com' }), glob, T0, opts)), 'server_not_covered');
    const any = mapping({}, { server: '*' });
    assert.equal(reason(decide(req({ server: 'whatever' }), any, T0, opts)), 'granted');
  });

  it('never grants a server Conary would read back differently', () => {
    const any = mapping({}, { server: '*' });
    for (const server of ['a&b', 'a<b', 'caf\u00e9', 'a\nb', ' a', 'a"b']) {
      assert.equal(reason(decide(req({ server }), any, T0, opts)), 'server_not_covered', server);
    }
  });

  it('checks remote_ip against allowed CIDRs, IPv4-mapped addresses as IPv4', () => {
    const m = mapping({ allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'] });
    assert.equal(reason(decide(req(), m, T0, opts)), 'ip_required');
    assert.equal(reason(decide(req({ remoteIp: '10.1.2.3' }), m, T0, opts)), 'granted');
    assert.equal(reason(decide(req({ remoteIp: '::ffff:10.1.2.3' }), m, T0, opts)), 'granted');
    assert.equal(reason(decide(req({ remoteIp: '2001:db8:1::5' }), m, T0, opts)), 'granted');
    assert.equal(reason(decide(req({ remoteIp: '11.1.2.3' }), m, T0, opts)), 'ip_not_allowed');
    assert.equal(reason(decide(req({ remoteIp: '2001:db9::1' }), m, T0, opts)), 'ip_not_allowed');
    assert.equal(reason(decide(req({ remoteIp: '11.1.2.3' }), mapping(), T0, opts)), 'granted');
  });

  it('ignores class by default and requires a match when configured', () => {
    const strict = { requireClassMatch: true };
    assert.equal(reason(decide(req({ class: 'other' }), mapping(), T0, opts)), 'granted');
    assert.equal(reason(decide(req({ class: 'other' }), mapping(), T0, strict)), 'class_mismatch');
    assert.equal(reason(decide(req(), mapping(), T0, strict)), 'class_mismatch');
    assert.equal(reason(decide(req({ class: 'myProduct' }), mapping(), T0, strict)), 'granted');
    const classless = mapping({}, { class: null });
    assert.equal(reason(decide(req(), classless, T0, strict)), 'granted');
    assert.equal(reason(decide(req({ class: 'x' }), classless, T0, strict)), 'class_mismatch');
  });

  it('carries the cache timeout and retry flag', () => {
    const d = decide(req(), mapping({ cacheTimeout: 0, retry: false }), T0, opts);
    assert.ok(d.granted);
    assert.deepEqual(d.entitlement.timeout, { val: 0, retry: false });
  });
});
