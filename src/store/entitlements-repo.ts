import type { Knex } from 'knex';
import type { Entitlement } from '../domain/types.ts';

interface EntitlementRow {
  id: number;
  server_pattern: string;
  class: string | null;
  real_key: string;
  description: string;
  created_at: Date;
  updated_at: Date;
}

export interface EntitlementInput {
  server: string;
  class: string | null;
  key: string;
  description: string;
}

export function toEntitlement(row: EntitlementRow): Entitlement {
  return {
    id: row.id,
    server: row.server_pattern,
    class: row.class,
    key: row.real_key,
    description: row.description,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function toRow(input: Partial<EntitlementInput>): Partial<EntitlementRow> {
  const row: Partial<EntitlementRow> = {};
  if (input.server !== undefined) row.server_pattern = input.server;
  if (input.class !== undefined) row.class = input.class;
  if (input.key !== undefined) row.real_key = input.key;
  if (input.description !== undefined) row.description = input.description;
  return row;
}

export class EntitlementsRepo {
  constructor(private readonly knex: Knex) {}

  async create(input: EntitlementInput): Promise<Entitlement> {
    const [row] = await this.knex<EntitlementRow>('entitlements').insert(toRow(input)).returning('*');
    return toEntitlement(row as EntitlementRow);
  }

  async list(): Promise<Entitlement[]> {
    const rows = await this.knex<EntitlementRow>('entitlements').select('*').orderBy('id');
    return rows.map((r) => toEntitlement(r as EntitlementRow));
  }

  async get(id: number, trx: Knex = this.knex): Promise<Entitlement | undefined> {
    const row = await trx<EntitlementRow>('entitlements').where({ id }).first();
    return row ? toEntitlement(row as EntitlementRow) : undefined;
  }

  async update(id: number, patch: Partial<EntitlementInput>): Promise<Entitlement | undefined> {
    const [row] = await this.knex<EntitlementRow>('entitlements')
      .where({ id })
      .update({ ...toRow(patch), updated_at: this.knex.fn.now() as unknown as Date })
      .returning('*');
    return row ? toEntitlement(row as EntitlementRow) : undefined;
  }

  /** Deletes an entitlement no virtual key points at; 'in_use' when one does. */
  async delete(id: number): Promise<'deleted' | 'not_found' | 'in_use'> {
    return this.knex.transaction(async (trx) => {
      const inUse =
        (await trx('virtual_keys').where({ entitlement_id: id }).first('id')) ??
        (await trx('products').where({ entitlement_id: id }).first('code'));
      if (inUse) return 'in_use';
      // RETURNING rather than the affected-row count, which the PGlite dialect does not report.
      const deleted = await trx('entitlements').where({ id }).delete().returning('id');
      return deleted.length > 0 ? 'deleted' : 'not_found';
    });
  }
}
