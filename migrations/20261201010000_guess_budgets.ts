import type { Knex } from 'knex';

/**
 * Failed-lookup budgets against key guessing, shared by every instance: per subject (a
 * client address, an IPv6 /64, or the calling rUS host when no address is given), the
 * failures in the current window and, past the budget, the end of its cool-down.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('guess_budgets', (t) => {
    t.text('subject').primary();
    t.timestamp('window_started_at', { useTz: true }).notNullable();
    t.integer('failures').notNullable();
    t.timestamp('blocked_until', { useTz: true });
    t.timestamp('updated_at', { useTz: true }).notNullable();
  });
  await knex.raw('create index guess_budgets_updated_at on guess_budgets (updated_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('guess_budgets');
}
