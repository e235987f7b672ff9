import { createHmac, randomBytes } from 'node:crypto';

/**
 * Virtual keys are credentials. They are stored only as HMAC-SHA-256 under the server's key
 * secret (so a copy of the database alone does not reveal them, nor lets anyone test guesses)
 * plus a short hint for people to recognise a key by.
 */
export type KeyHasher = (key: string) => string;

export function createKeyHasher(secret: string): KeyHasher {
  const secretBytes = Buffer.from(secret, 'utf8');
  return (key) => createHmac('sha256', secretBytes).update(key, 'utf8').digest('hex');
}

/** At most a third of the key, and never more than its first four characters. */
export function keyHint(key: string): string {
  const chars = Array.from(key);
  const shown = chars.length >= 12 ? 4 : chars.length >= 6 ? 2 : 0;
  return `${chars.slice(0, shown).join('')}…`;
}

/** 160 random bits, base64url: only characters Conary's URL quoting leaves alone. */
export function generateVirtualKey(): string {
  return randomBytes(20).toString('base64url');
}

/** Why a virtual key chosen by an admin (a CRM customer id, say) cannot be used, or undefined. */
export function virtualKeyProblem(key: string): string | undefined {
  if (key.length === 0) return 'is empty';
  if (key.length > 255) return 'is longer than 255 characters';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) return 'contains a control character or newline';
  if (key.trim() !== key) return 'has leading or trailing whitespace';
  return undefined;
}
