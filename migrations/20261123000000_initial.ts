import type { Knex } from 'knex';

/** The foundation schema: entitlements, virtual keys, check events, instance settings. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('entgate_settings', (t) => {
    t.text('name').primary();
    t.text('value').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('entitlements', (t) => {
    t.specificType('id', 'integer generated always as identity').primary();
    t.text('server_pattern').notNullable();
    t.text('class');
    t.text('real_key').notNullable();
    t.text('description').notNullable().defaultTo('');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('virtual_keys', (t) => {
    t.specificType('id', 'integer generated always as identity').primary();
    t.integer('entitlement_id').notNullable().references('id').inTable('entitlements').onDelete('RESTRICT');
    t.text('key_hash').notNullable().unique();
    t.text('key_hint').notNullable();
    t.text('status').notNullable().defaultTo('active');
    t.timestamp('not_before', { useTz: true });
    t.timestamp('expires_at', { useTz: true });
    t.specificType('allowed_cidrs', 'text[]').notNullable().defaultTo('{}');
    t.integer('cache_timeout_seconds');
    t.boolean('cache_retry').notNullable().defaultTo(true);
    t.text('customer_ref');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_used_at', { useTz: true });
    t.index(['entitlement_id']);
  });
  await knex.raw(
    "alter table virtual_keys add constraint virtual_keys_status_check check (status in ('active', 'suspended', 'revoked'))",
  );
  await knex.raw('alter table virtual_keys add constraint virtual_keys_cache_timeout_check check (cache_timeout_seconds >= 0)');

  // Append-only record of every check decision. No foreign keys: events outlive what they name.
  await knex.schema.createTable('check_events', (t) => {
    t.specificType('id', 'bigint generated always as identity').primary();
    t.timestamp('occurred_at', { useTz: true }).notNullable();
    t.text('server');
    t.text('class');
    t.text('key_hint');
    t.integer('virtual_key_id');
    t.text('remote_ip');
    t.text('caller_ip');
    t.text('decision').notNullable();
    t.text('reason');
    t.text('resolver');
    t.integer('latency_us').notNullable();
  });
  // Events arrive in time order: a BRIN index finds time ranges for a fraction of a b-tree's
  // upkeep on the write path, which runs at the check's rate.
  await knex.raw('create index check_events_occurred_at_brin on check_events using brin (occurred_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('check_events');
  await knex.schema.dropTable('virtual_keys');
  await knex.schema.dropTable('entitlements');
  await knex.schema.dropTable('entgate_settings');
}
