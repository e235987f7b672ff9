import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import { databaseFault } from '../lib/db-faults.ts';
import { migrationSource, latestMigration } from '../../migrations/index.ts';

// int8 (counts, bigint ids) as numbers on both drivers; PGlite already does so.
pg.types.setTypeParser(20, (v) => Number(v));

export interface Database {
  knex: Knex;
  kind: 'postgres' | 'pglite';
  /** Where the data lives, for messages: the data directory or the server's host. */
  location: string;
  /**
   * Runs a constant statement (`$1`-style parameters) for a hot path. On PostgreSQL it is a
   * named prepared statement, parsed and planned once per connection, on a connection of
   * knex's own pool; on PGlite it goes through knex (one connection, in process).
   */
  prepared<Row>(name: string, sql: string, params: unknown[]): Promise<Row[]>;
  /**
   * Subscribes to a notification channel (one subscriber per channel). On PostgreSQL every
   * channel of a handle shares one dedicated connection, which reconnects (every second) after
   * it is lost and then calls each `onReconnect`, since notifications sent meanwhile are gone.
   * Resolves with the unsubscribe function.
   */
  listen(channel: string, onMessage: (payload: string) => void, onReconnect: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** The part of knex's client that lends pool connections (stable across knex releases). */
interface PoolClient {
  acquireConnection(): Promise<pg.Client>;
  releaseConnection(connection: pg.Client): Promise<unknown>;
}

export interface DatabaseOptions {
  databaseUrl?: string | undefined;
  dataDir: string;
  poolMax?: number;
  /** PostgreSQL: the server's statement_timeout; the client gives up on a query shortly after. */
  queryTimeoutMs?: number;
  /** PostgreSQL: longest wait to open a connection, and for a free one from the pool. */
  connectTimeoutMs?: number;
  /** Where knex's own warnings go (else the console). */
  logger?: Logger;
}

/** Defaults of DATABASE_QUERY_TIMEOUT_MS and DATABASE_CONNECT_TIMEOUT_MS, for callers without settings. */
const QUERY_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * The client waits this much longer than statement_timeout, so that a server that can answer
 * cancels the statement itself (the connection stays usable); the client's own timeout is for
 * a server that cannot answer at all (frozen, or a network that drops packets).
 */
const CLIENT_TIMEOUT_MARGIN_MS = 1_000;

/** The parts of a `pg` client the pool checks before lending it (getTransactionStatus: pg >= 8.11). */
interface PgConnectionState {
  readyForQuery: boolean;
  getTransactionStatus(): string | null;
}

/**
 * A connection may be lent only when it is idle outside a transaction. One whose query the client
 * gave up on (pg's query_timeout) is still waiting for the server, and its session may hold an
 * open transaction whose ROLLBACK never went out: it is destroyed, never reused, so a frozen
 * server costs each request one timeout and nothing leaks into later work.
 */
function connectionIdle(connection: PgConnectionState): boolean {
  return connection.readyForQuery && connection.getTransactionStatus() === 'I';
}

/**
 * Opens PostgreSQL through `pg` when a URL is given, otherwise the embedded PGlite database in
 * `dataDir`. PGlite is single-process: a lock file in the data directory stops a second
 * process (a second server, or `entgate migrate` while the server runs) from opening it.
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const log = options.logger;
  // knex reports connection failures with their stack, once per request during an outage: one line each.
  const knexLog = log && {
    warn: (m: unknown) => log.warn({ detail: String(m).split('\n')[0] }, 'database client warning'),
    error: (m: unknown) => log.error({ detail: String(m).split('\n')[0] }, 'database client error'),
    deprecate: (m: unknown) => log.warn({ detail: String(m).split('\n')[0] }, 'database client deprecation'),
    debug: () => {},
  };
  if (options.databaseUrl) {
    // Every call is bounded from the client side: the server's statement_timeout cannot fire
    // when the server is frozen (SIGSTOP, a stalled disk or VM) or unreachable.
    const queryTimeoutMs = options.queryTimeoutMs ?? QUERY_TIMEOUT_MS;
    const connectTimeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const knex = knexFactory({
      client: 'pg',
      connection: {
        connectionString: options.databaseUrl,
        statement_timeout: queryTimeoutMs,
        query_timeout: queryTimeoutMs + CLIENT_TIMEOUT_MARGIN_MS,
        connectionTimeoutMillis: connectTimeoutMs,
        keepAlive: true,
      },
      pool: { min: 0, max: options.poolMax ?? 10, validate: connectionIdle },
      acquireConnectionTimeout: connectTimeoutMs,
      ...(knexLog && { log: knexLog }),
    });
    const url = new URL(options.databaseUrl);
    const pool = knex.client as unknown as PoolClient;
    return {
      knex,
      kind: 'postgres',
      location: `${url.hostname}:${url.port || 5432}${url.pathname}`,
      prepared: async <Row>(name: string, sql: string, params: unknown[]) => {
        const connection = await pool.acquireConnection();
        try {
          return (await connection.query({ name, text: sql, values: params })).rows as Row[];
        } finally {
          await pool.releaseConnection(connection);
        }
      },
      listen: postgresListener({
        connectionString: options.databaseUrl,
        connectionTimeoutMillis: connectTimeoutMs,
        query_timeout: queryTimeoutMs + CLIENT_TIMEOUT_MARGIN_MS,
        keepAlive: true,
      }),
      close: () => knex.destroy(),
    };
  }

  const dir = resolve(options.dataDir);
  mkdirSync(dir, { recursive: true });
  const releaseLock = acquireDirectoryLock(dir);
  try {
    const pglite = new PGlite(dir);
    await pglite.waitReady;
    const knex = knexFactory({
      client: ClientPgLite as unknown as typeof Knex.Client,
      dialect: 'postgres',
      connection: () => ({ pglite }) as object,
      ...(knexLog && { log: knexLog }),
    });
    return {
      knex,
      kind: 'pglite',
      location: dir,
      listen: async (channel, onMessage) => {
        const unsubscribe = await pglite.listen(channel, onMessage);
        return async () => {
          if (!pglite.closed) await unsubscribe();
        };
      },
      prepared: async <Row>(_name: string, sql: string, params: unknown[]) =>
        ((await knex.raw(sql.replace(/\$\d+/g, '?'), params as Knex.RawBinding[])) as { rows: Row[] }).rows,
      close: async () => {
        await knex.destroy();
        if (!pglite.closed) await pglite.close();
        releaseLock();
      },
    };
  } catch (err) {
    releaseLock();
    throw err;
  }
}

/**
 * LISTEN on PostgreSQL: one dedicated connection per database handle, whatever the number of
 * channels (the caches' invalidations, the licence stream), so that each process holds one
 * listening connection. A lost connection is made again a second later, one attempt at a
 * time; once back it listens on every channel again and tells each subscriber
 * (`onReconnect`), since what was published meanwhile is lost.
 */
function postgresListener(settings: pg.ClientConfig) {
  const channels = new Map<string, { onMessage: (payload: string) => void; onReconnect: () => void }>();
  let client: pg.Client | undefined;
  /** The channels the current connection listens on. */
  let listened = new Set<string>();
  let connecting: Promise<void> | undefined;
  let retry: NodeJS.Timeout | undefined;
  const schedule = () => {
    if (channels.size === 0 || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      connecting = connect(true);
    }, 1000);
    retry.unref();
  };
  const connect = async (reconnecting: boolean) => {
    // Bounded like the pool (connect and query timeouts), so that an attempt during a freeze
    // fails and the next one follows a second later: one attempt at a time, never a pile.
    const c = new pg.Client(settings);
    client = c;
    listened = new Set();
    c.on('notification', (m) => channels.get(m.channel)?.onMessage(m.payload ?? ''));
    // A connection given up on may still report its end later: only the current one reconnects.
    c.on('error', () => client === c && schedule());
    c.on('end', () => client === c && schedule());
    try {
      await c.connect();
      for (const channel of channels.keys()) {
        await c.query(`listen ${channel}`);
        if (client === c) listened.add(channel);
      }
      if (reconnecting) for (const { onReconnect } of channels.values()) onReconnect();
    } catch {
      c.end().catch(() => {});
      schedule();
    }
  };
  return async (channel: string, onMessage: (payload: string) => void, onReconnect: () => void): Promise<() => Promise<void>> => {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`not a channel name: ${channel}`);
    if (channels.has(channel)) throw new Error(`channel ${channel} has a listener already`);
    channels.set(channel, { onMessage, onReconnect });
    if (!client) connecting = connect(false);
    await connecting;
    // Joined a connection already made (by an earlier listener): listen on it too.
    if (client && !listened.has(channel)) {
      const c = client;
      await c.query(`listen ${channel}`).then(
        () => client === c && listened.add(channel),
        () => schedule(),
      );
    }
    return async () => {
      if (!channels.delete(channel)) return;
      if (channels.size > 0) {
        listened.delete(channel);
        await client?.query(`unlisten ${channel}`).catch(() => {});
        return;
      }
      if (retry) clearTimeout(retry);
      retry = undefined;
      const last = client;
      client = undefined;
      await last?.end().catch(() => {});
    };
  };
}

function acquireDirectoryLock(dir: string): () => void {
  const lockPath = join(dir, 'entgate.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(lockPath, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new Error(
          `the embedded database in ${dir} is in use by process ${holder}; stop it first, or use DATABASE_URL for several processes`,
        );
      }
      rmSync(lockPath, { force: true }); // stale: its process is gone
    }
  }
  throw new Error(`could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Any fixed number: the advisory lock that serialises migrations on one PostgreSQL. */
const MIGRATION_LOCK = 0x656e7467; // 'entg'

/**
 * Applies pending migrations. Several instances starting at once on one PostgreSQL are
 * serialised by an advisory lock held around the whole run (knex's own lock table is created
 * without one, so two first starts on an empty database could both try to create it); a
 * loser polls for it until the winner is done, then finds nothing left to do. knex's lock is still taken
 * inside, and a loser that meets it waits and retries rather than failing start-up.
 */
export async function migrate(db: Database, logger?: Logger): Promise<string[]> {
  // Every start but the first after an upgrade: nothing to do, known without knex's lock and table checks.
  const known = (await migrationSource.getMigrations([])).map((m) => migrationSource.getMigrationName(m));
  const applied = await appliedMigrations(db.knex);
  if (applied.length === known.length && applied.every((name, i) => name === known[i])) return [];
  if (db.kind !== 'postgres') return migrateLatest(db, logger);
  return db.knex.transaction(async (trx) => {
    // Tried, not waited for: a statement blocked on the lock for as long as another instance
    // migrates would run into the client's query timeout.
    for (;;) {
      const { rows } = (await trx.raw('select pg_try_advisory_xact_lock(?) as locked', [MIGRATION_LOCK])) as { rows: { locked: boolean }[] };
      if (rows[0]?.locked) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    return migrateLatest(db, logger);
  });
}

async function migrateLatest(db: Database, logger?: Logger): Promise<string[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const [, applied] = (await db.knex.migrate.latest({ migrationSource })) as [number, string[]];
      if (applied.length > 0) logger?.info({ applied }, 'migrations applied');
      return applied;
    } catch (err) {
      const locked = (err as Error).name === 'MigrationLocked';
      if (!locked || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * The migrations applied (knex_migrations), in order; none when there is no such table. Two
 * catalog lookups: knex's own listing first looks its tables up in information_schema, which
 * costs PGlite a few hundred milliseconds of CPU (at every start, and at every /readyz).
 */
async function appliedMigrations(knex: Knex): Promise<string[]> {
  const table = (await knex.raw("select to_regclass(quote_ident(current_schema()) || '.knex_migrations') is not null as present")) as {
    rows: { present: boolean }[];
  };
  if (table.rows[0]?.present !== true) return [];
  return ((await knex.raw('select name from knex_migrations order by id')) as { rows: { name: string }[] }).rows.map((r) => r.name);
}

/** True when the database answers and its latest migration is this version's latest (as knex's currentVersion). */
export async function migrationsCurrent(db: Database): Promise<boolean> {
  const versions = (await appliedMigrations(db.knex)).map((name) => name.split('_')[0]!).sort();
  return versions.at(-1) === latestMigration.split('_')[0];
}

/** How long /readyz waits for the database: probes (Kubernetes: 1 s by default) want an answer, not a hang. */
const READY_DEADLINE_MS = 2_000;

/**
 * Readiness for /readyz: the database answers within READY_DEADLINE_MS and migrations are current.
 * Concurrent probes share one check, so a frozen database never collects a queue of them.
 */
export function readinessCheck(db: Database, deadlineMs = READY_DEADLINE_MS): () => Promise<{ ok: boolean; checks: Record<string, unknown> }> {
  let pending: Promise<{ ok: boolean; checks: Record<string, unknown> }> | undefined;
  const check = async () => {
    try {
      const current = await migrationsCurrent(db);
      return { ok: current, checks: { database: 'ok', migrations: current ? 'current' : 'pending' } };
    } catch (err) {
      return { ok: false, checks: { database: databaseFault(err) ?? 'error' } };
    }
  };
  return async () => {
    pending ??= check().finally(() => (pending = undefined));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<{ ok: boolean; checks: Record<string, unknown> }>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, checks: { database: `no answer within ${deadlineMs} ms` } }), deadlineMs);
    });
    try {
      return await Promise.race([pending, late]);
    } finally {
      clearTimeout(timer);
    }
  };
}
