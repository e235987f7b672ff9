import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate, openDatabase } from '../../src/store/db.ts';

/**
 * The databases every integration test runs against: PGlite always, PostgreSQL when
 * TEST_DATABASE_URL is set. Each `create()` makes a fresh, private database (a temporary
 * directory, or a new PostgreSQL database with a random name) and `drop()` removes it, so
 * repeated and parallel runs never collide.
 */
export interface TestDatabase {
  /** Settings that point entgate at this database. */
  env: { DATA_DIR: string; DATABASE_URL?: string };
  drop(): Promise<void>;
}

export interface DatabaseTarget {
  name: 'pglite' | 'postgres';
  /**
   * A private database. PGlite's is a copy of a migrated template (making a PGlite data folder
   * costs several CPU-seconds; copying one, a fraction of that); `fresh` gives an empty one
   * (no folder yet), for tests of what a first start does.
   */
  create(options?: { fresh?: boolean }): Promise<TestDatabase>;
}

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || undefined;

export function tempDir(prefix = 'entgate-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
let template: Promise<string> | undefined;

/**
 * A migrated PGlite data folder shared by every test process of a run (and later runs): named
 * by a digest of the migrations and PGlite's version, so that a changed migration makes a new
 * one. Built in a private folder and renamed into place, so processes racing to build it never
 * see half of one.
 */
function pgliteTemplate(): Promise<string> {
  template ??= (async () => {
    const digest = createHash('sha256');
    for (const f of readdirSync(MIGRATIONS_DIR).sort()) digest.update(f).update(readFileSync(join(MIGRATIONS_DIR, f)));
    digest.update(readFileSync(fileURLToPath(new URL('../../node_modules/@electric-sql/pglite/package.json', import.meta.url))));
    const path = join(tmpdir(), `entgate-test-pglite-${digest.digest('hex').slice(0, 16)}`);
    if (existsSync(path)) return path;
    const building = tempDir('entgate-test-pglite-building-');
    const db = await openDatabase({ dataDir: join(building, 'data') });
    try {
      await migrate(db);
    } finally {
      await db.close();
    }
    try {
      renameSync(join(building, 'data'), path);
    } catch (err) {
      if (!existsSync(path)) throw err; // another process put its own in place first
    }
    rmSync(building, { recursive: true, force: true });
    return path;
  })();
  return template;
}

const pglite: DatabaseTarget = {
  name: 'pglite',
  async create(options = {}) {
    const dir = tempDir();
    if (!options.fresh) cpSync(await pgliteTemplate(), join(dir, 'data'), { recursive: true });
    return { env: { DATA_DIR: join(dir, 'data') }, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  },
};

function postgres(adminUrl: string): DatabaseTarget {
  return {
    name: 'postgres',
    async create() {
      const name = `entgate_test_${randomBytes(6).toString('hex')}`;
      await withAdmin(adminUrl, (c) => c.query(`create database ${name}`));
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      const dir = tempDir();
      return {
        env: { DATA_DIR: join(dir, 'unused'), DATABASE_URL: url.toString() },
        drop: async () => {
          await withAdmin(adminUrl, (c) => c.query(`drop database if exists ${name} with (force)`));
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  };
}

async function withAdmin(url: string, fn: (c: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

export const databaseTargets: DatabaseTarget[] = TEST_DATABASE_URL ? [pglite, postgres(TEST_DATABASE_URL)] : [pglite];
