import { createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, compactVerify, decodeProtectedHeader, exportJWK, type JWTPayload } from 'jose';
import { z } from 'zod';

/**
 * The signed licence (docs/licences.md): a compact JWS, EdDSA with Ed25519 (or ES256 with a
 * P-256 key), over the claims below, with header `typ: entgate-licence+jwt` (no other token
 * signed by the same key passes for a licence) and `kid`, the RFC 7638 thumbprint of the
 * signing key. This module is shared by the vendor's tooling (issue, verify), the installation
 * (install) and the services' LicenceClient: the one definition of what a valid licence is.
 */
export const LICENCE_TYPE = 'entgate-licence+jwt';
export const LICENCE_ALGORITHMS = ['EdDSA', 'Ed25519', 'ES256'] as const;

/** Feature names, and the name part of a capacity: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit. */
export const LICENCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * What a capacity counts:
 * - `concurrent`: at most N at once, each held with heartbeats and freed at expiry (a lease);
 * - `assigned`: at most N named entities (users, devices) active at once, kept until released;
 * - `feature`: at most N entities (users) holding the feature of that name.
 */
export const CAPACITY_KINDS = ['concurrent', 'assigned', 'feature'] as const;
export type CapacityKind = (typeof CAPACITY_KINDS)[number];

/** The largest limit a capacity may have (a PostgreSQL integer). */
export const MAX_CAPACITY = 2_147_483_647;

export interface CapacityName {
  kind: CapacityKind;
  /** What follows the colon: the channel, the entity type, or the feature. */
  name: string;
}

/** `concurrent:<name>`, `assigned:<name>` or `feature:<feature>`; undefined for anything else. */
export function parseCapacityName(text: string): CapacityName | undefined {
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  const kind = text.slice(0, colon);
  const name = text.slice(colon + 1);
  if (!(CAPACITY_KINDS as readonly string[]).includes(kind) || !LICENCE_NAME.test(name)) return undefined;
  return { kind: kind as CapacityKind, name };
}

/** A licence as its claims say, with times as dates. */
export interface Licence {
  /** `jti`. */
  id: string;
  /** The tenant it is for (the seed's tenantGlobalID). */
  tenant: string;
  features: string[];
  /** Capacity name -> limit (a whole number). */
  capacities: Record<string, number>;
  issuedAt: Date;
  notBefore: Date;
  expiresAt: Date;
  /** The installation it is bound to; null: any. */
  installation: string | null;
}

/** What a vendor asks to issue. */
export interface LicenceSpec {
  id?: string;
  tenant: string;
  features?: readonly string[];
  capacities?: Readonly<Record<string, number>>;
  issuedAt?: Date;
  notBefore?: Date;
  expiresAt: Date;
  installation?: string;
}

const id = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces');
/** The last second of the year 9999: a later time is no date a licence can be shown or stored with. */
export const LAST_LICENCE_SECOND = 253_402_300_799;
const seconds = z.number().int().nonnegative().max(LAST_LICENCE_SECOND, 'a time before the year 10000');

const claimsSchema = z.object({
  jti: id,
  tenant: z.string().min(1).max(256).regex(/^[^\x00-\x1f\x7f]+$/, 'no control characters'),
  features: z.array(z.string().regex(LICENCE_NAME, 'a feature name: 1 to 64 of A-Z a-z 0-9 . _ -')).max(1000),
  capacities: z.record(z.string(), z.number().int().min(0).max(MAX_CAPACITY)),
  iat: seconds,
  nbf: seconds,
  exp: seconds,
  installation: id.optional(),
});

type Claims = z.infer<typeof claimsSchema>;

/**
 * What is wrong with a licence's content, beyond its shape: capacity names, features named
 * twice, a `feature:` capacity for a feature the licence does not grant, a window that ends
 * before it starts. Empty when nothing is.
 */
export function licenceProblems(l: Pick<Licence, 'features' | 'capacities' | 'notBefore' | 'expiresAt'>): string[] {
  const problems: string[] = [];
  const features = new Set<string>();
  for (const f of l.features) {
    if (!LICENCE_NAME.test(f)) problems.push(`feature '${f}' is not a name: 1 to 64 of A-Z a-z 0-9 . _ -`);
    else if (features.has(f)) problems.push(`feature '${f}' is named twice`);
    features.add(f);
  }
  for (const [name, limit] of Object.entries(l.capacities)) {
    const parsed = parseCapacityName(name);
    if (!parsed) problems.push(`capacity '${name}' is not concurrent:<name>, assigned:<name> or feature:<feature>`);
    else if (parsed.kind === 'feature' && !features.has(parsed.name)) problems.push(`capacity '${name}' limits feature '${parsed.name}', which the licence does not grant`);
    if (!Number.isInteger(limit) || limit < 0 || limit > MAX_CAPACITY) problems.push(`capacity '${name}': ${limit} is not a whole number from 0 to ${MAX_CAPACITY}`);
  }
  if (!(l.expiresAt.getTime() > l.notBefore.getTime())) problems.push('it expires before it becomes valid');
  return problems;
}

/** The JWS algorithm a private (or public) key signs (verifies) with: EdDSA for Ed25519, ES256 for P-256. */
export function algorithmOf(key: KeyObject): 'EdDSA' | 'ES256' {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  throw new Error(`a licence is signed with an Ed25519 or a P-256 key, not ${key.asymmetricKeyType ?? 'this'} key`);
}

/** The key's RFC 7638 thumbprint: the `kid` of the licences it signs. */
export async function keyIdOf(key: KeyObject): Promise<string> {
  const jwk = await exportJWK(key.type === 'private' ? createPublicKey(key) : key);
  return calculateJwkThumbprint(jwk);
}

const toSeconds = (d: Date) => Math.floor(d.getTime() / 1000);

/** Signs a licence. Throws with every problem of the spec (see licenceProblems). */
export async function issueLicence(spec: LicenceSpec, signingKey: KeyObject): Promise<string> {
  const issuedAt = spec.issuedAt ?? new Date();
  const notBefore = spec.notBefore ?? issuedAt;
  // Checked as it is signed, in whole seconds: a window shorter than that is none.
  const licence = {
    features: [...(spec.features ?? [])],
    capacities: { ...(spec.capacities ?? {}) },
    notBefore: new Date(toSeconds(notBefore) * 1000),
    expiresAt: new Date(toSeconds(spec.expiresAt) * 1000),
  };
  const problems = licenceProblems(licence);
  const claims: Claims = {
    jti: spec.id ?? randomUUID(),
    tenant: spec.tenant,
    features: licence.features,
    capacities: licence.capacities,
    iat: toSeconds(issuedAt),
    nbf: toSeconds(notBefore),
    exp: toSeconds(spec.expiresAt),
    ...(spec.installation !== undefined && { installation: spec.installation }),
  };
  const shape = claimsSchema.safeParse(claims);
  if (!shape.success) problems.push(...shape.error.issues.map((i) => `${i.path.join('.') || 'licence'}: ${i.message}`));
  if (problems.length > 0) throw new Error(problems.join('; '));
  return new SignJWT(claims as unknown as JWTPayload)
    .setProtectedHeader({ alg: algorithmOf(signingKey), typ: LICENCE_TYPE, kid: await keyIdOf(signingKey) })
    .sign(signingKey);
}

export type LicenceRefusalCode = 'licence_malformed' | 'licence_signature_invalid' | 'licence_expired' | 'licence_not_yet_valid';

export type VerifiedLicence = { ok: true; licence: Licence; keyId: string | undefined } | { ok: false; code: LicenceRefusalCode; reason: string };

/** One trusted vendor key, with the `kid` its licences carry. */
export interface TrustedKey {
  key: KeyObject;
  kid: string;
}

/** The trusted keys for `keys` (public keys; a private key is trusted by its public half). */
export async function trustKeys(keys: readonly KeyObject[]): Promise<TrustedKey[]> {
  // jose verifies with public keys only: a private one is trusted as its public half.
  return Promise.all(keys.map(async (key) => ({ key: key.type === 'private' ? createPublicKey(key) : key, kid: await keyIdOf(key) })));
}

export interface VerifyOptions {
  /** Default: now. */
  now?: Date;
  /** Clock difference tolerated on nbf and exp; default 60 s. */
  clockToleranceSeconds?: number;
  /** false: check the signature and the content only, not the window (to show an expired licence). */
  checkWindow?: boolean;
}

/**
 * Verifies a licence: a compact JWS of type entgate-licence+jwt, signed by one of `trusted`
 * (the one its `kid` names, else each in turn), with well-formed claims, valid now.
 */
export async function verifyLicence(token: string, trusted: readonly TrustedKey[], options: VerifyOptions = {}): Promise<VerifiedLicence> {
  const text = token.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(text) || text.length > 64 * 1024) {
    return { ok: false, code: 'licence_malformed', reason: 'not a licence: a licence is a compact JWS (three base64url parts), at most 64 KiB' };
  }
  let header: { alg?: string; typ?: string; kid?: string };
  try {
    header = decodeProtectedHeader(text);
  } catch {
    return { ok: false, code: 'licence_malformed', reason: 'not a licence: its header is not JSON' };
  }
  if (header.typ !== LICENCE_TYPE) return { ok: false, code: 'licence_malformed', reason: `not a licence: its type is ${JSON.stringify(header.typ ?? null)}, not ${LICENCE_TYPE}` };
  if (!(LICENCE_ALGORITHMS as readonly string[]).includes(header.alg ?? '')) {
    return { ok: false, code: 'licence_signature_invalid', reason: `licences are signed with EdDSA or ES256, not ${header.alg ?? 'no algorithm'}` };
  }
  if (trusted.length === 0) return { ok: false, code: 'licence_signature_invalid', reason: 'no vendor key is trusted to verify licences' };
  const named = trusted.filter((k) => k.kid === header.kid);
  let payload: Uint8Array | undefined;
  let keyId: string | undefined;
  for (const candidate of named.length > 0 ? named : trusted) {
    try {
      // The signature only: the window is checked below, with the caller's clock and tolerance.
      ({ payload } = await compactVerify(text, candidate.key, { algorithms: [...LICENCE_ALGORITHMS] }));
      keyId = candidate.kid;
      break;
    } catch {
      // the next key
    }
  }
  if (!payload) return { ok: false, code: 'licence_signature_invalid', reason: 'its signature does not verify with any trusted vendor key' };
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    return { ok: false, code: 'licence_malformed', reason: 'its claims are not JSON' };
  }
  const parsed = claimsSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, code: 'licence_malformed', reason: `its claims are not a licence's: ${issue.path.join('.') || 'claims'}: ${issue.message}` };
  }
  const c = parsed.data;
  const licence: Licence = {
    id: c.jti,
    tenant: c.tenant,
    features: c.features,
    capacities: c.capacities,
    issuedAt: new Date(c.iat * 1000),
    notBefore: new Date(c.nbf * 1000),
    expiresAt: new Date(c.exp * 1000),
    installation: c.installation ?? null,
  };
  const problems = licenceProblems(licence);
  if (problems.length > 0) return { ok: false, code: 'licence_malformed', reason: `its claims are not a licence's: ${problems[0]}` };
  if (options.checkWindow !== false) {
    const window = windowOf(licence, options.now ?? new Date(), options.clockToleranceSeconds ?? 60);
    if (window === 'expired') return { ok: false, code: 'licence_expired', reason: `it expired at ${licence.expiresAt.toISOString()}` };
    if (window === 'not_yet_valid') return { ok: false, code: 'licence_not_yet_valid', reason: `it is not valid before ${licence.notBefore.toISOString()}` };
  }
  return { ok: true, licence, keyId };
}

export type LicenceWindow = 'valid' | 'expired' | 'not_yet_valid';

/** Where `now` is in the licence's window, with `toleranceSeconds` of clock difference either way. */
export function windowOf(licence: Pick<Licence, 'notBefore' | 'expiresAt'>, now: Date, toleranceSeconds = 0): LicenceWindow {
  const t = now.getTime();
  if (t >= licence.expiresAt.getTime() + toleranceSeconds * 1000) return 'expired';
  if (t < licence.notBefore.getTime() - toleranceSeconds * 1000) return 'not_yet_valid';
  return 'valid';
}

/** Whether the licence grants a feature (its window aside). */
export const grantsFeature = (licence: Pick<Licence, 'features'>, feature: string): boolean => licence.features.includes(feature);

/** The limit the licence sets on a capacity: its number; none (null) for a granted feature without one; else 0. */
export function limitUnder(licence: Pick<Licence, 'features' | 'capacities'>, capacity: string): number | null {
  const limit = licence.capacities[capacity];
  if (limit !== undefined) return limit;
  const parsed = parseCapacityName(capacity);
  return parsed?.kind === 'feature' && licence.features.includes(parsed.name) ? null : 0;
}

/** A licence as JSON (the API, the CLI's --json, the client's file). */
export function licenceJson(l: Licence) {
  return {
    licenceId: l.id,
    tenant: l.tenant,
    features: l.features,
    capacities: l.capacities,
    issuedAt: l.issuedAt.toISOString(),
    notBefore: l.notBefore.toISOString(),
    expiresAt: l.expiresAt.toISOString(),
    installation: l.installation,
  };
}
