import { compileMapping, decide, type CheckDecision, type DecideOptions } from '../domain/check.ts';
import type { CheckRequest } from '../domain/types.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import type { CachedLookup, KeyCache } from './key-cache.ts';

/**
 * Resolves virtual keys from entgate's own tables: one indexed lookup by key hash (through
 * the key cache), then the rules of `decide`.
 */
export class PostgresResolver {
  readonly name = 'postgres';

  constructor(
    private readonly repo: VirtualKeysRepo,
    private readonly cache: KeyCache,
    private readonly options: DecideOptions,
  ) {}

  /** The cached lookup for this hash, when there is one. */
  cached(keyHash: string): CachedLookup | undefined {
    return this.cache.peek(keyHash);
  }

  async lookup(keyHash: string): Promise<CachedLookup> {
    return this.cache.get(keyHash, async () => {
      const mapping = await this.repo.findMappingByHash(keyHash);
      return mapping ? compileMapping(mapping) : undefined;
    });
  }

  decide(request: CheckRequest, lookup: CachedLookup, nowMs: number): CheckDecision {
    return decide(request, lookup.found ? lookup.compiled : undefined, nowMs, this.options);
  }
}
