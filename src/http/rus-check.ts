import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CheckService } from '../domain/check-service.ts';
import type { CheckEvent } from '../store/check-events.ts';
import { parseCheckQuery } from './rus-query.ts';
import { callerAddress } from '../lib/http/caller.ts';
import { ipInRanges, type IpRange } from '../lib/ip.ts';

export interface RusCheckHandlerDeps {
  checkService: CheckService;
  recordEvent: (event: CheckEvent) => void;
  /** True while the server drains for shutdown: answers then ask clients to reconnect. */
  isClosing: () => boolean;
  /** Who may ask (the rUS hosts); empty: anyone. */
  allowedCallers: readonly IpRange[];
  trustedProxies: readonly IpRange[];
}

/**
 * The rUS check on plain node:http, in front of express: this is the hot path, and a
 * Conary repository asks on every entitlement it sees. Answers:
 * 200 with the entitlement document, 404 with an empty body (denied, for whatever reason:
 * the reason is recorded, never returned), 400 with a one-line reason (malformed request),
 * 405 for a method other than GET or HEAD.
 */
export function createRusCheckHandler(deps: RusCheckHandlerDeps) {
  return function handleRusCheck(req: IncomingMessage, res: ServerResponse, query: string): void {
    const startedNs = process.hrtime.bigint();
    if (deps.isClosing()) res.setHeader('Connection', 'close');
    res.setHeader('Cache-Control', 'no-store');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('method not allowed: the check is GET\n');
      return;
    }
    const caller = callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], deps.trustedProxies);
    const callerIp = caller?.toString() ?? null;
    // Not one of the rUS hosts: refused before anything is looked up.
    if (deps.allowedCallers.length > 0 && (!caller || !ipInRanges(caller, deps.allowedCallers))) {
      return refuse(deps, res, startedNs, callerIp, 403, 'caller_not_allowed', 'this address may not ask for entitlement checks\n');
    }
    const parsed = parseCheckQuery(query);
    if (!parsed.ok) return refuse(deps, res, startedNs, callerIp, 400, parsed.reason, `${parsed.reason}\n`);
    deps.checkService.check(parsed.request, callerIp, startedNs).then(
      (answer) => {
        if (answer.status === 200) {
          res.writeHead(200, { 'Content-Type': 'application/xml; charset=utf-8', 'Content-Length': answer.document.length });
          res.end(answer.document);
        } else {
          res.writeHead(404, { 'Content-Length': 0 });
          res.end();
        }
      },
      // check() never rejects by design; should it ever, the answer is still a denial.
      () => {
        if (!res.headersSent) res.writeHead(404, { 'Content-Length': 0 });
        res.end();
      },
    );
  };
}

/** A request refused before any lookup: recorded as `invalid` with its reason, then answered. */
function refuse(
  deps: RusCheckHandlerDeps,
  res: ServerResponse,
  startedNs: bigint,
  callerIp: string | null,
  status: 400 | 403,
  reason: string,
  body: string,
): void {
  deps.recordEvent({
    occurredAt: new Date(),
    server: null,
    class: null,
    keyHint: null,
    virtualKeyId: null,
    remoteIp: null,
    callerIp,
    decision: 'invalid',
    reason,
    resolver: null,
    latencyUs: Number((process.hrtime.bigint() - startedNs) / 1000n),
  });
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(body);
}
