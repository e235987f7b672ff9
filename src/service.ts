import { readFileSync } from 'node:fs';
import { createServer, type RequestListener, type Server, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { Server as NetServer, type AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { Config } from '../config/settings.ts';
import { logOutputOf, type Logger } from './logger.ts';
import { openDatabase, migrate, migrationsCurrent, readinessCheck, type Database } from './store/db.ts';
import { checkKeySecret, loadOrCreateStoredSecret } from './store/instance-secret.ts';
import { EntitlementsRepo } from './store/entitlements-repo.ts';
import { VirtualKeysRepo } from './store/virtual-keys-repo.ts';
import { CheckEventWriter, type CheckEvent } from './store/check-events.ts';
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
import { AdminTokens } from './admin/tokens.ts';
import { GuessGuard } from './domain/guess-guard.ts';
import { GuessBudgetsRepo } from './store/guess-budgets.ts';
import { ADMIN_EVENTS, type AdminEvent } from './admin/admin-events.ts';
import { LeasesRepo } from './leases/repo.ts';
import { LeaseService } from './leases/service.ts';
import { EventWriter } from './store/check-events.ts';
import { loadKeyRing } from './ses/keys.ts';
import { TokenVerifier } from './ses/verifier.ts';
import { SesService, type TokenEvent } from './ses/service.ts';
import { TOKEN_EVENTS } from './ses/events.ts';
import { compileCidrs } from './domain/ip.ts';
import { ConfigError } from './errors.ts';
import { Metrics } from './metrics.ts';
import { AuditRepo, startRetention } from './store/audit.ts';
import { createApp } from './http/app.ts';
import { createRusCheckHandler } from './http/rus-check.ts';
import { createSesHandler, isSesPath } from './ses/routes.ts';
import { doorOf, FrontDoors } from './http/front-doors.ts';

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
  /** Graceful stop: refuse new connections, finish in-flight requests, flush events, close the database. */
  close(): Promise<void>;
}

/**
 * The rUS check's paths (GET, HEAD), answered on plain node:http before express: each
 * configured path (ENTGATE_CHECK_PATHS, kept without a trailing slash) also with one.
 */
export function checkPathSet(paths: readonly string[]): ReadonlySet<string> {
  return new Set(paths.flatMap((p) => (p === '/' ? [p] : [p, `${p}/`])));
}

export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    poolMax: config.databasePoolMax,
    queryTimeoutMs: config.databaseQueryTimeoutMs,
    connectTimeoutMs: config.databaseConnectTimeoutMs,
    logger,
  });
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

  if (config.keySecret === undefined) {
    logger.warn(
      'ENTGATE_KEY_SECRET is not set: virtual keys are hashed with a secret kept in the database. ' +
        'A secret held outside the database (a secret store, the environment) is stronger: whoever reads the database cannot then test guesses offline.',
    );
  }
  if (config.adminToken === undefined) logger.warn('ENTGATE_ADMIN_TOKEN is not set: the admin API accepts only admin tokens created earlier (none at first start)');

  // One transaction: a secret generated for a database whose keys were hashed with another one
  // is not left behind when start-up is refused.
  const hashKey = await db.knex.transaction(async (trx) => {
    const hasher = createKeyHasher(config.keySecret ?? (await loadOrCreateStoredSecret(trx, 'key_secret')));
    if ((await checkKeySecret(trx, hasher)) === 'mismatch') {
      throw new ConfigError(
        `invalid configuration: ${config.keySecret === undefined ? 'ENTGATE_KEY_SECRET is not set, and the secret stored in the database' : 'ENTGATE_KEY_SECRET'} ` +
          'is not the secret this database\'s virtual keys were hashed with: every stored key would be unknown. ' +
          'Set the secret they were made with; to keep this one and issue every key again, run `entgate key-secret accept` first.',
      );
    }
    return hasher;
  });
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
  const recordEvent = (event: CheckEvent) => {
    events.record(event);
    metrics.observeCheck(event);
  };
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
  const guessLimits = { budget: config.guessBudget, windowSeconds: config.guessWindowSeconds, cooldownSeconds: config.guessCooldownSeconds };
  const guessBudgets = new GuessBudgetsRepo(db.knex, guessLimits);
  const guard = new GuessGuard(guessBudgets, { ...guessLimits, syncMs: config.guessSyncMs, delayMs: config.guessDelayMs, maxSubjects: Math.max(10_000, config.cacheMaxEntries) }, logger);
  if (!guard.enabled) logger.warn('ENTGATE_GUESS_BUDGET=0: nothing limits how many virtual keys one address may try');
  const checkService = new CheckService({
    hashKey,
    chain,
    recordEvent,
    repositoryCacheSeconds: config.repositoryCacheSeconds ?? null,
    ...(guard.enabled && { guard }),
  });
  const bus = new InvalidationBus(db, logger, (change) => {
    if ('all' in change) {
      cache.clear();
      chain.clear();
      catalog.invalidate();
      guard.resync();
    } else if ('keyHashes' in change) {
      cache.evict(change.keyHashes);
      chain.evict(change.keyHashes);
    } else {
      for (const subject of change.guessSubjects) guard.forget(subject);
    }
  });
  await bus.start();
  guard.start();
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
    virtualKeys,
    hashKey,
    {
      defaultTtlSeconds: config.leaseDefaultTtlSeconds,
      maxTtlSeconds: config.leaseMaxTtlSeconds,
      signedRequestWindowMs: config.signedRequestWindowSeconds * 1000,
      tidyIntervalMs: config.leaseTidySeconds * 1000,
      retentionHours: config.leaseRetentionHours,
    },
    logger,
    { guard: guard.enabled ? guard : undefined, recordEvent },
  );
  leases.startTidy();
  await leases.warnAboutAnonymousPools();

  const signingKeys = await loadKeyRing(config.sesSigningKeys, 'public', 'ENTGATE_SES_SIGNING_KEYS');
  const decryptionKeys = await loadKeyRing(config.sesDecryptionKeys, 'private', 'ENTGATE_SES_DECRYPTION_KEYS');
  const requireEncrypted = config.sesRequireEncrypted === 'auto' ? decryptionKeys.length > 0 : config.sesRequireEncrypted === 'true';
  if (config.sesRequireSigned && signingKeys.length === 0) {
    logger.warn('ENTGATE_SES_SIGNING_KEYS is not set: every software entitlement token is denied');
  } else if (config.tlsCertFile === undefined && !config.sesAllowHttp) {
    logger.warn(
      'TLS_CERT_FILE is not set: software entitlement tokens are accepted on plain HTTP, readable on the way. ' +
        'Serve HTTPS (TLS_CERT_FILE, TLS_KEY_FILE), or set ENTGATE_SES_ALLOW_HTTP=true if TLS ends in front of entgate.',
    );
  }
  const tokenEvents = new EventWriter<TokenEvent>(db.knex, logger, TOKEN_EVENTS, {
    maxQueue: config.auditQueueMax,
    batchSize: config.auditBatchSize,
    flushMs: config.auditFlushMs,
  });
  const verifier = new TokenVerifier({
    issuer: config.sesIssuer,
    audience: config.sesAudience,
    signingKeys,
    decryptionKeys,
    requireSigned: config.sesRequireSigned,
    requireEncrypted,
    clockSkewSeconds: config.sesClockSkewSeconds,
    cacheMaxEntries: config.cacheMaxEntries,
  });
  const mintSigning = config.sesMintSigningKey ? await loadKeyRing([config.sesMintSigningKey], 'private', 'ENTGATE_SES_MINT_SIGNING_KEY') : [];
  const mintEncryption = config.sesMintEncryptionKey
    ? await loadKeyRing([config.sesMintEncryptionKey], 'public', 'ENTGATE_SES_MINT_ENCRYPTION_KEY')
    : [];
  const ses = new SesService({
    verifier,
    repo: new LeasesRepo(db.knex),
    events: {
      record: (event: TokenEvent) => {
        tokenEvents.record(event);
        metrics.observeToken(event);
      },
    },
    logger,
  });

  const adminEvents = new EventWriter<AdminEvent>(db.knex, logger, ADMIN_EVENTS, {
    maxQueue: config.auditQueueMax,
    batchSize: config.auditBatchSize,
    flushMs: config.auditFlushMs,
  });
  const adminTokens = new AdminTokens(db.knex, config.adminToken, logger, (reason) => metrics.observeAdminAuthFailure(reason));
  const logOutput = logOutputOf(logger);
  const metrics = new Metrics({
    logLinesDropped: () => logOutput?.stats().dropped ?? 0,
    keyCache: cache,
    chain,
    checkEvents: () => events.getStats(),
    tokenEvents: () => tokenEvents.getStats(),
    adminEvents: () => adminEvents.getStats(),
    guard,
    knex: db.knex,
  });
  const trustedProxies = compileCidrs(config.trustedProxies);
  const audit = new AuditRepo(db.knex);
  const stopRetention = config.auditRetentionDays > 0 ? startRetention(audit, config.auditRetentionDays, 600_000, logger) : async () => {};
  let closing = false;
  const isClosing = () => closing;
  const app = createApp({
    admin,
    audit,
    leases,
    trustedProxies,
    ...(config.metricsPort === undefined && { metrics }),
    mint: { issuer: config.sesIssuer, audience: config.sesAudience, signingKey: mintSigning[0], encryptionKey: mintEncryption[0] },
    adminTokens,
    recordAdminEvent: (event) => adminEvents.record(event),
    knex: db.knex,
    guessBudgets,
    publish: (change) => bus.publish(change),
    logger,
    isClosing,
    stats: () => ({
      checkEvents: events.getStats(),
      tokenEvents: tokenEvents.getStats(),
      adminEvents: adminEvents.getStats(),
      tokenCache: { entries: verifier.cacheSize },
      keyCache: { entries: cache.size, hits: cache.hits, misses: cache.misses },
      resolvers: chain.getStats(),
      ...(logOutput && { logging: logOutput.stats() }),
    }),
    ready: readinessCheck(db),
  });
  const allowedCallers = compileCidrs(config.checkAllowedCallers);
  if (config.checkAllowedCallers.some((c) => c === '0.0.0.0/0' || c === '::/0')) {
    logger.warn(
      { allowedCallers: config.checkAllowedCallers },
      'ENTGATE_CHECK_ALLOWED_CALLERS lets any address ask for entitlement checks: real keys go to whoever guesses a virtual key. List your rUS hosts instead.',
    );
  }
  const handleCheck = createRusCheckHandler({ checkService, recordEvent, isClosing, allowedCallers, trustedProxies });
  const checkPaths = checkPathSet(config.checkPaths);

  // With TLS, SES is served on HTTPS only unless ENTGATE_SES_ALLOW_HTTP (decided per request from its socket).
  const handleSes = createSesHandler({ ses, trustedProxies, logger, isClosing, plainHttp: config.tlsCertFile === undefined || config.sesAllowHttp });
  // The two protocols clients hit at their own rate run on plain node:http; everything else on
  // express. Each front door has its own budget: slow bodies on SES or /v1 never take the check's.
  const doors = new FrontDoors({
    maxConcurrent: config.maxConcurrentRequests,
    bodyTimeoutMs: config.bodyTimeoutMs,
    maxPerClient: config.maxRequestsPerClient,
    trustedProxies,
  });
  const handler: RequestListener = (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const door = doorOf(path, checkPaths, isSesPath);
    if (!doors.admit(req, res, door)) return;
    if (door === 'check') handleCheck(req, res, query);
    else if (door === 'ses') handleSes(req, res, path, query);
    else app(req, res);
  };
  // Every listener: Node itself answers 408 (too slow), 431 (headers too large) and closes
  // connections past the cap; no 'clientError' listener, so that stays Node's behaviour.
  const limits = serverLimits(config);
  const server = createServer(limits, handler);
  capConnections(server, config.maxConnections, logger, 'http');
  let httpsServer: Server | undefined;
  if (config.tlsCertFile !== undefined || config.tlsKeyFile !== undefined) {
    if (config.tlsCertFile === undefined || config.tlsKeyFile === undefined) {
      throw new ConfigError('invalid configuration: TLS_CERT_FILE and TLS_KEY_FILE go together');
    }
    const read = (setting: string, path: string) => {
      try {
        return readFileSync(path);
      } catch (err) {
        throw new ConfigError(`invalid configuration: ${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    };
    try {
      httpsServer = createHttpsServer(
        {
          ...limits,
          // A handshake that never completes holds a socket for 120 s by default.
          handshakeTimeout: config.headersTimeoutMs,
          cert: read('TLS_CERT_FILE', config.tlsCertFile),
          key: read('TLS_KEY_FILE', config.tlsKeyFile),
          minVersion: 'TLSv1.2',
        },
        handler,
      );
      capConnections(httpsServer, config.maxConnections, logger, 'https');
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`invalid configuration: TLS_CERT_FILE / TLS_KEY_FILE: ${(err as Error).message}`);
    }
  }
  const url = await listen(server, config.port, config.host, 'http');
  // Metrics on a port of their own when METRICS_PORT is set (else on the API's, through the app).
  let metricsServer: Server | undefined;
  let metricsUrl: string | undefined;
  if (config.metricsPort !== undefined) {
    metricsServer = createServer(limits, (req, res) => {
      if (closing) res.setHeader('Connection', 'close');
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('only GET /metrics here\n');
        return;
      }
      metrics.render().then(
        ({ contentType, body }) => res.writeHead(200, { 'Content-Type': contentType }).end(body),
        (err: Error) => {
          logger.error({ err: err.message }, 'metrics failed');
          res.writeHead(503).end();
        },
      );
    });
    capConnections(metricsServer, config.maxConnections, logger, 'metrics');
    metricsUrl = await listen(metricsServer, config.metricsPort, config.host, 'http');
  }
  let httpsUrl: string | undefined;
  try {
    if (httpsServer) httpsUrl = await listen(httpsServer, config.httpsPort, config.host, 'https');
  } catch (err) {
    server.close();
    metricsServer?.close();
    throw err;
  }
  logger.info({ url, ...(httpsUrl && { httpsUrl }), ...(metricsUrl && { metricsUrl }), database: db.kind }, 'entgate listening');

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      doors.close();
      const servers = [server, ...(httpsServer ? [httpsServer] : []), ...(metricsServer ? [metricsServer] : [])];
      // Stop listening, but not through http.Server#close: that also closes idle keep-alive
      // connections at once, and a request a client sent on one at that moment is reset (~25 per
      // restart at 50 connections). Each connection instead ends after its next answer (which
      // carries `Connection: close`), or at the keep-alive timeout, as any idle one does.
      const drained = Promise.all(servers.map((s) => new Promise<void>((r) => NetServer.prototype.close.call(s, () => r()))));
      const forced = setTimeout(() => {
        logger.warn('in-flight requests did not finish in time; closing their connections');
        for (const s of servers) s.closeAllConnections();
      }, config.shutdownTimeoutMs);
      await drained;
      clearTimeout(forced);
      await leases.stop();
      await guard.stop();
      await stopRetention();
      await tokenEvents.close();
      await adminEvents.close();
      await events.close();
      await bus.close();
      await chain.close();
      await db.close();
      logger.info({ events: events.getStats() }, 'entgate stopped');
    })());

  return { server, app, url, ...(httpsServer && httpsUrl && { httpsServer, httpsUrl }), ...(metricsUrl && { metricsUrl }), db, cache, events, chain, bus, leases, close };
}

/**
 * Slow or idle clients cannot hold connections for long, nor large headers memory. Node checks
 * the header and request deadlines only every `connectionsCheckingInterval` (30 s by default,
 * which let a slow-loris connection live 40 s): here at least twice per headers timeout.
 */
function serverLimits(config: Config): ServerOptions {
  return {
    maxHeaderSize: config.maxHeaderBytes,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.headersTimeoutMs / 2))),
  };
}

/**
 * Past `max` open connections Node closes new ones at once; warned at most once a minute. A
 * socket with no traffic either way for two minutes is closed too: the request timeout ends
 * when a request has arrived, so without this a client that never reads its answer would
 * hold its socket (and its place under the concurrency cap) for ever.
 */
function capConnections(server: Server, max: number, logger: Logger, listener: string): void {
  server.maxConnections = max;
  server.timeout = 120_000;
  let dropped = 0;
  let quietUntil = 0;
  server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now < quietUntil) return;
    quietUntil = now + 60_000;
    logger.warn({ listener, maxConnections: max, dropped }, 'ENTGATE_MAX_CONNECTIONS reached: new connections are closed at once');
    dropped = 0;
  });
}

/** Listens, resolves with the URL a local client can use (a wildcard address becomes loopback). */
async function listen(server: Server, port: number, host: string, scheme: 'http' | 'https'): Promise<string> {
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const address = server.address() as AddressInfo;
  const bound = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${scheme}://${bound === '0.0.0.0' ? '127.0.0.1' : bound === '[::]' ? '[::1]' : bound}:${address.port}`;
}
