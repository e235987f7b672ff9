import { AdminTokens } from '../auth/tokens.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Foundation } from './foundation.ts';

/** The credentials the admin API and the lease endpoint authenticate (stored ones and the bootstrap one). */
export type ApiCredentials = AdminTokens;

export function wireCredentials(base: Foundation, metrics: Metrics): ApiCredentials {
  return new AdminTokens(base.db.knex, base.config.adminToken, base.logger, (reason) => metrics.observeAdminAuthFailure(reason));
}
