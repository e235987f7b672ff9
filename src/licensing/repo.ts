import type { Knex } from 'knex';
import { randomUUID } from 'node:crypto';
import type { CapacityKind, Licence } from '../domain/licence.ts';
import { leaseFromJson, poolFromJson, type Lease, type Pool } from '../leases/repo.ts';

/** This database's identity (made by the licences migration). */
export interface Installation {
  id: string;
  createdAt: Date;
}

/** A licence as installed. */
export interface InstalledLicence {
  /** Install order: the current licence is the one with the highest. */
  seq: number;
  token: string;
  licence: Licence;
  installedAt: Date;
  installedBy: string | null;
}

/** A capacity of the current licence, with its use now. */
export interface CapacityState {
  name: string;
  kind: CapacityKind;
  /** null: no limit (a licensed feature without a `feature:` capacity). */
  limit: number | null;
  inUse: number;
}

/** An `assigned:` or `feature:` claim, or a `concurrent:` one (a lease), as held. */
export interface Claim {
  capacity: string;
  entityId: string;
  claimId: string;
  claimedAt: Date;
  /** `concurrent:` claims only (their lease's). */
  expiresAt: Date | null;
  ttlSeconds: number | null;
  clientAddress: string | null;
  metadata: Record<string, unknown>;
}

export type LicenceEventType = 'licence_installed' | 'licence_refused' | 'claimed' | 'released' | 'refused' | 'expired';

export interface LicenceEvent {
  id: number;
  occurredAt: Date;
  type: LicenceEventType;
  licenceId: string | null;
  capacity: string | null;
  entityId: string | null;
  inUse: number | null;
  limit: number | null;
  reason: string | null;
  actor: string | null;
  clientAddress: string | null;
  detail: Record<string, unknown> | null;
}

export type NewLicenceEvent = Partial<Omit<LicenceEvent, 'id' | 'occurredAt' | 'type'>> & { type: LicenceEventType };

/** What the claim function decided (see migrations/20261212000000_licences.ts). */
export type ClaimResult =
  | { outcome: 'no_licence' | 'unknown_capacity' }
  | { outcome: 'expired' | 'not_yet_valid'; limit: number | null; expiresAt: Date; notBefore: Date }
  | { outcome: 'full'; inUse: number; limit: number; earliestExpiry: Date | null; now: Date | null }
  | { outcome: 'acquired' | 'existing'; claim: Claim; inUse: number | null; limit: number | null; pool: Pool | null }
  | { outcome: 'ttl_too_long'; maxTtlSeconds: number };

export interface ClaimRequest {
  capacity: string;
  entityId: string;
  ttlSeconds: number | undefined;
  clientAddress: string | null;
  metadata: Record<string, unknown>;
  actor: string | null;
  /** Made on the first claim of a `concurrent:` capacity. */
  pool: { defaultTtlSeconds: number; maxTtlSeconds: number; heartbeatIntervalSeconds: number };
}

/** Every claim is bound to this credential: any caller with the `capacities` scope may renew or release it (the entity is the id). */
export const CLAIM_CREDENTIAL = 'capacities';

type Db = Knex | Knex.Transaction;
const rowsOf = <T>(result: unknown) => (result as { rows: T[] }).rows;
const dateOrNull = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string));

interface LicenceRow {
  seq: string | number;
  licence_id: string;
  tenant: string;
  token: string;
  claims: { features: string[]; capacities: Record<string, number>; installation?: string };
  issued_at: Date;
  not_before: Date;
  expires_at: Date;
  installation_id: string | null;
  installed_at: Date;
  installed_by: string | null;
}

const toInstalled = (r: LicenceRow): InstalledLicence => ({
  seq: Number(r.seq),
  token: r.token,
  licence: {
    id: r.licence_id,
    tenant: r.tenant,
    features: r.claims.features,
    capacities: r.claims.capacities,
    issuedAt: new Date(r.issued_at),
    notBefore: new Date(r.not_before),
    expiresAt: new Date(r.expires_at),
    installation: r.installation_id,
  },
  installedAt: new Date(r.installed_at),
  installedBy: r.installed_by,
});

interface ClaimRow {
  id: string;
  capacity: string;
  entity_id: string;
  claimed_at: string | Date;
  client_address: string | null;
  metadata: Record<string, unknown>;
}

const claimOf = (r: ClaimRow): Claim => ({
  capacity: r.capacity,
  entityId: r.entity_id,
  claimId: r.id,
  claimedAt: new Date(r.claimed_at),
  expiresAt: null,
  ttlSeconds: null,
  clientAddress: r.client_address,
  metadata: r.metadata,
});

/** A `concurrent:` claim: the lease of the capacity's pool held by the entity. */
export const leaseClaim = (capacity: string, lease: Lease): Claim => ({
  capacity,
  entityId: lease.clientId,
  claimId: lease.id,
  claimedAt: lease.acquiredAt,
  expiresAt: lease.expiresAt,
  ttlSeconds: lease.ttlSeconds,
  clientAddress: lease.clientAddress,
  metadata: lease.metadata,
});

/**
 * Licences, capacities, claims and licence events in PostgreSQL (or PGlite). Claims and
 * releases are single calls of the capacity functions; an install runs in one transaction that
 * holds the installation row and every capacity row (LicenceService.install).
 */
export class LicenceRepo {
  constructor(readonly knex: Knex) {}

  async installation(db: Db = this.knex): Promise<Installation> {
    const row = (await db('installation').first()) as { id: string; created_at: Date };
    return { id: row.id, createdAt: new Date(row.created_at) };
  }

  /** Serialises installs: held until the transaction ends. */
  async lockInstallation(trx: Knex.Transaction): Promise<void> {
    await trx.raw('select 1 from installation for update');
  }

  async current(db: Db = this.knex): Promise<InstalledLicence | undefined> {
    const row = (await db('licences').orderBy('seq', 'desc').first()) as LicenceRow | undefined;
    return row && toInstalled(row);
  }

  /** Every licence installed, newest first. */
  async history(limit = 1000): Promise<InstalledLicence[]> {
    return ((await this.knex('licences').orderBy('seq', 'desc').limit(limit)) as LicenceRow[]).map(toInstalled);
  }

  /** Locks every capacity row (an install holds them while it decides) and answers the use of each capacity held by anyone. */
  async lockCapacitiesAndCountUse(trx: Knex.Transaction): Promise<Map<string, number>> {
    await trx.raw('select name from licence_capacities for update');
    return this.use(trx);
  }

  /** How many hold each capacity now (capacities nobody holds are left out). */
  async use(db: Db = this.knex): Promise<Map<string, number>> {
    const rows = rowsOf<{ capacity: string; n: number }>(
      await db.raw(
        `select capacity, count(*)::int as n from capacity_claims where released_at is null group by capacity
         union all
         select p.licence_capacity, count(l.id)::int from lease_pools p
           join leases l on l.pool_id = p.id and l.released_at is null and l.expires_at > clock_timestamp()
          where p.kind = 'licence_capacity' group by p.licence_capacity`,
      ),
    );
    return new Map(rows.map((r) => [r.capacity, r.n]));
  }

  /** Records a licence and makes its capacities the ones claims are decided against (in the install's transaction). */
  async install(trx: Knex.Transaction, token: string, l: Licence, limits: Map<string, { kind: CapacityKind; limit: number | null }>, actor: string | null): Promise<number> {
    const [row] = (await trx('licences')
      .insert({
        licence_id: l.id,
        tenant: l.tenant,
        token,
        claims: JSON.stringify({ features: l.features, capacities: l.capacities, ...(l.installation !== null && { installation: l.installation }) }),
        issued_at: l.issuedAt,
        not_before: l.notBefore,
        expires_at: l.expiresAt,
        installation_id: l.installation,
        installed_by: actor,
      })
      .returning('seq')) as { seq: string | number }[];
    const seq = Number(row!.seq);
    // Rows are updated in place, not deleted and made again: a claim waiting on a row's lock
    // then decides against the new limit rather than finding no row.
    const names = [...limits.keys()];
    await trx('licence_capacities').whereNotIn('name', names.length > 0 ? names : ['']).delete();
    for (const [name, { kind, limit }] of limits) {
      await trx.raw(
        `insert into licence_capacities (name, kind, capacity_limit, licence_seq, not_before, expires_at) values (?, ?, ?, ?, ?, ?)
         on conflict (name) do update set kind = excluded.kind, capacity_limit = excluded.capacity_limit, licence_seq = excluded.licence_seq,
                                          not_before = excluded.not_before, expires_at = excluded.expires_at`,
        [name, kind, limit, seq, l.notBefore, l.expiresAt],
      );
    }
    // A concurrent capacity's pool has the licence's seats (0 once the licence drops it).
    await trx.raw(
      `update lease_pools p set seats = coalesce(c.capacity_limit, 0), updated_at = now()
         from lease_pools q left join licence_capacities c on c.name = q.licence_capacity
        where p.id = q.id and p.kind = 'licence_capacity' and p.seats is distinct from coalesce(c.capacity_limit, 0)`,
    );
    return seq;
  }

  /** The current licence's capacities with their use. */
  async capacities(db: Db = this.knex): Promise<CapacityState[]> {
    const rows = (await db('licence_capacities').orderBy('name')) as { name: string; kind: CapacityKind; capacity_limit: number | null }[];
    const use = await this.use(db);
    return rows.map((r) => ({ name: r.name, kind: r.kind, limit: r.capacity_limit, inUse: use.get(r.name) ?? 0 }));
  }

  async claim(request: ClaimRequest): Promise<ClaimResult> {
    const raw = rowsOf<{ r: Record<string, unknown> & { outcome: string } }>(
      await this.knex.raw('select entgate_capacity_claim(?, ?, ?, ?::uuid, ?, ?::jsonb, ?, ?, ?::json) as r', [
        request.capacity,
        request.entityId,
        request.ttlSeconds ?? null,
        randomUUID(),
        request.clientAddress,
        JSON.stringify(request.metadata),
        CLAIM_CREDENTIAL,
        request.actor,
        JSON.stringify(request.pool),
      ]),
    )[0]!.r;
    switch (raw.outcome) {
      case 'no_licence':
      case 'unknown_capacity':
        return { outcome: raw.outcome };
      case 'expired':
      case 'not_yet_valid':
        return { outcome: raw.outcome, limit: raw.limit as number | null, expiresAt: new Date(raw.expiresAt as string), notBefore: new Date(raw.notBefore as string) };
      case 'ttl_too_long':
        return { outcome: 'ttl_too_long', maxTtlSeconds: poolFromJson(raw.pool).maxTtlSeconds };
      case 'full': {
        const pool = raw.pool === undefined ? null : poolFromJson(raw.pool);
        return {
          outcome: 'full',
          inUse: raw.inUse as number,
          limit: pool ? pool.seats : (raw.limit as number),
          earliestExpiry: dateOrNull(raw.earliest),
          now: dateOrNull(raw.now),
        };
      }
      case 'acquired':
      case 'existing': {
        if (raw.lease !== undefined) {
          const pool = poolFromJson(raw.pool);
          return { outcome: raw.outcome, claim: leaseClaim(request.capacity, leaseFromJson(raw.lease, pool.name)), inUse: (raw.inUse as number | undefined) ?? null, limit: pool.seats, pool };
        }
        return { outcome: raw.outcome, claim: claimOf(raw.claim as ClaimRow), inUse: raw.inUse as number, limit: raw.limit as number | null, pool: null };
      }
      default:
        // other_kind and client_id_in_use cannot happen: the pool is the capacity's own and every claim has one credential.
        throw new Error(`the capacity claim function answered ${raw.outcome}`);
    }
  }

  async release(capacity: string, entityId: string, reason: string | null, clientAddress: string | null, actor: string | null): Promise<{ outcome: 'released'; inUse: number } | { outcome: 'not_held' }> {
    const raw = rowsOf<{ r: { outcome: 'released' | 'not_held'; inUse?: number } }>(
      await this.knex.raw('select entgate_capacity_release(?, ?, ?, ?, ?) as r', [capacity, entityId, reason, clientAddress, actor]),
    )[0]!.r;
    return raw.outcome === 'released' ? { outcome: 'released', inUse: raw.inUse! } : { outcome: 'not_held' };
  }

  /** The claim an entity holds on a capacity now, if any. */
  async held(capacity: string, entityId: string): Promise<Claim | undefined> {
    return (await this.claims(capacity, { entityId, limit: 1 }))[0];
  }

  /** Claims held now on a capacity, oldest first (`after`: a claim id, for the next page). */
  async claims(capacity: string, filter: { entityId?: string; limit: number; afterClaimedAt?: Date }): Promise<Claim[]> {
    if (capacity.startsWith('concurrent:')) {
      const rows = rowsOf<{ lease: unknown }>(
        await this.knex.raw(
          `select row_to_json(l) as lease from leases l join lease_pools p on p.id = l.pool_id
            where p.licence_capacity = ? and l.released_at is null and l.expires_at > clock_timestamp()
              ${filter.entityId !== undefined ? 'and l.client_id = ?' : ''}
            order by l.acquired_at, l.id limit ?`,
          [capacity, ...(filter.entityId !== undefined ? [filter.entityId] : []), filter.limit],
        ),
      );
      return rows.map((r) => leaseClaim(capacity, leaseFromJson(r.lease, capacity)));
    }
    let q = this.knex('capacity_claims').where({ capacity }).whereNull('released_at').orderBy([{ column: 'claimed_at' }, { column: 'id' }]).limit(filter.limit);
    if (filter.entityId !== undefined) q = q.where({ entity_id: filter.entityId });
    return ((await q) as ClaimRow[]).map(claimOf);
  }

  /** The lease id of the entity's live `concurrent:` claim. */
  async liveLeaseId(capacity: string, entityId: string): Promise<string | undefined> {
    return (await this.held(capacity, entityId))?.claimId;
  }

  async event(e: NewLicenceEvent, db: Db = this.knex): Promise<void> {
    await db('licence_events').insert({
      type: e.type,
      licence_id: e.licenceId ?? null,
      capacity: e.capacity ?? null,
      entity_id: e.entityId ?? null,
      in_use: e.inUse ?? null,
      capacity_limit: e.limit ?? null,
      reason: e.reason ?? null,
      actor: e.actor ?? null,
      client_address: e.clientAddress ?? null,
      detail: e.detail === undefined || e.detail === null ? null : JSON.stringify(e.detail),
    });
  }

  /** Licence events, newest first. */
  async events(filter: { capacity?: string; entityId?: string; type?: LicenceEventType; before?: number; limit: number }): Promise<LicenceEvent[]> {
    let q = this.knex('licence_events').orderBy('id', 'desc').limit(filter.limit);
    if (filter.capacity !== undefined) q = q.where({ capacity: filter.capacity });
    if (filter.entityId !== undefined) q = q.where({ entity_id: filter.entityId });
    if (filter.type !== undefined) q = q.where({ type: filter.type });
    if (filter.before !== undefined) q = q.where('id', '<', filter.before);
    const rows = (await q) as {
      id: string | number;
      occurred_at: Date;
      type: LicenceEventType;
      licence_id: string | null;
      capacity: string | null;
      entity_id: string | null;
      in_use: number | null;
      capacity_limit: number | null;
      reason: string | null;
      actor: string | null;
      client_address: string | null;
      detail: Record<string, unknown> | null;
    }[];
    return rows.map((r) => ({
      id: Number(r.id),
      occurredAt: new Date(r.occurred_at),
      type: r.type,
      licenceId: r.licence_id,
      capacity: r.capacity,
      entityId: r.entity_id,
      inUse: r.in_use,
      limit: r.capacity_limit,
      reason: r.reason,
      actor: r.actor,
      clientAddress: r.client_address,
      detail: r.detail,
    }));
  }

  /** Forgets claims released longer ago than the retention (their events stay). */
  async tidy(retentionHours: number): Promise<number> {
    const gone = rowsOf<{ n: number }>(
      await this.knex.raw(
        `with gone as (delete from capacity_claims where released_at < clock_timestamp() - make_interval(hours => ?) returning 1)
         select count(*)::int as n from gone`,
        [retentionHours],
      ),
    );
    return gone[0]!.n;
  }
}
