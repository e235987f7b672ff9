import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/settings.ts';
import type { Logger } from './logger.ts';
import { openDatabase, migrate, migrationsCurrent, type Database } from './store/db.ts';
import { loadOrCreateStoredSecret } from './store/instance-secret.ts';
import { EntitlementsRepo } from './store/entitlements-repo.ts';
import { VirtualKeysRepo } from './store/virtual-keys-repo.ts';
import { CheckEventWriter } from './store/check-events.ts';
import { LastUsedRecorder } from './store/last-used.ts';
import { createKeyHasher } from './domain/virtual-key.ts';
import { CheckService } from './domain/check-service.ts';
import { KeyCache } from './resolvers/key-cache.ts';
import { PostgresResolver } from './resolvers/postgres.ts';
import { ResolverChain } from './resolvers/chain.ts';
import { loadResolvers } from './resolvers/loader.ts';
import { CrmResolver, ProductCatalog, crmOptionsSchema, type CrmOptions } from './resolvers/crm.ts';
import { RusResolver, rusOptionsSchema, type RusOptions } from './resolvers/rus.ts';
import { ProductsRepo } from './store/products-repo.ts';
import { InvalidationBus } from './store/invalidation-bus.ts';
import { AdminService } from './admin/service.ts';
import { LeasesRepo } from './leases/repo.ts';
import { LeaseService } from './leases/service.ts';
import { createApp } from './http/app.ts';
import { createRusCheckHandler } from './http/rus-check.ts';

export interface RunningService {
  server: Server;
  /** `http://host:port` as bound (port 0 resolved). */
  url: string;
  db: Database;
  cache: KeyCache;
  events: CheckEventWriter;
  chain: ResolverChain;
  bus: InvalidationBus;
  leases: LeaseService;
  /** Graceful stop: refuse new connections, finish in-flight requests, flush events, close the database. */
  close(): Promise<void>;
}

const CHECK_PATHS = new Set(['/', '/rus/check']);

export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolMax: config.databasePoolMax });
  try {
    return await assemble(config, logger, db);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}

async function assemble(config: Config, logger: Logger, db: Database): Promise<RunningService> {
  logger.info({ database: db.kind, location: db.location }, 'database opened');
  if (config.migrateOnStart) await migrate(db, logger);
  else if (!(await migrationsCurrent(db))) {
    throw new Error('the database schema is not current and ENTGATE_MIGRATE_ON_START=false: run `entgate migrate` first');
  }

  let secret = config.keySecret;
  if (secret === undefined) {
    secret = await loadOrCreateStoredSecret(db.knex, 'key_secret');
    logger.warn(
      'ENTGATE_KEY_SECRET is not set: virtual keys are hashed with a secret kept in the database. ' +
        'A secret held outside the database (a secret store, the environment) is stronger: whoever reads the database cannot then test guesses offline.',
    );
  }
  if (config.adminToken === undefined) logger.warn('ENTGATE_ADMIN_TOKEN is not set: the admin API refuses every request');

  const hashKey = createKeyHasher(secret);
  const entitlements = new EntitlementsRepo(db.knex);
  const virtualKeys = new VirtualKeysRepo(db);
  const cache = new KeyCache({
    maxEntries: config.cacheMaxEntries,
    ttlMs: config.cacheTtlSeconds * 1000,
    negativeTtlMs: config.cacheNegativeTtlSeconds * 1000,
  });
  const lastUsed = new LastUsedRecorder(virtualKeys);
  const events = new CheckEventWriter(db.knex, logger, {
    maxQueue: config.auditQueueMax,
    batchSize: config.auditBatchSize,
    flushMs: config.auditFlushMs,
    onWritten: (uses) => lastUsed.record(uses),
  });
  const recordEvent = events.record.bind(events);
  const products = new ProductsRepo(db.knex);
  const catalog = new ProductCatalog(products);
  const chain = new ResolverChain({
    resolvers: await loadResolvers(config, logger, {
      postgres: { create: () => new PostgresResolver(virtualKeys, cache, { requireClassMatch: config.requireClassMatch }) },
      crm: { optionsSchema: crmOptionsSchema, create: (o) => new CrmResolver(o as CrmOptions, catalog) },
      rus: { optionsSchema: rusOptionsSchema, create: (o) => new RusResolver(o as RusOptions) },
    }),
    logger,
    cacheMaxEntries: config.cacheMaxEntries,
    ttlMs: config.cacheTtlSeconds * 1000,
    negativeTtlMs: config.cacheNegativeTtlSeconds * 1000,
    timeoutMs: config.checkTimeoutMs,
    failurePolicy: config.failurePolicy,
    staleGraceMs: config.staleGraceSeconds * 1000,
  });
  logger.info({ resolvers: chain.resolverNames, failurePolicy: config.failurePolicy }, 'resolver chain ready');
  const checkService = new CheckService({ hashKey, chain, recordEvent });
  const bus = new InvalidationBus(db, logger, (change) => {
    if ('all' in change) {
      cache.clear();
      chain.clear();
      catalog.invalidate();
    } else {
      cache.evict(change.keyHashes);
      chain.evict(change.keyHashes);
    }
  });
  await bus.start();
  const admin = new AdminService({
    knex: db.knex,
    entitlements,
    virtualKeys,
    products,
    hashKey,
    invalidate: (change) => bus.publish(change),
  });

  const leases = new LeaseService(
    new LeasesRepo(db.knex),
    hashKey,
    {
      defaultTtlSeconds: config.leaseDefaultTtlSeconds,
      maxTtlSeconds: config.leaseMaxTtlSeconds,
      signedRequestWindowMs: config.signedRequestWindowSeconds * 1000,
      tidyIntervalMs: config.leaseTidySeconds * 1000,
      retentionHours: config.leaseRetentionHours,
    },
    logger,
  );
  leases.startTidy();

  let closing = false;
  const isClosing = () => closing;
  const app = createApp({
    admin,
    leases,
    adminToken: config.adminToken,
    logger,
    isClosing,
    stats: () => ({
      checkEvents: events.getStats(),
      keyCache: { entries: cache.size, hits: cache.hits, misses: cache.misses },
      resolvers: chain.getStats(),
    }),
    ready: async () => {
      try {
        const current = await migrationsCurrent(db);
        return { ok: current, checks: { database: 'ok', migrations: current ? 'current' : 'pending' } };
      } catch (err) {
        return { ok: false, checks: { database: (err as Error).message } };
      }
    },
  });
  const handleCheck = createRusCheckHandler({ checkService, recordEvent, isClosing });

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (CHECK_PATHS.has(path)) handleCheck(req, res, q < 0 ? '' : url.slice(q + 1));
    else app(req, res);
  });
  // Slow or idle clients cannot hold connections for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${address.port}`;
  logger.info({ url, database: db.kind }, 'entgate listening');

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      const drained = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const forced = setTimeout(() => {
        logger.warn('in-flight requests did not finish in time; closing their connections');
        server.closeAllConnections();
      }, config.shutdownTimeoutMs);
      await drained;
      clearTimeout(forced);
      await leases.stop();
      await events.close();
      await bus.close();
      await chain.close();
      await db.close();
      logger.info({ events: events.getStats() }, 'entgate stopped');
    })());

  return { server, url, db, cache, events, chain, bus, leases, close };
}
