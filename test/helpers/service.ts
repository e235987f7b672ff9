import { pino } from 'pino';
import { loadConfig } from '../../config/load.ts';
import { createLogger, type Logger } from '../../src/lib/logger.ts';
import { startService, type RunningService } from '../../src/service.ts';
import { before, after } from 'node:test';
import { databaseTargets, type DatabaseTarget, type TestDatabase } from './databases.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
export const AUTH = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** A service in this process on a free loopback port, with silent logs unless given a logger. */
export async function startTestService(db: TestDatabase, env: Record<string, string> = {}, logger: Logger = pino({ level: 'silent' })): Promise<RunningService> {
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
    ENTGATE_AUDIT_FLUSH_MS: '20',
    ...db.env,
    ...env,
  });
  return startService(config, logger);
}

/** A logger that keeps its warnings and errors, for tests that read what a service logged. */
export function recordingLogger(): { logger: Logger; lines: () => { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const logger = createLogger('warn', { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) });
  return { logger, lines: () => [...lines] };
}

/**
 * A service for the surrounding `describe`, started before its tests and closed (with its
 * database dropped) after them: `const fixture = serviceFixture(); ... fixture.svc`.
 */
export function serviceFixture(env: Record<string, string> = {}, target: DatabaseTarget = databaseTargets[0]!) {
  let db: TestDatabase | undefined;
  let svc: RunningService | undefined;
  before(async () => {
    db = await target.create();
    svc = await startTestService(db, env);
  });
  after(async () => {
    await svc?.close();
    await db?.drop();
  });
  return {
    get svc(): RunningService {
      return svc!;
    },
  };
}
