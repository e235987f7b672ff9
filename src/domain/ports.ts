/**
 * The ports of the domain: what the check and the guessing budgets need from the outside,
 * defined here where they are used and implemented by `store/` and `resolvers/`. The domain
 * imports nothing but these and `lib/`.
 */
import type { CheckRequest } from './types.ts';

/** What the resolver chain answers for one check (\`resolvers/chain.ts\` implements it). */
export type ChainOutcome =
  | {
      granted: true;
      class: string | null;
      key: string;
      timeout: { val: number; retry: boolean } | null;
      /** When the grant stops being valid (epoch ms); null: never. */
      expiresAt: number | null;
      dependsOnAddress: boolean;
      resolver: string;
      virtualKeyId: number | null;
      /** Set when the grant is the last known one, served because a resolver failed. */
      reason: 'stale_if_error' | null;
    }
  | { granted: false; reason: string; resolver: string | null; virtualKeyId: number | null };

/** Looks a virtual key up: the resolver chain, with its caches, deadline and failure policy. */
export interface EntitlementLookup {
  resolve(request: CheckRequest, keyHash: string): ChainOutcome | Promise<ChainOutcome>;
}

export type { CheckEvent } from './events.ts';

/** A subject's state as the database has it, times as milliseconds from the database's now. */
export interface BudgetState {
  subject: string;
  failures: number;
  /** Milliseconds until the current window ends (<= 0: it has ended). */
  windowLeftMs: number;
  /** Milliseconds of cool-down left; null or <= 0 when not blocked. */
  blockedLeftMs: number | null;
}

export interface GuessLimits {
  budget: number;
  windowSeconds: number;
  cooldownSeconds: number;
}

/** The shared failed-lookup budgets (\`store/guess-budgets.ts\` keeps them in the database). */
export interface GuessBudgetStore {
  addFailures(failures: ReadonlyMap<string, number>): Promise<BudgetState[]>;
  blockedSince(sinceMs: number | undefined): Promise<BudgetState[]>;
  tidy(): Promise<number>;
}
