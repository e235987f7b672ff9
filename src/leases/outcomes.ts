import type { Lease, Pool } from './repo.ts';
import type { Replayed } from './idempotency.ts';
import type { NoSeat } from './seats.ts';

/**
 * What the lease protocol's requests come to, in the service's terms; the routes answer them
 * in HTTP (routes.ts). A refusal that stops a request is thrown as a LeaseRefusal (or, for an
 * unknown pool or lease and a request out of bounds, a NotFoundError or ValidationError).
 */
export type AcquireOutcome = { kind: 'granted'; lease: Lease; pool: Pool; created: boolean } | NoSeat | Replayed;
export type HeartbeatOutcome = { kind: 'renewed'; lease: Lease; pool: Pool } | Replayed;
export type ReleaseOutcome = { kind: 'released' } | Replayed;

/** Why the lease protocol refuses a request; each is a stable code clients may branch on. */
export type RefusalCode =
  /** No credential where one is needed. */
  | 'client_credential_required'
  /** The pool (or the lease) takes signed requests only. */
  | 'signed_request_required'
  /** A signed request: not signed by a key of its client, for another lease, too old, of an unknown client, or seen before. */
  | 'bad_signature'
  | 'request_expired'
  | 'unknown_client_key'
  | 'request_replayed'
  /** A token without the leases:client scope. */
  | 'insufficient_scope'
  /** The pool is not the holder's to take seats of (another kind, an unusable virtual key). */
  | 'not_entitled'
  /** The lease was acquired with another credential. */
  | 'not_lease_holder'
  /** The clientId holds a live lease of the pool acquired with another credential. */
  | 'client_id_in_use'
  /** The lease is no longer live: its virtual key no longer holds leases, it was released, or it expired. */
  | 'lease_revoked'
  | 'lease_released'
  | 'lease_expired'
  /** An Idempotency-Key used before with another request. */
  | 'idempotency_key_reused';

export class LeaseRefusal extends Error {
  constructor(
    readonly code: RefusalCode,
    message: string,
  ) {
    super(message);
    this.name = 'LeaseRefusal';
  }
}
