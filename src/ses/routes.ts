import express, { Router, type ErrorRequestHandler, type Request, type RequestHandler, type Response } from 'express';
import { callerAddress } from '../http/caller.ts';
import type { IpRange } from '../domain/ip.ts';
import { parseDurationSeconds } from './duration.ts';
import { API_VERSIONS, MAX_DURATION_SECONDS, sesError, type SesResult, type SesService } from './service.ts';

const MAX_BODY = '64kb';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function send(res: Response, result: SesResult): void {
  res.setHeader('Cache-Control', 'no-store');
  if (result.body === undefined) res.status(result.status).end();
  else res.status(result.status).json(result.body);
}

/**
 * The Software Entitlement Service endpoints, as Azure Batch's SDK calls them:
 * `POST /softwareEntitlements` (approve v1/v2, acquire), `POST /softwareEntitlements/{id}`
 * (renew), `DELETE /softwareEntitlements/{id}` (release), each with `?api-version=`. Every
 * error is `{code, message: {lang, value}}`; JSON is accepted with any parameters
 * (`application/json; odata=minimalmetadata`).
 */
export function sesRoutes(ses: SesService, trustedProxies: readonly IpRange[]): Router {
  const r = Router({ strict: false, caseSensitive: false });
  const caller = (req: Request) => callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies);
  const body = express.json({ limit: MAX_BODY, type: () => true, strict: true });

  /** The api-version, or the 400 to answer. */
  const version = (req: Request, res: Response): { name: string; kind: (typeof API_VERSIONS)[string] } | undefined => {
    const v = req.query['api-version'];
    if (typeof v !== 'string' || v === '') {
      send(res, sesError(400, 'MissingApiVersion', 'The api-version query parameter is required.'));
      return undefined;
    }
    const kind = API_VERSIONS[v];
    if (!kind) {
      send(res, sesError(400, 'UnsupportedApiVersion', `The api-version ${v.slice(0, 40)} is not supported.`));
      return undefined;
    }
    return { name: v, kind };
  };

  const invalid = (res: Response, value: string) => send(res, sesError(400, 'EntitlementDenied', value));
  const field = (b: unknown, name: string): string | undefined => {
    const v = (b as Record<string, unknown> | undefined)?.[name];
    return typeof v === 'string' && v.length > 0 ? v : undefined;
  };

  const approve: RequestHandler = async (req, res) => {
    const v = version(req, res);
    if (!v) return;
    const operation = v.kind === 'latest' ? 'acquire' : 'approve';
    const b = req.body as unknown;
    const token = field(b, 'token');
    const applicationId = field(b, 'applicationId');
    const who = caller(req);
    if (b === undefined || typeof b !== 'object' || b === null) {
      ses.recordInvalid(operation, v.name, null, who, 'no request body');
      return invalid(res, 'The request body is missing.');
    }
    if (!token) {
      ses.recordInvalid(operation, v.name, applicationId ?? null, who, 'no token');
      return invalid(res, 'The token is missing.');
    }
    if (!applicationId || applicationId.length > 256) {
      ses.recordInvalid(operation, v.name, null, who, 'no applicationId');
      return invalid(res, 'The applicationId is missing.');
    }
    let durationSeconds: number | undefined;
    if (v.kind === 'latest') {
      const duration = field(b, 'duration');
      durationSeconds = duration === undefined ? undefined : parseDurationSeconds(duration);
      if (durationSeconds === undefined || durationSeconds > MAX_DURATION_SECONDS) {
        ses.recordInvalid(operation, v.name, applicationId, who, 'no, unparseable or too long duration');
        return invalid(res, `The duration is missing, is not an ISO 8601 duration, or is longer than ${MAX_DURATION_SECONDS} seconds.`);
      }
    }
    send(res, await ses.approve(v.name, v.kind, { token, applicationId, ...(durationSeconds !== undefined && { durationSeconds }) }, who));
  };

  const latestOnly = (req: Request, res: Response) => {
    const v = version(req, res);
    if (!v) return undefined;
    if (v.kind !== 'latest') {
      send(res, sesError(400, 'UnsupportedApiVersion', `The api-version ${v.name} does not renew or release entitlements.`));
      return undefined;
    }
    return v;
  };

  r.post('/softwareEntitlements', body, approve);
  r.post('/softwareEntitlements/:id', body, async (req, res) => {
    const v = latestOnly(req, res);
    if (!v) return;
    const id = String(req.params.id);
    if (!UUID.test(id)) return send(res, sesError(404, 'NotFound', 'No such entitlement.'));
    const duration = field(req.body, 'duration');
    const durationSeconds = duration === undefined ? undefined : parseDurationSeconds(duration);
    if (durationSeconds === undefined || durationSeconds > MAX_DURATION_SECONDS) {
      ses.recordInvalid('renew', v.name, null, caller(req), 'no, unparseable or too long duration');
      return invalid(res, `The duration is missing, is not an ISO 8601 duration, or is longer than ${MAX_DURATION_SECONDS} seconds.`);
    }
    send(res, await ses.renew(v.name, id.toLowerCase(), durationSeconds, caller(req)));
  });
  r.delete('/softwareEntitlements/:id', async (req, res) => {
    const v = latestOnly(req, res);
    if (!v) return;
    const id = String(req.params.id);
    if (!UUID.test(id)) return send(res, sesError(404, 'NotFound', 'No such entitlement.'));
    send(res, await ses.release(v.name, id.toLowerCase(), caller(req)));
  });
  // Anything else under the SES path (a doubled slash, an extra segment): the protocol's 404.
  r.all(/softwareEntitlements/i, (_req, res) => send(res, sesError(404, 'NotFound', 'No such resource.')));
  r.use(sesBodyErrors);
  return r;
}

/** Body parser failures in the protocol's shape: 413 past the cap, 400 for anything unreadable. */
const sesBodyErrors: ErrorRequestHandler = (err, _req, res, next) => {
  const type = (err as { type?: string }).type;
  if (type === 'entity.too.large') return send(res, sesError(413, 'EntitlementDenied', 'The request body is too large.'));
  if (typeof type === 'string') return send(res, sesError(400, 'EntitlementDenied', 'The request body is not valid JSON.'));
  next(err);
};
