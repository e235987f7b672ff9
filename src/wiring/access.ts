import { ApiCredentials } from '../auth/credentials.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Foundation } from './foundation.ts';

export type { ApiCredentials };

/** The API credentials the admin API and the lease endpoint authenticate (stored ones and the bootstrap one). */
export function wireCredentials(base: Foundation, metrics: Metrics): ApiCredentials {
  return new ApiCredentials(base.db.knex, base.config.adminToken, base.logger, (reason) => metrics.observeAdminAuthFailure(reason));
}
