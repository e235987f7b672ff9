import type { Knex } from 'knex';

/**
 * `retry = false` only with a cache timeout of 1 second or more. Without one it never had an
 * effect (no `<timeout>` was sent), and sent as Conary reads it, it would fail every second
 * request of the client: such rows are set back to `retry = true`, which is what they did,
 * and the rule is kept by the database from now on.
 */
export async function up(knex: Knex): Promise<void> {
  await knex('virtual_keys')
    .where({ cache_retry: false })
    .andWhere((q) => q.whereNull('cache_timeout_seconds').orWhere('cache_timeout_seconds', '<', 1))
    .update({ cache_retry: true });
  await knex.raw('alter table virtual_keys add constraint virtual_keys_retry_needs_timeout check (cache_retry or coalesce(cache_timeout_seconds, 0) >= 1)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table virtual_keys drop constraint virtual_keys_retry_needs_timeout');
}
