import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign } from 'jose';
import fc from 'fast-check';
import {
  CAPACITY_KINDS,
  LICENCE_TYPE,
  MAX_CAPACITY,
  algorithmOf,
  issueLicence,
  licenceJson,
  parseCapacityName,
  trustKeys,
  verifyLicence,
  type LicenceSpec,
  type TrustedKey,
} from '../../src/domain/licence.ts';

/*
 * The licence format under random input: what is issued verifies to itself; what is changed
 * does not verify (unless the change is one the signature cannot see, and then to the same
 * licence); whatever arrives, signed or not, verifyLicence answers and never throws, and takes
 * for a licence exactly the claims the format allows (a model written apart from the schema);
 * capacity names are exactly the documented grammar.
 *
 * FC_RUNS=<n> sets the runs per property (default 200); FC_SEED=<n> (and FC_PATH=<path>, both
 * printed by fast-check on a failure) replay a run.
 */
const RUNS = Number(process.env.FC_RUNS || 200);
const params: fc.Parameters<unknown> = {
  numRuns: RUNS,
  ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
  ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
};

const KEYS = { ed: generateKeyPairSync('ed25519'), p256: generateKeyPairSync('ec', { namedCurve: 'P-256' }) };
const signer = fc.constantFrom(KEYS.ed.privateKey, KEYS.p256.privateKey);

// ---------------------------------------------------------------------------------------------
// Valid specs.

const nameArb = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const idArb = fc.stringMatching(/^[\x21-\x7e]{1,128}$/);
const tenantArb = fc.string({ unit: 'binary', minLength: 1, maxLength: 80 }).filter((t) => /^[^\x00-\x1f\x7f]+$/.test(t));
const limitArb = fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: MAX_CAPACITY }));
/** Up to year 2100, in milliseconds (sub-second parts included: claims are whole seconds). */
const instantArb = fc.integer({ min: 0, max: 4_102_444_800_000 });

const specArb: fc.Arbitrary<LicenceSpec> = fc
  .record({
    features: fc.uniqueArray(nameArb, { maxLength: 6 }),
    named: fc.uniqueArray(fc.tuple(fc.constantFrom('concurrent', 'assigned'), nameArb, limitArb), { maxLength: 5, selector: ([k, n]) => `${k}:${n}` }),
    featureLimits: fc.array(limitArb, { maxLength: 6 }),
    id: fc.option(idArb, { nil: undefined }),
    tenant: tenantArb,
    issuedAt: instantArb,
    notBefore: instantArb,
    // Now and then under a second: the window is signed in whole seconds.
    lengthMs: fc.oneof(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 1, max: 10 * 365 * 86_400_000 })),
    installation: fc.option(idArb, { nil: undefined }),
  })
  .map((r) => {
    const capacities: Record<string, number> = {};
    for (const [kind, name, limit] of r.named) capacities[`${kind}:${name}`] = limit;
    r.featureLimits.forEach((limit, i) => {
      if (i < r.features.length) capacities[`feature:${r.features[i]}`] = limit;
    });
    return {
      ...(r.id !== undefined && { id: r.id }),
      tenant: r.tenant,
      features: r.features,
      capacities,
      issuedAt: new Date(r.issuedAt),
      notBefore: new Date(r.notBefore),
      expiresAt: new Date(r.notBefore + r.lengthMs),
      ...(r.installation !== undefined && { installation: r.installation }),
    };
  });

const wholeSeconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

describe('licence format, property-based', () => {
  let trusted: TrustedKey[];
  let sample: string;
  before(async () => {
    trusted = await trustKeys([KEYS.ed.publicKey, KEYS.p256.publicKey]);
    sample = await issueLicence({ id: 'lic-sample', tenant: 'acme', features: ['f'], capacities: { 'feature:f': 3, 'assigned:users': 9 }, expiresAt: new Date(Date.now() + 86_400_000) }, KEYS.ed.privateKey);
  });

  it('every valid spec, issued with either key, verifies to the same licence (and one whose window is under a whole second is refused)', async () => {
    await fc.assert(
      fc.asyncProperty(specArb, signer, async (spec, key) => {
        if (wholeSeconds(spec.expiresAt) <= wholeSeconds(spec.notBefore!)) {
          await assert.rejects(issueLicence(spec, key), /^Error: it expires before it becomes valid$/);
          return;
        }
        const token = await issueLicence(spec, key);
        const verified = await verifyLicence(token, trusted, { now: spec.notBefore });
        assert.ok(verified.ok, JSON.stringify(verified));
        const l = verified.licence;
        if (spec.id !== undefined) assert.equal(l.id, spec.id);
        assert.deepEqual(
          { ...l, id: undefined },
          {
            id: undefined,
            tenant: spec.tenant,
            features: spec.features,
            capacities: spec.capacities,
            issuedAt: wholeSeconds(spec.issuedAt!),
            notBefore: wholeSeconds(spec.notBefore!),
            expiresAt: wholeSeconds(spec.expiresAt),
            installation: spec.installation ?? null,
          },
        );
      }),
      params,
    );
  });

  it('a valid licence changed in one character, cut short, or with its parts swapped never verifies, unless to the same licence', async () => {
    const original = await verifyLicence(sample, trusted);
    assert.ok(original.ok);
    const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('change' as const), at: fc.nat(), to: fc.oneof(fc.constantFrom(...B64), fc.constantFrom('.', '=', ' ', '+', '/', '\u00e9', '\0')) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('swap' as const), order: fc.constantFrom([1, 0, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1], [0, 0, 2], [0, 1, 1]) }),
    );
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        let changed: string;
        if (m.kind === 'change') {
          const at = m.at % sample.length;
          fc.pre(sample[at] !== m.to);
          changed = sample.slice(0, at) + m.to + sample.slice(at + 1);
        } else if (m.kind === 'cut') {
          changed = sample.slice(0, m.at % sample.length);
        } else {
          const parts = sample.split('.');
          changed = m.order.map((i) => parts[i]).join('.');
        }
        const verified = await verifyLicence(changed, trusted);
        if (verified.ok) {
          // Only the unused low bits of a signature's last character can change unseen.
          assert.deepEqual(verified.licence, original.licence, changed);
          assert.ok(m.kind === 'change' && m.at % sample.length === sample.length - 1, `${JSON.stringify(m)} verified`);
        } else {
          assert.match(verified.code, /^licence_(malformed|signature_invalid)$/);
        }
      }),
      params,
    );
  });

  it('any text at all is answered, never thrown at, and never taken for a licence', async () => {
    const b64part = fc.stringMatching(/^[A-Za-z0-9_-]{0,60}$/);
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.tuple(b64part, b64part, b64part).map((p) => p.join('.')),
      fc.tuple(fc.jsonValue(), fc.jsonValue(), b64part).map(([h, c, s]) => `${b64(h)}.${b64(c)}.${s}`),
      fc.tuple(fc.jsonValue(), b64part).map(([c, s]) => `${b64({ alg: 'EdDSA', typ: LICENCE_TYPE })}.${b64(c)}.${s}`),
    );
    await fc.assert(
      fc.asyncProperty(text, async (t) => {
        const verified = await verifyLicence(t, trusted);
        assert.equal(verified.ok, false);
      }),
      params,
    );
  });

  it('claims signed by a trusted key are a licence exactly when they meet the format, and verifying never throws', async () => {
    const seen = { ok: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(claimsArb, signer, fc.constantFrom(LICENCE_TYPE, 'JWT', undefined), async (claims, key, typ) => {
        const token = await signedClaims(claims, key, typ);
        const verified = await verifyLicence(token, trusted, { checkWindow: false });
        const expected = typ === LICENCE_TYPE && modelAccepts(claims);
        assert.equal(verified.ok, expected, `${JSON.stringify(claims)}: ${JSON.stringify(verified)}`);
        seen[verified.ok ? 'ok' : 'refused']++;
        if (verified.ok) {
          // What verifies can be shown.
          const json = licenceJson(verified.licence);
          assert.equal(json.licenceId, (claims as { jti: string }).jti);
        } else {
          assert.equal(verified.code, 'licence_malformed');
        }
      }),
      params,
    );
    // Both sides of the format are reached, not only refusals.
    assert.ok(seen.ok >= RUNS / 10 && seen.refused >= RUNS / 10, JSON.stringify(seen));
  });

  it('parseCapacityName accepts exactly <kind>:<name>, kind concurrent, assigned or feature, name 1 to 64 of A-Z a-z 0-9 . _ - not starting with . _ -', () => {
    const alphabet = fc.constantFrom(...'aZ09._-:/ é\n\t'.split(''), ...'concurrentassignedfeature'.split(''));
    const near = fc.tuple(
      fc.constantFrom('concurrent', 'assigned', 'feature', 'Concurrent', 'assign', 'features', 'seats', ''),
      fc.constantFrom(':', '', '::', ' :'),
      fc.oneof(nameArb, fc.string({ unit: alphabet, maxLength: 70 }), fc.string({ unit: alphabet, minLength: 60, maxLength: 70 })),
    ).map(([k, sep, n]) => `${k}${sep}${n}`);
    fc.assert(
      fc.property(fc.oneof(near, fc.string({ unit: 'binary', maxLength: 80 })), (text) => {
        const parsed = parseCapacityName(text);
        assert.deepEqual(parsed, modelCapacity(text), JSON.stringify(text));
        if (parsed) assert.equal(`${parsed.kind}:${parsed.name}`, text);
      }),
      { ...params, numRuns: RUNS * 5 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Arbitrary claims, and a model of the format written apart from its zod schema.

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value) ?? 'null').toString('base64url');

function signedClaims(claims: unknown, key: KeyObject, typ: string | undefined): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: algorithmOf(key), ...(typ !== undefined && { typ }) })
    .sign(key);
}

/** The claims of a valid spec, as issueLicence signs them (ids given: the model reads them). */
const validClaimsArb = fc
  .tuple(specArb, idArb)
  .filter(([spec]) => wholeSeconds(spec.expiresAt) > wholeSeconds(spec.notBefore!))
  .map(([spec, id]) => ({
    jti: spec.id ?? id,
    tenant: spec.tenant,
    features: spec.features,
    capacities: spec.capacities,
    iat: Math.floor(spec.issuedAt!.getTime() / 1000),
    nbf: Math.floor(spec.notBefore!.getTime() / 1000),
    exp: Math.floor(spec.expiresAt.getTime() / 1000),
    ...(spec.installation !== undefined && { installation: spec.installation }),
  }));

/** The last second of 9999: later times cannot be shown or stored. */
const LAST_SECOND = Date.UTC(9999, 11, 31, 23, 59, 59) / 1000;
const LAST = LAST_SECOND;
/** For each claim, values that are near a valid one, on either side. */
const NEAR: Record<string, unknown[]> = {
  jti: ['', 'has space', 'x'.repeat(128), 'x'.repeat(129), 'caf\u00e9', '~!', 7, null],
  tenant: ['', ' ', 'a\u0000b', 'a\u001fb', 'a\u007fb', 'a\u0080b', 't'.repeat(256), 't'.repeat(257), 5],
  features: [[], ['a', 'a'], ['-x'], ['a'.repeat(65)], 'a', [1], Array.from({ length: 1001 }, (_, i) => `f${i}`)],
  capacities: [{}, [], null, { seats: 1 }, { 'assigned:': 1 }, { 'feature:not-granted': 1 }, { 'assigned:u': -1 }, { 'assigned:u': 0.5 }, { 'assigned:u': MAX_CAPACITY }, { 'assigned:u': MAX_CAPACITY + 1 }, { 'assigned:u': '3' }],
  iat: [0, -1, 1.5, '100', LAST, LAST + 1, 8_640_000_000_001, Number.MAX_SAFE_INTEGER, 2 ** 53, 1e300],
  nbf: [0, -1, 1.5, LAST - 1, LAST, LAST + 1, 2 ** 53],
  exp: [0, 1, -1, 1.5, LAST, LAST + 1, 8_640_000_000_001, 2 ** 53, 1e300],
  installation: ['', 'two words', 'inst-1', 5, null],
};
const corruption = fc.tuple(
  fc.constantFrom(...Object.keys(NEAR)),
  fc.oneof({ arbitrary: fc.constant({ drop: true as const }), weight: 1 }, { arbitrary: fc.jsonValue({ maxDepth: 2 }).map((value) => ({ value })), weight: 1 }, { arbitrary: fc.nat().map((i) => ({ near: i })), weight: 4 }),
);

/** Claims: valid ones, valid ones with one to three claims changed or dropped (or an unknown one added), and any JSON. */
const claimsArb: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 1 },
  { arbitrary: validClaimsArb, weight: 3 },
  {
    weight: 6,
    arbitrary: fc.tuple(validClaimsArb, fc.array(corruption, { minLength: 1, maxLength: 3 }), fc.option(fc.jsonValue({ maxDepth: 1 }), { nil: undefined })).map(([claims, changes, extra]) => {
      const out: Record<string, unknown> = { ...claims };
      for (const [name, change] of changes) {
        if ('drop' in change) delete out[name];
        else if ('value' in change) out[name] = change.value;
        else out[name] = NEAR[name]![change.near % NEAR[name]!.length];
      }
      if (extra !== undefined) out.extra = extra;
      return out;
    }),
  },
);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown) => typeof v === 'string' && v.length >= 1 && v.length <= 128 && [...v].every((c) => c >= '!' && c <= '~');
const isName = (v: unknown): v is string => typeof v === 'string' && modelName(v);
const isSeconds = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function modelAccepts(c: unknown): boolean {
  if (!isObject(c)) return false;
  if (!isId(c.jti)) return false;
  if (typeof c.tenant !== 'string' || c.tenant.length < 1 || c.tenant.length > 256 || [...c.tenant].some((ch) => ch.charCodeAt(0) < 0x20 || ch === '\u007f')) return false;
  if (!Array.isArray(c.features) || c.features.length > 1000 || !c.features.every(isName) || new Set(c.features).size !== c.features.length) return false;
  if (!isObject(c.capacities)) return false;
  for (const [name, limit] of Object.entries(c.capacities)) {
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > MAX_CAPACITY) return false;
    const parsed = modelCapacity(name);
    if (!parsed) return false;
    if (parsed.kind === 'feature' && !c.features.includes(parsed.name)) return false;
  }
  if (![c.iat, c.nbf, c.exp].every(isSeconds)) return false;
  if (c.installation !== undefined && !isId(c.installation)) return false;
  const [iat, nbf, exp] = [c.iat, c.nbf, c.exp] as number[];
  return iat! <= LAST_SECOND && nbf! <= LAST_SECOND && exp! <= LAST_SECOND && exp! > nbf!;
}

function modelName(text: string): boolean {
  const ok = (ch: string) => (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
  if (text.length < 1 || text.length > 64 || !ok(text[0]!)) return false;
  for (const ch of text) if (!ok(ch) && ch !== '.' && ch !== '_' && ch !== '-') return false;
  return true;
}

function modelCapacity(text: string): { kind: string; name: string } | undefined {
  for (const kind of ['concurrent', 'assigned', 'feature']) {
    if (text.startsWith(`${kind}:`) && modelName(text.slice(kind.length + 1))) return { kind, name: text.slice(kind.length + 1) };
  }
  return undefined;
}
