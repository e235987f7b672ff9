/**
 * The benchmark's PostgreSQL databases: created with random names through an admin URL,
 * seeded straight through `pg` (keys hashed here with entgate's own hasher, inserted
 * 10,000 rows per statement with unnest), and dropped at the end whatever happens.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { keyHint, type KeyHasher } from '../../src/domain/virtual-key.ts';

const BATCH = 10_000;

export class Databases {
  private readonly created = new Set<string>();

  constructor(readonly adminUrl: string) {}

  urlOf(name: string): string {
    const url = new URL(this.adminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  }

  /** A new empty database with a random name; returns its URL. */
  async create(): Promise<string> {
    const name = `entgate_bench_${randomBytes(6).toString('hex')}`;
    await this.admin(`create database ${name}`);
    this.created.add(name);
    return this.urlOf(name);
  }

  /** Drops every database created here (forcing out any connection left). */
  async dropAll(): Promise<string[]> {
    const failed: string[] = [];
    for (const name of [...this.created]) {
      try {
        await this.admin(`drop database if exists ${name} with (force)`);
        this.created.delete(name);
      } catch {
        failed.push(name);
      }
    }
    return failed;
  }

  /** Databases of earlier runs that did not get to clean up (killed with SIGKILL, say). */
  async leftovers(): Promise<string[]> {
    return withClient(this.adminUrl, async (c) =>
      (await c.query("select datname from pg_database where datname like 'entgate\\_bench\\_%'")).rows.map((r) => String(r.datname)),
    );
  }

  async serverVersion(): Promise<string> {
    return withClient(this.adminUrl, async (c) => String((await c.query('show server_version')).rows[0].server_version).split(' ')[0]!);
  }

  private admin(sql: string): Promise<void> {
    return withClient(this.adminUrl, async (c) => {
      await c.query(sql);
    });
  }
}

export async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

export interface EntitlementSeed {
  serverPattern: string;
  class: string;
  realKey: string;
  description: string;
}

/** Inserts the entitlements (and product GOLD mapped to the first); returns their ids in order. */
export async function seedEntitlements(url: string, entitlements: EntitlementSeed[]): Promise<number[]> {
  return withClient(url, async (c) => {
    const ids: number[] = [];
    for (const e of entitlements) {
      const r = await c.query('insert into entitlements (server_pattern, class, real_key, description) values ($1, $2, $3, $4) returning id', [
        e.serverPattern,
        e.class,
        e.realKey,
        e.description,
      ]);
      ids.push(r.rows[0].id as number);
    }
    await c.query("insert into products (code, entitlement_id) values ('GOLD', $1)", [ids[0]]);
    return ids;
  });
}

/**
 * Inserts virtual keys keyOf(0) .. keyOf(count - 1), key i mapped to entitlementIds[i % n],
 * active, no address restriction. The next batch is hashed while PostgreSQL inserts the
 * previous one. Ends with VACUUM ANALYZE, so that lookups neither set hint bits on first
 * read nor run on a plan made for an empty table.
 */
export async function seedKeys(url: string, count: number, keyOf: (i: number) => string, hashKey: KeyHasher, entitlementIds: number[]): Promise<void> {
  await withClient(url, async (c) => {
    await c.query('set synchronous_commit = off');
    const batch = (start: number) => {
      const n = Math.min(BATCH, count - start);
      const ents = new Array<number>(n);
      const hashes = new Array<string>(n);
      const hints = new Array<string>(n);
      for (let j = 0; j < n; j++) {
        const key = keyOf(start + j);
        ents[j] = entitlementIds[(start + j) % entitlementIds.length]!;
        hashes[j] = hashKey(key);
        hints[j] = keyHint(key);
      }
      return [ents, hashes, hints];
    };
    let inFlight: Promise<unknown> | undefined;
    for (let start = 0; start < count; start += BATCH) {
      const values = batch(start);
      await inFlight;
      inFlight = c.query(
        'insert into virtual_keys (entitlement_id, key_hash, key_hint) select * from unnest($1::int[], $2::text[], $3::text[])',
        values,
      );
    }
    await inFlight;
    await c.query('vacuum analyze virtual_keys');
    await c.query('analyze entitlements');
    const { rows } = await c.query('select count(*)::int as n from virtual_keys');
    if (rows[0].n !== count) throw new Error(`seeded ${rows[0].n} virtual keys instead of ${count}`);
  });
}

/** A statement runner: rows of the answer (a `pg` pool's or client's query, or PGlite's). */
export type Query = (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;

/** The scratch table of the database's own limit (bench/leases.ts, bench/capacities.ts). */
export const SCRATCH_TABLE =
  'create table if not exists bench_scratch (id bigint generated always as identity primary key, client int not null, at timestamptz not null default clock_timestamp())';

/**
 * The database's own limit: `INSERT … RETURNING` into the scratch table from `callers`
 * concurrent callers, each one statement at a time, for `seconds` after a 1 s warm-up; per second.
 */
export async function insertsPerSecond(query: Query, callers: number, seconds: number): Promise<number> {
  let n = 0;
  const warmEnd = Date.now() + 1000;
  const end = warmEnd + seconds * 1000;
  let from = 0n;
  await Promise.all(
    Array.from({ length: callers }, async (_, i) => {
      while (Date.now() < end) {
        await query('insert into bench_scratch (client) values ($1) returning id', [i]);
        if (Date.now() >= warmEnd) {
          if (from === 0n) from = process.hrtime.bigint();
          n++;
        }
      }
    }),
  );
  return n / (Number(process.hrtime.bigint() - from) / 1e9);
}
