import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign, SignJWT, decodeProtectedHeader } from 'jose';
import {
  LAST_LICENCE_SECOND,
  LICENCE_TYPE,
  MAX_CAPACITY,
  algorithmOf,
  issueLicence,
  keyIdOf,
  licenceJson,
  licenceProblems,
  parseCapacityName,
  trustKeys,
  verifyLicence,
  windowOf,
  type TrustedKey,
} from '../../../src/domain/licence.ts';
import { belowUsage, capacitiesOf, limitUnder } from '../../../src/licensing/service.ts';

const ed = generateKeyPairSync('ed25519');
const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ed25519');

const T0 = new Date('2027-01-01T00:00:00Z');
const T1 = new Date('2027-12-31T23:59:59Z');
const spec = {
  id: 'lic-0001',
  tenant: 'acme-global-7',
  features: ['reports', 'export'],
  capacities: { 'concurrent:calls': 10, 'assigned:users': 50, 'feature:reports': 5 },
  issuedAt: new Date('2026-12-01T10:00:00.750Z'),
  notBefore: T0,
  expiresAt: T1,
  installation: 'inst-42',
};
const inside = new Date('2027-06-01T00:00:00Z');

/** A compact JWS over `claims` with any protected header, signed by `key`. */
function signed(claims: unknown, key: KeyObject, header: Record<string, unknown>): Promise<string> {
  const bytes = typeof claims === 'string' ? new TextEncoder().encode(claims) : new TextEncoder().encode(JSON.stringify(claims));
  return new CompactSign(bytes).setProtectedHeader({ alg: algorithmOf(key), ...header } as { alg: string }).sign(key);
}

const claimsOf = (s: typeof spec) => ({
  jti: s.id,
  tenant: s.tenant,
  features: s.features,
  capacities: s.capacities,
  iat: 1_796_119_200,
  nbf: s.notBefore.getTime() / 1000,
  exp: s.expiresAt.getTime() / 1000,
  installation: s.installation,
});

describe('licence: issue and verify', () => {
  let trusted: TrustedKey[];
  before(async () => {
    trusted = await trustKeys([other.publicKey, ed.publicKey, p256.publicKey]);
  });

  for (const [name, pair, alg] of [
    ['Ed25519', ed, 'EdDSA'],
    ['P-256', p256, 'ES256'],
  ] as const) {
    it(`round-trips a licence signed with ${name} (${alg}), its header naming the type and the key`, async () => {
      const token = await issueLicence(spec, pair.privateKey);
      const header = decodeProtectedHeader(token);
      assert.deepEqual(header, { alg, typ: LICENCE_TYPE, kid: await keyIdOf(pair.publicKey) });
      const verified = await verifyLicence(token, trusted, { now: inside });
      assert.ok(verified.ok, JSON.stringify(verified));
      assert.equal(verified.keyId, await keyIdOf(pair.publicKey));
      assert.deepEqual(verified.licence, {
        id: 'lic-0001',
        tenant: 'acme-global-7',
        features: ['reports', 'export'],
        capacities: { 'concurrent:calls': 10, 'assigned:users': 50, 'feature:reports': 5 },
        issuedAt: new Date('2026-12-01T10:00:00Z'), // whole seconds
        notBefore: T0,
        expiresAt: T1,
        installation: 'inst-42',
      });
      assert.deepEqual(licenceJson(verified.licence), {
        licenceId: 'lic-0001',
        tenant: 'acme-global-7',
        features: ['reports', 'export'],
        capacities: { 'concurrent:calls': 10, 'assigned:users': 50, 'feature:reports': 5 },
        issuedAt: '2026-12-01T10:00:00.000Z',
        notBefore: '2027-01-01T00:00:00.000Z',
        expiresAt: '2027-12-31T23:59:59.000Z',
        installation: 'inst-42',
      });
    });
  }

  it('issues with defaults: a random id, no features or capacities, valid from now, bound to no installation', async () => {
    const before = Math.floor(Date.now() / 1000) * 1000;
    const token = await issueLicence({ tenant: 't', expiresAt: new Date(Date.now() + 86_400_000) }, ed.privateKey);
    const verified = await verifyLicence(token, trusted);
    assert.ok(verified.ok);
    assert.match(verified.licence.id, /^[0-9a-f-]{36}$/);
    assert.deepEqual([verified.licence.features, verified.licence.capacities, verified.licence.installation], [[], {}, null]);
    assert.ok(verified.licence.notBefore.getTime() >= before && verified.licence.notBefore.getTime() <= Date.now());
    assert.equal(verified.licence.notBefore.getTime(), verified.licence.issuedAt.getTime());
  });

  it('a key a licence is verified with may be trusted through its private half', async () => {
    const token = await issueLicence(spec, ed.privateKey);
    const verified = await verifyLicence(token, await trustKeys([ed.privateKey]), { now: inside });
    assert.equal(verified.ok, true);
  });

  it('refuses to issue what is not a licence, naming every problem, or with a key of another type', async () => {
    await assert.rejects(
      issueLicence({ ...spec, features: ['a'], capacities: { 'seats': 5, 'feature:b': 1 } }, ed.privateKey),
      /capacity 'seats' is not concurrent:<name>.*; capacity 'feature:b' limits feature 'b', which the licence does not grant/,
    );
    await assert.rejects(issueLicence({ ...spec, tenant: 'a\nb' }, ed.privateKey), /tenant: no control characters/);
    await assert.rejects(issueLicence({ ...spec, id: 'has space' }, ed.privateKey), /jti: printable ASCII without spaces/);
    await assert.rejects(issueLicence({ ...spec, installation: '' }, ed.privateKey), /installation:/);
    // Signed in whole seconds: a window inside one second is none; times after 9999 are no dates.
    await assert.rejects(issueLicence({ ...spec, notBefore: new Date(10_100), expiresAt: new Date(10_900) }, ed.privateKey), /^Error: it expires before it becomes valid$/);
    assert.ok(await issueLicence({ ...spec, notBefore: new Date(10_900), expiresAt: new Date(11_000) }, ed.privateKey));
    await assert.rejects(issueLicence({ ...spec, expiresAt: new Date('+010000-01-01T00:00:00Z') }, ed.privateKey), /^Error: exp: a time before the year 10000$/);
    assert.ok(await issueLicence({ ...spec, expiresAt: new Date('9999-12-31T23:59:59Z') }, ed.privateKey));
    await assert.rejects(issueLicence(spec, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey), /Ed25519 or a P-256 key, not rsa/);
    await assert.rejects(issueLicence(spec, generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey), /Ed25519 or a P-256 key/);
  });

  it('passes nothing else for a licence: another type, no type, another algorithm, a wrong key, no trusted key', async () => {
    const claims = claimsOf(spec);
    const kid = await keyIdOf(ed.publicKey);
    // The same key and claims, as an ordinary JWT: not a licence.
    const jwt = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid }).sign(ed.privateKey);
    assert.deepEqual(await verifyLicence(jwt, trusted, { now: inside }), {
      ok: false,
      code: 'licence_malformed',
      reason: `not a licence: its type is "JWT", not ${LICENCE_TYPE}`,
    });
    const untyped = await signed(claims, ed.privateKey, { kid });
    assert.deepEqual(await verifyLicence(untyped, trusted, { now: inside }), { ok: false, code: 'licence_malformed', reason: `not a licence: its type is null, not ${LICENCE_TYPE}` });
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: LICENCE_TYPE }).sign(new Uint8Array(32));
    assert.equal(((await verifyLicence(hs, trusted, { now: inside })) as { code: string }).code, 'licence_signature_invalid');
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: LICENCE_TYPE })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.x`;
    assert.match(JSON.stringify(await verifyLicence(unsigned, trusted, { now: inside })), /licence_signature_invalid.*not none/);

    const good = await issueLicence(spec, ed.privateKey);
    assert.deepEqual(await verifyLicence(good, await trustKeys([other.publicKey, p256.publicKey]), { now: inside }), {
      ok: false,
      code: 'licence_signature_invalid',
      reason: 'its signature does not verify with any trusted vendor key',
    });
    assert.deepEqual(await verifyLicence(good, [], { now: inside }), { ok: false, code: 'licence_signature_invalid', reason: 'no vendor key is trusted to verify licences' });
  });

  it('tries every trusted key when the kid names none of them, and only the named one when it names one', async () => {
    const claims = claimsOf(spec);
    const unknownKid = await signed(claims, ed.privateKey, { typ: LICENCE_TYPE, kid: 'some-rotated-key' });
    const verified = await verifyLicence(unknownKid, trusted, { now: inside });
    assert.ok(verified.ok, JSON.stringify(verified));
    assert.equal(verified.keyId, await keyIdOf(ed.publicKey), 'the key that verified it');
    const noKid = await signed(claims, p256.privateKey, { typ: LICENCE_TYPE });
    assert.equal(((await verifyLicence(noKid, trusted, { now: inside })) as { keyId: string }).keyId, await keyIdOf(p256.publicKey));
    // Naming another trusted key: that one is asked, and it did not sign.
    const misnamed = await signed(claims, ed.privateKey, { typ: LICENCE_TYPE, kid: await keyIdOf(other.publicKey) });
    assert.equal(((await verifyLicence(misnamed, trusted, { now: inside })) as { code: string }).code, 'licence_signature_invalid');
  });

  it('refuses a token that is not three base64url parts, too long, or whose header or claims are not JSON or not a licence\'s', async () => {
    const cases: [string, RegExp][] = [
      ['', /compact JWS/],
      ['a.b', /compact JWS/],
      ['a.b.c.d.e', /compact JWS/],
      ['a+b.c.d', /compact JWS/],
      [`${'a'.repeat(64 * 1024)}.b.c`, /at most 64 KiB/],
      [`${Buffer.from('not json').toString('base64url')}.e30.c2ln`, /header is not JSON/],
      [await signed('not json', ed.privateKey, { typ: LICENCE_TYPE }), /claims are not JSON/],
      [await signed([1, 2], ed.privateKey, { typ: LICENCE_TYPE }), /claims are not a licence's/],
      [await signed({ ...claimsOf(spec), jti: undefined }, ed.privateKey, { typ: LICENCE_TYPE }), /jti/],
      [await signed({ ...claimsOf(spec), exp: 1.5 }, ed.privateKey, { typ: LICENCE_TYPE }), /exp/],
      [await signed({ ...claimsOf(spec), capacities: { 'assigned:users': -1 } }, ed.privateKey, { typ: LICENCE_TYPE }), /capacities/],
      [await signed({ ...claimsOf(spec), capacities: { seats: 1 } }, ed.privateKey, { typ: LICENCE_TYPE }), /capacity 'seats' is not/],
      [await signed({ ...claimsOf(spec), features: ['a', 'a'] }, ed.privateKey, { typ: LICENCE_TYPE }), /named twice/],
      [await signed({ ...claimsOf(spec), nbf: claimsOf(spec).exp }, ed.privateKey, { typ: LICENCE_TYPE }), /expires before it becomes valid/],
      [await signed({ ...claimsOf(spec), iat: LAST_LICENCE_SECOND + 1 }, ed.privateKey, { typ: LICENCE_TYPE }), /iat: a time before the year 10000/],
    ];
    for (const [token, reason] of cases) {
      const verified = await verifyLicence(token, trusted, { now: inside });
      assert.equal(verified.ok, false, token.slice(0, 40));
      assert.equal((verified as { code: string }).code, 'licence_malformed', token.slice(0, 40));
      assert.match((verified as { reason: string }).reason, reason);
    }
  });

  it('checks the window with a clock tolerance (60 s by default), or not at all with checkWindow: false', async () => {
    const token = await issueLicence(spec, ed.privateKey);
    const at = async (ms: number, options: { clockToleranceSeconds?: number; checkWindow?: boolean } = {}) => {
      const v = await verifyLicence(token, trusted, { now: new Date(ms), ...options });
      return v.ok ? 'ok' : v.code;
    };
    const [nbf, exp] = [T0.getTime(), T1.getTime()];
    assert.equal(await at(exp + 59_999), 'ok');
    assert.equal(await at(exp + 60_000), 'licence_expired');
    assert.equal(await at(nbf - 60_000), 'ok');
    assert.equal(await at(nbf - 60_001), 'licence_not_yet_valid');
    assert.equal(await at(exp - 1, { clockToleranceSeconds: 0 }), 'ok');
    assert.equal(await at(exp, { clockToleranceSeconds: 0 }), 'licence_expired');
    assert.equal(await at(nbf, { clockToleranceSeconds: 0 }), 'ok');
    assert.equal(await at(nbf - 1, { clockToleranceSeconds: 0 }), 'licence_not_yet_valid');
    assert.equal(await at(exp + 3_600_000, { clockToleranceSeconds: 3600 }), 'licence_expired');
    assert.equal(await at(exp + 3_599_999, { clockToleranceSeconds: 3600 }), 'ok');
    assert.equal(await at(exp + 365 * 86_400_000, { checkWindow: false }), 'ok');
    assert.equal(await at(0, { checkWindow: false }), 'ok');
    const expired = await verifyLicence(token, trusted, { now: new Date(exp + 86_400_000) });
    assert.deepEqual(expired, { ok: false, code: 'licence_expired', reason: 'it expired at 2027-12-31T23:59:59.000Z' });
    const early = await verifyLicence(token, trusted, { now: new Date(nbf - 86_400_000) });
    assert.deepEqual(early, { ok: false, code: 'licence_not_yet_valid', reason: 'it is not valid before 2027-01-01T00:00:00.000Z' });
    assert.deepEqual([windowOf(spec, new Date(exp)), windowOf(spec, new Date(nbf - 1)), windowOf(spec, new Date(nbf))], ['expired', 'not_yet_valid', 'valid']);
  });
});

describe('licence content', () => {
  const good = { features: ['a', 'b.c'], capacities: { 'feature:a': 0, 'assigned:users': MAX_CAPACITY }, notBefore: T0, expiresAt: T1 };

  it('finds nothing wrong with a good licence, and names each problem of a bad one', () => {
    assert.deepEqual(licenceProblems(good), []);
    assert.deepEqual(licenceProblems({ ...good, features: ['-a', 'b', 'b'] }), [
      "feature '-a' is not a name: 1 to 64 of A-Z a-z 0-9 . _ -",
      "feature 'b' is named twice",
      "capacity 'feature:a' limits feature 'a', which the licence does not grant",
    ]);
    assert.deepEqual(licenceProblems({ ...good, capacities: { users: 1, 'assigned:': 1 } }), [
      "capacity 'users' is not concurrent:<name>, assigned:<name> or feature:<feature>",
      "capacity 'assigned:' is not concurrent:<name>, assigned:<name> or feature:<feature>",
    ]);
    for (const limit of [-1, 1.5, MAX_CAPACITY + 1, Number.NaN]) {
      assert.deepEqual(licenceProblems({ ...good, capacities: { 'concurrent:x': limit } }), [`capacity 'concurrent:x': ${limit} is not a whole number from 0 to ${MAX_CAPACITY}`]);
    }
    assert.deepEqual(licenceProblems({ ...good, expiresAt: T0 }), ['it expires before it becomes valid']);
    assert.deepEqual(licenceProblems({ ...good, expiresAt: new Date(T0.getTime() - 1) }), ['it expires before it becomes valid']);
  });

  it('parses concurrent:, assigned: and feature: names, and nothing else', () => {
    assert.deepEqual(parseCapacityName('concurrent:calls'), { kind: 'concurrent', name: 'calls' });
    assert.deepEqual(parseCapacityName('assigned:users'), { kind: 'assigned', name: 'users' });
    assert.deepEqual(parseCapacityName('feature:Reports.v2_x-y'), { kind: 'feature', name: 'Reports.v2_x-y' });
    assert.deepEqual(parseCapacityName(`assigned:${'d'.repeat(64)}`), { kind: 'assigned', name: 'd'.repeat(64) });
    assert.deepEqual(parseCapacityName('assigned:0'), { kind: 'assigned', name: '0' });
    for (const bad of [
      '',
      'users',
      ':users',
      'assigned:',
      'assigned: users',
      'assigned:users ',
      'Assigned:users',
      'seats:5',
      'assigned:.users',
      'assigned:-users',
      'assigned:_users',
      'assigned:us/ers',
      'assigned:a:b',
      `assigned:${'d'.repeat(65)}`,
      'assigned:usérs',
      'concurrent:calls\n',
    ]) {
      assert.equal(parseCapacityName(bad), undefined, JSON.stringify(bad));
    }
  });

  it('knows which keys sign licences', () => {
    assert.equal(algorithmOf(ed.privateKey), 'EdDSA');
    assert.equal(algorithmOf(ed.publicKey), 'EdDSA');
    assert.equal(algorithmOf(p256.publicKey), 'ES256');
    assert.throws(() => algorithmOf(generateKeyPairSync('ed448').publicKey), /not ed448 key/);
    assert.throws(() => algorithmOf(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey), /Ed25519 or a P-256/);
  });

  it('names a key by its RFC 7638 thumbprint, the same for the private and the public half', async () => {
    const kid = await keyIdOf(ed.publicKey);
    assert.match(kid, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(await keyIdOf(ed.privateKey), kid);
    assert.equal(await keyIdOf(createPublicKey(ed.privateKey)), kid);
    assert.notEqual(await keyIdOf(other.publicKey), kid);
  });
});

describe('capacities under a licence', () => {
  const licence = { features: ['reports', 'export'], capacities: { 'concurrent:calls': 10, 'assigned:users': 50, 'feature:reports': 5 } };

  it('limits a capacity by its number, a granted feature without one not at all, and anything else to 0', () => {
    assert.equal(limitUnder(licence, 'concurrent:calls'), 10);
    assert.equal(limitUnder(licence, 'feature:reports'), 5);
    assert.equal(limitUnder(licence, 'feature:export'), null);
    assert.equal(limitUnder(licence, 'feature:admin'), 0);
    assert.equal(limitUnder(licence, 'assigned:devices'), 0);
    assert.equal(limitUnder(licence, 'not a capacity'), 0);
    assert.equal(limitUnder({ features: [], capacities: { 'assigned:users': 0 } }, 'assigned:users'), 0);
  });

  it('makes a capacity of each it names and of each feature it grants without a limit', () => {
    assert.deepEqual(
      [...capacitiesOf(licence)],
      [
        ['concurrent:calls', { kind: 'concurrent', limit: 10 }],
        ['assigned:users', { kind: 'assigned', limit: 50 }],
        ['feature:reports', { kind: 'feature', limit: 5 }],
        ['feature:export', { kind: 'feature', limit: null }],
      ],
    );
    assert.deepEqual([...capacitiesOf({ features: [], capacities: {} })], []);
  });

  it('finds each capacity whose use is above the new limit, in name order; a capacity the licence drops counts as 0', () => {
    const use = new Map([
      ['concurrent:calls', 10],
      ['assigned:users', 51],
      ['feature:reports', 6],
      ['feature:export', 1000],
      ['assigned:devices', 1],
      ['feature:admin', 0],
    ]);
    assert.deepEqual(belowUsage(licence, use), [
      { capacity: 'assigned:devices', inUse: 1, limit: 0 },
      { capacity: 'assigned:users', inUse: 51, limit: 50 },
      { capacity: 'feature:reports', inUse: 6, limit: 5 },
    ]);
    assert.deepEqual(belowUsage(licence, new Map([['assigned:users', 50]])), []);
    assert.deepEqual(belowUsage(licence, new Map()), []);
  });
});
