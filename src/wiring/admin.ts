import express, { type RequestHandler } from 'express';
import { declaredBodyLimit, MiB } from '../lib/http/body-limit.ts';
import { ADMIN_EVENTS, claimAdminEvent, listAdminEvents, recordAdminWrites, type AdminEvent } from '../auth/admin-events.ts';
import { EventWriter } from '../store/check-events.ts';
import { EntitlementsRepo } from '../store/entitlements-repo.ts';
import { AuditRepo } from '../store/audit.ts';
import { AdminService } from '../admin/service.ts';
import { adminRoutes } from '../admin/routes.ts';
import { credentialRoutes } from '../admin/credential-routes.ts';
import { guessRoutes } from '../admin/guess-routes.ts';
import type { ApiCredentials } from './access.ts';
import type { CheckPart } from './check.ts';
import type { Foundation } from './foundation.ts';
import type { LeasesPart } from './leases.ts';
import type { Preflight } from './preflight.ts';
import type { TokensPart } from './tokens.ts';
import type { LicensingPart } from './licensing.ts';

/** The admin API: what is mounted at /admin/v1, and its audit trail. */
export interface AdminPart {
  handlers: RequestHandler[];
  audit: AuditRepo;
  events: EventWriter<AdminEvent>;
  stats: () => Record<string, unknown>;
}

/**
 * Every admin write is recorded (refused ones too), authenticated, bounded in size, then routed
 * to the feature that owns it: keys and entitlements, pools, the token mint, credentials, blocks.
 */
export function wireAdmin(base: Foundation, pre: Preflight, parts: { check: CheckPart; leases: LeasesPart; tokens: TokensPart; licensing: LicensingPart }, credentials: ApiCredentials): AdminPart {
  const { logger, life, db } = base;
  const { check, leases, tokens } = parts;
  const events = new EventWriter<AdminEvent>(db.knex, logger, ADMIN_EVENTS, base.eventWriter);
  life.add('admin events', () => events.close());
  const admin = new AdminService({
    knex: db.knex,
    entitlements: new EntitlementsRepo(db.knex),
    virtualKeys: check.virtualKeys,
    products: check.products,
    hashKey: base.hashKey,
    invalidate: (change) => base.bus.publish(change),
  });
  const audit = new AuditRepo(db.knex);
  const handlers: RequestHandler[] = [
    recordAdminWrites((event) => events.record(event), pre.trustedProxies, claimAdminEvent(db.knex)),
    credentials.authenticate(),
    declaredBodyLimit((req) => (req.is('text/csv') ? 32 * MiB : MiB)),
    express.json({ limit: MiB }),
    // The CSV import is kept as bytes (bounded here) and parsed as a stream by its route.
    express.raw({ type: 'text/csv', limit: 32 * MiB }),
    adminRoutes(admin, audit),
    leases.adminRoutes,
    parts.licensing.adminRoutes,
    tokens.mintRoutes,
    credentialRoutes(credentials, (q) => listAdminEvents(db.knex, q)),
    guessRoutes(check.guessBudgets, (change) => base.bus.publish(change)),
  ];
  return { handlers, audit, events, stats: () => ({ adminEvents: events.getStats() }) };
}
