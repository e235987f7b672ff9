import { AppError } from './errors.ts';

/** What a client told "the database is unavailable" is asked to wait before trying again. */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

/** The database cannot answer now (stopped, frozen, unreachable, out of connections): 503, try again. */
export class DatabaseUnavailableError extends AppError {
  constructor(cause: unknown) {
    super(503, 'database_unavailable', 'the database is not answering; try again shortly', {
      cause,
      expose: true,
      headers: { 'Retry-After': String(DATABASE_RETRY_AFTER_SECONDS) },
    });
    this.name = 'DatabaseUnavailableError';
  }
}

/** Node's socket errors: the server is down, unreachable, or cut the connection. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * SQLSTATEs that say the server cannot serve now rather than that the request is wrong: class
 * 08 (connection exception), 53 (insufficient resources: too many connections, out of memory or
 * disk), 57P01-57P03 (shut down, crashed, starting up) and 57014 (a statement cut by
 * statement_timeout).
 */
const SQLSTATE = /^(08[0-9A-Z]{3}|53[0-9A-Z]{3}|57P0[123]|57014)$/;

/**
 * What `pg` and knex say when the client gave up: pg's own query and connect timeouts, a
 * connection that ended under a query, a client already broken; knex's pool acquire timeout.
 */
const CLIENT_MESSAGE =
  /^(Query read timeout|timeout expired|Connection terminated( unexpectedly| due to connection timeout)?|Client has encountered a connection error and is not queryable|Client was closed and is not queryable)$/;

/**
 * Why an error means the database could not answer (as opposed to refusing the request): the
 * driver's and the pool's timeouts, lost or refused connections, a server shutting down; or
 * undefined. Looks through `cause` chains and aggregated errors (a host name with several
 * addresses). The reason is a code or the driver's own words, never the SQL (knex puts the
 * statement with its bindings in front of the message), so it may be logged.
 */
export function databaseFault(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 5) return undefined;
  if (err instanceof DatabaseUnavailableError) return databaseFault(err.cause, depth + 1) ?? 'database unavailable';
  const e = err as { name?: unknown; code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  if (e.name === 'KnexTimeoutError') return 'pool acquire timeout';
  if (typeof e.code === 'string' && (SOCKET_CODES.has(e.code) || SQLSTATE.test(e.code))) return e.code;
  if (typeof e.message === 'string') {
    const at = e.message.lastIndexOf(' - ');
    const tail = at < 0 ? e.message : e.message.slice(at + 3);
    if (CLIENT_MESSAGE.test(tail)) return tail;
  }
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const reason = databaseFault(inner, depth + 1);
      if (reason !== undefined) return reason;
    }
  }
  return databaseFault(e.cause, depth + 1);
}
