import type { IncomingMessage, ServerResponse } from 'node:http';
import { callerAddress } from '../lib/http/caller.ts';
import { onLeavingAdmission } from '../lib/http/long-lived.ts';
import { clientOfAddress, type IpRange } from '../lib/ip.ts';

/**
 * Which front door a request came in by. Each has its own concurrency budget, so that what
 * one suffers (slow bodies on SES or leases, a heavy admin import) cannot take another's
 * places: above all the rUS check's, where a 503 means "no access" to Conary.
 */
export type Door = 'check' | 'ses' | 'leases' | 'other';

/** The doors whose requests carry bodies from untrusted networks: body deadline and per-client cap. */
const PUBLIC_BODY_DOORS: ReadonlySet<Door> = new Set(['ses', 'leases']);

export interface FrontDoorLimits {
  /** Requests in flight per door (ENTGATE_MAX_CONCURRENT_REQUESTS). */
  maxConcurrent: number;
  /** How long a body on SES or /v1 may take to arrive once its headers have (ENTGATE_BODY_TIMEOUT_MS). */
  bodyTimeoutMs: number;
  /** Requests in flight from one client address on SES and /v1; 0: no cap (ENTGATE_MAX_REQUESTS_PER_CLIENT). */
  maxPerClient: number;
  trustedProxies: readonly IpRange[];
}

/** The door of a request path: the check's paths, SES, `/v1`, or everything else. */
export function doorOf(path: string, checkPaths: ReadonlySet<string>, isSesPath: (path: string) => boolean): Door {
  if (checkPaths.has(path)) return 'check';
  if (isSesPath(path)) return 'ses';
  if (path === '/v1' || path.startsWith('/v1/')) return 'leases';
  return 'other';
}

/** Whose requests count together: an IPv4 address, or an IPv6 address's /64 (one client usually holds it whole). */
function clientOf(req: IncomingMessage, trustedProxies: readonly IpRange[]): string {
  const ip = callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies);
  return ip ? clientOfAddress(ip) : 'unknown';
}

const hasBody = (req: IncomingMessage) => req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

/** A refusal before the request is handled, in the door's own error format (SES: `{code, message: {lang, value}}`). */
function refuse(res: ServerResponse, door: Door, status: number, code: string, message: string): void {
  const body = JSON.stringify(door === 'ses' ? { code, message: { lang: 'en-us', value: message } } : { code, message });
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    // The body, if any, is not read: the connection ends with this answer.
    Connection: 'close',
    ...(status !== 408 && { 'Retry-After': '1' }),
  });
  res.end(body);
}

/**
 * Admission at the front doors, before any handler runs: a budget of requests in flight per
 * door (past it a fast 503, as before, but only for that door); on SES and `/v1`, a cap per
 * client address (429) and a deadline for the body (408, the connection closed), independent
 * of the long ENTGATE_REQUEST_TIMEOUT_MS. Also keeps the responses in flight, so that a
 * shutdown can ask each one still to be answered to close its connection.
 */
export class FrontDoors {
  private readonly inFlight: Record<Door, number> = { check: 0, ses: 0, leases: 0, other: 0 };
  private readonly perClient = new Map<string, number>();
  private readonly open = new Set<ServerResponse>();
  private closing = false;

  constructor(private readonly limits: FrontDoorLimits) {}

  /** Counts the request in, or answers it (503, 429) and returns false. */
  admit(req: IncomingMessage, res: ServerResponse, door: Door): boolean {
    if (this.closing) res.setHeader('Connection', 'close');
    // Shed load rather than queue without bound: a fast 503 past the door's budget.
    if (this.inFlight[door] >= this.limits.maxConcurrent) {
      res.writeHead(503, { 'Retry-After': '1', 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
      res.end('busy: try again\n');
      return false;
    }
    let client: string | undefined;
    if (PUBLIC_BODY_DOORS.has(door)) {
      if (this.limits.maxPerClient > 0) {
        client = clientOf(req, this.limits.trustedProxies);
        const held = this.perClient.get(client) ?? 0;
        if (held >= this.limits.maxPerClient) {
          refuse(res, door, 429, 'too_many_requests', 'too many requests in flight from this address: try again');
          return false;
        }
        this.perClient.set(client, held + 1);
      }
      if (hasBody(req)) this.bodyDeadline(req, res, door);
    }
    this.inFlight[door]++;
    this.open.add(res);
    let counted = true;
    const leave = () => {
      if (!counted) return;
      counted = false;
      this.inFlight[door]--;
      if (client !== undefined) {
        const left = this.perClient.get(client)! - 1;
        if (left === 0) this.perClient.delete(client);
        else this.perClient.set(client, left);
      }
    };
    // A long-lived stream (only /v1 serves any) leaves the counts once established (lib/http/long-lived.ts).
    if (door === 'leases') onLeavingAdmission(res, leave);
    // 'close' follows every response, finished or cut off, exactly once.
    res.once('close', () => {
      this.open.delete(res);
      leave();
    });
    return true;
  }

  /**
   * A body that has not arrived in full within the deadline is answered 408 and its
   * connection closed (Node does so after an answer marked `Connection: close`): a client
   * sending a byte a second holds its place for seconds, not for the request timeout.
   */
  private bodyDeadline(req: IncomingMessage, res: ServerResponse, door: Door): void {
    const timer = setTimeout(() => {
      if (req.complete || res.headersSent) return;
      refuse(res, door, 408, 'body_timeout', `the request body did not arrive within ${this.limits.bodyTimeoutMs} ms`);
    }, this.limits.bodyTimeoutMs);
    res.once('close', () => clearTimeout(timer));
  }

  /** From now on every answer, those in flight included, closes its connection after it. */
  close(): void {
    this.closing = true;
    for (const res of this.open) if (!res.headersSent) res.setHeader('Connection', 'close');
  }

  /** Requests in flight per door (for tests and /healthz). */
  counts(): Readonly<Record<Door, number>> {
    return { ...this.inFlight };
  }
}
