import type { Knex } from 'knex';

export interface Product {
  code: string;
  entitlementId: number;
  createdAt: Date;
  updatedAt: Date;
}

/** A product code with the entitlement it grants, as the crm resolver needs it. */
export interface ProductEntitlement {
  code: string;
  entitlementId: number;
  server: string;
  class: string | null;
  key: string;
}

interface ProductRow {
  code: string;
  entitlement_id: number;
  created_at: Date;
  updated_at: Date;
}

const toProduct = (r: ProductRow): Product => ({
  code: r.code,
  entitlementId: r.entitlement_id,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class ProductsRepo {
  constructor(private readonly knex: Knex) {}

  async list(): Promise<Product[]> {
    return ((await this.knex('products').select('*').orderBy('code')) as ProductRow[]).map(toProduct);
  }

  /** Maps (or re-maps) a product code to an entitlement. */
  async map(code: string, entitlementId: number): Promise<Product> {
    const [row] = await this.knex('products')
      .insert({ code, entitlement_id: entitlementId })
      .onConflict('code')
      .merge({ entitlement_id: entitlementId, updated_at: this.knex.fn.now() })
      .returning('*');
    return toProduct(row as ProductRow);
  }

  async unmap(code: string): Promise<boolean> {
    return (await this.knex('products').where({ code }).delete().returning('code')).length > 0;
  }

  async catalog(): Promise<ProductEntitlement[]> {
    const rows = await this.knex('products as p')
      .join('entitlements as e', 'e.id', 'p.entitlement_id')
      .select('p.code', 'p.entitlement_id', 'e.server_pattern', 'e.class', 'e.real_key');
    return (rows as { code: string; entitlement_id: number; server_pattern: string; class: string | null; real_key: string }[]).map(
      (r) => ({ code: r.code, entitlementId: r.entitlement_id, server: r.server_pattern, class: r.class, key: r.real_key }),
    );
  }
}
