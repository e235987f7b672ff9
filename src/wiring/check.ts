import type { IncomingMessage, ServerResponse } from 'node:http';
import { CheckService } from '../domain/check-service.ts';
import type { CheckEvent } from '../domain/ports.ts';
import { GuessGuard } from '../domain/guess-guard.ts';
import { CheckEventWriter } from '../store/check-events.ts';
import { GuessBudgetsRepo } from '../store/guess-budgets.ts';
import { LastUsedRecorder } from '../store/last-used.ts';
import { ProductsRepo } from '../store/products-repo.ts';
import { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import { KeyCache } from '../resolvers/key-cache.ts';
import { PostgresResolver } from '../resolvers/postgres.ts';
import { ResolverChain, type ChainResolver } from '../resolvers/chain.ts';
import { CrmResolver, ProductCatalog, type CrmOptions } from '../resolvers/crm.ts';
import { RusResolver, type RusOptions } from '../resolvers/rus.ts';
import type { BuiltinResolver, ResolverPlan } from '../resolvers/loader.ts';
import { createRusCheckHandler } from '../http/rus-check.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Foundation } from './foundation.ts';
import type { BUILTIN_RESOLVER_OPTIONS, Preflight } from './preflight.ts';

/** The rUS check's front door and what it is made of (the rest of the service shares some). */
export interface CheckPart {
  handle: (req: IncomingMessage, res: ServerResponse, query: string) => void;
  /** Records one check decision (the audit and the metrics); the lease endpoint's lookups too. */
  recordEvent: (event: CheckEvent) => void;
  cache: KeyCache;
  chain: ResolverChain;
  events: CheckEventWriter;
  guard: GuessGuard;
  guessBudgets: GuessBudgetsRepo;
  virtualKeys: VirtualKeysRepo;
  products: ProductsRepo;
  stats: () => Record<string, unknown>;
}

/**
 * The check: key cache, audit of decisions, resolver chain, guessing budgets. Everything it
 * starts is added to the lifecycle as it starts; its caches follow the invalidation bus.
 */
export async function wireCheck(base: Foundation, pre: Preflight, metrics: Metrics, isClosing: () => boolean): Promise<CheckPart> {
  const { config, logger, life, db } = base;
  const virtualKeys = new VirtualKeysRepo(db);
  const products = new ProductsRepo(db.knex);
  const catalog = new ProductCatalog(products);
  const ttl = { ttlMs: config.cacheTtlSeconds * 1000, negativeTtlMs: config.cacheNegativeTtlSeconds * 1000 };
  const cache = new KeyCache({ maxEntries: config.cacheMaxEntries, ...ttl });
  const lastUsed = new LastUsedRecorder(virtualKeys);
  const events = new CheckEventWriter(db.knex, logger, { ...base.eventWriter, onWritten: (uses) => lastUsed.record(uses) });
  life.add('check events', () => events.close());
  const recordEvent = (event: CheckEvent) => {
    events.record(event);
    metrics.observeCheck(event);
  };
  // One factory per built-in the preflight planned: the compiler holds the two lists together.
  const builtins: Record<keyof typeof BUILTIN_RESOLVER_OPTIONS, BuiltinResolver> = {
    postgres: { create: () => new PostgresResolver(virtualKeys, cache, { requireClassMatch: config.requireClassMatch }) },
    crm: { create: (o) => new CrmResolver(o as CrmOptions, catalog) },
    rus: { create: (o) => new RusResolver(o as RusOptions) },
  };
  const resolvers = await buildResolvers(pre.resolvers, builtins);
  const chain = new ResolverChain({
    resolvers,
    logger,
    cacheMaxEntries: config.cacheMaxEntries,
    ...ttl,
    timeoutMs: config.checkTimeoutMs,
    failurePolicy: config.failurePolicy,
    staleGraceMs: config.staleGraceSeconds * 1000,
  });
  life.add('resolver chain', () => chain.close());
  logger.info({ resolvers: chain.resolverNames, failurePolicy: config.failurePolicy }, 'resolver chain ready');
  const guessLimits = { budget: config.guessBudget, windowSeconds: config.guessWindowSeconds, cooldownSeconds: config.guessCooldownSeconds };
  const guessBudgets = new GuessBudgetsRepo(db.knex, guessLimits);
  const guard = new GuessGuard(
    guessBudgets,
    { ...guessLimits, syncMs: config.guessSyncMs, delayMs: config.guessDelayMs, maxSubjects: Math.max(10_000, config.cacheMaxEntries) },
    logger,
  );
  base.onInvalidate((change) => {
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
  await life.acquire('guessing budgets', () => guard.start(), () => guard.stop());
  const checkService = new CheckService({
    hashKey: base.hashKey,
    chain,
    recordEvent,
    repositoryCacheSeconds: config.repositoryCacheSeconds ?? null,
    ...(guard.enabled && { guard }),
  });
  const handle = createRusCheckHandler({ checkService, recordEvent, isClosing, allowedCallers: pre.allowedCallers, trustedProxies: pre.trustedProxies });
  const stats = () => ({
    checkEvents: events.getStats(),
    keyCache: { entries: cache.size, hits: cache.hits, misses: cache.misses },
    resolvers: chain.getStats(),
  });
  return { handle, recordEvent, cache, chain, events, guard, guessBudgets, virtualKeys, products, stats };
}

/** Builds the planned resolvers in order; when one fails, those already built are closed. */
async function buildResolvers(plans: readonly ResolverPlan[], builtins: Parameters<ResolverPlan['build']>[0]): Promise<ChainResolver[]> {
  const built: ChainResolver[] = [];
  try {
    for (const plan of plans) built.push(await plan.build(builtins));
  } catch (err) {
    for (const r of built.reverse()) await r.close?.().catch(() => {});
    throw err;
  }
  return built;
}
