import { LRUCache } from 'lru-cache';
import type { CompiledMapping } from '../domain/check.ts';

/** What the cache remembers of one key hash: its mapping, or that there is none. */
export type CachedLookup = { found: true; compiled: CompiledMapping } | { found: false };

const NOT_FOUND: CachedLookup = Object.freeze({ found: false });

export interface KeyCacheOptions {
  maxEntries: number;
  ttlMs: number;
  negativeTtlMs: number;
}

/**
 * A bounded LRU of key lookups, keyed by the key's hash (never the key). Found keys live for
 * `ttlMs`, unknown ones for `negativeTtlMs`. The rules (status, validity window, server,
 * addresses) are evaluated on every request against the cached mapping, so a key expires or
 * becomes valid at exactly its instant; the TTLs only bound how long a change made outside
 * this process goes unseen. Concurrent misses for one hash share one lookup.
 */
export class KeyCache {
  private readonly lru: LRUCache<string, CachedLookup> | undefined;
  private readonly inflight = new Map<string, Promise<CachedLookup>>();
  private generation = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly options: KeyCacheOptions) {
    this.lru = options.maxEntries > 0 ? new LRUCache({ max: options.maxEntries, ttlAutopurge: false }) : undefined;
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }

  /** The cached answer for `hash`, if any: the hot path, with no promise and no timer. */
  peek(hash: string): CachedLookup | undefined {
    const cached = this.lru?.get(hash);
    if (cached !== undefined) this.hits++;
    return cached;
  }

  /** The cached answer for `hash`, or the result of `load` (cached on the way out). */
  async get(hash: string, load: () => Promise<CompiledMapping | undefined>): Promise<CachedLookup> {
    const cached = this.peek(hash);
    if (cached !== undefined) return cached;
    this.misses++;
    const pending = this.inflight.get(hash);
    if (pending) return pending;
    const generation = this.generation;
    const promise = load()
      .then((compiled) => {
        const entry: CachedLookup = compiled ? { found: true, compiled } : NOT_FOUND;
        // A change that evicted this hash while the lookup ran makes the result stale: use it
        // for this request, but do not keep it.
        if (this.lru && generation === this.generation) {
          this.lru.set(hash, entry, { ttl: compiled ? this.options.ttlMs : this.options.negativeTtlMs });
        }
        return entry;
      })
      .finally(() => this.inflight.delete(hash));
    this.inflight.set(hash, promise);
    return promise;
  }

  evict(hashes: Iterable<string>): void {
    this.generation++;
    for (const h of hashes) {
      this.lru?.delete(h);
      this.inflight.delete(h);
    }
  }

  clear(): void {
    this.generation++;
    this.lru?.clear();
    this.inflight.clear();
  }
}
