import { LRUCache } from 'lru-cache';
import { conaryTimeout, documentClass, renderEntitlementDocument, type EntitlementDocument } from './entitlement-document.ts';
import { keyHint, type KeyHasher } from './virtual-key.ts';
import type { CheckRequest } from './types.ts';
import type { ChainOutcome, CheckEvent, EntitlementLookup } from './ports.ts';
import { BLOCKED_REASON, GUESS_REASONS, guessSubject, type GuessGuard } from './guess-guard.ts';

export type CheckAnswer = { status: 200; document: Buffer; outcome: ChainOutcome } | { status: 404; outcome: ChainOutcome };

export interface CheckServiceDeps {
  hashKey: KeyHasher;
  chain: EntitlementLookup;
  recordEvent: (event: CheckEvent) => void;
  /** Failed-lookup budgets: a subject past its budget is denied without asking the chain. */
  guard?: GuessGuard;
  /**
   * The repositories' own `authCacheTimeout` (seconds), when they set one: grants that expire
   * sooner are sent a `<timeout>` that ends with them. null: they cache nothing by default.
   */
  repositoryCacheSeconds?: number | null;
  now?: () => number;
}

const BLOCKED: ChainOutcome = { granted: false, reason: BLOCKED_REASON, resolver: null, virtualKeyId: null };

/** Rendered documents remembered, keyed by their content (many keys share an entitlement). */
const DOCUMENT_CACHE_SIZE = 4096;

/**
 * The rUS check, from a parsed request to an answer: refuse a client cooling down after too
 * many unknown keys (for a rUS host that sends no remote_ip, hold its unknown keys' answers
 * instead: it speaks for every client behind it), hash the key, ask the resolver chain (cached, with its deadline and
 * failure policy), count an unknown key against its subject, render the document (cached by
 * content), and record the decision. It always answers.
 */
export class CheckService {
  private readonly documents = new LRUCache<string, Buffer>({ max: DOCUMENT_CACHE_SIZE });

  private readonly now: () => number;

  constructor(private readonly deps: CheckServiceDeps) {
    this.now = deps.now ?? Date.now;
  }

  async check(request: CheckRequest, callerIp: string | null, startedNs: bigint): Promise<CheckAnswer> {
    const guard = this.deps.guard;
    // Worked out only when a block may apply or a failure is counted, and then once.
    const subject = guard?.anyBlocked ? guessSubject(request.remoteIp, callerIp) : null;
    let outcome: ChainOutcome;
    if (subject && guard!.isRefused(subject)) {
      outcome = BLOCKED;
    } else {
      const pending = this.deps.chain.resolve(request, this.deps.hashKey(request.key));
      outcome = pending instanceof Promise ? await pending : pending;
      if (!outcome.granted && guard && GUESS_REASONS.has(outcome.reason)) {
        const counted = subject === null ? guessSubject(request.remoteIp, callerIp) : subject;
        guard.recordFailure(counted);
        // Past the budget without remote_ip: the unknown key costs time, nobody is refused.
        const held = guard.delay(counted);
        if (held) await held;
      }
    }
    const now = this.now();
    // A grant never outlives its expiry, even one a cache kept.
    if (outcome.granted && outcome.expiresAt !== null && now >= outcome.expiresAt) {
      outcome = { granted: false, reason: 'expired', resolver: outcome.resolver, virtualKeyId: outcome.virtualKeyId };
    }
    const answer: CheckAnswer = outcome.granted
      ? {
          status: 200,
          outcome,
          document: this.document({
            server: request.server,
            class: documentClass(outcome.class, request.class),
            key: outcome.key,
            timeout: conaryTimeout(outcome, now, this.deps.repositoryCacheSeconds ?? null),
          }),
        }
      : { status: 404, outcome };
    this.deps.recordEvent({
      occurredAt: new Date(now),
      server: request.server,
      class: request.class ?? null,
      keyHint: keyHint(request.key),
      virtualKeyId: outcome.virtualKeyId,
      remoteIp: request.remoteIp ?? null,
      callerIp,
      decision: outcome.granted ? 'granted' : 'denied',
      reason: outcome.reason,
      resolver: outcome.resolver,
      latencyUs: Number((process.hrtime.bigint() - startedNs) / 1000n),
    });
    return answer;
  }

  /** The document for a grant, rendered once per distinct content. */
  private document(ent: EntitlementDocument): Buffer {
    const id = `${ent.server}\n${ent.class}\n${ent.key}\n${ent.timeout?.val ?? ''}\n${ent.timeout?.retry ?? ''}`;
    let document = this.documents.get(id);
    if (document === undefined) {
      document = Buffer.from(renderEntitlementDocument(ent), 'utf8');
      this.documents.set(id, document);
    }
    return document;
  }
}
