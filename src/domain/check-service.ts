import { LRUCache } from 'lru-cache';
import type { GrantedEntitlement } from './check.ts';
import { renderEntitlementDocument } from './entitlement-document.ts';
import { keyHint, type KeyHasher } from './virtual-key.ts';
import type { CheckRequest } from './types.ts';
import type { CheckEvent } from '../store/check-events.ts';
import type { ChainOutcome, ResolverChain } from '../resolvers/chain.ts';
import { BLOCKED_REASON, GUESS_REASONS, guessSubject, type GuessGuard } from './guess-guard.ts';

export type CheckAnswer = { status: 200; document: Buffer; outcome: ChainOutcome } | { status: 404; outcome: ChainOutcome };

export interface CheckServiceDeps {
  hashKey: KeyHasher;
  chain: ResolverChain;
  recordEvent: (event: CheckEvent) => void;
  /** Failed-lookup budgets: a subject past its budget is denied without asking the chain. */
  guard?: GuessGuard;
}

const BLOCKED: ChainOutcome = { granted: false, reason: BLOCKED_REASON, resolver: null, virtualKeyId: null };

/** Rendered documents remembered, keyed by their content (many keys share an entitlement). */
const DOCUMENT_CACHE_SIZE = 4096;

/**
 * The rUS check, from a parsed request to an answer: refuse a subject cooling down after too
 * many unknown keys, hash the key, ask the resolver chain (cached, with its deadline and
 * failure policy), count an unknown key against its subject, render the document (cached by
 * content), and record the decision. It always answers.
 */
export class CheckService {
  private readonly documents = new LRUCache<string, Buffer>({ max: DOCUMENT_CACHE_SIZE });

  constructor(private readonly deps: CheckServiceDeps) {}

  async check(request: CheckRequest, callerIp: string | null, startedNs: bigint): Promise<CheckAnswer> {
    const guard = this.deps.guard;
    // Worked out only when a block may apply or a failure is counted, and then once.
    const subject = guard?.anyBlocked ? guessSubject(request.remoteIp, callerIp) : null;
    let outcome: ChainOutcome;
    if (subject && guard!.isBlocked(subject)) {
      outcome = BLOCKED;
    } else {
      const pending = this.deps.chain.resolve(request, this.deps.hashKey(request.key));
      outcome = pending instanceof Promise ? await pending : pending;
      if (!outcome.granted && guard && GUESS_REASONS.has(outcome.reason)) {
        guard.recordFailure(subject === null ? guessSubject(request.remoteIp, callerIp) : subject);
      }
    }
    const answer: CheckAnswer = outcome.granted
      ? {
          status: 200,
          outcome,
          document: this.document({ server: request.server, class: outcome.class, key: outcome.key, timeout: outcome.timeout }),
        }
      : { status: 404, outcome };
    this.deps.recordEvent({
      occurredAt: new Date(),
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
  private document(ent: GrantedEntitlement): Buffer {
    const id = `${ent.server}\n${ent.class ?? ''}\n${ent.class === null ? 0 : 1}\n${ent.key}\n${ent.timeout?.val ?? ''}\n${ent.timeout?.retry ?? ''}`;
    let document = this.documents.get(id);
    if (document === undefined) {
      document = Buffer.from(renderEntitlementDocument(ent), 'utf8');
      this.documents.set(id, document);
    }
    return document;
  }
}
