import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { LeasesRepo } from './repo.ts';
import { LeaseRefusal } from './outcomes.ts';

/** An answer as kept for a retried write: the status and body its first request got. */
export interface StoredAnswer {
  status: number;
  body?: unknown;
}

/** A retried write, answered with what its first request got. */
export interface Replayed {
  kind: 'replayed';
  answer: StoredAnswer;
}

/**
 * What a write brings for idempotency: the client's Idempotency-Key, the hash of the request
 * (the same key with another request is refused), and how its outcome is answered, for keeping.
 */
export interface IdempotencyKey<O> {
  key: string;
  requestHash: string;
  answerOf(outcome: O): StoredAnswer;
}

/** The hash an Idempotency-Key is bound to: of a signed request's digest, else of its JSON. */
export function requestHashOf(payload: unknown, signedDigest: string | undefined): string {
  return createHash('sha256')
    .update(signedDigest ?? JSON.stringify(payload))
    .digest('hex');
}

/**
 * Idempotency keys of the lease protocol, scoped by the caller (to the pool and client, or the
 * lease), so two clients that pick the same key never meet. The first request's successful
 * answer is kept with its write, in its transaction, and replayed for the same key and request;
 * a concurrent twin waits on the key's row and then replays. Refusals are not kept: the key
 * stays usable. Kept answers are status and body as sent, a format processes of every version
 * sharing the database read alike.
 */
export class Idempotency {
  constructor(private readonly repo: LeasesRepo) {}

  /**
   * The answer kept for a retried write (same key, same request), else undefined; a refusal,
   * `idempotency_key_reused`, for the same key with another request. Asked before a signed
   * request's replay check, so a client can resend the very message it signed, and again by a
   * twin that found the key taken.
   */
  async replay<O>(scope: string, idem: IdempotencyKey<O>, db: Knex | Knex.Transaction = this.repo.knex): Promise<Replayed | undefined> {
    const kept = await this.repo.idempotencyRecord(db, scope, idem.key);
    if (!kept || kept.status === 0) return undefined;
    if (kept.requestHash !== idem.requestHash) {
      throw new LeaseRefusal('idempotency_key_reused', 'this Idempotency-Key was used with another request body');
    }
    return { kind: 'replayed', answer: { status: kept.status, ...(kept.body !== null && { body: kept.body }) } };
  }

  /**
   * Runs a write: without a key as it is (each write is one statement, and holds a pool's lock
   * for no client round trip); with one, in a transaction that claims the key first and keeps
   * the answer if it succeeded (status below 300).
   */
  write<O>(scope: string, idem: IdempotencyKey<O> | undefined, op: (db: Knex | Knex.Transaction) => Promise<O>): Promise<O | Replayed> {
    if (!idem) return op(this.repo.knex);
    return this.repo.knex.transaction(async (trx) => {
      if (!(await this.repo.claimIdempotencyKey(trx, scope, idem.key, idem.requestHash))) {
        const replayed = await this.replay(scope, idem, trx);
        if (replayed) return replayed;
      }
      const outcome = await op(trx);
      const answer = idem.answerOf(outcome);
      await this.repo.settleIdempotencyKey(trx, scope, idem.key, answer.status < 300 ? answer : undefined);
      return outcome;
    });
  }
}
