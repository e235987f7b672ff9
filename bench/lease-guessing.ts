/**
 * Issue 12, point 9: how many wrong virtual keys `POST /v1/leases` takes from one address, and
 * whether the right key is then still granted. `node --import tsx bench/lease-guessing.ts
 * [seconds]`: an in-process entgate on a throwaway PGlite directory with the default guessing
 * budget, one client sending wrong keys one after another for the given time (default 10 s),
 * then the right key. Prints wrong keys sent, per second, the budget, and the right key's answer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../config/load.ts';
import { startService } from '../src/service.ts';

const seconds = Number(process.argv[2] ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'entgate-guessing-'));
const ADMIN = 'bench-admin-token-0123456789';
const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', ENTGATE_ADMIN_TOKEN: ADMIN, DATA_DIR: join(dir, 'data') });
const svc = await startService(config, pino({ level: 'silent' }));
const post = async (path: string, body: unknown, admin = false) => {
  const res = await fetch(`${svc.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(admin && { Authorization: `Bearer ${ADMIN}` }) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};
try {
  const ent = await post('/admin/v1/entitlements', { server: 'rm.example.com', key: 'real-entitlement' }, true);
  await post('/admin/v1/virtual-keys', { entitlementId: ent.body.id, key: 'the-right-key-0001', maxConcurrentLeases: 5 }, true);
  const started = Date.now();
  let sent = 0;
  const statuses = new Map<number, number>();
  while (Date.now() - started < seconds * 1000) {
    const r = await post('/v1/leases', { virtualKey: `wrong-key-${sent}`, clientId: 'guesser' });
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    sent++;
  }
  const elapsed = (Date.now() - started) / 1000;
  const right = await post('/v1/leases', { virtualKey: 'the-right-key-0001', clientId: 'guesser' });
  await svc.events.flush();
  // Wrong keys looked up (unknown_key) and refused unlooked (guess_budget_exceeded), as audited.
  const audited = (await svc.db.knex('check_events').where({ resolver: 'lease-endpoint' }).groupBy('reason').select('reason').count({ n: '*' })) as {
    reason: string;
    n: string | number;
  }[];
  console.log(
    JSON.stringify({
      wrongKeysSent: sent,
      perSecond: Math.round(sent / elapsed),
      statuses: Object.fromEntries(statuses),
      guessBudget: config.guessBudget,
      rightKeyAfterwards: `${right.status} ${right.body.code ?? right.body.leaseId}`,
      audited: Object.fromEntries(audited.map((r) => [r.reason, Number(r.n)])),
    }),
  );
} finally {
  await svc.close();
  rmSync(dir, { recursive: true, force: true });
}
