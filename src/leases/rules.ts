/**
 * The rules of floating leases, free of any store: what makes a lease live, which TTLs a pool
 * accepts, and what a refused client is told. The SQL in the lease store applies the same
 * rules at query time (a lease is live while `now < expires_at` and it is not released).
 */

export interface PoolLimits {
  seats: number;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  heartbeatIntervalSeconds: number;
}

export interface LeaseTimes {
  expiresAt: Date;
  releasedAt: Date | null;
}

/** Why a lease is not live, for a 410: released wins over expired (the client ended it). */
export function endedAs(lease: LeaseTimes, now: Date): 'released' | 'expired' | null {
  if (lease.releasedAt !== null) return 'released';
  return now.getTime() >= lease.expiresAt.getTime() ? 'expired' : null;
}

/** Live: not released and not yet expired. A lease is dead at the very instant `expiresAt`. */
export const isLive = (lease: LeaseTimes, now: Date): boolean => endedAs(lease, now) === null;

/**
 * The TTL a request gets: the one asked for (whole seconds from 1 to the pool's maximum), or,
 * when none is asked, `fallback` (a heartbeat keeps the lease's own TTL) or the pool default.
 * A TTL out of range is refused rather than clamped, so a client never believes it holds a
 * seat longer than it does.
 */
export function resolveTtl(requested: number | undefined, pool: PoolLimits, fallback?: number): { ttlSeconds: number } | { problem: string } {
  if (requested === undefined) return { ttlSeconds: Math.min(fallback ?? pool.defaultTtlSeconds, pool.maxTtlSeconds) };
  if (!Number.isInteger(requested) || requested < 1 || requested > pool.maxTtlSeconds) {
    return { problem: `ttlSeconds must be a whole number from 1 to ${pool.maxTtlSeconds} for this pool` };
  }
  return { ttlSeconds: requested };
}

/** The heartbeat a client should keep for a TTL: the pool's hint, but never a third of the TTL or more. */
export function heartbeatFor(ttlSeconds: number, pool: PoolLimits): number {
  return Math.max(1, Math.min(pool.heartbeatIntervalSeconds, Math.floor(ttlSeconds / 3)));
}

/** Default heartbeat hint of a pool: a third of its default TTL, so two heartbeats may be lost. */
export function defaultHeartbeatInterval(defaultTtlSeconds: number): number {
  return Math.max(1, Math.floor(defaultTtlSeconds / 3));
}

/** Seconds until the earliest live lease expires (at least 1): when a refused client may try again. */
export function retryAfterSeconds(earliestExpiry: Date | null, now: Date): number {
  if (earliestExpiry === null) return 1;
  return Math.max(1, Math.ceil((earliestExpiry.getTime() - now.getTime()) / 1000));
}

/** A client id: printable ASCII without spaces, 1 to 128 characters (a host name, a job id, a UUID). */
export const CLIENT_ID = /^[\x21-\x7e]{1,128}$/;
