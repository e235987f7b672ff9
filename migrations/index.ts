import type { Knex } from 'knex';
import * as initial from './20261123000000_initial.ts';
import * as products from './20261123010000_products.ts';
import * as leases from './20261123020000_leases.ts';
import * as tokens from './20261123030000_tokens.ts';
import * as leaseAcquire from './20261123040000_lease_acquire.ts';
import * as adminTokens from './20261201000000_admin_tokens.ts';
import * as guessBudgets from './20261201010000_guess_budgets.ts';
import * as retryNeedsTimeout from './20261202000000_retry_needs_timeout.ts';
import * as leaseCredentials from './20261210000000_lease_credentials.ts';
import * as poolKinds from './20261211000000_pool_kinds.ts';
import * as licences from './20261212000000_licences.ts';

/**
 * The migrations, in order. Listed here rather than discovered on disk so that they load the
 * same way under tsx, in tests and from an installed package. Add new ones at the end.
 */
const migrations: ReadonlyArray<readonly [string, Knex.Migration]> = [
  ['20261123000000_initial', initial],
  ['20261123010000_products', products],
  ['20261123020000_leases', leases],
  ['20261123030000_tokens', tokens],
  ['20261123040000_lease_acquire', leaseAcquire],
  ['20261201000000_admin_tokens', adminTokens],
  ['20261201010000_guess_budgets', guessBudgets],
  ['20261202000000_retry_needs_timeout', retryNeedsTimeout],
  ['20261210000000_lease_credentials', leaseCredentials],
  ['20261211000000_pool_kinds', poolKinds],
  ['20261212000000_licences', licences],
];

export const migrationSource: Knex.MigrationSource<readonly [string, Knex.Migration]> = {
  getMigrations: async () => [...migrations],
  getMigrationName: (m) => m[0],
  getMigration: async (m) => m[1],
};

export const latestMigration = migrations[migrations.length - 1]![0];
