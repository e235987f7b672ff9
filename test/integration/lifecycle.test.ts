/**
 * Start-up refused at each step (a setting, the schema, a resolver, a port) leaves nothing
 * open: no listener, no database connection, no LISTEN client, so that an embedding program
 * exits by itself. On both databases, in this process and in a process of its own.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { databaseTargets, tempDir, TEST_DATABASE_URL, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, ADMIN_TOKEN } from '../helpers/service.ts';
import { REPO_ROOT } from '../helpers/process.ts';
import { ConfigError } from '../../src/lib/errors.ts';

const SOCKETS = new Set(['TCPServerWrap', 'TCPSocketWrap', 'PipeWrap', 'PipeServerWrap']);
const sockets = () => process.getActiveResourcesInfo().filter((r) => SOCKETS.has(r)).length;

/** Resolves once `read()` is `want` (polled: sockets close on the next turns of the loop). */
async function settlesAt(read: () => number | Promise<number>, want: number, what: string, deadlineMs = 20_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  let got = await read();
  while (got !== want && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    got = await read();
  }
  assert.equal(got, want, what);
}

async function occupiedPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, server };
}

/** Connections to this test's PostgreSQL database (0 for PGlite). */
async function connections(db: TestDatabase): Promise<number> {
  if (!db.env.DATABASE_URL || !TEST_DATABASE_URL) return 0;
  const name = new URL(db.env.DATABASE_URL).pathname.slice(1);
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>('select count(*)::int as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
    return rows[0]!.n;
  } finally {
    await client.end();
  }
}

async function hasSchema(db: TestDatabase): Promise<boolean> {
  if (!db.env.DATABASE_URL) return existsSync(db.env.DATA_DIR);
  const client = new pg.Client({ connectionString: db.env.DATABASE_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ t: string | null }>("select to_regclass('knex_migrations')::text as t");
    return rows[0]!.t !== null;
  } finally {
    await client.end();
  }
}

/** A resolver plugin that loads (its module and options are fine) but whose factory fails. */
function failingPlugin(dir: string): string {
  const file = join(dir, 'failing-resolver.mjs');
  writeFileSync(file, "export default async function () { throw new Error('the CRM refused our credentials'); }\n");
  return file;
}

for (const target of databaseTargets) {
  describe(`a refused start leaves nothing open (${target.name})`, () => {
    let db: TestDatabase;
    let baseline: number;
    before(async () => {
      db = await target.create({ fresh: true });
      baseline = sockets();
    });
    after(async () => {
      await db.drop();
    });

    test('a wrong TLS setting is refused before the database is opened', async () => {
      await assert.rejects(
        startTestService(db, { TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: '/nonexistent/key.pem' }),
        (err: Error) => err instanceof ConfigError && /TLS_CERT_FILE: cannot read/.test(err.message),
      );
      assert.equal(await hasSchema(db), false, 'the database was not touched');
      await settlesAt(sockets, baseline, 'no socket left');
    });

    test('a stale schema with ENTGATE_MIGRATE_ON_START=false is refused, and the database closed', async () => {
      await assert.rejects(startTestService(db, { ENTGATE_MIGRATE_ON_START: 'false' }), /schema is not current/);
      await settlesAt(sockets, baseline, 'no socket left');
      await settlesAt(() => connections(db), 0, 'no database connection left');
    });

    test('a resolver whose factory fails closes the database and the LISTEN client', async () => {
      const plugin = failingPlugin(tempDir());
      await assert.rejects(startTestService(db, { ENTGATE_RESOLVERS: `postgres,${plugin}` }), /its factory failed: the CRM refused/);
      await settlesAt(sockets, baseline, 'no socket left');
      await settlesAt(() => connections(db), 0, 'no database connection left');
    });

    test('a port already taken, after the first listener is up, closes that listener and everything below', async () => {
      const taken = await occupiedPort();
      try {
        await assert.rejects(startTestService(db, { METRICS_PORT: String(taken.port) }), /EADDRINUSE/);
        await settlesAt(sockets, baseline + 1, 'only the test port is left');
        await settlesAt(() => connections(db), 0, 'no database connection left');
      } finally {
        taken.server.close();
      }
      // And the database is fine for the next start.
      const svc = await startTestService(db);
      await svc.close();
      await settlesAt(sockets, baseline, 'a clean close leaves no socket either');
      await settlesAt(() => connections(db), 0, 'a clean close leaves no database connection');
    });

    test('an embedding program whose start was refused exits by itself', async () => {
      const taken = await occupiedPort();
      try {
        // No process.exit anywhere: the program ends only when nothing holds the loop.
        const script = `
          import { loadConfig, startService, createLogger } from './src/index.ts';
          const config = loadConfig({ ...process.env, PORT: '0', HOST: '127.0.0.1', METRICS_PORT: '${taken.port}' });
          try { await startService(config, createLogger('silent')); console.log('started'); }
          catch (err) { console.log('refused: ' + err.code); }
        `;
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
          cwd: REPO_ROOT,
          env: { ...process.env, ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        const exited = await new Promise<number | null>((resolve) => {
          const timer = setTimeout(() => {
            child.kill('SIGKILL');
            resolve(null);
          }, 120_000);
          child.on('exit', (code) => {
            clearTimeout(timer);
            resolve(code);
          });
        });
        assert.notEqual(exited, null, `the program did not exit within 120 s: ${out}`);
        assert.equal(exited, 0, out);
        assert.match(out, /refused: EADDRINUSE/);
      } finally {
        taken.server.close();
      }
    });
  });
}
