import type { Server } from 'node:http';
import type { Express } from 'express';
import type { Config } from '../config/settings.ts';
import type { Logger } from './lib/logger.ts';
import type { Database } from './store/db.ts';
import type { CheckEventWriter } from './store/check-events.ts';
import type { InvalidationBus } from './store/invalidation-bus.ts';
import type { KeyCache } from './resolvers/key-cache.ts';
import type { ResolverChain } from './resolvers/chain.ts';
import type { LeaseService } from './leases/service.ts';
import type { LicenceService } from './licensing/service.ts';
import { Metrics } from './ops/metrics.ts';
import { createApp } from './http/app.ts';
import { withLifecycle } from './wiring/lifecycle.ts';
import { preflight } from './wiring/preflight.ts';
import { openFoundation } from './wiring/foundation.ts';
import { wireCredentials } from './wiring/access.ts';
import { wireCheck } from './wiring/check.ts';
import { wireLeases } from './wiring/leases.ts';
import { wireTokens } from './wiring/tokens.ts';
import { wireLicensing } from './wiring/licensing.ts';
import { wireAdmin } from './wiring/admin.ts';
import { wireOperations } from './wiring/operations.ts';
import { openListeners } from './wiring/servers.ts';

export interface RunningService {
  server: Server;
  /** The express app behind everything but the rUS check and SES (tests walk its routes). */
  app: Express;
  /** `http://host:port` as bound (port 0 resolved). */
  url: string;
  /** The HTTPS server and its `https://host:port`, when TLS_CERT_FILE and TLS_KEY_FILE are set. */
  httpsServer?: Server;
  httpsUrl?: string;
  /** Where /metrics is served when METRICS_PORT is set. */
  metricsUrl?: string;
  db: Database;
  cache: KeyCache;
  events: CheckEventWriter;
  chain: ResolverChain;
  bus: InvalidationBus;
  leases: LeaseService;
  licences: LicenceService;
  /** Graceful stop: refuse new connections, finish in-flight requests, flush events, close the database. */
  close(): Promise<void>;
}

/**
 * The composition root. Settings and files are checked first (nothing is open yet); then each
 * part is wired in order, every resource it acquires added to one lifecycle; the listeners
 * come last. A start refused at any step closes what was acquired, in reverse, and leaves no
 * handle open; `close()` does the same for a running service, listeners first.
 */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const pre = await preflight(config, logger);
  return withLifecycle(logger, async (life) => {
    const isClosing = () => life.isClosing;
    const metrics = new Metrics();
    const base = await openFoundation(config, logger, life);
    const credentials = wireCredentials(base, metrics);
    const check = await wireCheck(base, pre, metrics, isClosing);
    const leases = await wireLeases(base, pre, check, credentials);
    const tokens = wireTokens(base, pre, leases, metrics, isClosing);
    const licensing = await wireLicensing(base, pre, leases, credentials, metrics);
    const admin = wireAdmin(base, pre, { check, leases, tokens, licensing }, credentials);
    const app = createApp({
      logger,
      isClosing,
      mounts: [
        wireOperations(base, metrics, { check, tokens, admin, licensing }, isClosing),
        { path: '/v1', handlers: [leases.clientRoutes, licensing.clientRoutes] },
        { path: '/admin/v1', handlers: admin.handlers },
      ],
    });
    const listeners = await openListeners(config, pre, { check: check.handle, ses: tokens.handle, app }, { metrics, isClosing, logger, life });
    // Closed first (added last): open licence streams end, so that the listeners can drain.
    life.add('licence streams', () => licensing.feed.endStreams());
    const { url, httpsUrl, metricsUrl } = listeners;
    logger.info({ url, ...(httpsUrl && { httpsUrl }), ...(metricsUrl && { metricsUrl }), database: base.db.kind }, 'entgate listening');
    let closed: Promise<void> | undefined;
    const close = () =>
      (closed ??= (async () => {
        await life.close();
        logger.info({ events: check.events.getStats() }, 'entgate stopped');
      })());
    return { ...listeners, app, db: base.db, cache: check.cache, events: check.events, chain: check.chain, bus: base.bus, leases: leases.service, licences: licensing.service, close };
  });
}
