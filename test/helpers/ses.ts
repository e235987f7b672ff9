import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompactEncrypt, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';

export const ISSUER = 'https://batch.azure.test/software-entitlement';
export const AUDIENCE = 'https://batch.azure.test/software-entitlement';

/** Key pairs written as PEM files, as an operator would configure them. */
export function writeKeys(dir: string) {
  const rsaSign = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaEnc = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = (k: KeyObject, type: 'spki' | 'pkcs8') => k.export({ format: 'pem', type }) as string;
  const signingFile = join(dir, 'signing-public.pem');
  writeFileSync(signingFile, pem(rsaSign.publicKey, 'spki') + pem(ec.publicKey, 'spki'));
  // EdDSA as a JSON Web Key Set, with a kid.
  const jwksFile = join(dir, 'signing.jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...ed.publicKey.export({ format: 'jwk' }), kid: 'ed-1', use: 'sig' }] }));
  const decryptionFile = join(dir, 'decryption-private.pem');
  writeFileSync(decryptionFile, pem(rsaEnc.privateKey, 'pkcs8'));
  return { rsaSign, rsaEnc, ec, ed, other, signingFiles: [signingFile, jwksFile], decryptionFiles: [decryptionFile] };
}

export interface RawTokenOptions {
  claims?: JWTPayload;
  app?: string | string[];
  ip?: string | string[];
  nbf?: number;
  exp?: number;
  iat?: number;
  iss?: string;
  aud?: string | string[];
  sign?: { key: KeyObject; alg: string; kid?: string } | 'none';
  encrypt?: { key: KeyObject; alg?: string; enc?: string };
}

/**
 * A token built with raw jose calls, independently of entgate's own minter: what a third-party
 * issuer (Azure Batch, a vendor's scheduler) would hand a job.
 */
export async function rawToken(o: RawTokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = {
    id: `token-${randomUUID()}`,
    app: o.app ?? 'contosoapp',
    ip: o.ip ?? '127.0.0.1',
    iss: o.iss ?? ISSUER,
    aud: o.aud ?? AUDIENCE,
    nbf: o.nbf ?? now - 5,
    exp: o.exp ?? now + 3600,
    iat: o.iat ?? now - 5,
    ...o.claims,
  };
  let jwt: string;
  if (o.sign === 'none') jwt = new UnsecuredJWT(payload).encode();
  else if (o.sign) jwt = await new SignJWT(payload).setProtectedHeader({ alg: o.sign.alg, ...(o.sign.kid && { kid: o.sign.kid }) }).sign(o.sign.key);
  else throw new Error('rawToken needs sign');
  if (!o.encrypt) return jwt;
  return new CompactEncrypt(new TextEncoder().encode(jwt))
    .setProtectedHeader({ alg: o.encrypt.alg ?? 'RSA-OAEP', enc: o.encrypt.enc ?? 'A256CBC-HS512', cty: 'JWT' })
    .encrypt(o.encrypt.key);
}

/**
 * Reads an approval (v1) exactly as the SDK's native client does: any status but 200 is an
 * error; then `j.at("id")` and `j.at("vmid")`, each read as a string. A member that is missing
 * (nlohmann's `out_of_range`) or not a string (`type_error`) throws here, as it throws in the
 * client, where the application (told to catch `std::runtime_error`) may crash on it.
 */
export function readV1Approval(res: { status: number; body: unknown }): { id: string; vmid: string } {
  if (res.status !== 200) throw new Error(`the native client refuses status ${res.status}: ${JSON.stringify(res.body)}`);
  const j = res.body;
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Error(`the native client cannot read ${JSON.stringify(j)} as an object`);
  const at = (key: string): string => {
    if (!(key in j)) throw new Error(`out_of_range: key '${key}' not found in ${JSON.stringify(j)}`);
    const value = (j as Record<string, unknown>)[key];
    if (typeof value !== 'string') throw new Error(`type_error: '${key}' is ${JSON.stringify(value)}, not a string`);
    return value;
  };
  return { id: at('id'), vmid: at('vmid') };
}
