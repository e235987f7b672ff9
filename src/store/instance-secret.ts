import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';

/**
 * The key secret kept in the database when none is configured. The first instance to start
 * creates it; every later one (and every other instance on the same database) reads the same
 * value, so they all hash virtual keys alike.
 */
export async function loadOrCreateStoredSecret(knex: Knex, name: string): Promise<string> {
  await knex('entgate_settings')
    .insert({ name, value: randomBytes(32).toString('base64url') })
    .onConflict('name')
    .ignore();
  const row = await knex('entgate_settings').where({ name }).first('value');
  return (row as { value: string }).value;
}

const FINGERPRINT = 'key_secret_fingerprint';
/** What the fingerprint is the HMAC of: a constant no virtual key can be (it has a NUL). */
const FINGERPRINT_INPUT = '\u0000entgate key secret fingerprint v1';

/**
 * Guards against a changed key secret, which makes every stored virtual key unknown (a
 * forgotten ENTGATE_KEY_SECRET line, say, after which a new secret would be generated and
 * stored). The first start records an HMAC of a constant under the secret; later starts
 * compare. A different secret is `mismatch` while any virtual key is stored (it is simply
 * recorded anew when none is). The fingerprint tells nothing of the secret: it is one more
 * HMAC under it, as every stored key hash is.
 */
export async function checkKeySecret(knex: Knex, hashKey: (value: string) => string): Promise<'recorded' | 'matches' | 'mismatch'> {
  const fingerprint = hashKey(FINGERPRINT_INPUT);
  const row = (await knex('entgate_settings').where({ name: FINGERPRINT }).first('value')) as { value: string } | undefined;
  if (row?.value === fingerprint) return 'matches';
  if (row && (await knex('virtual_keys').first('id')) !== undefined) return 'mismatch';
  await knex('entgate_settings').insert({ name: FINGERPRINT, value: fingerprint }).onConflict('name').merge();
  return 'recorded';
}

/** Forgets the recorded fingerprint: the next start accepts its secret (`entgate key-secret accept`). */
export async function forgetKeySecret(knex: Knex): Promise<boolean> {
  return (await knex('entgate_settings').where({ name: FINGERPRINT }).delete().returning('name')).length > 0;
}
