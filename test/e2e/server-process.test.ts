import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { runCli, startServerProcess } from '../helpers/process.ts';
import { openDatabase } from '../../src/store/db.ts';
import { migrationSource } from '../../migrations/index.ts';

const admin = (url: string, path: string, body?: unknown) =>
  fetch(`${url}/admin/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });

for (const target of databaseTargets) {
  describe(`entgate serve as a process on ${target.name}`, () => {
    let db: TestDatabase;
    before(async () => {
      db = await target.create();
    });
    after(async () => {
      await db?.drop();
    });

    it('keeps keys across a restart, drains on SIGTERM and flushes every check event', async () => {
      const env = { ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
      const first = await startServerProcess(env);
      let ent: { id: number };
      try {
        ent = (await (await admin(first.url, '/entitlements', { server: 'rm.example.com', key: 'persisted-real' })).json()) as { id: number };
        const vk = await admin(first.url, '/virtual-keys', { entitlementId: ent.id, key: 'persisted-key' });
        assert.equal(vk.status, 201);
        for (let i = 0; i < 25; i++) {
          assert.equal((await fetch(`${first.url}/?server=rm.example.com;key=persisted-key`)).status, 200);
        }
      } finally {
        const started = Date.now();
        const code = await first.stop('SIGTERM');
        assert.equal(code, 0, first.output());
        assert.ok(Date.now() - started < 10_000);
      }
      assert.match(first.output(), /"msg":"entgate stopped"/);

      const second = await startServerProcess(env);
      try {
        const res = await fetch(`${second.url}/?server=rm.example.com;key=persisted-key`);
        assert.equal(res.status, 200);
        assert.match(await res.text(), /<key>persisted-real<\/key>/);
      } finally {
        assert.equal(await second.stop('SIGINT'), 0);
      }

      // Every check of both runs reached the database before each process exited.
      const store = await openDatabase({ databaseUrl: db.env.DATABASE_URL, dataDir: db.env.DATA_DIR });
      try {
        const [{ n }] = (await store.knex('check_events').where({ decision: 'granted' }).count({ n: '*' })) as [{ n: number }];
        assert.equal(Number(n), 26);
      } finally {
        await store.close();
      }
    });
  });
}

describe('entgate start-up and migrate', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('stops with one line per bad setting and a non-zero exit', async () => {
    const res = await runCli(['serve'], { PORT: 'eighty', ENTGATE_ADMIN_TOKEN: 'short', DATA_DIR: join(dir, 'x') });
    assert.notEqual(res.code, 0);
    const lines = res.stderr.trim().split('\n');
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^entgate: invalid configuration: PORT="eighty": .*ENTGATE_ADMIN_TOKEN=\(hidden\): must be at least 16 characters/);
    assert.ok(!res.stderr.includes('short'));
  });

  it('migrates the embedded database, and refuses while a server holds it', async () => {
    const dataDir = join(dir, 'data');
    const fresh = await runCli(['migrate'], { DATA_DIR: dataDir });
    assert.equal(fresh.code, 0, fresh.stderr);
    const names = (await migrationSource.getMigrations([])).map((m) => migrationSource.getMigrationName(m));
    assert.equal(fresh.stdout, `applied: ${names.join(', ')}\n`);
    assert.ok(names.length >= 3);
    assert.equal((await runCli(['migrate'], { DATA_DIR: dataDir })).stdout, 'already current\n');

    const server = await startServerProcess({ DATA_DIR: dataDir });
    try {
      const busy = await runCli(['migrate'], { DATA_DIR: dataDir });
      assert.notEqual(busy.code, 0);
      assert.match(busy.stderr, /^entgate: the embedded database in .* is in use by process \d+; stop it first/);
      const second = await runCli(['serve'], { DATA_DIR: dataDir, PORT: '0' });
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, /is in use by process/);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});
