import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compileMapping, decide, DENY_REASONS, type CheckDecision, type DecideOptions } from '../../../src/domain/check.ts';
import type { CheckRequest, KeyMapping } from '../../../src/domain/types.ts';

const T0 = Date.parse('2027-01-01T00:00:00Z');
const LOOSE: DecideOptions = { requireClassMatch: false };
const STRICT: DecideOptions = { requireClassMatch: true };

type MappingOver = Partial<Omit<KeyMapping, 'entitlement'>> & { entitlement?: Partial<KeyMapping['entitlement']> };

function mapping(over: MappingOver = {}) {
  const { entitlement, ...rest } = over;
  return compileMapping({
    virtualKeyId: 7,
    status: 'active',
    notBefore: null,
    expiresAt: null,
    allowedCidrs: [],
    cacheTimeout: null,
    retry: true,
    ...rest,
    entitlement: { server: 'rm.example.com', class: 'myProduct', key: 'REALKEY', ...entitlement },
  });
}

const req = (over: Partial<CheckRequest> = {}): CheckRequest => ({ server: 'rm.example.com', key: 'vk', ...over });
const outcome = (d: CheckDecision) => (d.granted ? 'granted' : d.reason);
const decideOutcome = (r: CheckRequest, m: MappingOver = {}, now = T0, options = LOOSE) => outcome(decide(r, mapping(m), now, options));

describe('decide: grants', () => {
  it('when every rule passes, then the grant echoes the requested server as sent and carries the real class and key', () => {
    assert.deepEqual(decide(req({ server: 'RM.Example.COM', class: 'ignored' }), mapping(), T0, LOOSE), {
      granted: true,
      virtualKeyId: 7,
      entitlement: { server: 'RM.Example.COM', class: 'myProduct', key: 'REALKEY', timeout: null, expiresAt: null, dependsOnAddress: false },
    });
  });

  it('when the entitlement has no class, then the grant has class null', () => {
    const d = decide(req(), mapping({ entitlement: { class: null } }), T0, LOOSE);
    assert.ok(d.granted);
    assert.equal(d.entitlement.class, null);
  });

  it('when the key has no cache timeout, then the grant has no timeout; with one, then its value and retry flag', () => {
    const none = decide(req(), mapping(), T0, LOOSE);
    assert.ok(none.granted);
    assert.equal(none.entitlement.timeout, null);
    for (const [cacheTimeout, retry] of [[0, false], [0, true], [3600, true], [31_536_000, false]] as const) {
      const d = decide(req(), mapping({ cacheTimeout, retry }), T0, LOOSE);
      assert.ok(d.granted);
      assert.deepEqual(d.entitlement.timeout, { val: cacheTimeout, retry });
    }
  });

  it('when the key expires or is locked to networks, then the grant says so (for the timeout Conary is sent)', () => {
    const expiring = decide(req(), mapping({ expiresAt: T0 + 60_000 }), T0, LOOSE);
    assert.ok(expiring.granted);
    assert.deepEqual([expiring.entitlement.expiresAt, expiring.entitlement.dependsOnAddress], [T0 + 60_000, false]);
    const locked = decide(req({ remoteIp: '10.1.1.1' }), mapping({ allowedCidrs: ['10.0.0.0/8'] }), T0, LOOSE);
    assert.ok(locked.granted);
    assert.equal(locked.entitlement.dependsOnAddress, true);
  });

  it('when the key has no validity window, then it is granted at any time', () => {
    for (const now of [0, T0, Date.parse('2999-12-31T23:59:59.999Z')]) assert.equal(decideOutcome(req(), {}, now), 'granted');
  });
});

describe('decide: denials', () => {
  it('when the key is unknown, then unknown_key with no virtual key id', () => {
    assert.deepEqual(decide(req(), undefined, T0, LOOSE), { granted: false, virtualKeyId: null, reason: 'unknown_key' });
    assert.deepEqual(decide(req(), undefined, T0, STRICT), { granted: false, virtualKeyId: null, reason: 'unknown_key' });
  });

  it('when a known key is denied, then the denial names its virtual key id', () => {
    assert.deepEqual(decide(req(), mapping({ status: 'revoked' }), T0, LOOSE), { granted: false, virtualKeyId: 7, reason: 'revoked' });
  });

  it('when the key is revoked or suspended, then revoked or suspended', () => {
    assert.equal(decideOutcome(req(), { status: 'revoked' }), 'revoked');
    assert.equal(decideOutcome(req(), { status: 'suspended' }), 'suspended');
  });

  it('when now is before not_before, then not_yet_valid; at not_before exactly, then granted (inclusive)', () => {
    const m = { notBefore: T0 };
    assert.equal(decideOutcome(req(), m, T0 - 1), 'not_yet_valid');
    assert.equal(decideOutcome(req(), m, T0), 'granted');
    assert.equal(decideOutcome(req(), m, T0 + 1), 'granted');
  });

  it('when now is at expires_at exactly or later, then expired; one millisecond before, then granted (exclusive)', () => {
    const m = { expiresAt: T0 };
    assert.equal(decideOutcome(req(), m, T0 - 1), 'granted');
    assert.equal(decideOutcome(req(), m, T0), 'expired');
    assert.equal(decideOutcome(req(), m, T0 + 1), 'expired');
  });

  it('when the window is one millisecond long, then exactly that millisecond is granted', () => {
    const m = { notBefore: T0, expiresAt: T0 + 1 };
    assert.deepEqual(
      [T0 - 1, T0, T0 + 1].map((now) => decideOutcome(req(), m, now)),
      ['not_yet_valid', 'granted', 'expired'],
    );
  });

  it('when CIDRs are set and the request has no remote_ip, then ip_required', () => {
    assert.equal(decideOutcome(req(), { allowedCidrs: ['10.0.0.0/8'] }), 'ip_required');
  });

  it('when the remote_ip is outside every CIDR, or not an address, then ip_not_allowed', () => {
    const m = { allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'] };
    for (const remoteIp of ['11.0.0.1', '9.255.255.255', '2001:db9::1', '::1', '::ffff:11.0.0.1', 'garbage', '']) {
      assert.equal(decideOutcome(req({ remoteIp }), m), 'ip_not_allowed', remoteIp);
    }
  });

  it('when requireClassMatch is on and the classes differ, then class_mismatch', () => {
    assert.equal(decideOutcome(req({ class: 'other' }), {}, T0, STRICT), 'class_mismatch');
  });

  it('lists every deny reason the rules can give, in the order the rules apply', () => {
    assert.deepEqual(
      [...DENY_REASONS],
      ['unknown_key', 'revoked', 'suspended', 'not_yet_valid', 'expired', 'server_not_covered', 'ip_required', 'ip_not_allowed', 'class_mismatch'],
    );
  });
});

describe('decide: order of the rules', () => {
  it('when a key fails several rules, then the first failing rule in order is the reason', () => {
    // Start from a key that fails every rule, then fix one rule at a time.
    let m: MappingOver = {
      status: 'revoked',
      notBefore: T0 + 1,
      expiresAt: T0, // an empty window: both time rules fail
      allowedCidrs: ['10.0.0.0/8'],
      entitlement: { server: 'other.example.com', class: 'myProduct' },
    };
    let r = req({ class: 'wrong' });
    const steps: [string, () => void][] = [
      ['revoked', () => (m = { ...m, status: 'suspended' })],
      ['suspended', () => (m = { ...m, status: 'active' })],
      ['not_yet_valid', () => (m = { ...m, notBefore: null })],
      ['expired', () => (m = { ...m, expiresAt: null })],
      ['server_not_covered', () => (m = { ...m, entitlement: { server: 'rm.example.com', class: 'myProduct' } })],
      ['ip_required', () => (r = { ...r, remoteIp: '192.0.2.1' })],
      ['ip_not_allowed', () => (r = { ...r, remoteIp: '10.0.0.1' })],
      ['class_mismatch', () => (r = { ...r, class: 'myProduct' })],
      ['granted', () => {}],
    ];
    for (const [want, fix] of steps) {
      assert.equal(decideOutcome(r, m, T0, STRICT), want);
      fix();
    }
  });

  it('when a Conary-unsafe server is asked on an otherwise failing key, then the earlier rules still win', () => {
    assert.equal(decideOutcome(req({ server: 'a&b' }), { status: 'suspended', entitlement: { server: '*' } }), 'suspended');
    assert.equal(decideOutcome(req({ server: 'a&b' }), { expiresAt: T0, entitlement: { server: '*' } }), 'expired');
  });
});

describe('decide: server patterns', () => {
  const covered = (pattern: string, server: string) => decideOutcome(req({ server }), { entitlement: { server: pattern } }) === 'granted';

  it('when the pattern is a host name, then exactly that host is covered, in any letter case', () => {
    assert.equal(covered('rm.example.com', 'rm.example.com'), true);
    assert.equal(covered('rm.example.com', 'RM.EXAMPLE.COM'), true);
    assert.equal(covered('RM.Example.com', 'rm.example.COM'), true);
    for (const server of ['other.example.com', 'rm.example.co', 'rm.example.com.', 'xrm.example.com', 'a.rm.example.com', 'rm.example.com.evil', 'rm.example.com:80']) {
      assert.equal(covered('rm.example.com', server), false, server);
    }
  });

  it('when the pattern has a port, then the port must match too', () => {
    assert.equal(covered('rm.example.com:8443', 'rm.example.com:8443'), true);
    assert.equal(covered('rm.example.com:8443', 'rm.example.com'), false);
    assert.equal(covered('rm.example.com:8443', 'rm.example.com:443'), false);
  });

  it('when the pattern is *.domain, then any name with at least one label before the domain is covered, in any case', () => {
    for (const server of ['a.example.com', 'A.EXAMPLE.COM', 'a.b.c.Example.Com', 'x-1.example.com', 'repo_2.example.com']) {
      assert.equal(covered('*.example.com', server), true, server);
    }
    assert.equal(covered('*.Example.COM', 'a.example.com'), true);
  });

  it('when the pattern is *.example.com, then example.com itself and look-alikes are not covered', () => {
    for (const server of ['example.com', 'EXAMPLE.COM', '.example.com', 'badexample.com', 'a.example.com.evil', 'a.example.co', 'a.example.com:443', 'example.com.a']) {
      assert.equal(covered('*.example.com', server), false, server);
    }
  });

  it('when the pattern is *, then every Conary-safe server name is covered', () => {
    for (const server of ['rm.example.com', 'localhost', 'UPPER', '10.0.0.1', '[::1]:8000', 'a b', '!#$%()*+,-./:;=?@[]^_`{|}~\\']) {
      assert.equal(covered('*', server), true, server);
    }
  });

  it("when the requested server is one Conary's parser would read back differently, then it is never granted, even by *", () => {
    const unsafe = ['', 'a&b', 'a<b', 'a>b', 'a"b', "a'b", 'caf\u00e9', 'a\nb', 'a\tb', 'a\u007fb', ' a', 'a ', 's'.repeat(256)];
    for (const server of unsafe) {
      assert.equal(decideOutcome(req({ server }), { entitlement: { server: '*' } }), 'server_not_covered', JSON.stringify(server));
    }
    assert.equal(decideOutcome(req({ server: 'a&b.example.com' }), { entitlement: { server: '*.example.com' } }), 'server_not_covered');
    assert.equal(decideOutcome(req({ server: 's'.repeat(255) }), { entitlement: { server: '*' } }), 'granted');
  });
});

describe('decide: allowed CIDRs', () => {
  const m = { allowedCidrs: ['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32'] };

  it('when the remote_ip is inside an IPv4 or IPv6 range, then granted', () => {
    for (const remoteIp of ['10.0.0.0', '10.255.255.255', '192.0.2.7', '2001:db8::', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', '2001:DB8::5']) {
      assert.equal(decideOutcome(req({ remoteIp }), m), 'granted', remoteIp);
    }
    assert.equal(decideOutcome(req({ remoteIp: '192.0.2.8' }), m), 'ip_not_allowed');
  });

  it('when the remote_ip is IPv4-mapped IPv6, then it is matched as the IPv4 address it carries', () => {
    assert.equal(decideOutcome(req({ remoteIp: '::ffff:10.1.2.3' }), m), 'granted');
    assert.equal(decideOutcome(req({ remoteIp: '::ffff:a01:203' }), m), 'granted');
    assert.equal(decideOutcome(req({ remoteIp: '::ffff:11.1.2.3' }), m), 'ip_not_allowed');
  });

  it('when the ranges are of one family only, then an address of the other family is not allowed', () => {
    assert.equal(decideOutcome(req({ remoteIp: '2001:db8::1' }), { allowedCidrs: ['0.0.0.0/0'] }), 'ip_not_allowed');
    assert.equal(decideOutcome(req({ remoteIp: '10.0.0.1' }), { allowedCidrs: ['::/0'] }), 'ip_not_allowed');
    assert.equal(decideOutcome(req({ remoteIp: '10.0.0.1' }), { allowedCidrs: ['0.0.0.0/0'] }), 'granted');
  });

  it('when no CIDRs are set, then any remote_ip, or none, is granted', () => {
    for (const remoteIp of [undefined, '10.0.0.1', '2001:db8::1', 'garbage']) {
      assert.equal(decideOutcome(req(remoteIp === undefined ? {} : { remoteIp })), 'granted', String(remoteIp));
    }
  });
});

describe('decide: requireClassMatch', () => {
  it('when it is off, then the requested class does not matter', () => {
    for (const cls of [undefined, 'myProduct', 'other', 'MYPRODUCT']) {
      assert.equal(decideOutcome(req(cls === undefined ? {} : { class: cls })), 'granted', String(cls));
      assert.equal(decideOutcome(req(cls === undefined ? {} : { class: cls }), { entitlement: { class: null } }), 'granted', String(cls));
    }
  });

  it("when it is on, then the requested class must equal the entitlement's, exactly (case-sensitive)", () => {
    assert.equal(decideOutcome(req({ class: 'myProduct' }), {}, T0, STRICT), 'granted');
    assert.equal(decideOutcome(req({ class: 'MyProduct' }), {}, T0, STRICT), 'class_mismatch');
    assert.equal(decideOutcome(req(), {}, T0, STRICT), 'class_mismatch');
  });

  it('when it is on and the entitlement has no class, then only a request without class is granted', () => {
    const m = { entitlement: { class: null } };
    assert.equal(decideOutcome(req(), m, T0, STRICT), 'granted');
    assert.equal(decideOutcome(req({ class: 'x' }), m, T0, STRICT), 'class_mismatch');
  });
});

describe('compileMapping', () => {
  it('when a stored CIDR is invalid, then compiling the mapping throws instead of allowing everyone', () => {
    assert.throws(() => mapping({ allowedCidrs: ['not-a-cidr/8'] }), /stored CIDR 'not-a-cidr\/8' is invalid/);
  });
});
