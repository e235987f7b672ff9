import express, { Router, type Request, type RequestHandler, type Response } from 'express';
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
import type { LeaseRequestContext, LeaseResult, LeaseService } from './service.ts';

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** Resolves an Authorization header to its token's principal (401 for a bad one). */
export type PrincipalFor = (header: string) => Promise<Principal>;

function context(req: Request, trustedProxies: readonly IpRange[], principalFor: PrincipalFor): LeaseRequestContext {
  const header = req.headers['idempotency-key'];
  if (header !== undefined && (typeof header !== 'string' || !IDEMPOTENCY_KEY.test(header))) {
    throw new AppError(400, 'invalid_idempotency_key', 'Idempotency-Key is 1 to 255 printable ASCII characters without spaces');
  }
  const caller = callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies);
  const authorization = req.headers.authorization;
  let principal: Promise<Principal | undefined> | undefined;
  return {
    body: req.body,
    clientAddress: caller?.toString() ?? null,
    idempotencyKey: header,
    principal: () => (principal ??= authorization === undefined ? Promise.resolve(undefined) : principalFor(authorization)),
  };
}

function send(res: Response, result: LeaseResult): void {
  for (const [name, value] of Object.entries(result.headers ?? {})) res.setHeader(name, value);
  res.setHeader('Cache-Control', 'no-store');
  if (result.body === undefined) res.status(result.status).end();
  else if (result.status >= 400) res.status(result.status).json({ ...(result.body as object), requestId: res.locals.requestId });
  else res.status(result.status).json(result.body);
}

const idOf = (req: Request) => validate(leaseId, req.params.id, 'lease id');
const poolOf = (req: Request) => validate(anyPoolName, req.params.name, 'pool name');

/**
 * The client protocol at /v1: acquire, heartbeat, release. A body is JSON, or for signed
 * requests an OpenPGP clear-signed message (`Content-Type: text/plain`). `GET /v1/pools/:name`
 * needs an admin token with the `leases` or `read` scope.
 */
export function leaseRoutes(leases: LeaseService, authenticate: RequestHandler, principalFor: PrincipalFor, trustedProxies: readonly IpRange[]): Router {
  const r = Router();
  // Every answer, refusals included, is about one client's seat: no cache may keep it.
  r.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  r.use(declaredBodyLimit(() => 64 * KiB), express.json({ limit: 64 * KiB }), express.text({ type: 'text/plain', limit: 64 * KiB }));

  r.post('/leases', async (req, res) => {
    send(res, await leases.acquire(context(req, trustedProxies, principalFor), (p) => validate(acquireBody, p)));
  });
  r.post('/leases/:id/heartbeat', async (req, res) => {
    const id = idOf(req);
    send(res, await leases.heartbeat(id, context(req, trustedProxies, principalFor), (p) => validate(heartbeatBody, p)));
  });
  r.delete('/leases/:id', async (req, res) => {
    const id = idOf(req);
    send(res, await leases.release(id, context(req, trustedProxies, principalFor), (p) => validate(releaseBody, p)));
  });
  r.get('/pools/:name', authenticate, requireScope(['leases', 'read']), async (req, res) => {
    res.json(await leases.describePool(poolOf(req)));
  });
  return r;
}

/** Pools, leases and client keys in the admin API (mounted under /admin/v1, behind the token). */
export function leaseAdminRoutes(leases: LeaseService): Router {
  const r = scopedRouter();
  r.post('/pools', 'leases', async (req, res) => {
    res.status(201).json(await leases.createPool(validate(poolCreate, req.body)));
  });
  r.get('/pools', ['leases', 'read'], async (_req, res) => {
    res.json({ items: await leases.listPools() });
  });
  r.get('/pools/:name', ['leases', 'read'], async (req, res) => {
    res.json(await leases.describePool(poolOf(req)));
  });
  r.patch('/pools/:name', 'leases', async (req, res) => {
    res.json(await leases.updatePool(poolOf(req), validate(poolPatch, req.body)));
  });
  r.delete('/pools/:name', 'leases', async (req, res) => {
    const q = validate(poolDeleteQuery, req.query, 'query');
    await leases.deletePool(poolOf(req), q.force === 'true');
    res.status(204).end();
  });
  r.delete('/leases/:id', 'leases', async (req, res) => {
    await leases.forceRelease(idOf(req));
    res.status(204).end();
  });
  r.get('/lease-events', ['leases', 'read'], async (req, res) => {
    const q = validate(leaseEventsQuery, req.query, 'query');
    res.json({
      items: await leases.events({
        limit: q.limit ?? 100,
        ...(q.pool !== undefined && { pool: q.pool }),
        ...(q.leaseId !== undefined && { leaseId: q.leaseId }),
      }),
    });
  });
  r.post('/client-keys', 'leases', async (req, res) => {
    const body = validate(clientKeyCreate, req.body);
    res.status(201).json(await leases.addClientKey(body.clientId, body.publicKey));
  });
  r.get('/client-keys', ['leases', 'read'], async (req, res) => {
    res.json({ items: await leases.listClientKeys(validate(clientKeyListQuery, req.query, 'query').clientId) });
  });
  r.delete('/client-keys/:fingerprint', 'leases', async (req, res) => {
    const fingerprint = req.params.fingerprint ?? '';
    if (!/^[0-9a-fA-F]{40,64}$/.test(fingerprint)) throw new AppError(400, 'invalid_request', 'not a key fingerprint (hex)');
    await leases.deleteClientKey(fingerprint);
    res.status(204).end();
  });
  return r.router;
}
