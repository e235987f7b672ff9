import type { Database } from '../store/db.ts';

/**
 * Runs `fn` on the database itself, for the few commands that cannot go through the admin API
 * (`migrate`, and the ways back in: `credential enable-bootstrap`, `key-secret accept`). The
 * embedded database only while the server is stopped: PGlite is single-process.
 */
export async function onDatabase<T>(fn: (db: Database) => Promise<T>): Promise<T> {
  const { loadConfig } = await import('../../config/load.ts');
  const config = loadConfig();
  const { openDatabase } = await import('../store/db.ts');
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolMax: 2 });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}
