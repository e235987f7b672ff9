import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { PoolKind, PoolOwner } from './pool-kinds.ts';
import type { SeatTarget } from './seats.ts';

export interface Pool {
  id: number;
  name: string;
  /** What the pool is for (see pool-kinds.ts): whose seats it holds, and so who takes them. */
  kind: PoolKind;
  seats: number;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  heartbeatIntervalSeconds: number;
  requireSignedRequests: boolean;
  /** Acquired without any credential: only when an admin made it so. */
  anonymous: boolean;
  /** Set for the pool a virtual key defines (its seats follow the key's maxConcurrentLeases). */
  virtualKeyId: number | null;
  /** Set for the pool of an SES application (see pool-kinds.ts). */
  sesApplication: string | null;
  /** Set for the pool of a licence's `concurrent:` capacity (its name). */
  licenceCapacity: string | null;
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
  /** What acquired it (`token:<id>`, `signed:<clientId>`, `vk:<id>`), needed again to renew or end it; null: anonymous. */
  credential: string | null;
}

export type PoolInput = Pick<Pool, 'seats' | 'defaultTtlSeconds' | 'maxTtlSeconds' | 'heartbeatIntervalSeconds' | 'requireSignedRequests' | 'anonymous'>;

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
  /** Undefined: the pool's default. */
  ttlSeconds: number | undefined;
  clientAddress: string | null;
  metadata: Record<string, unknown>;
  /** The credential the lease is bound to (see Lease.credential). */
  credential: string | null;
}

/** Where to acquire (see SeatTarget), with the name an owned pool is made with. */
export type AcquireTarget = SeatTarget & { name: string };

export type AcquireOutcome =
  | AcquireResult
  | { outcome: 'no_pool' }
  | { outcome: 'ttl_too_long'; pool: Pool }
  /** The pool's seats are for holders of another kind (see pool-kinds.ts). */
  | { outcome: 'other_kind'; pool: Pool }
  /** The clientId holds a live lease acquired with another credential. */
  | { outcome: 'client_id_in_use'; pool: Pool };

export type AcquireResult =
  | { outcome: 'acquired' | 'existing'; lease: Lease; pool: Pool }
  | { outcome: 'full'; pool: Pool; inUse: number; earliestExpiry: Date | null; now: Date };

interface PoolRow {
  id: number;
  name: string;
  kind: PoolKind;
  seats: number;
  default_ttl_seconds: number;
  max_ttl_seconds: number;
  heartbeat_interval_seconds: number;
  require_signed: boolean;
  anonymous: boolean;
  virtual_key_id: number | null;
  ses_application: string | null;
  licence_capacity: string | null;
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
  credential: string | null;
}

const toPool = (r: PoolRow): Pool => ({
  id: r.id,
  name: r.name,
  kind: r.kind,
  seats: r.seats,
  defaultTtlSeconds: r.default_ttl_seconds,
  maxTtlSeconds: r.max_ttl_seconds,
  heartbeatIntervalSeconds: r.heartbeat_interval_seconds,
  requireSignedRequests: r.require_signed,
  anonymous: r.anonymous,
  virtualKeyId: r.virtual_key_id,
  sesApplication: r.ses_application,
  licenceCapacity: r.licence_capacity,
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
  credential: r.credential,
});

const poolColumns = (p: Partial<PoolInput>) => ({
  ...(p.seats !== undefined && { seats: p.seats }),
  ...(p.defaultTtlSeconds !== undefined && { default_ttl_seconds: p.defaultTtlSeconds }),
  ...(p.maxTtlSeconds !== undefined && { max_ttl_seconds: p.maxTtlSeconds }),
  ...(p.heartbeatIntervalSeconds !== undefined && { heartbeat_interval_seconds: p.heartbeatIntervalSeconds }),
  ...(p.requireSignedRequests !== undefined && { require_signed: p.requireSignedRequests }),
  ...(p.anonymous !== undefined && { anonymous: p.anonymous }),
});

const rowsOf = <T>(result: unknown) => (result as { rows: T[] }).rows;

/** Rows read back through row_to_json carry times as strings. */
const jsonLease = (r: LeaseRow): LeaseRow => ({
  ...r,
  acquired_at: new Date(r.acquired_at),
  renewed_at: new Date(r.renewed_at),
  expires_at: new Date(r.expires_at),
  released_at: r.released_at === null ? null : new Date(r.released_at),
});
const jsonPool = (r: PoolRow): PoolRow => ({ ...r, created_at: new Date(r.created_at), updated_at: new Date(r.updated_at) });

/** A pool read back through row_to_json (as the acquire and capacity functions answer). */
export const poolFromJson = (r: unknown): Pool => toPool(jsonPool(r as PoolRow));
/** A lease read back through row_to_json. */
export const leaseFromJson = (r: unknown, pool: string): Lease => toLease(jsonLease(r as LeaseRow), pool);

/**
 * Pools, leases and lease events in PostgreSQL (or PGlite). Every decision about seats is
 * taken inside one transaction that holds the pool's row lock, with the database's clock,
 * so any number of entgate processes on one database never grant more seats than a pool has.
 */
export class LeasesRepo {
  constructor(readonly knex: Knex) {}

  /** An admin's pool: named, or an SES application's (made before its first use to set its seats). */
  async createPool(name: string, owner: Extract<PoolOwner, { kind: 'named' | 'ses_application' }>, input: PoolInput): Promise<Pool> {
    const [row] = await this.knex('lease_pools')
      .insert({ name, kind: owner.kind, ses_application: owner.kind === 'ses_application' ? owner.application : null, ...poolColumns(input) })
      .returning('*');
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

  /** The pool an acquire of `target` would lock, if it exists: by name, application or virtual key. */
  async poolOf(target: AcquireTarget): Promise<Pool | undefined> {
    const where =
      target.kind === 'named'
        ? { name: target.name }
        : target.kind === 'ses_application'
          ? { ses_application: target.application }
          : { virtual_key_id: target.virtualKeyId };
    const row = (await this.knex('lease_pools').where(where).first()) as PoolRow | undefined;
    return row ? toPool(row) : undefined;
  }

  /** Names of the pools anyone who reaches /v1 may take seats of. */
  async anonymousPoolNames(): Promise<string[]> {
    return (await this.knex('lease_pools').where({ anonymous: true }).orderBy('name').pluck('name')) as string[];
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

  /**
   * Acquires a seat in one database call (`entgate_lease_acquire`, see its migration): the
   * client's live lease if it has one (renewed to the TTL), else a new lease if fewer live
   * leases than seats, else `full` (recorded as a `denied` event). Outside a transaction the
   * pool's lock is held only while the database works; inside one (an idempotency key), until
   * it commits.
   */
  async acquire(db: Knex | Knex.Transaction, target: AcquireTarget, request: AcquireRequest): Promise<AcquireOutcome> {
    const create = target.kind === 'virtual_key' ? target.defaults : target.kind === 'ses_application' ? target.create : null;
    const raw = rowsOf<{ r: { outcome: string; lease?: LeaseRow; pool?: PoolRow; inUse?: number; earliest?: string | null; now?: string } }>(
      await db.raw('select entgate_lease_acquire(?, ?, ?, ?, ?, ?::json, ?, ?, ?::uuid, ?, ?::jsonb, ?) as r', [
        target.kind,
        target.name,
        target.kind === 'virtual_key' ? target.virtualKeyId : null,
        target.kind === 'ses_application' ? target.application : null,
        target.kind === 'virtual_key' ? target.seats : null,
        create === null ? null : JSON.stringify(create),
        request.clientId,
        request.ttlSeconds ?? null,
        randomUUID(),
        request.clientAddress,
        JSON.stringify(request.metadata),
        request.credential,
      ]),
    )[0]!.r;
    if (raw.outcome === 'no_pool') return { outcome: 'no_pool' };
    const pool = toPool(jsonPool(raw.pool!));
    switch (raw.outcome) {
      case 'ttl_too_long':
      case 'client_id_in_use':
      case 'other_kind':
        return { outcome: raw.outcome, pool };
      case 'full':
        return { outcome: 'full', pool, inUse: raw.inUse!, earliestExpiry: raw.earliest ? new Date(raw.earliest) : null, now: new Date(raw.now!) };
      default:
        return { outcome: raw.outcome as 'acquired' | 'existing', lease: toLease(jsonLease(raw.lease!), pool.name), pool };
    }
  }

  /**
   * A refusal that needs no lock: the pool is full of other clients' leases at this instant.
   * Undefined when a seat may be free, or when the client holds a lease (it is given back).
   */
  async fullWithoutMe(poolId: number, seats: number, clientId: string): Promise<{ inUse: number; earliestExpiry: Date | null; now: Date } | undefined> {
    const row = rowsOf<{ others: number; mine: boolean; earliest: Date | null; now: Date }>(
      await this.knex.raw(
        `select count(*) filter (where client_id <> ?)::int as others, coalesce(bool_or(client_id = ?), false) as mine,
                min(expires_at) as earliest, clock_timestamp() as now
           from leases where pool_id = ? and released_at is null and expires_at > clock_timestamp()`,
        [clientId, clientId, poolId],
      ),
    )[0]!;
    if (row.mine || row.others < seats) return undefined;
    return { inUse: row.others, earliestExpiry: row.earliest, now: row.now };
  }

  /** A lease with its pool, whatever its state (one query). */
  async getLease(id: string, trx: Knex | Knex.Transaction = this.knex): Promise<{ lease: Lease; pool: Pool } | undefined> {
    const row = rowsOf<{ lease: LeaseRow; pool: PoolRow }>(
      await trx.raw('select row_to_json(l) as lease, row_to_json(p) as pool from leases l join lease_pools p on p.id = l.pool_id where l.id = ?', [id]),
    )[0];
    if (!row) return undefined;
    const pool = toPool(jsonPool(row.pool));
    return { lease: toLease(jsonLease(row.lease), pool.name), pool };
  }

  /** Extends a live lease to now + ttlSeconds (one statement, with its event); undefined when it is not live (any more). */
  async renew(db: Knex | Knex.Transaction, id: string, ttlSeconds: number, clientAddress: string | null): Promise<Lease | undefined> {
    const row = rowsOf<{ lease: LeaseRow & { pool_name: string } }>(
      await db.raw(
        `with t as materialized (select clock_timestamp() as now),
         r as (
           update leases l set renewed_at = t.now, expires_at = t.now + make_interval(secs => :ttl), ttl_seconds = :ttl
             from t, lease_pools p
            where l.id = :id and p.id = l.pool_id and l.released_at is null and l.expires_at > t.now
            returning l.*, p.name as pool_name
         ),
         e as (
           insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
           select r.renewed_at, 'renewed', r.pool_name, r.id, r.client_id, null, :address from r
         )
         select row_to_json(r) as lease from r`,
        { ttl: ttlSeconds, id, address: clientAddress },
      ),
    )[0];
    return row ? toLease(jsonLease(row.lease), row.lease.pool_name) : undefined;
  }

  /**
   * Ends a live lease. `released` when this call ended it, `already` when it had ended before
   * (released, or expired: its expiry is the tidy job's to record), `not_found` when there is
   * no such lease.
   */
  async release(trx: Knex | Knex.Transaction, id: string, reason: string | null, clientAddress: string | null): Promise<'released' | 'already' | 'not_found'> {
    // One statement: the update and its event commit together, whether or not `trx` is a transaction.
    const row = rowsOf<{ released: boolean; found: boolean }>(
      await trx.raw(
        `with r as (
           update leases l set released_at = clock_timestamp()
             from lease_pools p
            where l.id = :id and p.id = l.pool_id and l.released_at is null and l.expires_at > clock_timestamp()
            returning l.id, l.client_id, l.released_at, p.name as pool_name
         ), e as (
           insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
           select r.released_at, 'released', r.pool_name, r.id, r.client_id, :reason, :address from r
         )
         select exists (select 1 from r) as released, exists (select 1 from leases where id = :id) as found`,
        { id, reason, address: clientAddress },
      ),
    )[0]!;
    if (row.released) return 'released';
    return row.found ? 'already' : 'not_found';
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
   * lease's expiry time) per lease that lapsed unreleased (and a licence event for a licence
   * capacity's), and deletes ended leases older than
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
         ), capacity as (
           -- A licence capacity's claim that lapsed is a licence event too (recorded now, with when it lapsed).
           insert into licence_events (type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, client_address, detail)
           select 'expired', (select licence_id from licences order by seq desc limit 1), p.licence_capacity, l.client_id,
                  (select count(*) from leases o where o.pool_id = p.id and o.released_at is null and o.expires_at > clock_timestamp())::int,
                  p.seats, 'not_renewed', l.client_address, json_build_object('expiredAt', l.expires_at)::jsonb
             from lapsed l join lease_pools p on p.id = l.pool_id
            where p.kind = 'licence_capacity'
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

  /** What is kept for an Idempotency-Key in its scope (status 0: its first request is being answered). */
  async idempotencyRecord(db: Knex | Knex.Transaction, scope: string, key: string): Promise<IdempotencyRecord | undefined> {
    const row = (await db('idempotency_keys').where({ scope, key }).first()) as { request_hash: string; status: number; body: unknown } | undefined;
    return row && { requestHash: row.request_hash, status: row.status, body: row.body };
  }

  /**
   * Claims an Idempotency-Key for a request in `trx`: false when another request holds it (this
   * waits for that one's transaction) or held it.
   */
  async claimIdempotencyKey(trx: Knex.Transaction, scope: string, key: string, requestHash: string): Promise<boolean> {
    const claimed = rowsOf(
      await trx.raw('insert into idempotency_keys (scope, key, request_hash, status) values (?, ?, ?, 0) on conflict do nothing returning 1', [
        scope,
        key,
        requestHash,
      ]),
    );
    return claimed.length > 0;
  }

  /** Keeps the answer to a claimed key, or with none frees the key (a refusal is not kept). */
  async settleIdempotencyKey(trx: Knex.Transaction, scope: string, key: string, answer: { status: number; body?: unknown } | undefined): Promise<void> {
    const where = { scope, key };
    if (answer) await trx('idempotency_keys').where(where).update({ status: answer.status, body: answer.body === undefined ? null : JSON.stringify(answer.body) });
    else await trx('idempotency_keys').where(where).delete();
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

export interface IdempotencyRecord {
  requestHash: string;
  status: number;
  body: unknown;
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
