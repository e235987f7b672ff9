import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import pg from 'pg';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { openDatabase, migrate, type Database } from '../../src/store/db.ts';
import { CheckEventWriter, type CheckEvent } from '../../src/store/check-events.ts';

const silent = pino({ level: 'silent' });

function event(i: number): CheckEvent {
  return {
    occurredAt: new Date(),
    server: 'rm.example.com',
    class: null,
    keyHint: 'ab…',
    virtualKeyId: i % 2 === 0 ? i : null,
    remoteIp: null,
    callerIp: '127.0.0.1',
    decision: i % 2 === 0 ? 'granted' : 'denied',
    reason: i % 2 === 0 ? null : 'unknown_key',
    resolver: 'postgres',
    latencyUs: i,
  };
}

const count = async (db: Database) => Number((await db.knex('check_events').count({ n: '*' }))[0]!.n);

for (const target of databaseTargets) {
  describe(`check event writer on ${target.name}`, () => {
    let tdb: TestDatabase;
    let db: Database;
    before(async () => {
      tdb = await target.create();
      db = await openDatabase({ databaseUrl: tdb.env.DATABASE_URL, dataDir: tdb.env.DATA_DIR });
      await migrate(db);
    });
    after(async () => {
      await db?.close();
      await tdb?.drop();
    });

    it('writes events in batches, with nulls, in order', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 10_000, batchSize: 7, flushMs: 10 });
      for (let i = 0; i < 50; i++) writer.record(event(i));
      await writer.close();
      assert.deepEqual(writer.getStats(), { queued: 0, written: 50, dropped: 0, isolated: 0, failedBatches: 0 });
      const rows = await db.knex('check_events').orderBy('id').select('latency_us', 'virtual_key_id', 'reason');
      assert.deepEqual(
        rows.map((r) => r.latency_us),
        Array.from({ length: 50 }, (_, i) => i),
      );
      assert.equal(rows[1].virtual_key_id, null);
      assert.equal(rows[1].reason, 'unknown_key');
      await db.knex('check_events').delete();
    });

    it('when the database is away, then record() stays instant, memory stays bounded, and what overflows the queue is counted', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 100, batchSize: 10, flushMs: 5 });
      await db.knex.raw('alter table check_events rename to check_events_away');
      try {
        for (let i = 0; i < 1000; i++) writer.record(event(i));
        assert.ok(writer.getStats().queued <= 100);
        await new Promise((r) => setTimeout(r, 300));
        const stats = writer.getStats();
        assert.equal(stats.written, 0);
        assert.equal(stats.dropped, 900, JSON.stringify(stats));
        assert.equal(stats.queued, 100);
        assert.ok(stats.failedBatches > 0);
      } finally {
        await db.knex.raw('alter table check_events_away rename to check_events');
      }
      // Retried with backoff while the queue had room: nothing queued is lost.
      await writer.close();
      assert.equal(writer.getStats().written, 100);
      assert.equal(await count(db), 100);
      await db.knex('check_events').delete();
    });

    it('when a batch holds a NUL byte or an unpaired surrogate, then every row is written, those characters as U+FFFD', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 10_000, batchSize: 500, flushMs: 5 });
      for (let i = 0; i < 200; i++) writer.record(i % 40 === 3 ? { ...event(i), class: 'a\u0000b', server: 'x\ud800y' } : event(i));
      await writer.close();
      assert.deepEqual(writer.getStats(), { queued: 0, written: 200, dropped: 0, isolated: 0, failedBatches: 0 });
      const bad = await db.knex('check_events').where('latency_us', 3).first();
      assert.equal(bad.class, 'a\ufffdb');
      assert.equal(bad.server, 'x\ufffdy');
      assert.equal(await count(db), 200);
      await db.knex('check_events').delete();
    });

    it('when one row cannot be stored, then it alone is set aside and counted, and its neighbours are written', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 10_000, batchSize: 100, flushMs: 5 });
      // latency_us is an integer column: 2^40 is out of its range whatever the escaping.
      for (let i = 0; i < 300; i++) writer.record(i === 17 || i === 250 ? { ...event(i), latencyUs: 2 ** 40 } : event(i));
      await writer.close();
      const stats = writer.getStats();
      assert.equal(stats.written, 298, JSON.stringify(stats));
      assert.equal(stats.isolated, 2);
      assert.equal(stats.dropped, 0);
      assert.equal(await count(db), 298);
      const latencies = (await db.knex('check_events').orderBy('id').select('latency_us')).map((r) => r.latency_us);
      assert.deepEqual(latencies, Array.from({ length: 300 }, (_, i) => i).filter((i) => i !== 17 && i !== 250));
      await db.knex('check_events').delete();
    });

    it('when the database is away for a while, then batches are retried with backoff and none is lost while the queue has room', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 10_000, batchSize: 20, flushMs: 5 });
      await db.knex.raw('alter table check_events rename to check_events_away');
      for (let i = 0; i < 100; i++) writer.record(event(i));
      await new Promise((r) => setTimeout(r, 1500));
      for (let i = 100; i < 200; i++) writer.record(event(i));
      await db.knex.raw('alter table check_events_away rename to check_events');
      await writer.close();
      const stats = writer.getStats();
      assert.equal(stats.written, 200, JSON.stringify(stats));
      assert.equal(stats.dropped, 0);
      assert.equal(await count(db), 200);
      await db.knex('check_events').delete();
    });

    it('when it is closed while the database stays away, then it gives up at its deadline and counts what it drops', async () => {
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 10_000, batchSize: 20, flushMs: 5, closeTimeoutMs: 500 });
      await db.knex.raw('alter table check_events rename to check_events_away');
      try {
        for (let i = 0; i < 50; i++) writer.record(event(i));
        await writer.close();
        assert.deepEqual({ ...writer.getStats(), failedBatches: 0 }, { queued: 0, written: 0, dropped: 50, isolated: 0, failedBatches: 0 });
      } finally {
        await db.knex.raw('alter table check_events_away rename to check_events');
      }
    });
  });
}

const pgTarget = databaseTargets.find((t) => t.name === 'postgres');
describe('check event writer behind a locked table (PostgreSQL)', { skip: pgTarget ? false : 'TEST_DATABASE_URL is not set' }, () => {
  it('when the table is locked, then events wait in the bounded queue and are written once it is released', async () => {
    const tdb = await pgTarget!.create();
    const db = await openDatabase({ databaseUrl: tdb.env.DATABASE_URL, dataDir: tdb.env.DATA_DIR });
    const locker = new pg.Client({ connectionString: tdb.env.DATABASE_URL });
    try {
      await migrate(db);
      await locker.connect();
      await locker.query('begin');
      await locker.query('lock table check_events in access exclusive mode');
      const writer = new CheckEventWriter(db.knex, silent, { maxQueue: 200, batchSize: 50, flushMs: 5 });
      // record() is synchronous: it cannot wait for the database, only queue or drop.
      for (let i = 0; i < 500; i++) writer.record(event(i));
      await new Promise((r) => setTimeout(r, 100));
      const held = writer.getStats();
      assert.equal(held.written, 0);
      assert.ok(held.queued <= 200);
      assert.ok(held.dropped >= 250, JSON.stringify(held));
      await locker.query('commit');
      await writer.close();
      const done = writer.getStats();
      assert.equal(done.written + done.dropped, 500);
      assert.equal(await count(db), done.written);
    } finally {
      await locker.end().catch(() => {});
      await db.close();
      await tdb.drop();
    }
  });
});
