import type { Knex } from 'knex';
import type { RequestHandler } from 'express';
import type { EventTable } from '../store/check-events.ts';
import { callerAddress } from '../http/caller.ts';
import type { IpRange } from '../domain/ip.ts';
import type { MatchedRoute } from './scoped-router.ts';
import type { Principal } from './scopes.ts';

/** One admin write: who (the token's name), what (method, route, target), and the answer's status. */
export interface AdminEvent {
  occurredAt: Date;
  /** The token's name (`bootstrap` for ENTGATE_ADMIN_TOKEN); null when no token was accepted. */
  actor: string | null;
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
}

export const ADMIN_EVENTS: EventTable<AdminEvent> = {
  table: 'admin_events',
  columns: ['occurred_at', 'actor', 'token_id', 'method', 'route', 'target', 'status', 'request_id', 'caller_ip'],
  toRow: (e) => ({
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

/**
 * Records every admin write when its answer is sent: accepted, refused by scope (403) or by
 * authentication (401), failed validation. Mounted before authentication, so that refused
 * attempts are recorded too. The route and its parameters are those the scope check saw
 * (`res.locals.matchedRoute`); a request refused before routing shows the mount point and `*`.
 */
export function recordAdminWrites(record: (e: AdminEvent) => void, trustedProxies: readonly IpRange[]): RequestHandler {
  return (req, res, next) => {
    if (READS.has(req.method)) return next();
    const base = req.baseUrl;
    // 'close' also follows an answer cut off (the client went away): a write may have been
    // done all the same, so it is recorded, with status 499 when no answer was sent.
    res.once('close', () => {
      const principal = res.locals.principal as Principal | undefined;
      const matched = res.locals.matchedRoute as MatchedRoute | undefined;
      record({
        occurredAt: new Date(),
        actor: principal?.name ?? null,
        tokenId: principal?.tokenId ?? null,
        method: req.method,
        route: matched?.route ?? `${base}/*`,
        target: (res.locals.auditTarget as string | undefined) ?? targetOf(matched?.params),
        // A streamed answer (200) tells its outcome in its last line: `outcomeStatus`.
        status: res.writableFinished ? ((res.locals.outcomeStatus as number | undefined) ?? res.statusCode) : 499,
        requestId: (res.locals.requestId as string | undefined) ?? null,
        callerIp: callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies)?.toString() ?? null,
      });
    });
    next();
  };
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
