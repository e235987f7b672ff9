import type { Knex } from 'knex';
import { AppError, ConflictError, NotFoundError } from '../errors.ts';
import { generateVirtualKey, keyHint, type KeyHasher } from '../domain/virtual-key.ts';
import type { Entitlement, VirtualKey } from '../domain/types.ts';
import type { EntitlementsRepo } from '../store/entitlements-repo.ts';
import type { Product, ProductsRepo } from '../store/products-repo.ts';
import type { Invalidation } from '../store/invalidation-bus.ts';
import type { ListVirtualKeysQuery, VirtualKeyInput, VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import { retryProblem, type EntitlementCreate, type VirtualKeyCreate, type VirtualKeyPatchInput } from './schemas.ts';
import type { ImportProblem, ImportRow } from './csv-import.ts';

export interface AdminServiceDeps {
  knex: Knex;
  entitlements: EntitlementsRepo;
  virtualKeys: VirtualKeysRepo;
  hashKey: KeyHasher;
  products: ProductsRepo;
  /**
   * Called after a change is committed with what it touched: the hashes of the keys, or
   * `all` when decisions of any key may change (an entitlement or a product mapping).
   */
  invalidate: (change: Invalidation) => void;
}

export type { Invalidation };

/** A created virtual key: the only time the key itself is returned. */
export type CreatedVirtualKey = VirtualKey & { key: string };

/**
 * Admin use cases over entitlements and virtual keys. Every change that can alter a check's
 * answer evicts the keys it touched from the key cache.
 */
export class AdminService {
  constructor(private readonly deps: AdminServiceDeps) {}

  createEntitlement(input: EntitlementCreate): Promise<Entitlement> {
    return this.deps.entitlements.create({
      server: input.server,
      key: input.key,
      class: input.class ?? null,
      description: input.description ?? '',
    });
  }

  listEntitlements(): Promise<Entitlement[]> {
    return this.deps.entitlements.list();
  }

  async getEntitlement(id: number): Promise<Entitlement> {
    return (await this.deps.entitlements.get(id)) ?? notFound('entitlement', id);
  }

  async updateEntitlement(id: number, patch: Partial<EntitlementCreate>): Promise<Entitlement> {
    const updated = (await this.deps.entitlements.update(id, patch)) ?? notFound('entitlement', id);
    // Virtual keys and CRM products may both point at it.
    this.deps.invalidate({ all: true });
    return updated;
  }

  async deleteEntitlement(id: number): Promise<void> {
    const result = await this.deps.entitlements.delete(id);
    if (result === 'not_found') notFound('entitlement', id);
    if (result === 'in_use') {
      throw new ConflictError('entitlement_in_use', `entitlement ${id} still has virtual keys or products mapped to it`);
    }
  }

  async createVirtualKey(input: VirtualKeyCreate): Promise<CreatedVirtualKey> {
    await this.getEntitlement(input.entitlementId);
    const key = input.key ?? generateVirtualKey();
    const keyHash = this.deps.hashKey(key);
    let created: VirtualKey;
    try {
      [created] = (await this.deps.virtualKeys.createMany([this.toInput(input, key, keyHash)])) as [VirtualKey];
    } catch (err) {
      if (isUniqueViolation(err)) throw new ConflictError('virtual_key_exists', 'that virtual key is already mapped');
      if (isForeignKeyViolation(err)) notFound('entitlement', input.entitlementId);
      throw err;
    }
    this.deps.invalidate({ keyHashes: [keyHash] }); // it may be remembered as unknown
    return { ...created, key };
  }

  /**
   * Imports many keys at once, all or nothing: every row is checked (format, entitlement,
   * duplicates in the file and in the store) before anything is written, in one transaction.
   */
  async importVirtualKeys(rows: ImportRow[]): Promise<{ imported: number; ids: number[] }> {
    const hashes = rows.map((r) => this.deps.hashKey(r.input.key));
    const ids = await this.deps.knex.transaction(async (trx) => {
      const problems: ImportProblem[] = [];
      const wanted = [...new Set(rows.map((r) => r.input.entitlementId))];
      const existing = new Set(
        ((await trx('entitlements').whereIn('id', wanted).select('id')) as { id: number }[]).map((r) => r.id),
      );
      const taken = await this.deps.virtualKeys.existingHashes(hashes, trx);
      rows.forEach((row, i) => {
        if (!existing.has(row.input.entitlementId)) {
          problems.push({ line: row.line, message: `entitlement_id: entitlement ${row.input.entitlementId} does not exist` });
        } else if (taken.has(hashes[i]!)) {
          problems.push({ line: row.line, message: 'key: that virtual key is already mapped' });
        }
      });
      if (problems.length > 0) throw importError(problems);
      const created = await this.deps.virtualKeys.createMany(
        rows.map((r, i) => this.toInput(r.input, r.input.key, hashes[i]!)),
        trx,
      );
      return created.map((c) => c.id);
    });
    this.deps.invalidate({ keyHashes: hashes });
    return { imported: ids.length, ids };
  }

  listVirtualKeys(query: ListVirtualKeysQuery): Promise<VirtualKey[]> {
    return this.deps.virtualKeys.list(query);
  }

  async getVirtualKey(id: number): Promise<VirtualKey> {
    return (await this.deps.virtualKeys.get(id)) ?? notFound('virtual key', id);
  }

  /** Finds a key by the key itself (sent in a body, never in a URL that might be logged). */
  async findVirtualKey(key: string): Promise<VirtualKey> {
    const found = await this.deps.virtualKeys.findByHash(this.deps.hashKey(key));
    if (!found) throw new NotFoundError('virtual key');
    return found;
  }

  async updateVirtualKey(id: number, patch: VirtualKeyPatchInput): Promise<VirtualKey> {
    const current = await this.getVirtualKey(id);
    if (current.status === 'revoked' && patch.status !== undefined && patch.status !== 'revoked') {
      throw new ConflictError('virtual_key_revoked', `virtual key ${id} is revoked; revocation is final, create a new key`);
    }
    if (patch.entitlementId !== undefined) await this.getEntitlement(patch.entitlementId);
    const notBefore = patch.notBefore === undefined ? current.notBefore : patch.notBefore;
    const expiresAt = patch.expiresAt === undefined ? current.expiresAt : patch.expiresAt;
    if (notBefore && expiresAt && notBefore.getTime() >= expiresAt.getTime()) {
      throw new AppError(400, 'invalid_request', 'notBefore must be earlier than expiresAt');
    }
    const retry = retryProblem(patch.retry ?? current.retry, patch.cacheTimeout === undefined ? current.cacheTimeout : patch.cacheTimeout);
    if (retry) throw new AppError(400, 'invalid_request', `retry: ${retry}`);
    const updated = (await this.deps.virtualKeys.update(id, patch)) ?? notFound('virtual key', id);
    this.deps.invalidate({ keyHashes: [updated.keyHash] });
    return updated.virtualKey;
  }

  listProducts(): Promise<Product[]> {
    return this.deps.products.list();
  }

  async mapProduct(code: string, entitlementId: number): Promise<Product> {
    await this.getEntitlement(entitlementId);
    const product = await this.deps.products.map(code, entitlementId);
    this.deps.invalidate({ all: true });
    return product;
  }

  async unmapProduct(code: string): Promise<void> {
    if (!(await this.deps.products.unmap(code))) throw new NotFoundError(`product ${code}`);
    this.deps.invalidate({ all: true });
  }

  private toInput(input: VirtualKeyCreate, key: string, keyHash: string): VirtualKeyInput {
    return {
      entitlementId: input.entitlementId,
      keyHash,
      hint: keyHint(key),
      notBefore: input.notBefore ?? null,
      expiresAt: input.expiresAt ?? null,
      allowedCidrs: input.allowedCidrs ?? [],
      cacheTimeout: input.cacheTimeout ?? null,
      retry: input.retry ?? true,
      customerRef: input.customerRef ?? null,
      maxConcurrentLeases: input.maxConcurrentLeases ?? null,
    };
  }
}

export function importError(problems: ImportProblem[]): AppError {
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  return new AppError(400, 'import_invalid', `line ${first.line}: ${first.message}${more}`, { details: problems });
}

function notFound(what: string, id: number): never {
  throw new NotFoundError(`${what} ${id}`);
}

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: string }).code === '23505';
}

function isForeignKeyViolation(err: unknown): boolean {
  return (err as { code?: string }).code === '23503';
}
