import type { Knex } from 'knex';
import type { RequestHandler } from 'express';
import { rowsJson, type EventTable } from '../store/check-events.ts';
import { AppError } from '../lib/errors.ts';
import { callerAddress } from '../lib/http/caller.ts';
import type { IpRange } from '../lib/ip.ts';
import type { MatchedRoute } from './scoped-router.ts';
import type { Principal } from './scopes.ts';

/** One admin write: who (the credential's name), what (method, route, target), and the answer's status. */
export interface AdminEvent {
  occurredAt: Date;
  /** The credential's name (`bootstrap` for ENTGATE_ADMIN_TOKEN); null when no credential was accepted. */
  actor: string | null;
  /** The stored credential's id (the wire and the column keep the name tokenId / token_id). */
  tokenId: number | null;
  method: string;
  /** The route as declared (`/admin/v1/virtual-keys/:id`), never the raw URL. */
  route: string;
  /** The route's parameters (`id=7`), or what a create made (`id=8`); never a body, so never a key. */
  target: string | null;
  /** The answer's status; 499 when the client went away before it was sent. */
  status: number;
  requestId: string | null;
  callerIp: string | null;
  /** The row claimed for this write before it ran (see claimAdminEvent): the outcome updates it. */
  id?: number;
}

/** The status of a claimed row until its write's outcome is recorded (HTTP 102 Processing). */
export const OUTCOME_PENDING = 102;

const COLUMNS = ['occurred_at', 'actor', 'token_id', 'method', 'route', 'target', 'status', 'request_id', 'caller_ip'] as const;

/**
 * Outcomes of claimed writes update their row (status, and the target a create made); every
 * other event (refused before its route ran: 401, 403, 400, 503) is a new row.
 */
export const ADMIN_EVENTS: EventTable<AdminEvent> = {
  table: 'admin_events',
  columns: COLUMNS,
  sql: `with r as (select * from json_populate_recordset(null::admin_events, ?::json)),
        claimed as (update admin_events a set status = r.status, target = r.target from r where r.id is not null and a.id = r.id)
        insert into admin_events (${COLUMNS.join(', ')}) select ${COLUMNS.join(', ')} from r where r.id is null`,
  toRow: (e) => ({
    id: e.id ?? null,
    occurred_at: e.occurredAt,
    actor: e.actor,
    token_id: e.tokenId,
    method: e.method,
    route: e.route,
    target: e.target,
    status: e.status,
    request_id: e.requestId,
    caller_ip: e.callerIp,
  }),
};

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** How long an admin whose write could not be recorded is asked to wait (seconds). */
const RETRY_AFTER_S = 5;

/**
 * Writes an admin write's row before the write runs, awaited (not queued), and returns its id.
 * A write that cannot be recorded is therefore never done: whatever happens after, the trail
 * names it (with status 102 until its outcome is written).
 */
export function claimAdminEvent(knex: Knex): (e: AdminEvent) => Promise<number> {
  const sql = `insert into admin_events (${COLUMNS.join(', ')}) select ${COLUMNS.join(', ')}
               from json_populate_recordset(null::admin_events, ?::json) returning id`;
  return async (e) => {
    const { rows } = (await knex.raw(sql, [rowsJson([ADMIN_EVENTS.toRow(e)])])) as { rows: { id: number | string }[] };
    return Number(rows[0]!.id);
  };
}

/**
 * Records every admin write when its answer is sent: accepted, refused by scope (403) or by
 * authentication (401), failed validation. Mounted before authentication, so that refused
 * attempts are recorded too. The route and its parameters are those the scope check saw
 * (`res.locals.matchedRoute`); a request refused before routing shows the mount point and `*`.
 */
export function recordAdminWrites(
  record: (e: AdminEvent) => void,
  trustedProxies: readonly IpRange[],
  claim?: (e: AdminEvent) => Promise<number>,
): RequestHandler {
  return (req, res, next) => {
    if (READS.has(req.method)) return next();
    const base = req.baseUrl;
    let id: number | undefined;
    const event = (status: number): AdminEvent => {
      const principal = res.locals.principal as Principal | undefined;
      const matched = res.locals.matchedRoute as MatchedRoute | undefined;
      return {
        occurredAt: new Date(),
        actor: principal?.name ?? null,
        tokenId: principal?.credentialId ?? null,
        method: req.method,
        route: matched?.route ?? `${base}/*`,
        target: (res.locals.auditTarget as string | undefined) ?? targetOf(matched?.params),
        status,
        requestId: (res.locals.requestId as string | undefined) ?? null,
        callerIp: callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies)?.toString() ?? null,
        ...(id !== undefined && { id }),
      };
    };
    // Called by the scope check once a write is allowed, before its handler (claimWrite).
    if (claim) {
      res.locals.claimAuditRow = async () => {
        try {
          id = await claim(event(OUTCOME_PENDING));
        } catch (err) {
          res.setHeader('Retry-After', String(RETRY_AFTER_S));
          throw new AppError(503, 'audit_unavailable', 'the admin audit cannot be written now: nothing was changed; try again later', {
            cause: err,
          });
        }
      };
    }
    // 'close' also follows an answer cut off (the client went away): a write may have been
    // done all the same, so it is recorded, with status 499 when no answer was sent.
    // A streamed answer (200) tells its outcome in its last line: `outcomeStatus`.
    res.once('close', () => record(event(res.writableFinished ? ((res.locals.outcomeStatus as number | undefined) ?? res.statusCode) : 499)));
    next();
  };
}

/** The scope check's last step for a write: its audit row, claimed before the handler runs. */
export async function claimWrite(method: string, locals: Record<string, unknown>): Promise<void> {
  if (READS.has(method)) return;
  await (locals.claimAuditRow as (() => Promise<void>) | undefined)?.();
}

function targetOf(params: Record<string, string | string[]> | undefined): string | null {
  const entries = Object.entries(params ?? {});
  return entries.length === 0 ? null : entries.map(([k, v]) => `${k}=${String(v).slice(0, 200)}`).join(' ');
}

export interface AdminEventQuery {
  before?: number;
  after?: number;
  actor?: string;
  since?: Date;
  limit: number;
}

interface Row {
  id: number | string;
  occurred_at: Date;
  actor: string | null;
  token_id: number | string | null;
  method: string;
  route: string;
  target: string | null;
  status: number;
  request_id: string | null;
  caller_ip: string | null;
}

/** The admin audit trail, newest first (or oldest first from `after`). */
export async function listAdminEvents(knex: Knex, q: AdminEventQuery): Promise<(AdminEvent & { id: number })[]> {
  let query = knex<Row>('admin_events').select('*').limit(q.limit);
  query = q.after !== undefined ? query.where('id', '>', q.after).orderBy('id', 'asc') : query.orderBy('id', 'desc');
  if (q.before !== undefined) query = query.where('id', '<', q.before);
  if (q.actor !== undefined) query = query.where('actor', q.actor);
  if (q.since !== undefined) query = query.where('occurred_at', '>=', q.since);
  return ((await query) as Row[]).map((r) => ({
    id: Number(r.id),
    occurredAt: r.occurred_at,
    actor: r.actor,
    tokenId: r.token_id === null ? null : Number(r.token_id),
    method: r.method,
    route: r.route,
    target: r.target,
    status: r.status,
    requestId: r.request_id,
    callerIp: r.caller_ip,
  }));
}
