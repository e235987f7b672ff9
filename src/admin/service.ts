import type { Knex } from 'knex';
import { AppError, ConflictError, NotFoundError } from '../lib/errors.ts';
import { generateVirtualKey, keyHint, type KeyHasher } from '../domain/virtual-key.ts';
import type { Entitlement, VirtualKey } from '../domain/types.ts';
import type { EntitlementsRepo } from '../store/entitlements-repo.ts';
import type { Product, ProductsRepo } from '../store/products-repo.ts';
import type { Invalidation } from '../store/invalidation-bus.ts';
import type { ListVirtualKeysQuery, VirtualKeyInput, VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import { retryProblem, virtualKeyWarnings, type EntitlementCreate, type VirtualKeyCreate, type VirtualKeyPatchInput } from './schemas.ts';
import type { ImportItem, ImportProblem, ImportRow } from './csv-import.ts';

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
   * Imports many keys at once, all or nothing, in one transaction: rows are written in small
   * batches as they arrive (so that neither the file nor its rows are ever all in memory, and
   * the embedded database is never busy for long at a time), each batch checked first against
   * the store (entitlement, key already mapped or given earlier in the file: the rows written
   * before are visible in the transaction). Any problem anywhere, and the transaction is
   * rolled back: nothing is written, and every problem is reported with its line.
   */
  async importVirtualKeys(items: AsyncIterable<ImportItem> | Iterable<ImportItem>, onProgress: (p: ImportProgress) => void = () => {}): Promise<ImportResult> {
    const imported = new ImportedIds();
    const problems: ImportProblem[] = [];
    const warnings: ImportProblem[] = [];
    const entitlements = new Map<number, boolean>();
    const touched: string[] = [];
    let validated = 0;
    await this.deps.knex.transaction(async (trx) => {
      const write = async (rows: ImportRow[]) => {
        if (rows.length === 0) return;
        const hashes = rows.map((r) => this.deps.hashKey(r.input.key));
        const unknown = [...new Set(rows.map((r) => r.input.entitlementId))].filter((id) => !entitlements.has(id));
        if (unknown.length > 0) {
          // Key share: an entitlement cannot be deleted under the import.
          const found = (await trx('entitlements').whereIn('id', unknown).forKeyShare().select('id')) as { id: number }[];
          for (const id of unknown) entitlements.set(id, false);
          for (const { id } of found) entitlements.set(id, true);
        }
        const taken = await this.deps.virtualKeys.existingIds(hashes, trx);
        const inBatch = new Map<string, number>();
        const fresh: { row: ImportRow; input: VirtualKeyInput }[] = [];
        rows.forEach((row, i) => {
          const hash = hashes[i]!;
          const id = taken.get(hash);
          const earlier = id === undefined ? inBatch.get(hash) : imported.lineOf(id);
          if (!entitlements.get(row.input.entitlementId)) {
            problems.push({ line: row.line, message: `entitlement_id: entitlement ${row.input.entitlementId} does not exist` });
          } else if (earlier !== undefined) {
            problems.push({ line: row.line, message: `key: the same key is on line ${earlier}` });
          } else if (id !== undefined) {
            problems.push({ line: row.line, message: 'key: that virtual key is already mapped' });
          } else {
            inBatch.set(hash, row.line);
            fresh.push({ row, input: this.toInput(row.input, row.input.key, hash) });
            const cacheTimeout = row.input.cacheTimeout ?? null;
            for (const message of virtualKeyWarnings({ allowedCidrs: row.input.allowedCidrs ?? [], cacheTimeout })) warnings.push({ line: row.line, message });
          }
        });
        let created: VirtualKey[];
        try {
          created = await this.deps.virtualKeys.createMany(fresh.map((f) => f.input), trx);
        } catch (err) {
          // Only another request writing the same key meanwhile gets here: nothing is written.
          if (isUniqueViolation(err)) throw new ConflictError('virtual_key_exists', 'another request mapped a key of this import meanwhile; nothing was imported');
          throw err;
        }
        const before = imported.count;
        created.forEach((c, i) => imported.add(c.id, fresh[i]!.row.line));
        if (touched.length <= INVALIDATE_LISTED) touched.push(...fresh.map((f) => f.input.keyHash));
        if (crossed(before, imported.count)) onProgress({ written: imported.count });
      };

      let batch: ImportRow[] = [];
      for await (const item of items) {
        validated++;
        if ('message' in item) problems.push(item);
        else batch.push(item);
        if (batch.length >= IMPORT_BATCH) {
          await write(batch);
          batch = [];
        }
        if (validated % PROGRESS_EVERY === 0) onProgress({ validated });
      }
      await write(batch);
      onProgress({ validated });
      onProgress({ written: imported.count });
      if (problems.length > 0) throw importError(problems.sort((a, b) => a.line - b.line));
    });
    // New keys may be remembered as unknown; past a thousand, every cache starts afresh.
    this.deps.invalidate(touched.length > INVALIDATE_LISTED ? { all: true } : { keyHashes: touched });
    return {
      imported: imported.count,
      ...(imported.count <= IMPORT_IDS_LISTED && { ids: imported.list() }),
      idRanges: imported.ranges(),
      ...(warnings.length > 0 && { warnings }),
    };
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

/** Rows written per INSERT: on PGlite a statement holds the process's one thread while it runs. */
const IMPORT_BATCH = 500;
/** Progress is told every this many rows validated, and again written. */
export const PROGRESS_EVERY = 10_000;
/** An import answers `ids` up to this many keys; `idRanges` always. */
export const IMPORT_IDS_LISTED = 10_000;
const INVALIDATE_LISTED = 1_000;

const crossed = (before: number, after: number) => Math.floor(before / PROGRESS_EVERY) < Math.floor(after / PROGRESS_EVERY);

export type ImportProgress = { validated: number } | { written: number };

export interface ImportResult {
  imported: number;
  /** The new keys' ids in file order, when there are at most IMPORT_IDS_LISTED. */
  ids?: number[];
  /** The same ids as ascending runs `[first, last]` (one run unless others wrote meanwhile). */
  idRanges: [number, number][];
  warnings?: ImportProblem[];
}

/**
 * The ids an import wrote with their lines, compactly (two numbers a row). Ids ascend in the
 * order written (one transaction draws them from the sequence in turn), so a lookup by id is
 * a binary search.
 */
class ImportedIds {
  private ids = new Float64Array(1024);
  private lines = new Int32Array(1024);
  count = 0;

  add(id: number, line: number): void {
    if (this.count === this.ids.length) {
      const ids = new Float64Array(this.count * 2);
      ids.set(this.ids);
      const lines = new Int32Array(this.count * 2);
      lines.set(this.lines);
      [this.ids, this.lines] = [ids, lines];
    }
    this.ids[this.count] = id;
    this.lines[this.count++] = line;
  }

  lineOf(id: number): number | undefined {
    let [lo, hi] = [0, this.count - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.ids[mid]!;
      if (at === id) return this.lines[mid];
      if (at < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  list(): number[] {
    return Array.from(this.ids.subarray(0, this.count));
  }

  ranges(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.count; i++) {
      const id = this.ids[i]!;
      const last = out.at(-1);
      if (last && id === last[1] + 1) last[1] = id;
      else out.push([id, id]);
    }
    return out;
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
