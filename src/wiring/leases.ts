import type { Router } from 'express';
import type { ApiCredentials } from './access.ts';
import { LeasesRepo } from '../leases/repo.ts';
import { LeaseService } from '../leases/service.ts';
import { leaseAdminRoutes, leaseRoutes } from '../leases/routes.ts';
import type { CheckPart } from './check.ts';
import type { Foundation } from './foundation.ts';
import type { Preflight } from './preflight.ts';

/** Floating leases: the seat engine (SES takes its seats here too), its routes and its tidy job. */
export interface LeasesPart {
  service: LeaseService;
  /** Mounted at /v1: acquire, heartbeat, release (client credentials, signed requests or virtual keys). */
  clientRoutes: Router;
  /** Mounted under /admin/v1: pools, live leases, client keys. */
  adminRoutes: Router;
}

export async function wireLeases(base: Foundation, pre: Preflight, check: CheckPart, credentials: ApiCredentials): Promise<LeasesPart> {
  const { config, logger, life, db } = base;
  const service = new LeaseService(
    new LeasesRepo(db.knex),
    check.virtualKeys,
    base.hashKey,
    {
      defaultTtlSeconds: config.leaseDefaultTtlSeconds,
      maxTtlSeconds: config.leaseMaxTtlSeconds,
      signedRequestWindowMs: config.signedRequestWindowSeconds * 1000,
      tidyIntervalMs: config.leaseTidySeconds * 1000,
      retentionHours: config.leaseRetentionHours,
    },
    logger,
    { guard: check.guard.enabled ? check.guard : undefined, recordEvent: check.recordEvent },
  );
  await life.acquire('lease tidy', () => service.startTidy(), () => service.stop());
  await service.warnAboutAnonymousPools();
  return {
    service,
    clientRoutes: leaseRoutes(service, credentials.authenticate(), (header) => credentials.principalFor(header), pre.trustedProxies),
    adminRoutes: leaseAdminRoutes(service),
  };
}
