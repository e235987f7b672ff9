import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';

export interface Pool {
  id: number;
  name: string;
  seats: number;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  heartbeatIntervalSeconds: number;
  requireSignedRequests: boolean;
  /** Set for the pool a virtual key defines (its seats follow the key's maxConcurrentLeases). */
  virtualKeyId: number | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface Lease {
  id: string;
  pool: string;
  clientId: string;
  acquiredAt: Date;
  renewedAt: Date;
  expiresAt: Date;
  releasedAt: Date | null;
  ttlSeconds: number;
  clientAddress: string | null;
  metadata: Record<string, unknown>;
}

export type PoolInput = Pick<Pool, 'seats' | 'defaultTtlSeconds' | 'maxTtlSeconds' | 'heartbeatIntervalSeconds' | 'requireSignedRequests'>;

export type LeaseEventType = 'acquired' | 'renewed' | 'released' | 'expired' | 'denied';

export interface LeaseEvent {
  id: number;
  occurredAt: Date;
  type: LeaseEventType;
  pool: string;
  leaseId: string | null;
  clientId: string | null;
  reason: string | null;
  clientAddress: string | null;
}

export interface AcquireRequest {
  clientId: string;
  ttlSeconds: number;
  clientAddress: string | null;
  metadata: Record<string, unknown>;
}

export type AcquireResult =
  | { outcome: 'acquired' | 'existing'; lease: Lease; pool: Pool }
  | { outcome: 'full'; pool: Pool; inUse: number; earliestExpiry: Date | null; now: Date };

interface PoolRow {
  id: number;
  name: string;
  seats: number;
  default_ttl_seconds: number;
  max_ttl_seconds: number;
  heartbeat_interval_seconds: number;
  require_signed: boolean;
  virtual_key_id: number | null;
  created_at: Date;
  updated_at: Date;
}

interface LeaseRow {
  id: string;
  pool_id: number;
  pool_name?: string;
  client_id: string;
  acquired_at: Date;
  renewed_at: Date;
  expires_at: Date;
  released_at: Date | null;
  ttl_seconds: number;
  client_address: string | null;
  metadata: Record<string, unknown>;
}

const toPool = (r: PoolRow): Pool => ({
  id: r.id,
  name: r.name,
  seats: r.seats,
  defaultTtlSeconds: r.default_ttl_seconds,
  maxTtlSeconds: r.max_ttl_seconds,
  heartbeatIntervalSeconds: r.heartbeat_interval_seconds,
  requireSignedRequests: r.require_signed,
  virtualKeyId: r.virtual_key_id,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

const toLease = (r: LeaseRow, pool: string): Lease => ({
  id: r.id,
  pool,
  clientId: r.client_id,
  acquiredAt: r.acquired_at,
  renewedAt: r.renewed_at,
  expiresAt: r.expires_at,
  releasedAt: r.released_at,
  ttlSeconds: r.ttl_seconds,
  clientAddress: r.client_address,
  metadata: r.metadata,
});

const poolColumns = (p: Partial<PoolInput>) => ({
  ...(p.seats !== undefined && { seats: p.seats }),
  ...(p.defaultTtlSeconds !== undefined && { default_ttl_seconds: p.defaultTtlSeconds }),
  ...(p.maxTtlSeconds !== undefined && { max_ttl_seconds: p.maxTtlSeconds }),
  ...(p.heartbeatIntervalSeconds !== undefined && { heartbeat_interval_seconds: p.heartbeatIntervalSeconds }),
  ...(p.requireSignedRequests !== undefined && { require_signed: p.requireSignedRequests }),
});

const rowsOf = <T>(result: unknown) => (result as { rows: T[] }).rows;

/** The database's clock, read inside the transaction after its locks are held. */
async function clock(trx: Knex.Transaction | Knex): Promise<Date> {
  return rowsOf<{ now: Date }>(await trx.raw('select clock_timestamp() as now'))[0]!.now;
}

/**
 * Pools, leases and lease events in PostgreSQL (or PGlite). Every decision about seats is
 * taken inside one transaction that holds the pool's row lock, with the database's clock,
 * so any number of entgate processes on one database never grant more seats than a pool has.
 */
export class LeasesRepo {
  constructor(readonly knex: Knex) {}

  async createPool(name: string, input: PoolInput): Promise<Pool> {
    const [row] = await this.knex('lease_pools').insert({ name, ...poolColumns(input) }).returning('*');
    return toPool(row as PoolRow);
  }

  async updatePool(name: string, patch: Partial<PoolInput>): Promise<Pool | undefined> {
    const [row] = await this.knex('lease_pools')
      .where({ name })
      .update({ ...poolColumns(patch), updated_at: this.knex.fn.now() })
      .returning('*');
    return row ? toPool(row as PoolRow) : undefined;
  }

  async getPool(name: string, trx: Knex | Knex.Transaction = this.knex): Promise<Pool | undefined> {
    const row = (await trx('lease_pools').where({ name }).first()) as PoolRow | undefined;
    return row ? toPool(row) : undefined;
  }

  /** Pools with the count of their live leases. */
  async listPools(): Promise<(Pool & { inUse: number })[]> {
    const rows = rowsOf<PoolRow & { in_use: number }>(
      await this.knex.raw(
        `select p.*, (select count(*) from leases l
                       where l.pool_id = p.id and l.released_at is null and l.expires_at > clock_timestamp())::int as in_use
           from lease_pools p order by p.name`,
      ),
    );
    return rows.map((r) => ({ ...toPool(r), inUse: r.in_use }));
  }

  /** Deletes a pool; with live leases only when `force` (they end with it). */
  async deletePool(name: string, force: boolean): Promise<'deleted' | 'not_found' | 'in_use'> {
    return this.knex.transaction(async (trx) => {
      const pool = rowsOf<PoolRow>(await trx.raw('select * from lease_pools where name = ? for update', [name]))[0];
      if (!pool) return 'not_found';
      const live = await this.liveLeases(trx, pool.id, pool.name);
      if (live.length > 0 && !force) return 'in_use';
      for (const lease of live) await this.event(trx, 'released', pool.name, lease.id, lease.clientId, 'pool_deleted', null);
      await trx('lease_pools').where({ id: pool.id }).delete();
      return 'deleted';
    });
  }

  async liveLeases(trx: Knex | Knex.Transaction, poolId: number, poolName: string): Promise<Lease[]> {
    const rows = rowsOf<LeaseRow>(
      await trx.raw(
        `select * from leases where pool_id = ? and released_at is null and expires_at > clock_timestamp() order by acquired_at, id`,
        [poolId],
      ),
    );
    return rows.map((r) => toLease(r, poolName));
  }

  /** Locks a named pool for the rest of the transaction. */
  async lockPool(trx: Knex.Transaction, name: string): Promise<Pool | undefined> {
    const row = rowsOf<PoolRow>(await trx.raw('select * from lease_pools where name = ? for update', [name]))[0];
    return row ? toPool(row) : undefined;
  }

  /**
   * Locks a pool by name, creating it with `defaults` first when it does not exist (the pools
   * SES applications acquire from: an admin who creates or updates one sets its limit).
   */
  async lockOrCreatePool(trx: Knex.Transaction, name: string, defaults: PoolInput): Promise<Pool> {
    await trx.raw(
      `insert into lease_pools (name, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
       values (?, ?, ?, ?, ?, ?) on conflict (name) do nothing`,
      [name, defaults.seats, defaults.defaultTtlSeconds, defaults.maxTtlSeconds, defaults.heartbeatIntervalSeconds, defaults.requireSignedRequests],
    );
    return (await this.lockPool(trx, name))!;
  }

  /**
   * The pool a virtual key defines, created on first use, its seats set to the key's current
   * limit; the upsert leaves the row locked for the rest of the transaction.
   */
  async lockVirtualKeyPool(trx: Knex.Transaction, virtualKeyId: number, seats: number, defaults: Omit<PoolInput, 'seats'>): Promise<Pool> {
    const row = rowsOf<PoolRow>(
      await trx.raw(
        `insert into lease_pools (name, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed, virtual_key_id)
         values (?, ?, ?, ?, ?, ?, ?)
         on conflict (virtual_key_id) do update
           set seats = excluded.seats,
               updated_at = case when lease_pools.seats = excluded.seats then lease_pools.updated_at else now() end
         returning *`,
        [
          `vk-${virtualKeyId}`,
          seats,
          defaults.defaultTtlSeconds,
          defaults.maxTtlSeconds,
          defaults.heartbeatIntervalSeconds,
          defaults.requireSignedRequests,
          virtualKeyId,
        ],
      ),
    )[0]!;
    return toPool(row);
  }

  /**
   * Acquires a seat in a pool whose row lock `trx` holds: the client's live lease if it has one
   * (renewed to `ttlSeconds`), else a new lease if fewer live leases than seats, else `full`
   * (recorded as a `denied` event).
   */
  async acquireLocked(trx: Knex.Transaction, pool: Pool, request: AcquireRequest): Promise<AcquireResult> {
    const now = await clock(trx);
    const mine = rowsOf<LeaseRow>(
      await trx.raw(
        `update leases set renewed_at = ?, expires_at = ?::timestamptz + make_interval(secs => ?), ttl_seconds = ?
          where id = (select id from leases where pool_id = ? and client_id = ? and released_at is null and expires_at > ? limit 1)
          returning *`,
        [now, now, request.ttlSeconds, request.ttlSeconds, pool.id, request.clientId, now],
      ),
    )[0];
    if (mine) {
      await this.event(trx, 'renewed', pool.name, mine.id, mine.client_id, 'reacquired', request.clientAddress);
      return { outcome: 'existing', lease: toLease(mine, pool.name), pool };
    }
    const { in_use: inUse, earliest } = rowsOf<{ in_use: number; earliest: Date | null }>(
      await trx.raw(
        `select count(*)::int as in_use, min(expires_at) as earliest
           from leases where pool_id = ? and released_at is null and expires_at > ?`,
        [pool.id, now],
      ),
    )[0]!;
    if (inUse >= pool.seats) {
      await this.event(trx, 'denied', pool.name, null, request.clientId, 'no_seat_available', request.clientAddress);
      return { outcome: 'full', pool, inUse, earliestExpiry: earliest, now };
    }
    const row = rowsOf<LeaseRow>(
      await trx.raw(
        `insert into leases (id, pool_id, client_id, acquired_at, renewed_at, expires_at, ttl_seconds, client_address, metadata)
         values (?, ?, ?, ?, ?, ?::timestamptz + make_interval(secs => ?), ?, ?, ?::jsonb)
         returning *`,
        [
          randomUUID(),
          pool.id,
          request.clientId,
          now,
          now,
          now,
          request.ttlSeconds,
          request.ttlSeconds,
          request.clientAddress,
          JSON.stringify(request.metadata),
        ],
      ),
    )[0]!;
    await this.event(trx, 'acquired', pool.name, row.id, row.client_id, null, request.clientAddress);
    return { outcome: 'acquired', lease: toLease(row, pool.name), pool };
  }

  /** A lease with its pool, whatever its state. */
  async getLease(id: string, trx: Knex | Knex.Transaction = this.knex): Promise<{ lease: Lease; pool: Pool } | undefined> {
    const row = rowsOf<LeaseRow>(await trx.raw('select * from leases where id = ?', [id]))[0];
    if (!row) return undefined;
    const pool = toPool((await trx('lease_pools').where({ id: row.pool_id }).first()) as PoolRow);
    return { lease: toLease(row, pool.name), pool };
  }

  /** Extends a live lease to now + ttlSeconds; undefined when it is not live (any more). */
  async renew(trx: Knex.Transaction, id: string, ttlSeconds: number, clientAddress: string | null): Promise<Lease | undefined> {
    const row = rowsOf<LeaseRow & { pool_name: string }>(
      await trx.raw(
        `update leases l set renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => ?), ttl_seconds = ?
           from lease_pools p
          where l.id = ? and p.id = l.pool_id and l.released_at is null and l.expires_at > clock_timestamp()
          returning l.*, p.name as pool_name`,
        [ttlSeconds, ttlSeconds, id],
      ),
    )[0];
    if (!row) return undefined;
    await this.event(trx, 'renewed', row.pool_name, row.id, row.client_id, null, clientAddress);
    return toLease(row, row.pool_name);
  }

  /**
   * Ends a live lease. `released` when this call ended it, `already` when it had ended before
   * (released, or expired: its expiry is the tidy job's to record), `not_found` when there is
   * no such lease.
   */
  async release(trx: Knex.Transaction, id: string, reason: string | null, clientAddress: string | null): Promise<'released' | 'already' | 'not_found'> {
    const row = rowsOf<LeaseRow & { pool_name: string }>(
      await trx.raw(
        `update leases l set released_at = clock_timestamp()
           from lease_pools p
          where l.id = ? and p.id = l.pool_id and l.released_at is null and l.expires_at > clock_timestamp()
          returning l.*, p.name as pool_name`,
        [id],
      ),
    )[0];
    if (row) {
      await this.event(trx, 'released', row.pool_name, row.id, row.client_id, reason, clientAddress);
      return 'released';
    }
    return rowsOf(await trx.raw('select 1 from leases where id = ?', [id])).length > 0 ? 'already' : 'not_found';
  }

  async event(
    trx: Knex | Knex.Transaction,
    type: LeaseEventType,
    pool: string,
    leaseId: string | null,
    clientId: string | null,
    reason: string | null,
    clientAddress: string | null,
  ): Promise<void> {
    await trx.raw(
      'insert into lease_events (type, pool, lease_id, client_id, reason, client_address) values (?, ?, ?, ?, ?, ?)',
      [type, pool, leaseId, clientId, reason, clientAddress],
    );
  }

  async events(filter: { pool?: string; leaseId?: string; limit: number }): Promise<LeaseEvent[]> {
    let q = this.knex('lease_events').orderBy('id', 'desc').limit(filter.limit);
    if (filter.pool !== undefined) q = q.where({ pool: filter.pool });
    if (filter.leaseId !== undefined) q = q.where({ lease_id: filter.leaseId });
    const rows = (await q) as {
      id: number;
      occurred_at: Date;
      type: LeaseEventType;
      pool: string;
      lease_id: string | null;
      client_id: string | null;
      reason: string | null;
      client_address: string | null;
    }[];
    return rows.map((r) => ({
      id: r.id,
      occurredAt: r.occurred_at,
      type: r.type,
      pool: r.pool,
      leaseId: r.lease_id,
      clientId: r.client_id,
      reason: r.reason,
      clientAddress: r.client_address,
    }));
  }

  /**
   * The background tidy-up, never on a critical path: records one `expired` event (at the
   * lease's expiry time) per lease that lapsed unreleased, and deletes ended leases older than
   * the retention, signed-request digests past their window and day-old idempotency records.
   * Safe to run on every instance at once: each lapse is recorded exactly once.
   */
  async tidy(retentionHours: number): Promise<{ expired: number; deleted: number }> {
    const expired = rowsOf<{ n: number }>(
      await this.knex.raw(
        `with lapsed as (
           update leases set expiry_recorded = true
            where released_at is null and not expiry_recorded and expires_at <= clock_timestamp()
            returning id, pool_id, client_id, client_address, expires_at
         ), recorded as (
           insert into lease_events (occurred_at, type, pool, lease_id, client_id, client_address)
           select l.expires_at, 'expired', p.name, l.id, l.client_id, l.client_address
             from lapsed l join lease_pools p on p.id = l.pool_id
           returning 1
         )
         select count(*)::int as n from recorded`,
      ),
    )[0]!.n;
    const deleted = rowsOf<{ n: number }>(
      await this.knex.raw(
        `with gone as (
           delete from leases where coalesce(released_at, expires_at) < clock_timestamp() - make_interval(hours => ?)
             and (released_at is not null or expiry_recorded)
           returning 1
         ) select count(*)::int as n from gone`,
        [retentionHours],
      ),
    )[0]!.n;
    await this.knex.raw('delete from signed_request_digests where forget_after < clock_timestamp()');
    await this.knex.raw("delete from idempotency_keys where created_at < clock_timestamp() - interval '24 hours'");
    return { expired, deleted };
  }

  async addClientKey(clientId: string, fingerprint: string, publicKey: string): Promise<ClientKey> {
    const [row] = await this.knex('client_keys').insert({ client_id: clientId, fingerprint, public_key: publicKey }).returning('*');
    return toClientKey(row as ClientKeyRow);
  }

  async listClientKeys(clientId?: string): Promise<ClientKey[]> {
    let q = this.knex('client_keys').orderBy('id');
    if (clientId !== undefined) q = q.where({ client_id: clientId });
    return ((await q) as ClientKeyRow[]).map(toClientKey);
  }

  async deleteClientKey(fingerprint: string): Promise<boolean> {
    return (await this.knex('client_keys').where({ fingerprint }).delete().returning('id')).length > 0;
  }

  /** The armored public keys registered for a client. */
  async publicKeysOf(clientId: string): Promise<string[]> {
    return ((await this.knex('client_keys').where({ client_id: clientId }).select('public_key')) as { public_key: string }[]).map((r) => r.public_key);
  }

  async virtualKeyById(id: number) {
    return this.virtualKeyWhere({ id });
  }

  /** What acquiring by virtual key needs to know of the key. */
  async virtualKeyForLeases(keyHash: string) {
    return this.virtualKeyWhere({ key_hash: keyHash });
  }

  private async virtualKeyWhere(where: { id: number } | { key_hash: string }): Promise<
    | { id: number; status: string; notBefore: Date | null; expiresAt: Date | null; allowedCidrs: string[]; maxConcurrentLeases: number | null }
    | undefined
  > {
    const row = (await this.knex('virtual_keys')
      .where(where)
      .first('id', 'status', 'not_before', 'expires_at', 'allowed_cidrs', 'max_concurrent_leases')) as
      | { id: number; status: string; not_before: Date | null; expires_at: Date | null; allowed_cidrs: string[] | null; max_concurrent_leases: number | null }
      | undefined;
    if (!row) return undefined;
    return {
      id: row.id,
      status: row.status,
      notBefore: row.not_before,
      expiresAt: row.expires_at,
      allowedCidrs: row.allowed_cidrs ?? [],
      maxConcurrentLeases: row.max_concurrent_leases,
    };
  }

  /** Remembers a signed request's digest until `forgetAfter`; false when it was already there (a replay). */
  async rememberSignature(digest: string, forgetAfter: Date): Promise<boolean> {
    const rows = rowsOf(
      await this.knex.raw('insert into signed_request_digests (digest, forget_after) values (?, ?) on conflict do nothing returning 1', [
        digest,
        forgetAfter,
      ]),
    );
    return rows.length > 0;
  }
}

export interface ClientKey {
  id: number;
  clientId: string;
  fingerprint: string;
  createdAt: Date;
}

interface ClientKeyRow {
  id: number;
  client_id: string;
  fingerprint: string;
  created_at: Date;
}

const toClientKey = (r: ClientKeyRow): ClientKey => ({ id: r.id, clientId: r.client_id, fingerprint: r.fingerprint, createdAt: r.created_at });
