import type { Lease, Pool } from './repo.ts';
import { heartbeatFor } from './rules.ts';

/** A lease as the lease protocol and the admin API show it. */
export function leaseView(lease: Lease, pool: Pool) {
  return {
    leaseId: lease.id,
    pool: pool.name,
    clientId: lease.clientId,
    acquiredAt: lease.acquiredAt.toISOString(),
    renewedAt: lease.renewedAt.toISOString(),
    expiresAt: lease.expiresAt.toISOString(),
    ttlSeconds: lease.ttlSeconds,
    heartbeatIntervalSeconds: heartbeatFor(lease.ttlSeconds, pool),
    metadata: lease.metadata,
  };
}

/** A pool as the admin API shows it. */
export function poolView(pool: Pool) {
  return {
    name: pool.name,
    seats: pool.seats,
    defaultTtlSeconds: pool.defaultTtlSeconds,
    maxTtlSeconds: pool.maxTtlSeconds,
    heartbeatIntervalSeconds: pool.heartbeatIntervalSeconds,
    requireSignedRequests: pool.requireSignedRequests,
    anonymous: pool.anonymous,
    virtualKeyId: pool.virtualKeyId,
    createdAt: pool.createdAt.toISOString(),
    updatedAt: pool.updatedAt.toISOString(),
  };
}
