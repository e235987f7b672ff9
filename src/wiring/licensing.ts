import type { Router } from 'express';
import type { ApiCredentials } from './access.ts';
import type { Foundation } from './foundation.ts';
import type { LeasesPart } from './leases.ts';
import type { Preflight } from './preflight.ts';
import type { Metrics } from '../ops/metrics.ts';
import { defaultHeartbeatInterval } from '../leases/rules.ts';
import { LicenceRepo } from '../licensing/repo.ts';
import { LicenceService } from '../licensing/service.ts';
import { LicenceFeed } from '../licensing/feed.ts';
import { licenceAdminRoutes, licenceClientRoutes } from '../licensing/routes.ts';

/** Licences and capacities: the service, its stream, its routes and its tidy job. */
export interface LicensingPart {
  service: LicenceService;
  feed: LicenceFeed;
  /** Mounted at /v1: the licence, its events and features, capacity claims (scope `capacities`). */
  clientRoutes: Router;
  /** Mounted under /admin/v1: install, show, claims held, licence events. */
  adminRoutes: Router;
}

export async function wireLicensing(base: Foundation, pre: Preflight, leases: LeasesPart, credentials: ApiCredentials, metrics: Metrics): Promise<LicensingPart> {
  const { config, logger, life, db } = base;
  const repo = new LicenceRepo(db.knex);
  const feed = new LicenceFeed(db, repo, logger);
  const current = await life.acquire('licence feed', () => feed.start(), () => feed.close());
  const service = new LicenceService(
    repo,
    leases.service.seats,
    pre.licenceKeys,
    {
      defaultTtlSeconds: config.leaseDefaultTtlSeconds,
      maxTtlSeconds: config.leaseMaxTtlSeconds,
      heartbeatIntervalSeconds: defaultHeartbeatInterval(config.leaseDefaultTtlSeconds),
      retentionHours: config.leaseRetentionHours,
    },
    logger,
    {
      installed: (seq) => {
        void feed.refresh();
        feed.announce(seq);
      },
      claimed: (kind, outcome) => metrics.observeCapacityClaim(kind, outcome),
    },
  );
  const tidy = setInterval(() => {
    service.tidy().catch((err: Error) => logger.warn({ err: err.message }, 'licence tidy-up failed; it runs again later'));
  }, config.leaseTidySeconds * 1000);
  tidy.unref();
  life.add('licence tidy', () => clearInterval(tidy));
  if (current) logger.info({ licenceId: current.licence.id, tenant: current.licence.tenant, expiresAt: current.licence.expiresAt.toISOString() }, 'licence');
  return {
    service,
    feed,
    clientRoutes: licenceClientRoutes(service, feed, credentials.authenticate(), pre.trustedProxies),
    adminRoutes: licenceAdminRoutes(service, pre.trustedProxies),
  };
}
