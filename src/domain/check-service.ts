import { LRUCache } from 'lru-cache';
import type { CheckDecision, GrantedEntitlement } from './check.ts';
import { renderEntitlementDocument } from './entitlement-document.ts';
import { keyHint, type KeyHasher } from './virtual-key.ts';
import type { CheckRequest } from './types.ts';
import type { CheckEvent } from '../store/check-events.ts';
import type { PostgresResolver } from '../resolvers/postgres.ts';
import type { Logger } from '../logger.ts';

export type CheckAnswer = { status: 200; document: Buffer; decision: CheckDecision } | { status: 404; decision: CheckDecision };

export interface CheckServiceDeps {
  hashKey: KeyHasher;
  resolver: PostgresResolver;
  recordEvent: (event: CheckEvent) => void;
  logger: Logger;
  /** A lookup slower than this is abandoned and the request denied: Conary has no timeout. */
  timeoutMs: number;
  now?: () => number;
}

/** Rendered documents remembered, keyed by their content (many keys share an entitlement). */
const DOCUMENT_CACHE_SIZE = 4096;

/**
 * The rUS check, from a parsed request to an answer: hash the key, look it up (cached),
 * decide, render the document (cached by content), and record the decision.
 * It always answers: a lookup error or timeout is a denial, recorded as `lookup_failed`.
 */
export class CheckService {
  private readonly now: () => number;
  private readonly documents = new LRUCache<string, Buffer>({ max: DOCUMENT_CACHE_SIZE });

  constructor(private readonly deps: CheckServiceDeps) {
    this.now = deps.now ?? Date.now;
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

  async check(request: CheckRequest, callerIp: string | null, startedNs: bigint): Promise<CheckAnswer> {
    const { resolver } = this.deps;
    const hash = this.deps.hashKey(request.key);
    let answer: CheckAnswer;
    try {
      const lookup = resolver.cached(hash) ?? (await withTimeout(resolver.lookup(hash), this.deps.timeoutMs));
      const decision = resolver.decide(request, lookup, this.now());
      if (decision.granted) {
        answer = { status: 200, document: this.document(decision.entitlement), decision };
      } else {
        answer = { status: 404, decision };
      }
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message }, 'check lookup failed; denied');
      answer = { status: 404, decision: { granted: false, virtualKeyId: null, reason: 'lookup_failed' } };
    }
    const { decision } = answer;
    this.deps.recordEvent({
      occurredAt: new Date(),
      server: request.server,
      class: request.class ?? null,
      keyHint: keyHint(request.key),
      virtualKeyId: decision.virtualKeyId,
      remoteIp: request.remoteIp ?? null,
      callerIp,
      decision: decision.granted ? 'granted' : 'denied',
      reason: decision.granted ? null : decision.reason,
      resolver: resolver.name,
      latencyUs: Number((process.hrtime.bigint() - startedNs) / 1000n),
    });
    return answer;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`lookup timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
