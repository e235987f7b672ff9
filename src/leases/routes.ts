import express, { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { z } from 'zod';
import { AppError } from '../lib/errors.ts';
import { declaredBodyLimit, KiB } from '../lib/http/body-limit.ts';
import { requireScope, scopedRouter } from '../auth/scoped-router.ts';
import { validate } from '../lib/http/validate.ts';
import { callerAddress } from '../lib/http/caller.ts';
import type { IpRange } from '../lib/ip.ts';
import type { Principal } from '../auth/scopes.ts';
import {
  acquireBody,
  anyPoolName,
  clientKeyCreate,
  clientKeyListQuery,
  heartbeatBody,
  leaseEventsQuery,
  leaseId,
  poolCreate,
  poolDeleteQuery,
  poolPatch,
  releaseBody,
} from './schemas.ts';
import type { LeaseRequest, LeaseService } from './service.ts';
import { LeaseRefusal, type AcquireOutcome, type HeartbeatOutcome, type RefusalCode, type ReleaseOutcome } from './outcomes.ts';
import { requestHashOf, type Replayed } from './idempotency.ts';
import type { NoSeat } from './seats.ts';
import { parseSignedRequest } from '../lib/signed-request.ts';
import { leaseView } from './views.ts';

/** What a lease route answers. */
export interface LeaseAnswer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export function acquireAnswer(outcome: AcquireOutcome): LeaseAnswer {
  switch (outcome.kind) {
    case 'granted':
      return { status: outcome.created ? 201 : 200, body: leaseView(outcome.lease, outcome.pool) };
    case 'no_seat':
      return noSeatAnswer(outcome);
    case 'replayed':
      return replayedAnswer(outcome);
  }
}

export function heartbeatAnswer(outcome: HeartbeatOutcome): LeaseAnswer {
  return outcome.kind === 'replayed' ? replayedAnswer(outcome) : { status: 200, body: leaseView(outcome.lease, outcome.pool) };
}

export function releaseAnswer(outcome: ReleaseOutcome): LeaseAnswer {
  return outcome.kind === 'replayed' ? replayedAnswer(outcome) : { status: 204 };
}

/** 409 with what a refused client needs: seats, in use, and when the earliest lease expires. */
function noSeatAnswer(refused: NoSeat): LeaseAnswer {
  return {
    status: 409,
    headers: { 'Retry-After': String(refused.retryAfterSeconds) },
    body: {
      code: 'no_seat_available',
      message: `all ${refused.seats} seats of pool ${refused.pool} are in use`,
      pool: refused.pool,
      seats: refused.seats,
      inUse: refused.inUse,
      retryAfterSeconds: refused.retryAfterSeconds,
    },
  };
}

const replayedAnswer = (replayed: Replayed): LeaseAnswer => ({ ...replayed.answer, headers: { 'Idempotent-Replayed': 'true' } });

/** The status of each refusal of the lease protocol. */
export const REFUSAL_STATUS: Readonly<Record<RefusalCode, number>> = {
  client_credential_required: 401,
  signed_request_required: 401,
  bad_signature: 401,
  request_expired: 401,
  unknown_client_key: 401,
  request_replayed: 401,
  insufficient_scope: 403,
  not_entitled: 403,
  not_lease_holder: 403,
  client_id_in_use: 409,
  lease_revoked: 410,
  lease_released: 410,
  lease_expired: 410,
  idempotency_key_reused: 422,
};

/** A refusal as the error the API answers (`{code, message}` with its status). */
export const refusalError = (refusal: LeaseRefusal): AppError => new AppError(REFUSAL_STATUS[refusal.code], refusal.code, refusal.message);

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** Resolves an Authorization header to its token's principal (401 for a bad one). */
export type PrincipalFor = (header: string) => Promise<Principal>;

/**
 * A request of the lease protocol: its Idempotency-Key (checked first), its body read as JSON
 * or as an OpenPGP clear-signed message, the caller's address and its token on demand.
 */
async function leaseRequest<O>(
  req: Request,
  trustedProxies: readonly IpRange[],
  principalFor: PrincipalFor,
  answerOf: (outcome: O) => LeaseAnswer,
): Promise<{ payload: unknown; request: LeaseRequest<O> }> {
  const key = req.headers['idempotency-key'];
  if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key))) {
    throw new AppError(400, 'invalid_idempotency_key', 'Idempotency-Key is 1 to 255 printable ASCII characters without spaces');
  }
  const caller = callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies);
  const authorization = req.headers.authorization;
  let principal: Promise<Principal | undefined> | undefined;
  const signed = typeof req.body === 'string' ? await parseSignedRequest(req.body) : undefined;
  const payload: unknown = signed ? signed.payload : (req.body ?? {});
  return {
    payload,
    request: {
      signed,
      clientAddress: caller?.toString() ?? null,
      principal: () => (principal ??= authorization === undefined ? Promise.resolve(undefined) : principalFor(authorization)),
      idempotency: key === undefined ? undefined : { key, requestHash: requestHashOf(payload, signed?.digest), answerOf },
    },
  };
}

function send(res: Response, answer: LeaseAnswer): void {
  for (const [name, value] of Object.entries(answer.headers ?? {})) res.setHeader(name, value);
  res.setHeader('Cache-Control', 'no-store');
  if (answer.body === undefined) res.status(answer.status).end();
  else if (answer.status >= 400) res.status(answer.status).json({ ...(answer.body as object), requestId: res.locals.requestId });
  else res.status(answer.status).json(answer.body);
}

const idOf = (req: Request) => validate(leaseId, req.params.id, 'lease id');
const poolOf = (req: Request) => validate(anyPoolName, req.params.name, 'pool name');

/**
 * The client protocol at /v1: acquire, heartbeat, release. A body is JSON, or for signed
 * requests an OpenPGP clear-signed message (`Content-Type: text/plain`). `GET /v1/pools/:name`
 * needs an API credential with the `leases` or `read` scope. The service's outcomes and refusals
 * become statuses, headers and bodies here.
 */
export function leaseRoutes(leases: LeaseService, authenticate: RequestHandler, principalFor: PrincipalFor, trustedProxies: readonly IpRange[]): Router {
  const r = Router();
  // Every answer, refusals included, is about one client's seat: no cache may keep it.
  r.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  r.use(declaredBodyLimit(() => 64 * KiB), express.json({ limit: 64 * KiB }), express.text({ type: 'text/plain', limit: 64 * KiB }));

  /** Reads a request, asks the service, answers its outcome. */
  const answer = async <S extends z.ZodType, O>(
    req: Request,
    res: Response,
    schema: S,
    answerOf: (outcome: O) => LeaseAnswer,
    ask: (body: z.output<S>, request: LeaseRequest<O>) => Promise<O>,
  ) => {
    const { payload, request } = await leaseRequest(req, trustedProxies, principalFor, answerOf);
    send(res, answerOf(await ask(validate(schema, payload), request)));
  };

  r.post('/leases', async (req, res) => {
    await answer(req, res, acquireBody, acquireAnswer, (body, request) => leases.acquire(body, request));
  });
  r.post('/leases/:id/heartbeat', async (req, res) => {
    const id = idOf(req);
    await answer(req, res, heartbeatBody, heartbeatAnswer, (body, request) => leases.heartbeat(id, body, request));
  });
  r.delete('/leases/:id', async (req, res) => {
    const id = idOf(req);
    await answer(req, res, releaseBody, releaseAnswer, (body, request) => leases.release(id, body, request));
  });
  r.get('/pools/:name', authenticate, requireScope(['leases', 'read']), async (req, res) => {
    res.json(await leases.pools.describePool(poolOf(req)));
  });
  r.use((err: unknown, _req: Request, _res: Response, next: NextFunction) => next(err instanceof LeaseRefusal ? refusalError(err) : err));
  return r;
}

/** Pools, leases and client keys in the admin API (mounted under /admin/v1, behind the token). */
export function leaseAdminRoutes(leases: LeaseService): Router {
  const r = scopedRouter();
  r.post('/pools', 'leases', async (req, res) => {
    res.status(201).json(await leases.pools.createPool(validate(poolCreate, req.body)));
  });
  r.get('/pools', ['leases', 'read'], async (_req, res) => {
    res.json({ items: await leases.pools.listPools() });
  });
  r.get('/pools/:name', ['leases', 'read'], async (req, res) => {
    res.json(await leases.pools.describePool(poolOf(req)));
  });
  r.patch('/pools/:name', 'leases', async (req, res) => {
    res.json(await leases.pools.updatePool(poolOf(req), validate(poolPatch, req.body)));
  });
  r.delete('/pools/:name', 'leases', async (req, res) => {
    const q = validate(poolDeleteQuery, req.query, 'query');
    await leases.pools.deletePool(poolOf(req), q.force === 'true');
    res.status(204).end();
  });
  r.delete('/leases/:id', 'leases', async (req, res) => {
    await leases.pools.forceRelease(idOf(req));
    res.status(204).end();
  });
  r.get('/lease-events', ['leases', 'read'], async (req, res) => {
    const q = validate(leaseEventsQuery, req.query, 'query');
    res.json({
      items: await leases.pools.events({
        limit: q.limit ?? 100,
        ...(q.pool !== undefined && { pool: q.pool }),
        ...(q.leaseId !== undefined && { leaseId: q.leaseId }),
      }),
    });
  });
  r.post('/client-keys', 'leases', async (req, res) => {
    const body = validate(clientKeyCreate, req.body);
    res.status(201).json(await leases.pools.addClientKey(body.clientId, body.publicKey));
  });
  r.get('/client-keys', ['leases', 'read'], async (req, res) => {
    res.json({ items: await leases.pools.listClientKeys(validate(clientKeyListQuery, req.query, 'query').clientId) });
  });
  r.delete('/client-keys/:fingerprint', 'leases', async (req, res) => {
    const fingerprint = req.params.fingerprint ?? '';
    if (!/^[0-9a-fA-F]{40,64}$/.test(fingerprint)) throw new AppError(400, 'invalid_request', 'not a key fingerprint (hex)');
    await leases.pools.deleteClientKey(fingerprint);
    res.status(204).end();
  });
  return r.router;
}
