import { logOutputOf } from '../lib/logger.ts';
import { readinessCheck } from '../store/db.ts';
import { startRetention } from '../store/audit.ts';
import type { Metrics } from '../ops/metrics.ts';
import { operationsRoutes } from '../ops/routes.ts';
import type { Mount } from '../http/app.ts';
import type { AdminPart } from './admin.ts';
import type { CheckPart } from './check.ts';
import type { Foundation } from './foundation.ts';
import type { TokensPart } from './tokens.ts';
import type { LicensingPart } from './licensing.ts';

/**
 * Operations: health and readiness, the API description, metrics (read from every part once
 * they exist), and the audit's retention job.
 */
export function wireOperations(
  base: Foundation,
  metrics: Metrics,
  parts: { check: CheckPart; tokens: TokensPart; admin: AdminPart; licensing: LicensingPart },
  isClosing: () => boolean,
): Mount {
  const { config, logger, life, db } = base;
  const { check, tokens, admin, licensing } = parts;
  const logOutput = logOutputOf(logger);
  metrics.watch({
    logLinesDropped: () => logOutput?.stats().dropped ?? 0,
    keyCache: check.cache,
    chain: check.chain,
    checkEvents: () => check.events.getStats(),
    sesTokenEvents: () => tokens.events.getStats(),
    adminEvents: () => admin.events.getStats(),
    guard: check.guard,
    knex: db.knex,
    licence: {
      capacities: () => licensing.service.repo.capacities(),
      expiresAt: async () => (await licensing.service.current())?.licence.expiresAt,
      subscribers: () => licensing.feed.subscriberCount,
    },
  });
  if (config.auditRetentionDays > 0) {
    life.add('audit retention', startRetention(admin.audit, config.auditRetentionDays, 600_000, logger));
  }
  const router = operationsRoutes({
    logger,
    metrics: config.metricsPort === undefined ? metrics : undefined,
    ready: readinessCheck(db),
    isClosing,
    stats: () => ({ ...check.stats(), ...tokens.stats(), ...admin.stats(), ...(logOutput && { logging: logOutput.stats() }) }),
  });
  return { path: '/', handlers: [router] };
}
