import { pino } from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { startService, type RunningService } from '../../src/service.ts';
import type { TestDatabase } from './databases.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
export const AUTH = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** A service in this process on a free loopback port, with silent logs. */
export async function startTestService(db: TestDatabase, env: Record<string, string> = {}): Promise<RunningService> {
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
    ENTGATE_AUDIT_FLUSH_MS: '20',
    ...db.env,
    ...env,
  });
  return startService(config, pino({ level: 'silent' }));
}
