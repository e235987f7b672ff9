import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { databaseTargets } from '../helpers/databases.ts';
import { migrate, migrationsCurrent, openDatabase } from '../../src/store/db.ts';

const postgres = databaseTargets.find((t) => t.name === 'postgres');

describe('migrations on one PostgreSQL', { skip: postgres ? false : 'TEST_DATABASE_URL is not set' }, () => {
  it('six instances migrating an empty database at once: one applies everything, the others find it done', async () => {
    const target = await postgres!.create();
    const handles = await Promise.all(
      Array.from({ length: 6 }, () => openDatabase({ databaseUrl: target.env.DATABASE_URL, dataDir: target.env.DATA_DIR, poolMax: 2 })),
    );
    try {
      const applied = await Promise.all(handles.map((db) => migrate(db)));
      const counts = applied.map((a) => a.length).sort((a, b) => b - a);
      assert.ok(counts[0]! > 0, 'one of them applied the migrations');
      assert.deepEqual(counts.slice(1), [0, 0, 0, 0, 0], 'the others had nothing left to do');
      for (const db of handles) assert.equal(await migrationsCurrent(db), true);
      const locks = await handles[0]!.knex('knex_migrations_lock').select('*');
      assert.equal(locks.length, 1, 'one row in knex lock table');
      assert.equal(locks[0].is_locked, 0);
    } finally {
      await Promise.all(handles.map((db) => db.close()));
      await target.drop();
    }
  });
});
