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
