import { createHash } from 'node:crypto';
import { compactDecrypt, decodeProtectedHeader, errors, jwtVerify, UnsecuredJWT, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { parseIp, type IpAddress } from '../lib/ip.ts';
import { candidates, type RingKey } from '../lib/key-ring.ts';

/** What a verified token grants: its claims, checked and normalised. */
export interface TokenClaims {
  id: string;
  /** Application ids, as given. */
  applications: string[];
  /** Addresses the token may be used from, parsed (IPv4-mapped IPv6 as IPv4). */
  addresses: IpAddress[];
  vmid: string | null;
  notBefore: Date;
  expires: Date;
  issuedAt: Date;
}

/**
 * `malformed`: not a token at all (audited as `invalid`). `denied`: a token that is not valid
 * here (bad signature, expired, wrong audience, unsigned when signatures are required…). The
 * SES protocol answers both 403, as the reference does; the reason is logged and audited,
 * never sent.
 */
export type Verification = { ok: true; claims: TokenClaims } | { ok: false; kind: 'malformed' | 'denied'; reason: string };

export interface VerifierOptions {
  issuer: string;
  audience: string;
  /** Keys that may have signed tokens (public halves). */
  signingKeys: readonly RingKey[];
  /** Keys that may decrypt tokens (private). */
  decryptionKeys: readonly RingKey[];
  requireSigned: boolean;
  requireEncrypted: boolean;
  clockSkewSeconds: number;
  /** Verified tokens remembered (by hash) until they expire; 0 disables. */
  cacheMaxEntries: number;
  now?: () => number;
}

export const SIGNATURE_ALGORITHMS = ['RS512', 'RS256', 'PS256', 'PS512', 'ES256', 'EdDSA'];
export const KEY_MANAGEMENT_ALGORITHMS = ['RSA-OAEP', 'RSA-OAEP-256'];
export const CONTENT_ENCRYPTION_ALGORITHMS = ['A256CBC-HS512', 'A256GCM'];
const MAX_TOKEN_LENGTH = 32 * 1024;

const malformed = (reason: string): Verification => ({ ok: false, kind: 'malformed', reason });
const denied = (reason: string): Verification => ({ ok: false, kind: 'denied', reason });

/**
 * Verifies SES tokens with jose: a JWE (RSA-OAEP or RSA-OAEP-256 with A256CBC-HS512 or
 * A256GCM) carrying a signed JWT, or a signed JWT alone; signatures RS512 (the SDK's), and
 * RS256/PS256/PS512/ES256/EdDSA for new deployments; `alg: none` only when signatures are not
 * required. Keys are chosen by `kid`/`x5t` when the header names one of ours, else all are
 * tried. A verified token is remembered by its SHA-256 until it expires, so a job asking
 * every minute pays for the RSA operations once.
 */
export class TokenVerifier {
  private readonly cache: LRUCache<string, TokenClaims> | undefined;
  private readonly now: () => number;

  constructor(private readonly options: VerifierOptions) {
    this.now = options.now ?? Date.now;
    this.cache = options.cacheMaxEntries > 0 ? new LRUCache({ max: options.cacheMaxEntries }) : undefined;
  }

  get cacheSize(): number {
    return this.cache?.size ?? 0;
  }

  async verify(token: string): Promise<Verification> {
    if (token.length > MAX_TOKEN_LENGTH) return malformed(`the token is longer than ${MAX_TOKEN_LENGTH} characters`);
    const digest = this.cache ? createHash('sha256').update(token).digest('base64url') : '';
    const known = this.cache?.get(digest);
    if (known) {
      // Still within its lifetime (the entry's TTL ends at exp + skew, but time may have moved on).
      if (this.now() < known.expires.getTime() + this.options.clockSkewSeconds * 1000) return { ok: true, claims: known };
      this.cache!.delete(digest);
    }
    const result = await this.verifyUncached(token);
    if (result.ok && this.cache) {
      const ttl = result.claims.expires.getTime() + this.options.clockSkewSeconds * 1000 - this.now();
      if (ttl > 0) this.cache.set(digest, result.claims, { ttl });
    }
    return result;
  }

  private async verifyUncached(token: string): Promise<Verification> {
    const parts = token.split('.');
    if (parts.length !== 3 && parts.length !== 5) return malformed('the token is not a compact JWS or JWE');
    let inner = token;
    try {
      if (parts.length === 5) {
        if (this.options.decryptionKeys.length === 0) return denied('the token is encrypted but no decryption key is configured');
        const decrypted = await this.decrypt(token);
        if (!('plaintext' in decrypted)) return decrypted;
        inner = decrypted.plaintext;
        if (inner.split('.').length !== 3) return malformed('the encrypted token does not carry a compact JWT');
      } else if (this.options.requireEncrypted) {
        return denied('the token is not encrypted, and encryption is required');
      }
      return await this.verifySigned(inner);
    } catch (err) {
      return fromJoseError(err);
    }
  }

  private async decrypt(token: string): Promise<{ plaintext: string } | Verification> {
    const header = readHeader(token);
    if (!header) return malformed('the token header is not readable');
    let last: unknown;
    for (const k of candidates(this.options.decryptionKeys, header).filter((c) => c.key.asymmetricKeyType === 'rsa')) {
      try {
        const { plaintext } = await compactDecrypt(token, k.key, {
          keyManagementAlgorithms: KEY_MANAGEMENT_ALGORITHMS,
          contentEncryptionAlgorithms: CONTENT_ENCRYPTION_ALGORITHMS,
        });
        return { plaintext: new TextDecoder('utf-8', { fatal: true }).decode(plaintext) };
      } catch (err) {
        last = err;
        if (!(err instanceof errors.JWEDecryptionFailed) && !(err instanceof TypeError)) break;
      }
    }
    return fromJoseError(last);
  }

  private async verifySigned(jwt: string): Promise<Verification> {
    const header = readHeader(jwt);
    if (!header) return malformed('the token header is not readable');
    if (header.enc !== undefined) return malformed('a JWE header on a token of three parts (truncated?)');
    const { issuer, audience, clockSkewSeconds } = this.options;
    const claimChecks = { issuer, audience, clockTolerance: clockSkewSeconds, currentDate: new Date(this.now()) };
    let payload: JWTPayload;
    if (header.alg === 'none') {
      if (this.options.requireSigned) return denied('the token is not signed, and a signature is required');
      payload = UnsecuredJWT.decode(jwt, claimChecks).payload;
    } else {
      if (this.options.signingKeys.length === 0) return denied('the token is signed but no signing key is configured');
      let last: unknown;
      let verified: JWTPayload | undefined;
      const fitting = candidates(this.options.signingKeys, header).filter((c) => keyFits(c.key, header.alg));
      if (fitting.length === 0) return denied(`no configured signing key fits alg ${String(header.alg).slice(0, 20)}`);
      for (const k of fitting) {
        try {
          verified = (await jwtVerify(jwt, k.key, { ...claimChecks, algorithms: SIGNATURE_ALGORITHMS })).payload;
          break;
        } catch (err) {
          last = err;
          // Only a signature that does not match (or a key of another type) is worth another key.
          if (!(err instanceof errors.JWSSignatureVerificationFailed) && !(err instanceof TypeError)) break;
        }
      }
      if (!verified) return fromJoseError(last);
      payload = verified;
    }
    return checkClaims(payload);
  }
}

function readHeader(token: string): ReturnType<typeof decodeProtectedHeader> | undefined {
  try {
    return decodeProtectedHeader(token);
  } catch {
    return undefined;
  }
}

/** Whether a key can verify an algorithm at all (so a rotation mixing key types tries only the right ones). */
function keyFits(key: RingKey['key'], alg: unknown): boolean {
  const type = key.asymmetricKeyType;
  if (typeof alg !== 'string') return false;
  if (alg.startsWith('RS')) return type === 'rsa';
  if (alg.startsWith('PS')) return type === 'rsa' || type === 'rsa-pss';
  if (alg === 'ES256') return type === 'ec';
  if (alg === 'EdDSA') return type === 'ed25519' || type === 'ed448';
  return false;
}

function stringOrStrings(value: unknown): string[] | undefined {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value : undefined;
  if (!list || list.length === 0 || list.length > 100 || !list.every((v) => typeof v === 'string' && v.length > 0 && v.length <= 256)) {
    return undefined;
  }
  return list as string[];
}

/** The SES claims, beyond what jose checked (iss, aud, nbf, exp with skew). */
export function checkClaims(p: JWTPayload): Verification {
  if (typeof p.aud !== 'string') return denied('aud must be a single audience');
  for (const claim of ['nbf', 'exp', 'iat'] as const) {
    if (typeof p[claim] !== 'number' || !Number.isFinite(p[claim])) return denied(`the token has no ${claim}`);
  }
  const id = p.id;
  if (typeof id !== 'string' || id.length === 0 || id.length > 256) return denied('the token has no id');
  const applications = stringOrStrings(p.app);
  if (!applications) return denied('the token names no application (app)');
  const ipTexts = stringOrStrings(p.ip);
  if (!ipTexts) return denied('the token names no address (ip)');
  const addresses = ipTexts.map((t) => parseIp(t));
  if (addresses.some((a) => a === undefined)) return denied('the token carries an ip that is not an IP address');
  if (p.vmid !== undefined && typeof p.vmid !== 'string') return denied('vmid is not a string');
  return {
    ok: true,
    claims: {
      id,
      applications,
      addresses: addresses as IpAddress[],
      vmid: (p.vmid as string | undefined) ?? null,
      notBefore: new Date(p.nbf! * 1000),
      expires: new Date(p.exp! * 1000),
      issuedAt: new Date(p.iat! * 1000),
    },
  };
}

function fromJoseError(err: unknown): Verification {
  if (err instanceof errors.JOSEError) {
    switch (err.code) {
      case 'ERR_JWS_INVALID':
      case 'ERR_JWE_INVALID':
      case 'ERR_JWT_INVALID':
        return malformed(`the token is malformed: ${err.message}`);
      case 'ERR_JWT_EXPIRED':
        return denied('the token has expired');
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        return denied(`claim ${(err as errors.JWTClaimValidationFailed).claim}: ${err.message}`);
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
        return denied('the signature does not verify with any configured signing key');
      case 'ERR_JWE_DECRYPTION_FAILED':
        return denied('the token does not decrypt with any configured decryption key');
      case 'ERR_JOSE_ALG_NOT_ALLOWED':
      case 'ERR_JOSE_NOT_SUPPORTED':
        return denied(`algorithm not accepted: ${err.message}`);
      default:
        return denied(err.message);
    }
  }
  // decodeProtectedHeader and friends throw plain errors on garbage; keys of the wrong type throw TypeError.
  if (err instanceof TypeError) return denied(`no configured key fits the token: ${err.message}`);
  return malformed(`the token is malformed: ${(err as Error)?.message ?? String(err)}`);
}

/** The grant rule: the application asked for is one of the token's (ignoring case), the caller one of its addresses. */
export function decideGrant(claims: TokenClaims, applicationId: string, caller: IpAddress | undefined): { granted: true } | { granted: false; reason: string } {
  const wanted = applicationId.toLowerCase();
  if (!claims.applications.some((a) => a.toLowerCase() === wanted)) {
    return { granted: false, reason: `the token does not name application ${applicationId}` };
  }
  if (!caller) return { granted: false, reason: 'the caller address is unknown' };
  if (!claims.addresses.some((a) => a.kind() === caller.kind() && a.toString() === caller.toString())) {
    return { granted: false, reason: `the caller address ${caller.toString()} is not in the token` };
  }
  return { granted: true };
}
