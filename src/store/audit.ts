import type { Knex } from 'knex';
import type { Logger } from '../lib/logger.ts';
import type { CheckEvent } from './check-events.ts';

export interface AuditQuery {
  /** Events with an id below this (the previous page's nextCursor): newest first. */
  before?: number;
  /** Events with an id above this, oldest first (`--follow`, exports). */
  after?: number;
  keyHint?: string;
  server?: string;
  decision?: 'granted' | 'denied' | 'invalid';
  since?: Date;
  until?: Date;
  limit: number;
}

/** A check event as stored: with its id. */
export type AuditEvent = CheckEvent & { id: number };

interface Row {
  id: number;
  occurred_at: Date;
  decision: CheckEvent['decision'];
  reason: string | null;
  server: string | null;
  class: string | null;
  key_hint: string | null;
  virtual_key_id: number | null;
  remote_ip: string | null;
  caller_ip: string | null;
  resolver: string | null;
  latency_us: number;
}

const toEvent = (r: Row): AuditEvent => ({
  id: r.id,
  occurredAt: r.occurred_at,
  decision: r.decision,
  reason: r.reason,
  server: r.server,
  class: r.class,
  keyHint: r.key_hint,
  virtualKeyId: r.virtual_key_id,
  remoteIp: r.remote_ip,
  callerIp: r.caller_ip,
  resolver: r.resolver,
  latencyUs: r.latency_us,
});

/** The rUS check's audit trail (check_events): filtered pages by id, and retention. */
export class AuditRepo {
  constructor(private readonly knex: Knex) {}

  async list(q: AuditQuery): Promise<AuditEvent[]> {
    let query = this.knex<Row>('check_events').select('*').limit(q.limit);
    if (q.after !== undefined) query = query.where('id', '>', q.after).orderBy('id', 'asc');
    else query = query.orderBy('id', 'desc');
    if (q.before !== undefined) query = query.where('id', '<', q.before);
    // Hints are stored as shown (`w45t…`); the ellipsis may be left out.
    if (q.keyHint !== undefined) query = query.where('key_hint', q.keyHint.endsWith('…') ? q.keyHint : `${q.keyHint}…`);
    if (q.server !== undefined) query = query.where('server', q.server);
    if (q.decision !== undefined) query = query.where('decision', q.decision);
    if (q.since !== undefined) query = query.where('occurred_at', '>=', q.since);
    if (q.until !== undefined) query = query.where('occurred_at', '<', q.until);
    return ((await query) as Row[]).map(toEvent);
  }

  /**
   * Deletes events older than `days` from check_events, token_events, lease_events and admin_events, in
   * batches of `batch` rows per statement so that no long lock or huge transaction results.
   * Returns how many rows went.
   */
  async purge(days: number, batch = 5000, maxBatches = 200): Promise<number> {
    let total = 0;
    for (const table of ['check_events', 'token_events', 'lease_events', 'admin_events']) {
      for (let i = 0; i < maxBatches; i++) {
        const { rows } = (await this.knex.raw(
          `with gone as (
             delete from ${table} where id in (
               select id from ${table} where occurred_at < clock_timestamp() - make_interval(days => ?) limit ?)
             returning 1)
           select count(*)::int as n from gone`,
          [days, batch],
        )) as { rows: { n: number }[] };
        total += rows[0]!.n;
        if (rows[0]!.n < batch) break;
      }
    }
    return total;
  }
}

/** Runs the purge every `intervalMs` (failures logged, never thrown); returns the stop function. */
export function startRetention(repo: AuditRepo, days: number, intervalMs: number, logger: Logger): () => Promise<void> {
  let running: Promise<unknown> | undefined;
  const run = () => {
    running ??= repo
      .purge(days)
      .then(
        (n) => {
          if (n > 0) logger.info({ deleted: n, olderThanDays: days }, 'audit events purged');
        },
        (err: Error) => logger.warn({ err: err.message }, 'audit purge failed; it runs again later'),
      )
      .finally(() => {
        running = undefined;
      });
  };
  const first = setTimeout(run, 10_000).unref();
  const timer = setInterval(run, intervalMs).unref();
  return async () => {
    clearTimeout(first);
    clearInterval(timer);
    await running;
  };
}
