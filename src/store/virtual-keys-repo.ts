import type { Knex } from 'knex';
import type { Database } from './db.ts';
import type { KeyMapping, VirtualKey, VirtualKeyStatus } from '../domain/types.ts';

interface VirtualKeyRow {
  id: number;
  entitlement_id: number;
  key_hash: string;
  key_hint: string;
  status: VirtualKeyStatus;
  not_before: Date | null;
  expires_at: Date | null;
  allowed_cidrs: string[];
  cache_timeout_seconds: number | null;
  cache_retry: boolean;
  customer_ref: string | null;
  max_concurrent_leases: number | null;
  created_at: Date;
  updated_at: Date;
  last_used_at: Date | null;
}

/** A new virtual key as stored: the key itself is already reduced to its hash and hint. */
export interface VirtualKeyInput {
  entitlementId: number;
  keyHash: string;
  hint: string;
  status?: VirtualKeyStatus;
  notBefore: Date | null;
  expiresAt: Date | null;
  allowedCidrs: string[];
  cacheTimeout: number | null;
  retry: boolean;
  customerRef: string | null;
  maxConcurrentLeases?: number | null;
}

export type VirtualKeyPatch = Partial<
  Pick<VirtualKey, 'status' | 'notBefore' | 'expiresAt' | 'allowedCidrs' | 'cacheTimeout' | 'retry' | 'customerRef' | 'entitlementId' | 'maxConcurrentLeases'>
>;

const VK_COLUMNS = [
  'id',
  'entitlement_id',
  'key_hint',
  'status',
  'not_before',
  'expires_at',
  'allowed_cidrs',
  'cache_timeout_seconds',
  'cache_retry',
  'customer_ref',
  'max_concurrent_leases',
  'created_at',
  'updated_at',
  'last_used_at',
] as const;

function toVirtualKey(row: Omit<VirtualKeyRow, 'key_hash'>): VirtualKey {
  return {
    id: row.id,
    entitlementId: row.entitlement_id,
    hint: row.key_hint,
    status: row.status,
    notBefore: row.not_before,
    expiresAt: row.expires_at,
    allowedCidrs: row.allowed_cidrs ?? [],
    cacheTimeout: row.cache_timeout_seconds,
    retry: row.cache_retry,
    customerRef: row.customer_ref,
    maxConcurrentLeases: row.max_concurrent_leases,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastUsedAt: row.last_used_at,
  };
}

function patchToRow(patch: VirtualKeyPatch): Partial<VirtualKeyRow> {
  const row: Partial<VirtualKeyRow> = {};
  if (patch.entitlementId !== undefined) row.entitlement_id = patch.entitlementId;
  if (patch.status !== undefined) row.status = patch.status;
  if (patch.notBefore !== undefined) row.not_before = patch.notBefore;
  if (patch.expiresAt !== undefined) row.expires_at = patch.expiresAt;
  if (patch.allowedCidrs !== undefined) row.allowed_cidrs = patch.allowedCidrs;
  if (patch.cacheTimeout !== undefined) row.cache_timeout_seconds = patch.cacheTimeout;
  if (patch.retry !== undefined) row.cache_retry = patch.retry;
  if (patch.customerRef !== undefined) row.customer_ref = patch.customerRef;
  if (patch.maxConcurrentLeases !== undefined) row.max_concurrent_leases = patch.maxConcurrentLeases;
  return row;
}

export interface ListVirtualKeysQuery {
  entitlementId?: number;
  status?: VirtualKeyStatus;
  /** Return keys with an id greater than this (cursor pagination, ascending ids). */
  afterId?: number;
  limit: number;
}

interface MappingRow {
  id: number;
  status: VirtualKeyStatus;
  not_before_ms: number | null;
  expires_at_ms: number | null;
  allowed_cidrs: string[];
  cache_timeout_seconds: number | null;
  cache_retry: boolean;
  server_pattern: string;
  class: string | null;
  real_key: string;
}

// Only what the check uses, times as float8 epoch milliseconds (cheap to decode).
const FIND_MAPPING_SQL = `select v.id, v.status,
    (extract(epoch from v.not_before) * 1000)::float8 as not_before_ms,
    (extract(epoch from v.expires_at) * 1000)::float8 as expires_at_ms,
    v.allowed_cidrs, v.cache_timeout_seconds, v.cache_retry, e.server_pattern, e.class, e.real_key
  from virtual_keys v join entitlements e on e.id = v.entitlement_id
  where v.key_hash = $1`;

export class VirtualKeysRepo {
  private readonly knex: Knex;

  constructor(private readonly db: Database) {
    this.knex = db.knex;
  }

  async createMany(inputs: VirtualKeyInput[], trx: Knex = this.knex): Promise<VirtualKey[]> {
    if (inputs.length === 0) return [];
    const rows = inputs.map((i) => ({
      entitlement_id: i.entitlementId,
      key_hash: i.keyHash,
      key_hint: i.hint,
      status: i.status ?? 'active',
      not_before: i.notBefore,
      expires_at: i.expiresAt,
      allowed_cidrs: i.allowedCidrs,
      cache_timeout_seconds: i.cacheTimeout,
      cache_retry: i.retry,
      customer_ref: i.customerRef,
      max_concurrent_leases: i.maxConcurrentLeases ?? null,
    }));
    const out: VirtualKey[] = [];
    for (let i = 0; i < rows.length; i += 1000) {
      const inserted = await trx('virtual_keys')
        .insert(rows.slice(i, i + 1000))
        .returning(VK_COLUMNS as unknown as string[]);
      out.push(...(inserted as VirtualKeyRow[]).map(toVirtualKey));
    }
    return out;
  }

  async get(id: number): Promise<VirtualKey | undefined> {
    const row = await this.knex('virtual_keys').where({ id }).first(VK_COLUMNS);
    return row ? toVirtualKey(row as VirtualKeyRow) : undefined;
  }

  async findByHash(keyHash: string): Promise<VirtualKey | undefined> {
    const row = await this.knex('virtual_keys').where({ key_hash: keyHash }).first(VK_COLUMNS);
    return row ? toVirtualKey(row as VirtualKeyRow) : undefined;
  }

  /** Which of these hashes are already stored, with their ids (for imports that must not collide). */
  async existingIds(hashes: string[], trx: Knex = this.knex): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (let i = 0; i < hashes.length; i += 1000) {
      const rows = await trx('virtual_keys').whereIn('key_hash', hashes.slice(i, i + 1000)).select('key_hash', 'id');
      for (const r of rows as { key_hash: string; id: number }[]) found.set(r.key_hash, r.id);
    }
    return found;
  }

  /**
   * The check's lookup: one indexed query for the key and its entitlement, as a constant
   * prepared statement (this runs once per cache miss, at the check's rate).
   */
  async findMappingByHash(keyHash: string): Promise<KeyMapping | undefined> {
    const [r] = await this.db.prepared<MappingRow>('entgate_find_mapping', FIND_MAPPING_SQL, [keyHash]);
    if (!r) return undefined;
    return {
      virtualKeyId: r.id,
      status: r.status,
      notBefore: r.not_before_ms,
      expiresAt: r.expires_at_ms,
      allowedCidrs: r.allowed_cidrs ?? [],
      cacheTimeout: r.cache_timeout_seconds,
      retry: r.cache_retry,
      entitlement: { server: r.server_pattern, class: r.class, key: r.real_key },
    };
  }

  async list(query: ListVirtualKeysQuery): Promise<VirtualKey[]> {
    const q = this.knex('virtual_keys').select(VK_COLUMNS).orderBy('id').limit(query.limit);
    if (query.entitlementId !== undefined) q.where('entitlement_id', query.entitlementId);
    if (query.status !== undefined) q.where('status', query.status);
    if (query.afterId !== undefined) q.where('id', '>', query.afterId);
    return ((await q) as VirtualKeyRow[]).map(toVirtualKey);
  }

  /** Returns the changed key and its hash (which never changes), so callers can evict it. */
  async update(id: number, patch: VirtualKeyPatch): Promise<{ keyHash: string; virtualKey: VirtualKey } | undefined> {
    const [row] = await this.knex('virtual_keys')
      .where({ id })
      .update({ ...patchToRow(patch), updated_at: this.knex.fn.now() })
      .returning([...VK_COLUMNS, 'key_hash']);
    if (!row) return undefined;
    const r = row as VirtualKeyRow;
    return { keyHash: r.key_hash, virtualKey: toVirtualKey(r) };
  }

  async hashOf(id: number): Promise<string | undefined> {
    const row = await this.knex('virtual_keys').where({ id }).first('key_hash');
    return (row as { key_hash: string } | undefined)?.key_hash;
  }

  async hashesOfEntitlement(entitlementId: number): Promise<string[]> {
    const rows = await this.knex('virtual_keys').where({ entitlement_id: entitlementId }).select('key_hash');
    return (rows as { key_hash: string }[]).map((r) => r.key_hash);
  }

  /**
   * Records use without a write per check: one statement per batch of granted checks, and a
   * row is rewritten at most once a minute (last_used_at is accurate to a minute), so a busy
   * key does not churn its row at the check's rate.
   */
  async touchLastUsed(uses: Map<number, Date>): Promise<void> {
    if (uses.size === 0) return;
    const ids = [...uses.keys()];
    const times = ids.map((id) => uses.get(id)!.toISOString());
    await this.knex.raw(
      `update virtual_keys v set last_used_at = u.t
         from unnest(?::int[], ?::timestamptz[]) as u(id, t)
        where v.id = u.id and (v.last_used_at is null or v.last_used_at < u.t - interval '1 minute')`,
      [ids, times],
    );
  }
}
