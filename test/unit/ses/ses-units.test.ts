import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseDurationSeconds } from '../../../src/ses/duration.ts';
import { callerAddress } from '../../../src/lib/http/caller.ts';
import { compileCidrs } from '../../../src/lib/ip.ts';
import { checkClaims, decideGrant } from '../../../src/ses/verifier.ts';
import { nameBasedUuid, poolOfApplication, vmidOf, VMID_NAMESPACE } from '../../../src/ses/service.ts';
import { readV1Approval } from '../../helpers/ses.ts';

describe('ISO 8601 durations', () => {
  it('reads weeks, days, hours, minutes and seconds into whole seconds (fractions round up)', () => {
    const cases: [string, number][] = [['PT5M', 300], ['PT1H30M', 5400], ['P1D', 86_400], ['P1W', 604_800], ['P1DT1S', 86_401], ['PT0.5S', 1], ['PT1,5S', 2], ['PT90S', 90]];
    for (const [text, seconds] of cases) assert.equal(parseDurationSeconds(text), seconds, text);
  });
  it('refuses anything else: calendar units, zero, empty parts, signs, spaces', () => {
    for (const bad of ['', 'P', 'PT', 'P1M', 'P1Y', 'PT0S', 'P0D', '-PT5M', 'PT5m', ' PT5M', 'PT5M ', '5M', 'T5M', 'P1DT', 'PT1.S', `PT${'9'.repeat(12)}S`]) {
      assert.equal(parseDurationSeconds(bad), undefined, JSON.stringify(bad));
    }
  });
});

describe('the caller address', () => {
  const trusted = compileCidrs(['10.0.0.0/8', '::1/128']);
  it('is the peer when no proxy is trusted or the peer is not one, whatever the header says', () => {
    assert.equal(callerAddress('203.0.113.5', '198.51.100.1', [])?.toString(), '203.0.113.5');
    assert.equal(callerAddress('203.0.113.5', '198.51.100.1', trusted)?.toString(), '203.0.113.5');
    assert.equal(callerAddress('::ffff:203.0.113.5', undefined, trusted)?.toString(), '203.0.113.5');
  });
  it('behind trusted proxies, is the first untrusted address from the right', () => {
    assert.equal(callerAddress('10.0.0.2', '198.51.100.1', trusted)?.toString(), '198.51.100.1');
    assert.equal(callerAddress('10.0.0.2', '1.1.1.1, 198.51.100.1, 10.0.0.9', trusted)?.toString(), '198.51.100.1');
    assert.equal(callerAddress('::1', ['1.1.1.1', '198.51.100.1'], trusted)?.toString(), '198.51.100.1');
    assert.equal(callerAddress('10.0.0.2', 'garbage, 10.0.0.3', trusted)?.toString(), '10.0.0.3');
    assert.equal(callerAddress('10.0.0.2', '10.0.0.4', trusted)?.toString(), '10.0.0.4');
  });
});

describe('claims and the grant', () => {
  const base = { iss: 'i', aud: 'a', nbf: 1, exp: 2, iat: 1, id: 'token-1', app: 'ContosoApp', ip: '::ffff:192.0.2.1' };
  it('normalises app and ip to lists, IPv4-mapped addresses to IPv4', () => {
    const r = checkClaims(base);
    assert.ok(r.ok);
    assert.deepEqual(r.claims.applications, ['ContosoApp']);
    assert.equal(r.claims.addresses[0]!.toString(), '192.0.2.1');
    assert.deepEqual(decideGrant(r.claims, 'contosoAPP', compileCidrs(['192.0.2.1/32'])[0]![0]), { granted: true });
    assert.equal(decideGrant(r.claims, 'other', compileCidrs(['192.0.2.1/32'])[0]![0]).granted, false);
    assert.equal(decideGrant(r.claims, 'contosoapp', compileCidrs(['192.0.2.2/32'])[0]![0]).granted, false);
    assert.equal(decideGrant(r.claims, 'contosoapp', undefined).granted, false);
  });
  it('refuses missing or malformed claims', () => {
    for (const bad of [{ aud: ['a'] }, { id: '' }, { id: 7 }, { app: [] }, { app: [1] }, { ip: 'not-an-ip' }, { ip: [] }, { iat: undefined }, { vmid: 5 }]) {
      const r = checkClaims({ ...base, ...bad } as never);
      assert.equal(r.ok, false, JSON.stringify(bad));
    }
  });
  it('names application pools plainly when it can, by hash otherwise', () => {
    assert.equal(poolOfApplication('ContosoApp'), 'ses-contosoapp');
    assert.match(poolOfApplication('Contoso App/2'), /^ses-[0-9a-f]{32}$/);
  });
});

describe('the vmid of an approval (v1)', () => {
  it('is a name-based UUID (version 5) as RFC 9562 computes it', () => {
    assert.equal(nameBasedUuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'www.example.com'), '2ed6657d-e927-568b-95e1-2665a8aea6a2');
  });
  it("is the token's vmid, else derived from the token id: stable, and different for another id", () => {
    assert.equal(vmidOf({ id: 'token-1', vmid: 'vm-42' }), 'vm-42');
    assert.equal(vmidOf({ id: 'token-1', vmid: null }), nameBasedUuid(VMID_NAMESPACE, 'token-1'));
    assert.equal(vmidOf({ id: 'token-1', vmid: null }), vmidOf({ id: 'token-1', vmid: null }));
    assert.notEqual(vmidOf({ id: 'token-2', vmid: null }), vmidOf({ id: 'token-1', vmid: null }));
  });
});

describe("the native client's reading of an approval (v1), as the tests judge answers", () => {
  it('takes a 200 with a string id and vmid', () => {
    assert.deepEqual(readV1Approval({ status: 200, body: { id: 'entitlement-1', vmid: 'vm-1', extra: 1 } }), { id: 'entitlement-1', vmid: 'vm-1' });
  });
  it('throws, as the client does, on another status or an answer without a string id and vmid', () => {
    const cases: [number, unknown, RegExp][] = [
      [200, { id: 'entitlement-1' }, /out_of_range: key 'vmid'/],
      [200, { vmid: 'vm-1' }, /out_of_range: key 'id'/],
      [200, { id: 'entitlement-1', vmid: null }, /type_error: 'vmid'/],
      [200, { id: 7, vmid: 'vm-1' }, /type_error: 'id'/],
      [200, undefined, /cannot read/],
      [200, ['id', 'vmid'], /cannot read/],
      [403, { id: 'entitlement-1', vmid: 'vm-1' }, /refuses status 403/],
    ];
    for (const [status, body, message] of cases) assert.throws(() => readV1Approval({ status, body }), message, JSON.stringify(body));
  });
});
