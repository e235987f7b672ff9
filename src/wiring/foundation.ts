import type { Config } from '../../config/settings.ts';
import { ConfigError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { createKeyHasher, type KeyHasher } from '../domain/virtual-key.ts';
import { openDatabase, migrate, migrationsCurrent, type Database } from '../store/db.ts';
import { checkKeySecret, loadOrCreateStoredSecret } from '../store/instance-secret.ts';
import { InvalidationBus, type Invalidation } from '../store/invalidation-bus.ts';
import type { Lifecycle } from './lifecycle.ts';

/** What every front door stands on: the database, the key hasher and the invalidation bus. */
export interface Foundation {
  config: Config;
  logger: Logger;
  life: Lifecycle;
  db: Database;
  hashKey: KeyHasher;
  bus: InvalidationBus;
  /** Adds a listener for changes made here or heard from another instance. */
  onInvalidate(listener: (change: Invalidation) => void): void;
  /** One audit writer's queue and batching settings (every event table uses the same). */
  eventWriter: { maxQueue: number; batchSize: number; flushMs: number };
}

/**
 * Opens the database (closed last), brings its schema up to date (or refuses a stale one),
 * settles the key secret, and starts listening for invalidations.
 */
export async function openFoundation(config: Config, logger: Logger, life: Lifecycle): Promise<Foundation> {
  const db = await life.acquire(
    'database',
    () =>
      openDatabase({
        databaseUrl: config.databaseUrl,
        dataDir: config.dataDir,
        poolMax: config.databasePoolMax,
        queryTimeoutMs: config.databaseQueryTimeoutMs,
        connectTimeoutMs: config.databaseConnectTimeoutMs,
        logger,
      }),
    (d) => d.close(),
  );
  logger.info({ database: db.kind, location: db.location }, 'database opened');
  if (config.migrateOnStart) await migrate(db, logger);
  else if (!(await migrationsCurrent(db))) {
    throw new ConfigError('the database schema is not current and ENTGATE_MIGRATE_ON_START=false: run `entgate migrate` first');
  }
  const hashKey = await settleKeySecret(config, db);
  const listeners: ((change: Invalidation) => void)[] = [];
  const bus = new InvalidationBus(db, logger, (change) => {
    for (const listener of listeners) listener(change);
  });
  await life.acquire('invalidation bus', () => bus.start(), () => bus.close());
  return {
    config,
    logger,
    life,
    db,
    hashKey,
    bus,
    onInvalidate: (listener) => listeners.push(listener),
    eventWriter: { maxQueue: config.auditQueueMax, batchSize: config.auditBatchSize, flushMs: config.auditFlushMs },
  };
}

/**
 * The hasher of virtual keys. One transaction: a secret generated for a database whose keys
 * were hashed with another one is not left behind when start-up is refused.
 */
function settleKeySecret(config: Config, db: Database): Promise<KeyHasher> {
  return db.knex.transaction(async (trx) => {
    const hasher = createKeyHasher(config.keySecret ?? (await loadOrCreateStoredSecret(trx, 'key_secret')));
    if ((await checkKeySecret(trx, hasher)) === 'mismatch') {
      throw new ConfigError(
        `invalid configuration: ${config.keySecret === undefined ? 'ENTGATE_KEY_SECRET is not set, and the secret stored in the database' : 'ENTGATE_KEY_SECRET'} ` +
          "is not the secret this database's virtual keys were hashed with: every stored key would be unknown. " +
          'Set the secret they were made with; to keep this one and issue every key again, run `entgate key-secret accept` first.',
      );
    }
    return hasher;
  });
}
