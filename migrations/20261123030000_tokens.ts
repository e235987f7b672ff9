import type { Knex } from 'knex';

/**
 * Software entitlement tokens (the Azure Batch SES protocol): every decision on a token, as
 * check_events is for the rUS check. Never the token itself.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('token_events', (t) => {
    t.specificType('id', 'bigint generated always as identity').primary();
    t.timestamp('occurred_at', { useTz: true }).notNullable();
    t.text('operation').notNullable();
    t.text('api_version');
    t.text('token_id');
    t.text('application_id');
    t.text('caller_ip');
    t.text('outcome').notNullable();
    t.text('reason');
    t.text('entitlement_id');
    t.integer('latency_us').notNullable();
  });
  await knex.raw(
    "alter table token_events add constraint token_events_outcome_check check (outcome in ('approved', 'denied', 'invalid', 'renewed', 'released', 'not_found', 'conflict'))",
  );
  await knex.raw('create index token_events_occurred_at_brin on token_events using brin (occurred_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('token_events');
}
