import type { Knex } from 'knex';

/**
 * Floating leases: pools of seats, leases (live while `now < expires_at` and not released,
 * computed at query time), their append-only events, client public keys for signed requests,
 * the digests of signed requests already used (replay protection), and idempotency records.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('virtual_keys', (t) => {
    t.integer('max_concurrent_leases');
  });
  await knex.raw('alter table virtual_keys add constraint virtual_keys_max_leases_check check (max_concurrent_leases > 0)');

  await knex.schema.createTable('lease_pools', (t) => {
    t.specificType('id', 'integer generated always as identity').primary();
    t.text('name').notNullable().unique();
    t.integer('seats').notNullable();
    t.integer('default_ttl_seconds').notNullable();
    t.integer('max_ttl_seconds').notNullable();
    t.integer('heartbeat_interval_seconds').notNullable();
    t.boolean('require_signed').notNullable().defaultTo(false);
    // Set for the pool a virtual key's max_concurrent_leases defines; its seats follow the key.
    t.integer('virtual_key_id').unique().references('id').inTable('virtual_keys').onDelete('CASCADE');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(
    'alter table lease_pools add constraint lease_pools_bounds_check check (seats > 0 and default_ttl_seconds > 0 ' +
      'and max_ttl_seconds >= default_ttl_seconds and heartbeat_interval_seconds > 0 and heartbeat_interval_seconds < default_ttl_seconds)',
  );

  await knex.schema.createTable('leases', (t) => {
    t.uuid('id').primary();
    t.integer('pool_id').notNullable().references('id').inTable('lease_pools').onDelete('CASCADE');
    t.text('client_id').notNullable();
    t.timestamp('acquired_at', { useTz: true }).notNullable();
    t.timestamp('renewed_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('released_at', { useTz: true });
    t.integer('ttl_seconds').notNullable();
    t.text('client_address');
    t.jsonb('metadata').notNullable().defaultTo('{}');
    // Set once the tidy job has recorded the `expired` event of a lease that lapsed.
    t.boolean('expiry_recorded').notNullable().defaultTo(false);
  });
  // Counting live seats and finding a client's live lease only ever read unreleased leases.
  await knex.raw('create index leases_open_by_pool on leases (pool_id, expires_at) where released_at is null');
  await knex.raw('create index leases_open_by_client on leases (pool_id, client_id) where released_at is null');
  // For the tidy job: lapsed leases whose expiry is not yet recorded, and ended leases to delete.
  await knex.raw('create index leases_unrecorded on leases (expires_at) where released_at is null and not expiry_recorded');
  await knex.raw('create index leases_ended on leases ((coalesce(released_at, expires_at)))');

  await knex.schema.createTable('lease_events', (t) => {
    t.specificType('id', 'bigint generated always as identity').primary();
    t.timestamp('occurred_at', { useTz: true }).notNullable().defaultTo(knex.raw('clock_timestamp()'));
    t.text('type').notNullable();
    t.text('pool').notNullable();
    t.uuid('lease_id');
    t.text('client_id');
    t.text('reason');
    t.text('client_address');
    t.jsonb('detail');
  });
  await knex.raw(
    "alter table lease_events add constraint lease_events_type_check check (type in ('acquired', 'renewed', 'released', 'expired', 'denied'))",
  );
  await knex.raw('create index lease_events_occurred_at on lease_events (occurred_at)');
  await knex.raw('create index lease_events_lease on lease_events (lease_id) where lease_id is not null');

  await knex.schema.createTable('client_keys', (t) => {
    t.specificType('id', 'integer generated always as identity').primary();
    t.text('client_id').notNullable();
    t.text('fingerprint').notNullable().unique();
    t.text('public_key').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['client_id']);
  });

  await knex.schema.createTable('signed_request_digests', (t) => {
    t.text('digest').primary();
    t.timestamp('forget_after', { useTz: true }).notNullable();
    t.index(['forget_after']);
  });

  await knex.schema.createTable('idempotency_keys', (t) => {
    t.text('scope').notNullable();
    t.text('key').notNullable();
    t.text('request_hash').notNullable();
    t.integer('status').notNullable();
    t.jsonb('body');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['scope', 'key']);
    t.index(['created_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('idempotency_keys');
  await knex.schema.dropTable('signed_request_digests');
  await knex.schema.dropTable('client_keys');
  await knex.schema.dropTable('lease_events');
  await knex.schema.dropTable('leases');
  await knex.schema.dropTable('lease_pools');
  await knex.raw('alter table virtual_keys drop constraint virtual_keys_max_leases_check');
  await knex.schema.alterTable('virtual_keys', (t) => t.dropColumn('max_concurrent_leases'));
}
