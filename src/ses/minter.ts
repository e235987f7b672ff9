import { randomUUID, type KeyObject } from 'node:crypto';
import { CompactEncrypt, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import type { RingKey } from '../lib/key-ring.ts';

export { SDK_DEFAULT_AUDIENCE, SDK_DEFAULT_ISSUER } from './defaults.ts';

export interface MintRequest {
  applications: string[];
  addresses: string[];
  notBefore: Date;
  notAfter: Date;
  vmid?: string | undefined;
  issuer: string;
  audience: string;
  /** A private key to sign with; none = an unsigned token (`alg: none`), for tests only. */
  signingKey?: RingKey | undefined;
  /** A public key (or certificate) to encrypt to; none = a signed JWT alone. */
  encryptionKey?: RingKey | undefined;
  /** RSA-OAEP + A256CBC-HS512 (the SDK's) unless given. */
  keyManagement?: 'RSA-OAEP' | 'RSA-OAEP-256';
  contentEncryption?: 'A256CBC-HS512' | 'A256GCM';
  /** Defaults to `token-<uuid>`. */
  id?: string;
}

/** The signature algorithm a key signs with: RS512 for RSA (the SDK's), ES256, EdDSA. */
export function signatureAlgorithm(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'RS512';
    case 'rsa-pss':
      return 'PS256';
    case 'ec':
      return 'ES256';
    case 'ed25519':
      return 'EdDSA';
    default:
      throw new Error(`cannot sign with a ${key.asymmetricKeyType ?? 'symmetric'} key`);
  }
}

const oneOrMany = (values: string[]) => (values.length === 1 ? values[0]! : values);

/** Mints an SES token as the SDK's `sestest generate` does: claims, signature, then encryption. */
export async function mintToken(r: MintRequest): Promise<string> {
  const claims: JWTPayload = {
    id: r.id ?? `token-${randomUUID()}`,
    app: oneOrMany(r.applications),
    ip: oneOrMany(r.addresses),
    ...(r.vmid !== undefined && { vmid: r.vmid }),
  };
  const nbf = Math.floor(r.notBefore.getTime() / 1000);
  const exp = Math.floor(r.notAfter.getTime() / 1000);
  const iat = Math.floor(Date.now() / 1000);
  let jwt: string;
  if (r.signingKey) {
    const header = {
      alg: signatureAlgorithm(r.signingKey.key),
      typ: 'JWT',
      ...(r.signingKey.kids[0] !== undefined && { kid: r.signingKey.kids[0] }),
      ...(r.signingKey.x5t !== undefined && { x5t: r.signingKey.x5t }),
    };
    jwt = await new SignJWT(claims)
      .setProtectedHeader(header)
      .setIssuer(r.issuer)
      .setAudience(r.audience)
      .setNotBefore(nbf)
      .setExpirationTime(exp)
      .setIssuedAt(iat)
      .sign(r.signingKey.key);
  } else {
    jwt = new UnsecuredJWT(claims).setIssuer(r.issuer).setAudience(r.audience).setNotBefore(nbf).setExpirationTime(exp).setIssuedAt(iat).encode();
  }
  if (!r.encryptionKey) return jwt;
  return new CompactEncrypt(new TextEncoder().encode(jwt))
    .setProtectedHeader({
      alg: r.keyManagement ?? 'RSA-OAEP',
      enc: r.contentEncryption ?? 'A256CBC-HS512',
      cty: 'JWT',
      ...(r.encryptionKey.kids[0] !== undefined && { kid: r.encryptionKey.kids[0] }),
    })
    .encrypt(r.encryptionKey.key);
}
