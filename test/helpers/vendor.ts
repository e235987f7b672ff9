import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { issueLicence, type LicenceSpec } from '../../src/domain/licence.ts';

const DAY_MS = 86_400_000;

/**
 * A licence vendor for tests: an Ed25519 pair, its public key as a PEM file in `dir` (what
 * ENTGATE_LICENCE_PUBLIC_KEYS names: `env`), and `issue`, which signs a licence for tenant
 * `acme` valid for a day unless the spec says otherwise.
 */
export function testVendor(dir: string, name = 'vendor') {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const publicKeyFile = join(dir, `${name}-public.pem`);
  writeFileSync(publicKeyFile, publicKeyPem);
  return {
    publicKey: publicKey as KeyObject,
    publicKeyPem,
    publicKeyFile,
    env: { ENTGATE_LICENCE_PUBLIC_KEYS: publicKeyFile },
    issue: (spec: Partial<LicenceSpec> = {}) => issueLicence({ tenant: 'acme', expiresAt: new Date(Date.now() + DAY_MS), ...spec }, privateKey),
  };
}

/** `token` with its claims changed (and its signature kept): what a tamperer makes of a licence. */
export function tampered(token: string, change: (claims: Record<string, unknown>) => void): string {
  const [header, payload, signature] = token.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  change(claims);
  return `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
}
