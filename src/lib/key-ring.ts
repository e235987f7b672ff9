import { createHash, createPrivateKey, createPublicKey, X509Certificate, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { JWK } from 'jose';
import { ConfigError } from '../lib/errors.ts';

/** One configured key, with what a token header may name it by. */
export interface RingKey {
  key: KeyObject;
  /** Ids a token's `kid` may carry: a JWK's `kid`, a certificate's SHA-1 thumbprint (hex, lower case). */
  kids: string[];
  /** A certificate's SHA-1 thumbprint, base64url: what `x5t` carries. */
  x5t?: string;
  source: string;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

function thumbprints(cert: X509Certificate): { kids: string[]; x5t: string } {
  const sha1 = createHash('sha1').update(cert.raw).digest();
  return { kids: [sha1.toString('hex')], x5t: sha1.toString('base64url') };
}

/**
 * Loads keys from files: PEM (certificates, public or private keys, several blocks per file)
 * or JSON Web Key Sets. `kind` decides what is kept: public keys (to verify signatures, to encrypt),
 * or private keys (to decrypt, to sign). A file that yields no key of that kind stops start-up.
 */
export async function loadKeyRing(paths: readonly string[], kind: 'public' | 'private', setting: string): Promise<RingKey[]> {
  const ring: RingKey[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const before = ring.length;
    try {
      if (text.trimStart().startsWith('{')) ring.push(...fromJwks(text, kind, path));
      else ring.push(...fromPem(text, kind, path));
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`${setting}: ${path}: ${(err as Error).message}`);
    }
    if (ring.length === before) {
      throw new ConfigError(`${setting}: ${path} holds no ${kind === 'public' ? 'certificate or public key' : 'private key'}`);
    }
  }
  return ring;
}

function fromPem(text: string, kind: 'public' | 'private', source: string): RingKey[] {
  const blocks = [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1]!, pem: m[0] }));
  const certs = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => new X509Certificate(b.pem));
  const out: RingKey[] = [];
  if (kind === 'public') {
    for (const cert of certs) out.push({ key: cert.publicKey, ...thumbprints(cert), source });
    for (const b of blocks.filter((b) => b.label === 'PUBLIC KEY' || b.label === 'RSA PUBLIC KEY')) {
      out.push({ key: createPublicKey(b.pem), kids: [], source });
    }
    return out;
  }
  for (const b of blocks.filter((b) => b.label.endsWith('PRIVATE KEY'))) {
    const key = createPrivateKey(b.pem);
    const pub = createPublicKey(key).export({ format: 'der', type: 'spki' });
    // A certificate in the same file names the key (kid, x5t) when its public key matches.
    const cert = certs.find((c) => c.publicKey.export({ format: 'der', type: 'spki' }).equals(pub));
    out.push({ key, ...(cert ? thumbprints(cert) : { kids: [] }), source });
  }
  return out;
}

function fromJwks(text: string, kind: 'public' | 'private', source: string): RingKey[] {
  const set = JSON.parse(text) as { keys?: JWK[] };
  if (!Array.isArray(set.keys)) throw new Error('not a JSON Web Key Set (no "keys" array)');
  const out: RingKey[] = [];
  for (const jwk of set.keys) {
    const isPrivate = typeof (jwk as { d?: unknown }).d === 'string';
    if (kind === 'private' && !isPrivate) continue;
    if (kind === 'public' && jwk.use === 'enc') continue;
    // As KeyObjects, usable with every algorithm of their type; a private JWK in a
    // verification set is used for its public half only.
    const key =
      kind === 'private'
        ? createPrivateKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' })
        : createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
    out.push({ key, kids: jwk.kid ? [jwk.kid.toLowerCase()] : [], ...(jwk.x5t && { x5t: jwk.x5t }), source });
  }
  return out;
}

/**
 * The keys to try for a token header: those its `kid` or `x5t` names, else (a header naming
 * none of ours, or naming nothing) every key, so a rotation need not agree on naming.
 */
export function candidates(ring: readonly RingKey[], header: { kid?: string | undefined; x5t?: string | undefined }): readonly RingKey[] {
  const kid = header.kid?.toLowerCase();
  const named = ring.filter((k) => (kid !== undefined && k.kids.includes(kid)) || (header.x5t !== undefined && k.x5t === header.x5t));
  return named.length > 0 ? named : ring;
}
