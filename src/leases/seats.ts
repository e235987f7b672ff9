import type { Knex } from 'knex';
import type { AcquireRequest, AcquireTarget, Lease, LeasesRepo, Pool, PoolInput } from './repo.ts';
import { poolNameOf, type PoolKind } from './pool-kinds.ts';
import { endedAs, retryAfterSeconds } from './rules.ts';

/** The pool defaults a virtual key's pool is made with on its first acquire. */
export type PoolDefaults = Pick<PoolInput, 'defaultTtlSeconds' | 'maxTtlSeconds' | 'heartbeatIntervalSeconds'>;

/**
 * Whose seats a holder asks for, by the kind of pool it may take seats of: a named pool (at
 * /v1, by name), a virtual key's (at /v1, with the key; `seats`: the key's now), an SES
 * application's (through the SES protocol; made with `create` on first use).
 */
export type SeatTarget =
  | { kind: 'named'; name: string }
  | { kind: 'virtual_key'; virtualKeyId: number; seats: number; defaults: PoolDefaults }
  | { kind: 'ses_application'; application: string; create: PoolInput };

/** Who takes the seat, for how long, and the credential its lease is bound to. */
export type SeatHolder = AcquireRequest;

/** Every seat is taken: what a refused holder needs to know, and when to try again. */
export interface NoSeat {
  kind: 'no_seat';
  pool: string;
  seats: number;
  inUse: number;
  retryAfterSeconds: number;
}

export type SeatOutcome =
  /** `created`: a new lease; else the holder's live lease, given back renewed (an idempotent acquire). */
  | { kind: 'granted'; lease: Lease; pool: Pool; created: boolean }
  | NoSeat
  | { kind: 'no_pool'; name: string }
  /** The pool's seats are for holders of another kind (see pool-kinds.ts). */
  | { kind: 'other_kind'; pool: Pool }
  | { kind: 'ttl_too_long'; pool: Pool }
  /** The clientId holds a live lease of this pool acquired with another credential. */
  | { kind: 'client_id_in_use'; pool: Pool };

export type RenewOutcome = { kind: 'renewed'; lease: Lease } | { kind: 'ended'; as: 'released' | 'expired' };

/**
 * The one seat engine: the /v1 lease protocol and the SES protocol take, renew and give back
 * seats only through it. Whether a holder may take a seat of a pool now is decided in one
 * database call holding the pool's row lock, with the database's clock (the acquire function):
 * the pool must be of the holder's kind and have a free seat, so however many processes share
 * the database, live leases never outnumber seats. Renewing and releasing touch one lease and
 * can only extend or end a live one.
 */
export class SeatEngine {
  constructor(private readonly repo: LeasesRepo) {}

  /** The name of the pool a target's seats are in, as admins see it. */
  nameOf(target: SeatTarget): string {
    return target.kind === 'named' ? target.name : poolNameOf(target);
  }

  /** The pool a target's seats are in, if it exists yet. */
  poolOf(target: SeatTarget): Promise<Pool | undefined> {
    return this.repo.poolOf(this.acquireTarget(target));
  }

  /**
   * A refusal that needs no lock: `pool` is full of other holders' leases at this instant
   * (recorded as `denied`). Undefined when a seat may be free, or when the holder has a live
   * lease (it is given back). Only a request that may be granted then queues on the lock.
   */
  async refuseWhenFull(pool: Pool, seats: number, holder: Pick<SeatHolder, 'clientId' | 'clientAddress'>): Promise<NoSeat | undefined> {
    const full = await this.repo.fullWithoutMe(pool.id, seats, holder.clientId);
    if (!full) return undefined;
    await this.repo.event(this.repo.knex, 'denied', pool.name, null, holder.clientId, 'no_seat_available', holder.clientAddress);
    return noSeat(pool.name, seats, full);
  }

  /**
   * May `holder` take a seat of `target` now: its live lease back, a new lease, or a refusal,
   * decided under the pool's lock. In `db`'s transaction when given one (the lock is then held
   * until it commits), else in one statement.
   */
  async take(target: SeatTarget, holder: SeatHolder, db: Knex | Knex.Transaction = this.repo.knex): Promise<SeatOutcome> {
    const result = await this.repo.acquire(db, this.acquireTarget(target), holder);
    switch (result.outcome) {
      case 'no_pool':
        return { kind: 'no_pool', name: this.nameOf(target) };
      case 'full':
        return noSeat(result.pool.name, result.pool.seats, result);
      case 'acquired':
      case 'existing':
        return { kind: 'granted', lease: result.lease, pool: result.pool, created: result.outcome === 'acquired' };
      default:
        return { kind: result.outcome, pool: result.pool };
    }
  }

  /** A lease with its pool, whatever its state; with `kind`, only a lease of a pool of that kind. */
  async find(leaseId: string, kind?: PoolKind): Promise<{ lease: Lease; pool: Pool } | undefined> {
    const found = await this.repo.getLease(leaseId);
    return found && (kind === undefined || found.pool.kind === kind) ? found : undefined;
  }

  /** Extends a live lease to now + ttlSeconds; else says how it ended (released wins over expired). */
  async renew(leaseId: string, ttlSeconds: number, clientAddress: string | null, db: Knex | Knex.Transaction = this.repo.knex): Promise<RenewOutcome> {
    const renewed = await this.repo.renew(db, leaseId, ttlSeconds, clientAddress);
    if (renewed) return { kind: 'renewed', lease: renewed };
    const now = await this.repo.getLease(leaseId, db);
    return { kind: 'ended', as: now ? (endedAs(now.lease, new Date()) ?? 'expired') : 'expired' };
  }

  /** Ends a live lease (`reason` null: by its holder). */
  release(leaseId: string, reason: string | null, clientAddress: string | null, db: Knex | Knex.Transaction = this.repo.knex) {
    return this.repo.release(db, leaseId, reason, clientAddress);
  }

  private acquireTarget(target: SeatTarget): AcquireTarget {
    return { ...target, name: this.nameOf(target) };
  }
}

function noSeat(pool: string, seats: number, state: { inUse: number; earliestExpiry: Date | null; now: Date }): NoSeat {
  return { kind: 'no_seat', pool, seats, inUse: state.inUse, retryAfterSeconds: retryAfterSeconds(state.earliestExpiry, state.now) };
}
