import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../lib/logger.ts';
import { callerAddress } from '../lib/http/caller.ts';
import type { IpAddress, IpRange } from '../lib/ip.ts';
import { parseDurationSeconds } from './duration.ts';
import { API_VERSIONS, MAX_DURATION_SECONDS, type SesOutcome, type SesService } from './service.ts';
import { DATABASE_RETRY_AFTER_SECONDS, databaseFault } from '../lib/db-faults.ts';

const MAX_BODY_BYTES = 64 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BASE = /^\/softwareentitlements\/?$/i;
const ONE = /^\/softwareentitlements\/([^/]+)\/?$/i;

/** True for a path the SES handler answers (anything naming softwareEntitlements, so that a malformed one gets the protocol's 404). */
export function isSesPath(path: string): boolean {
  return /softwareentitlements/i.test(path);
}

/** An SES answer: status and body, the body in the protocol's own shape. */
export interface SesResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export const sesError = (status: number, code: string, value: string): SesResult => ({
  status,
  body: { code, message: { lang: 'en-us', value } },
});

/** What the protocol answers for each outcome of the service. */
export function sesAnswer(outcome: SesOutcome): SesResult {
  switch (outcome.kind) {
    case 'denied':
      return sesError(403, 'EntitlementDenied', `Entitlement for ${outcome.applicationId} was denied.`);
    case 'approved_v1':
      return { status: 200, body: { id: outcome.id, vmid: outcome.vmid } };
    case 'approved_v2':
      return { status: 200, body: { id: outcome.id, expiry: outcome.expiry.toISOString() } };
    case 'acquired':
      return { status: 200, body: { entitlementId: outcome.entitlementId, initialExpiryTime: outcome.expiry.toISOString() } };
    case 'renewed':
      return { status: 200, body: { expiryTime: outcome.expiry.toISOString() } };
    case 'released':
      return { status: 204 };
    case 'duration_too_long':
      return sesError(400, 'EntitlementDenied', `The duration is longer than ${outcome.maxSeconds} seconds.`);
    case 'not_found':
      return sesError(404, 'NotFound', `Entitlement ${outcome.entitlementId} was not found.`);
    case 'already_released':
      return sesError(409, 'AlreadyReleased', `Entitlement ${outcome.entitlementId} was already released.`);
    case 'expired':
      return sesError(409, 'EntitlementExpired', `Entitlement ${outcome.entitlementId} has expired.`);
  }
}

export interface SesHandlerDeps {
  ses: SesService;
  trustedProxies: readonly IpRange[];
  logger: Logger;
  isClosing: () => boolean;
  /** Whether a request that came without TLS is answered; when false it is 404, whatever it asks. */
  plainHttp: boolean;
}

function send(res: ServerResponse, result: SesResult): void {
  // Already answered at the door (the body's deadline passed): the connection is closing.
  if (res.headersSent) return;
  if (result.body === undefined) {
    res.writeHead(result.status, { ...result.headers, 'Cache-Control': 'no-store' });
    res.end();
    return;
  }
  const body = JSON.stringify(result.body);
  res.writeHead(result.status, {
    ...result.headers,
    'Cache-Control': 'no-store',
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

/** Reads a JSON body of at most 64 KiB: the parsed value, `undefined` when empty, or the refusal. */
function readJson(req: IncomingMessage): Promise<{ value: unknown } | { refusal: SesResult }> {
  return new Promise((resolve) => {
    // Too large: answered at once. What the client still sends is read and dropped (up to the
    // request timeout): closing with unread data would reset the connection, and the client
    // could lose the answer.
    const tooLarge = () => resolve({ refusal: sesError(413, 'EntitlementDenied', 'The request body is too large.') });
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      return tooLarge();
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
      else if (size - chunk.length <= MAX_BODY_BYTES) tooLarge();
    });
    const unreadable = () => resolve({ refusal: sesError(400, 'EntitlementDenied', 'The request body could not be read.') });
    req.on('error', unreadable);
    // Cut off before its end (its deadline passed, or the client went): settled, not left pending.
    req.on('close', () => {
      if (!req.complete) unreadable();
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve({ value: undefined });
      try {
        resolve({ value: JSON.parse(text) });
      } catch {
        resolve({ refusal: sesError(400, 'EntitlementDenied', 'The request body is not valid JSON.') });
      }
    });
  });
}

/** The values of `api-version` in a query, its name matched in any case (`API-Version=`) as the reference matches it. */
function apiVersions(query: string): string[] {
  const values: string[] = [];
  for (const [name, value] of new URLSearchParams(query)) if (name.toLowerCase() === 'api-version') values.push(value);
  return values;
}

const field = (b: unknown, name: string): string | undefined => {
  const v = b !== null && typeof b === 'object' ? (b as Record<string, unknown>)[name] : undefined;
  return typeof v === 'string' && v.length > 0 ? v : undefined;
};

const invalid = (value: string) => sesError(400, 'EntitlementDenied', value);
const badDuration = invalid(`The duration is missing, is not an ISO 8601 duration, or is longer than ${MAX_DURATION_SECONDS} seconds.`);
const notFound = sesError(404, 'NotFound', 'No such resource.');

/**
 * The Software Entitlement Service on plain node:http, beside the rUS check (a job may ask
 * every minute, and tokens are kilobytes of JSON): `POST /softwareEntitlements` (approve v1/v2,
 * acquire), `POST /softwareEntitlements/{id}` (renew), `DELETE /softwareEntitlements/{id}`
 * (release), each with `?api-version=`, with and without a slash before the query (a doubled
 * `//` or an extra segment is not found). Every error is `{code, message: {lang, value}}`; the
 * body is read as JSON whatever its Content-Type says (the SDK sends `application/json;
 * odata=minimalmetadata`), up to 64 KiB. With TLS configured, only requests that came over TLS
 * are answered (unless ENTGATE_SES_ALLOW_HTTP): on plain HTTP everything is 404.
 */
export function createSesHandler(deps: SesHandlerDeps) {
  const { ses } = deps;

  async function answer(req: IncomingMessage, path: string, query: string): Promise<SesResult> {
    const base = BASE.test(path);
    const one = ONE.exec(path);
    const routed = (base && req.method === 'POST') || (one !== null && (req.method === 'POST' || req.method === 'DELETE'));
    const versions = apiVersions(query);
    const version = versions.length === 1 ? versions[0]! : undefined;
    // Own keys only: `constructor`, `__proto__` or `toString` are not versions.
    const kind = version !== undefined && Object.hasOwn(API_VERSIONS, version) ? API_VERSIONS[version] : undefined;
    const operation = one ? (req.method === 'DELETE' ? 'release' : 'renew') : kind === 'latest' ? 'acquire' : 'approve';
    const caller: IpAddress | undefined = callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], deps.trustedProxies);

    if (!deps.plainHttp && (req.socket as TLSSocket).encrypted !== true) {
      // HTTPS only: nothing here on plain HTTP, whatever is asked. Recorded (never the body,
      // which is not read) when it names an operation: a client configured with http://.
      req.resume();
      if (routed && kind) ses.recordNotFound(operation, version!, one?.[1] ?? null, caller, 'plain HTTP: served on HTTPS only');
      return notFound;
    }
    if (!routed) {
      req.resume();
      return notFound;
    }
    if (version === undefined) {
      req.resume();
      return sesError(400, 'MissingApiVersion', 'The api-version query parameter is required, once.');
    }
    if (!kind) {
      req.resume();
      return sesError(400, 'UnsupportedApiVersion', version === '' ? 'An empty api-version is not supported.' : `The api-version ${version.slice(0, 40)} is not supported.`);
    }

    if (one) {
      if (kind !== 'latest') {
        req.resume();
        return sesError(400, 'UnsupportedApiVersion', `The api-version ${version} does not renew or release entitlements.`);
      }
      return renewOrRelease(req, one[1]!, version, req.method === 'DELETE' ? 'release' : 'renew', caller);
    }
    return approveOrAcquire(req, version, kind, caller);
  }

  /** `POST /softwareEntitlements/{id}` (renew) and `DELETE` (release), at the latest api-version. */
  async function renewOrRelease(req: IncomingMessage, id: string, version: string, operation: 'renew' | 'release', caller: IpAddress | undefined): Promise<SesResult> {
    // A UUID needs no decoding; anything else is not found, whatever the body.
    if (!UUID.test(id)) {
      req.resume();
      ses.recordNotFound(operation, version, id, caller, 'entitlement id is not a UUID');
      return notFound;
    }
    if (operation === 'release') {
      req.resume();
      return sesAnswer(await ses.release(version, id.toLowerCase(), caller));
    }
    const body = await readJson(req);
    if ('refusal' in body) {
      ses.recordInvalid('renew', version, null, caller, 'unreadable body', id.toLowerCase());
      return body.refusal;
    }
    const duration = field(body.value, 'duration');
    const seconds = duration === undefined ? undefined : parseDurationSeconds(duration);
    if (seconds === undefined || seconds > MAX_DURATION_SECONDS) {
      ses.recordInvalid('renew', version, null, caller, 'no, unparseable or too long duration', id.toLowerCase());
      return badDuration;
    }
    return sesAnswer(await ses.renew(version, id.toLowerCase(), seconds, caller));
  }

  /** `POST /softwareEntitlements`: approve (v1, v2) or, at the latest api-version, acquire. */
  async function approveOrAcquire(
    req: IncomingMessage,
    version: string,
    kind: 'approve-v1' | 'approve-v2' | 'latest',
    caller: IpAddress | undefined,
  ): Promise<SesResult> {
    const operation = kind === 'latest' ? 'acquire' : 'approve';
    const body = await readJson(req);
    if ('refusal' in body) {
      ses.recordInvalid(operation, version, null, caller, 'unreadable body');
      return body.refusal;
    }
    const b = body.value;
    if (b === undefined || b === null || typeof b !== 'object' || Array.isArray(b)) {
      ses.recordInvalid(operation, version, null, caller, 'no request body');
      return invalid('The request body is missing.');
    }
    const token = field(b, 'token');
    const applicationId = field(b, 'applicationId');
    if (!token) {
      ses.recordInvalid(operation, version, applicationId ?? null, caller, 'no token');
      return invalid('The token is missing.');
    }
    if (!applicationId) {
      ses.recordInvalid(operation, version, null, caller, 'no applicationId');
      return invalid('The applicationId is missing.');
    }
    if (applicationId.length > 256) {
      ses.recordInvalid(operation, version, applicationId.slice(0, 256), caller, 'applicationId longer than 256 characters');
      return invalid('The applicationId is longer than 256 characters.');
    }
    let durationSeconds: number | undefined;
    if (kind === 'latest') {
      const duration = field(b, 'duration');
      durationSeconds = duration === undefined ? undefined : parseDurationSeconds(duration);
      if (durationSeconds === undefined || durationSeconds > MAX_DURATION_SECONDS) {
        ses.recordInvalid(operation, version, applicationId, caller, 'no, unparseable or too long duration');
        return badDuration;
      }
    }
    return sesAnswer(await ses.approve(version, kind, { token, applicationId, ...(durationSeconds !== undefined && { durationSeconds }) }, caller));
  }

  return function handleSes(req: IncomingMessage, res: ServerResponse, path: string, query: string): void {
    if (deps.isClosing()) res.setHeader('Connection', 'close');
    answer(req, path, query).then(
      (result) => send(res, result),
      (err: Error) => {
        // As on the admin API and leases: a database that cannot answer is a 503 worth retrying.
        const fault = databaseFault(err);
        if (fault !== undefined) deps.logger.warn({ fault }, 'software entitlement request: database unavailable; answered 503');
        else deps.logger.error({ err: err.message }, 'software entitlement request failed');
        if (!res.headersSent) {
          const unavailable = sesError(503, 'ServiceUnavailable', 'The service cannot answer now; try again.');
          send(res, { ...unavailable, headers: { 'Retry-After': String(DATABASE_RETRY_AFTER_SECONDS) } });
        }
      },
    );
  };
}
