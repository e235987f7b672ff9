import { compileMapping, decide, type CheckDecision, type DecideOptions } from '../domain/check.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import type { CachedLookup, KeyCache } from './key-cache.ts';
import type { ChainResolver } from './chain.ts';
import type { Resolution, ResolveContext, ResolveRequest } from './resolver.ts';

/**
 * Resolves virtual keys from entgate's own tables: one indexed lookup by key hash (through
 * the key cache, which holds lookups and is evicted by admin changes), then the rules of
 * `decide`, evaluated on every request. A key it does not know is a `pass`, so a later
 * resolver (a CRM, say) may know it. Its answers carry ttlSeconds 0: the chain's decision
 * cache would only duplicate the key cache, and the rules are exact to the millisecond.
 */
export class PostgresResolver implements ChainResolver {
  readonly name = 'postgres';

  constructor(
    private readonly repo: VirtualKeysRepo,
    private readonly cache: KeyCache,
    private readonly options: DecideOptions,
    private readonly now: () => number = Date.now,
  ) {}

  peek(request: ResolveRequest, keyHash: string): Resolution | undefined {
    const lookup = this.cache.peek(keyHash);
    return lookup === undefined ? undefined : this.answer(request, lookup);
  }

  async resolve(request: ResolveRequest, context: ResolveContext): Promise<Resolution> {
    const lookup = await this.cache.get(context.keyHash, async () => {
      const mapping = await this.repo.findMappingByHash(context.keyHash);
      return mapping ? compileMapping(mapping) : undefined;
    });
    return this.answer(request, lookup);
  }

  private answer(request: ResolveRequest, lookup: CachedLookup): Resolution {
    return toResolution(decide(request, lookup.found ? lookup.compiled : undefined, this.now(), this.options));
  }
}

function toResolution(decision: CheckDecision): Resolution {
  if (decision.granted) {
    const { entitlement: e } = decision;
    return {
      outcome: 'entitled',
      class: e.class,
      key: e.key,
      ...(e.timeout !== null && { timeout: e.timeout }),
      ...(e.expiresAt !== null && { expiresAt: e.expiresAt }),
      ...(e.dependsOnAddress && { dependsOnAddress: true }),
      ttlSeconds: 0,
      virtualKeyId: decision.virtualKeyId,
    };
  }
  // Unknown keys are remembered by the lookup cache above (and forgotten on NOTIFY); the chain need not keep them twice.
  if (decision.reason === 'unknown_key') return { outcome: 'pass', ttlSeconds: 0 };
  return { outcome: 'denied', reason: decision.reason, ttlSeconds: 0, ...(decision.virtualKeyId !== null && { virtualKeyId: decision.virtualKeyId }) };
}
