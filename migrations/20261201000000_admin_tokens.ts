import type { Knex } from 'knex';

/**
 * Admin tokens with scopes (stored as SHA-256 digests, shown once), and the admin audit
 * trail: every admin write, with the name of the token that made it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('admin_tokens', (t) => {
    t.specificType('id', 'bigint generated always as identity').primary();
    t.text('name').notNullable();
    t.text('token_hash').notNullable().unique();
    t.text('hint').notNullable();
    t.specificType('scopes', 'text[]').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('created_by').notNullable();
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('last_used_at', { useTz: true });
    t.timestamp('revoked_at', { useTz: true });
  });
  // A name names one live token; a revoked token's name may be used again.
  await knex.raw('create unique index admin_tokens_live_name on admin_tokens (name) where revoked_at is null');

  await knex.schema.createTable('admin_events', (t) => {
    t.specificType('id', 'bigint generated always as identity').primary();
    t.timestamp('occurred_at', { useTz: true }).notNullable();
    t.text('actor');
    t.bigInteger('token_id');
    t.text('method').notNullable();
    t.text('route').notNullable();
    t.text('target');
    t.integer('status').notNullable();
    t.text('request_id');
    t.text('caller_ip');
  });
  await knex.raw('create index admin_events_occurred_at_brin on admin_events using brin (occurred_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('admin_events');
  await knex.schema.dropTable('admin_tokens');
}
