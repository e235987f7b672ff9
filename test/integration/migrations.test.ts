import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { databaseTargets } from '../helpers/databases.ts';
import { migrate, migrationsCurrent, openDatabase } from '../../src/store/db.ts';
import * as poolKinds from '../../migrations/20261211000000_pool_kinds.ts';
import * as licences from '../../migrations/20261212000000_licences.ts';

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

for (const target of databaseTargets) {
  describe(`pool kinds (20261211000000_pool_kinds) on ${target.name}`, () => {
    it('classifies the pools there were by the names they had, keeps kind and owner together, and undoes cleanly', async () => {
      const created = await target.create();
      const db = await openDatabase({ databaseUrl: created.env.DATABASE_URL, dataDir: created.env.DATA_DIR });
      const knex = db.knex;
      try {
        await migrate(db);
        // The schema as it was before: kinds were read from names.
        await licences.down(knex);
        await poolKinds.down(knex);
        const [entitlement] = await knex('entitlements').insert({ server_pattern: 'rm.example.com', real_key: 'real' }).returning('id');
        const [vk] = await knex('virtual_keys')
          .insert({ entitlement_id: entitlement.id, key_hash: 'h', key_hint: 'k…', max_concurrent_leases: 3 })
          .returning('id');
        const limits = { seats: 2, default_ttl_seconds: 60, max_ttl_seconds: 600, heartbeat_interval_seconds: 20 };
        await knex('lease_pools').insert([
          { name: 'cad', ...limits, anonymous: true },
          { name: 'ses-contosoapp', ...limits },
          { name: `ses-${'ab'.repeat(16)}`, ...limits },
          { name: 'sessions', ...limits },
          { name: `vk-${vk.id}`, ...limits, virtual_key_id: vk.id },
        ]);
        await poolKinds.up(knex);
        await licences.up(knex);

        const pools = await knex('lease_pools').orderBy('name').select('name', 'kind', 'virtual_key_id', 'ses_application');
        assert.deepEqual(
          pools.map((p) => [p.name, p.kind, p.virtual_key_id, p.ses_application]),
          [
            ['cad', 'named', null, null],
            [`ses-${'ab'.repeat(16)}`, 'ses_application', null, 'ab'.repeat(16)],
            ['ses-contosoapp', 'ses_application', null, 'contosoapp'],
            ['sessions', 'named', null, null],
            [`vk-${vk.id}`, 'virtual_key', vk.id, null],
          ],
        );

        // Kind and owner go together; owned pools are never anonymous.
        const refused = async (row: Record<string, unknown>) => {
          await assert.rejects(knex('lease_pools').insert({ ...limits, ...row }), /lease_pools_kind_check|unique/, JSON.stringify(row));
        };
        await refused({ name: 'a', kind: 'ses_application' });
        await refused({ name: 'b', kind: 'named', ses_application: 'b' });
        await refused({ name: 'c', kind: 'virtual_key' });
        await refused({ name: 'd', kind: 'ses_application', ses_application: 'd', anonymous: true });
        await refused({ name: 'e', kind: 'whatever' });
        await refused({ name: 'f', kind: 'ses_application', ses_application: 'contosoapp' });
        const [other] = await knex('virtual_keys').insert({ entitlement_id: entitlement.id, key_hash: 'h2', key_hint: 'k…' }).returning('id');
        await refused({ name: 'g', virtual_key_id: other.id });

        // The acquire function finds an application's pool by its application, whatever its name.
        const acquire = (kind: string, name: string, application: string | null, client: string) =>
          knex.raw('select entgate_lease_acquire(?, ?, null, ?, null, ?::json, ?, null, gen_random_uuid(), null, null, null) as r', [
            kind,
            name,
            application,
            JSON.stringify({ seats: 1_000_000, defaultTtlSeconds: 300, maxTtlSeconds: 604_800, heartbeatIntervalSeconds: 100 }),
            client,
          ]);
        const seatOf = async (...args: Parameters<typeof acquire>) =>
          ((await acquire(...args)) as { rows: { r: { outcome: string; pool: { name: string; seats: number } } }[] }).rows[0]!.r;
        const first = await seatOf('ses_application', 'ses-contosoapp', 'contosoapp', 'job-1');
        assert.deepEqual([first.outcome, first.pool.name, first.pool.seats], ['acquired', 'ses-contosoapp', 2]);
        assert.equal((await seatOf('named', 'ses-contosoapp', null, 'job-2')).outcome, 'other_kind');
        assert.equal((await seatOf('named', 'sessions', null, 'job-3')).outcome, 'acquired');

        await licences.down(knex);
        await poolKinds.down(knex);
        const columns = Object.keys(await knex('lease_pools').columnInfo());
        assert.ok(!columns.includes('kind') && !columns.includes('ses_application'), columns.join());
        await poolKinds.up(knex);
        await licences.up(knex);
        assert.equal(await migrationsCurrent(db), true);
      } finally {
        await db.close();
        await created.drop();
      }
    });
  });
}

for (const target of databaseTargets) {
  describe(`licences (20261212000000_licences) on ${target.name}`, () => {
    it('decides claims in the database, and undoes cleanly with claims held (their pool and leases go), then makes a new installation', async () => {
      const created = await target.create();
      const db = await openDatabase({ databaseUrl: created.env.DATABASE_URL, dataDir: created.env.DATA_DIR });
      const knex = db.knex;
      try {
        await migrate(db);
        const claim = async (capacity: string, entity: string) =>
          (
            (await knex.raw('select entgate_capacity_claim(?, ?, null, gen_random_uuid(), null, null, ?, null, ?::json) as r', [
              capacity,
              entity,
              'capacities',
              JSON.stringify({ defaultTtlSeconds: 60, maxTtlSeconds: 600, heartbeatIntervalSeconds: 20 }),
            ])) as { rows: { r: { outcome: string; inUse?: number } }[] }
          ).rows[0]!.r;
        assert.equal((await claim('assigned:users', 'a')).outcome, 'no_licence');
        const [{ seq }] = await knex('licences')
          .insert({ licence_id: 'l1', tenant: 't', token: 'x.y.z', claims: '{}', issued_at: new Date(), not_before: new Date(Date.now() - 60_000), expires_at: new Date(Date.now() + 3_600_000) })
          .returning('seq');
        const window = { licence_seq: seq, not_before: new Date(Date.now() - 60_000), expires_at: new Date(Date.now() + 3_600_000) };
        await knex('licence_capacities').insert([
          { name: 'assigned:users', kind: 'assigned', capacity_limit: 1, ...window },
          { name: 'concurrent:calls', kind: 'concurrent', capacity_limit: 1, ...window },
        ]);
        await assert.rejects(knex('licence_capacities').insert({ name: 'assigned:x', kind: 'assigned', capacity_limit: null, ...window }), /check/);
        assert.deepEqual([await claim('assigned:users', 'a'), await claim('assigned:users', 'a')].map((r) => [r.outcome, r.inUse]), [['acquired', 1], ['existing', 1]]);
        assert.equal((await claim('assigned:users', 'b')).outcome, 'full');
        assert.equal((await claim('concurrent:calls', 'c')).outcome, 'acquired');
        assert.equal((await claim('concurrent:calls', 'd')).outcome, 'full');
        assert.equal((await claim('assigned:other', 'a')).outcome, 'unknown_capacity');
        const installation = (await knex('installation').first()).id as string;

        await licences.down(knex);
        assert.equal(Number((await knex('lease_pools').where({ name: 'concurrent:calls' }).count({ n: '*' }))[0]!.n), 0);
        assert.equal(await knex.schema.hasTable('capacity_claims'), false);
        await licences.up(knex);
        assert.equal(await migrationsCurrent(db), true);
        const again = await knex('installation').select('id');
        assert.equal(again.length, 1);
        assert.notEqual(again[0].id, installation, 'a database made anew is a new installation');
      } finally {
        await db.close();
        await created.drop();
      }
    });
  });
}
