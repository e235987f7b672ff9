import { conaryValueProblem, isConarySafe } from '../domain/conary-values.ts';
import type { Logger } from '../lib/logger.ts';
import { GroupedCache } from './grouped-cache.ts';
import type { ChainOutcome } from '../domain/ports.ts';
import { ResolverFailure, type Resolution, type ResolveRequest, type Resolver } from './resolver.ts';

/** A resolver entgate itself provides may also answer synchronously from its own cache. */
export interface ChainResolver extends Resolver {
  /** The resolver's answer when it can give one without waiting (its own cache); else undefined. */
  peek?(request: ResolveRequest, keyHash: string): Resolution | undefined;
}

export type FailurePolicy = 'deny' | 'stale-if-error';

export interface ResolverChainOptions {
  resolvers: ChainResolver[];
  logger: Logger;
  /** Capacity of the decision cache and of the stale-grant store; 0 disables both. */
  cacheMaxEntries: number;
  ttlMs: number;
  negativeTtlMs: number;
  /** The whole chain's deadline for one check. */
  timeoutMs: number;
  failurePolicy: FailurePolicy;
  staleGraceMs: number;
}

export type { ChainOutcome };

interface StaleGrant {
  resolution: Extract<Resolution, { outcome: 'entitled' }>;
  resolver: string;
}

export interface ChainStats {
  resolverCalls: number;
  failures: number;
  staleServed: number;
  cacheEntries: number;
}

/**
 * Runs the configured resolvers in order for one check: the first definitive answer wins,
 * all passing is a denial (`unknown_key`). In front of each resolver sits a decision cache
 * (bounded LRU; the resolver's own TTL, else the positive or negative default) keyed by the
 * key's hash, server, class and client address, so a decision is reused only for the same
 * question. Concurrent identical questions share one resolver call. A resolver that throws,
 * answers malformed data, or misses the deadline has failed: the failure policy decides.
 * Nothing here ever throws to the caller.
 */
export class ResolverChain {
  private readonly cache: GroupedCache<Resolution>;
  private readonly stale: GroupedCache<StaleGrant>;
  private readonly inflight = new Map<string, Promise<Resolution>>();
  private generation = 0;
  private readonly stats = { resolverCalls: 0, failures: 0, staleServed: 0 };

  constructor(private readonly options: ResolverChainOptions) {
    this.cache = new GroupedCache(options.cacheMaxEntries);
    this.stale = new GroupedCache(options.failurePolicy === 'stale-if-error' ? options.cacheMaxEntries : 0);
  }

  get resolvers(): readonly ChainResolver[] {
    return this.options.resolvers;
  }

  get resolverNames(): string[] {
    return this.options.resolvers.map((r) => r.name);
  }

  getStats(): ChainStats {
    return { ...this.stats, cacheEntries: this.cache.size };
  }

  /** Synchronous when every answer needed is cached; a promise otherwise. Never rejects. */
  resolve(request: ResolveRequest, keyHash: string): ChainOutcome | Promise<ChainOutcome> {
    // The server is echoed in the document: one Conary would read back differently can never be granted.
    if (!isConarySafe(request.server)) return denied('server_not_covered', null, null);
    const question = `${keyHash}\n${request.server}\n${request.class ?? ''}\n${request.remoteIp ?? ''}`;
    const { resolvers } = this.options;
    for (let i = 0; i < resolvers.length; i++) {
      const resolver = resolvers[i]!;
      const known = resolver.peek?.(request, keyHash) ?? this.cache.get(`${i}\n${question}`);
      if (known === undefined) return this.resolveFrom(i, request, keyHash, question);
      if (known.outcome !== 'pass') return outcomeOf(known, resolver.name);
    }
    return denied('unknown_key', null, null);
  }

  /** Forgets every cached decision and stale grant of these keys. */
  evict(keyHashes: Iterable<string>): void {
    this.generation++;
    for (const hash of keyHashes) {
      this.cache.evictGroup(hash);
      this.stale.evictGroup(hash);
    }
  }

  /** Forgets every cached decision and stale grant (e.g. a product mapping changed). */
  clear(): void {
    this.generation++;
    this.cache.clear();
    this.stale.clear();
  }

  async close(): Promise<void> {
    for (const r of this.options.resolvers) await r.close?.();
  }

  private async resolveFrom(start: number, request: ResolveRequest, keyHash: string, question: string): Promise<ChainOutcome> {
    const { resolvers, timeoutMs } = this.options;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new ResolverFailure('timeout', `no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    let current = resolvers[start]!;
    try {
      for (let i = start; i < resolvers.length; i++) {
        current = resolvers[i]!;
        const known = i === start ? undefined : (current.peek?.(request, keyHash) ?? this.cache.get(`${i}\n${question}`));
        const resolution = known ?? (await this.ask(i, current, request, keyHash, question, controller.signal));
        if (resolution.outcome !== 'pass') return outcomeOf(resolution, current.name);
      }
      return denied('unknown_key', null, null);
    } catch (err) {
      return this.failed(current, err, question);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One resolver call, shared by concurrent identical questions, cached per its TTL. */
  private ask(
    index: number,
    resolver: ChainResolver,
    request: ResolveRequest,
    keyHash: string,
    question: string,
    signal: AbortSignal,
  ): Promise<Resolution> {
    const id = `${index}\n${question}`;
    const pending = this.inflight.get(id);
    if (pending) return raceAbort(pending, signal);
    const generation = this.generation;
    this.stats.resolverCalls++;
    const logger = this.options.logger.child({ resolver: resolver.name });
    const call = raceAbort(
      Promise.resolve().then(() => resolver.resolve(request, { signal, logger, keyHash })),
      signal,
    ).then((resolution) => {
      const answer = validated(resolution);
      if (generation === this.generation) {
        this.cache.set(keyHash, id, answer, ttlOf(answer, this.options));
        if (answer.outcome === 'entitled') {
          this.stale.set(keyHash, question, { resolution: answer, resolver: resolver.name }, this.options.staleGraceMs);
        }
      }
      return answer;
    });
    this.inflight.set(id, call);
    void call.catch(() => {}).finally(() => this.inflight.delete(id));
    return call;
  }

  private failed(resolver: ChainResolver, err: unknown, question: string): ChainOutcome {
    this.stats.failures++;
    const kind = err instanceof ResolverFailure ? err.kind : 'error';
    this.options.logger.warn({ resolver: resolver.name, failure: kind, err: (err as Error).message }, 'resolver failed');
    if (this.options.failurePolicy === 'stale-if-error') {
      const last = this.stale.get(question);
      if (last) {
        this.stats.staleServed++;
        return { ...outcomeOf(last.resolution, last.resolver), reason: 'stale_if_error' } as ChainOutcome;
      }
    }
    return denied(`resolver_failed:${kind}`, resolver.name, null);
  }
}

function denied(reason: string, resolver: string | null, virtualKeyId: number | null): ChainOutcome {
  return { granted: false, reason, resolver, virtualKeyId };
}

function outcomeOf(resolution: Exclude<Resolution, { outcome: 'pass' }>, resolver: string): ChainOutcome {
  if (resolution.outcome === 'entitled') {
    return {
      granted: true,
      class: resolution.class,
      key: resolution.key,
      timeout: resolution.timeout ?? null,
      expiresAt: resolution.expiresAt === undefined ? null : Number(resolution.expiresAt),
      dependsOnAddress: resolution.dependsOnAddress === true,
      resolver,
      virtualKeyId: resolution.virtualKeyId ?? null,
      reason: null,
    };
  }
  return denied(resolution.reason, resolver, resolution.virtualKeyId ?? null);
}

function ttlOf(resolution: Resolution, options: ResolverChainOptions): number {
  if (resolution.ttlSeconds !== undefined) return resolution.ttlSeconds * 1000;
  return resolution.outcome === 'entitled' ? options.ttlMs : options.negativeTtlMs;
}

/** An answer a resolver gave, checked against the contract; anything else is a failure. */
export function validated(resolution: Resolution): Resolution {
  const r = resolution as unknown as Partial<Record<string, unknown>> | null;
  const bad = (why: string) => new ResolverFailure('invalid_answer', `resolver answered ${why}`);
  if (r === null || typeof r !== 'object') throw bad('something that is not an object');
  const ttl = r.ttlSeconds;
  if (ttl !== undefined && !(typeof ttl === 'number' && ttl >= 0 && Number.isFinite(ttl))) throw bad('an invalid ttlSeconds');
  switch (r.outcome) {
    case 'pass':
      return ttl === undefined ? { outcome: 'pass' } : { outcome: 'pass', ttlSeconds: ttl as number };
    case 'denied':
      if (typeof r.reason !== 'string' || !/^[a-z0-9_:.-]{1,64}$/.test(r.reason)) throw bad('a denial without a snake_case reason');
      return resolution;
    case 'entitled': {
      if (typeof r.key !== 'string' || conaryValueProblem(r.key)) throw bad(`a key that ${conaryValueProblem(String(r.key)) ?? 'is not a string'}`);
      if (r.class !== null && (typeof r.class !== 'string' || conaryValueProblem(r.class))) throw bad('a class Conary cannot read');
      const t = r.timeout as { val?: unknown; retry?: unknown } | undefined;
      if (t !== undefined && !(Number.isInteger(t.val) && (t.val as number) >= 0 && typeof t.retry === 'boolean')) {
        throw bad('an invalid timeout');
      }
      const expires = r.expiresAt;
      if (expires !== undefined && !((expires instanceof Date || typeof expires === 'number') && Number.isFinite(Number(expires)))) {
        throw bad('an invalid expiresAt (a Date or epoch milliseconds)');
      }
      if (r.dependsOnAddress !== undefined && typeof r.dependsOnAddress !== 'boolean') throw bad('a dependsOnAddress that is not a boolean');
      return resolution;
    }
    default:
      throw bad(`an unknown outcome ${JSON.stringify(r.outcome)}`);
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
