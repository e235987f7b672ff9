import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

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
  create(): Promise<TestDatabase>;
}

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || undefined;

export function tempDir(prefix = 'entgate-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

const pglite: DatabaseTarget = {
  name: 'pglite',
  async create() {
    const dir = tempDir();
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
