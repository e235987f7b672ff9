import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { AppError } from '../lib/errors.ts';
import { declaredBodyLimit, KiB } from '../lib/http/body-limit.ts';
import { validate } from '../lib/http/validate.ts';
import { callerAddress } from '../lib/http/caller.ts';
import type { IpRange } from '../lib/ip.ts';
import { scopedRouter } from '../auth/scoped-router.ts';
import type { Principal } from '../auth/scopes.ts';
import { licenceJson, LICENCE_NAME, windowOf } from '../domain/licence.ts';
import type { LicenceService, Granted, Asker } from './service.ts';
import type { LicenceFeed } from './feed.ts';
import { licenceMessage } from './feed.ts';
import type { Claim, InstalledLicence, LicenceEvent } from './repo.ts';
import { metadata, ttlSeconds } from '../leases/schemas.ts';

/** An entity id (a user, a device, a call): 1 to 256 characters, no spaces or control characters. */
const ENTITY_ID = /^[^\x00-\x20\x7f]{1,256}$/u;
const entityId = z.string().regex(ENTITY_ID, { error: 'id is 1 to 256 characters without spaces or control characters' });


export const claimBody = z.strictObject({ id: entityId, ttlSeconds: ttlSeconds.optional(), metadata: metadata.optional() });
export const heartbeatBody = z.strictObject({ ttlSeconds: ttlSeconds.optional() });
const listQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).optional() });
export const licenceEventsQuery = z.strictObject({
  capacity: z.string().max(200).optional(),
  id: z.string().max(256).optional(),
  type: z.enum(['licence_installed', 'licence_refused', 'claimed', 'released', 'refused', 'expired']).optional(),
  before: z.coerce.number().int().positive().optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
const installJson = z.strictObject({ token: z.string().min(1).max(64 * 1024) });

/** A claim as the API shows it. */
export function claimView(c: Claim, state?: Pick<Granted, 'limit' | 'inUse' | 'heartbeatIntervalSeconds'>) {
  return {
    capacity: c.capacity,
    id: c.entityId,
    claimId: c.claimId,
    claimedAt: c.claimedAt.toISOString(),
    expiresAt: c.expiresAt?.toISOString() ?? null,
    ttlSeconds: c.ttlSeconds,
    ...(state && { heartbeatIntervalSeconds: state.heartbeatIntervalSeconds, limit: state.limit, inUse: state.inUse }),
    metadata: c.metadata,
  };
}

/** An installed licence as the admin API shows it (the token too: it is what a service is given). */
export function installedView(i: InstalledLicence, now = new Date()) {
  return { seq: i.seq, ...licenceJson(i.licence), status: windowOf(i.licence, now), installedAt: i.installedAt.toISOString(), installedBy: i.installedBy, token: i.token };
}

export function eventView(e: LicenceEvent) {
  return {
    id: e.id,
    occurredAt: e.occurredAt.toISOString(),
    type: e.type,
    licenceId: e.licenceId,
    capacity: e.capacity,
    entityId: e.entityId,
    inUse: e.inUse,
    limit: e.limit,
    reason: e.reason,
    actor: e.actor,
    clientAddress: e.clientAddress,
    detail: e.detail,
  };
}

const capacityOf = (req: Request) => String(req.params.capacity ?? '');
const idParam = (req: Request) => validate(entityId, String(req.params.id ?? ''), 'claim id');

function askerOf(req: Request, res: Response, trustedProxies: readonly IpRange[]): Asker {
  const principal = res.locals.principal as Principal | undefined;
  return { actor: principal?.name ?? null, clientAddress: callerAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedProxies)?.toString() ?? null };
}

/** The token of a PUT /admin/v1/licence: the body as text (text/plain, application/jwt), or JSON `{"token": ...}`. */
function tokenOf(req: Request): string {
  if (typeof req.body === 'string') return req.body;
  if (req.body && typeof req.body === 'object' && !Buffer.isBuffer(req.body) && Object.keys(req.body as object).length > 0) return validate(installJson, req.body).token;
  throw new AppError(400, 'invalid_request', 'send the licence token as the body (Content-Type: application/jwt or text/plain), or as JSON {"token": "..."}');
}

const textBody: RequestHandler[] = [
  declaredBodyLimit(() => 64 * KiB),
  express.text({ type: ['text/plain', 'application/jwt'], limit: 64 * KiB }),
];

/**
 * The licence in the admin API (mounted under /admin/v1): install, show with use and history,
 * the claims held on a capacity (and a forced release), and the licence events.
 */
export function licenceAdminRoutes(licences: LicenceService, trustedProxies: readonly IpRange[]): Router {
  const r = scopedRouter();
  r.get('/licence', 'read', async (_req, res) => {
    const state = await licences.state();
    const history = await licences.history();
    res.json({
      installation: { id: state.installation.id, createdAt: state.installation.createdAt.toISOString() },
      current: state.current ? installedView(state.current) : null,
      capacities: state.capacities,
      history: history.map((h) => {
        const { token: _token, ...view } = installedView(h);
        return view;
      }),
    });
  });
  r.put('/licence', 'write', ...textBody, async (req, res) => {
    const outcome = await licences.install(tokenOf(req), askerOf(req, res, trustedProxies));
    const state = await licences.state();
    res.status(outcome.installed ? 201 : 200).json({ installed: outcome.installed, current: installedView(outcome.current), capacities: state.capacities });
  });
  r.get('/licence/capacities/:capacity/claims', 'read', async (req, res) => {
    const q = validate(listQuery, req.query, 'query');
    res.json({ items: (await licences.claims(capacityOf(req), q.limit ?? 1000)).map((c) => ({ ...claimView(c), clientAddress: c.clientAddress })) });
  });
  r.delete('/licence/capacities/:capacity/claims/:id', 'write', async (req, res) => {
    await licences.release(capacityOf(req), idParam(req), askerOf(req, res, trustedProxies), 'admin');
    res.status(204).end();
  });
  r.get('/licence/events', 'read', async (req, res) => {
    const q = validate(licenceEventsQuery, req.query, 'query');
    const limit = q.limit ?? 100;
    const items = await licences.events({
      limit,
      ...(q.capacity !== undefined && { capacity: q.capacity }),
      ...(q.id !== undefined && { entityId: q.id }),
      ...(q.type !== undefined && { type: q.type }),
      ...(q.before !== undefined && { before: q.before }),
    });
    const last = items[items.length - 1];
    res.json({ items: items.map(eventView), nextBefore: items.length === limit && last ? last.id : null });
  });
  return r.router;
}

/**
 * What the installation's own services call (mounted at /v1, scope `capacities`): the licence,
 * its stream and features, and capacity claims.
 */
export function licenceClientRoutes(licences: LicenceService, feed: LicenceFeed, authenticate: RequestHandler, trustedProxies: readonly IpRange[]): Router {
  const r = scopedRouter();
  r.router.use(
    ['/licence', '/capacities'],
    authenticate,
    (_req, res, next) => {
      res.setHeader('Cache-Control', 'no-store');
      next();
    },
    declaredBodyLimit(() => 64 * KiB),
    express.json({ limit: 64 * KiB }),
  );
  r.get('/licence', 'capacities', async (req, res) => {
    const current = await licences.current();
    if (!current) throw new AppError(404, 'no_licence', 'no licence is installed');
    if (req.accepts(['application/json', 'application/jwt']) === 'application/jwt') {
      res.type('application/jwt').send(current.token);
      return;
    }
    res.json({ ...licenceMessage(current), status: installedView(current).status });
  });
  r.get('/licence/events', 'capacities', async (req, res) => {
    const last = req.headers['last-event-id'];
    await feed.subscribe(res, typeof last === 'string' ? last : undefined);
  });
  r.get('/licence/features/:name', 'capacities', async (req, res) => {
    const name = String(req.params.name ?? '');
    if (!LICENCE_NAME.test(name)) throw new AppError(400, 'invalid_request', 'a feature name is 1 to 64 of A-Z a-z 0-9 . _ -');
    res.json(await licences.feature(name));
  });
  r.get('/capacities', 'capacities', async (_req, res) => {
    const state = await licences.state();
    res.json({ items: state.capacities, licence: state.current ? { licenceId: state.current.licence.id, status: state.current.status, expiresAt: state.current.licence.expiresAt.toISOString() } : null });
  });
  r.post('/capacities/:capacity/claims', 'capacities', async (req, res) => {
    const body = validate(claimBody, req.body ?? {});
    const granted = await licences.claim(
      capacityOf(req),
      body.id,
      { ...(body.ttlSeconds !== undefined && { ttlSeconds: body.ttlSeconds }), ...(body.metadata !== undefined && { metadata: body.metadata }) },
      askerOf(req, res, trustedProxies),
    );
    res.status(granted.created ? 201 : 200).json(claimView(granted.claim, granted));
  });
  r.get('/capacities/:capacity/claims/:id', 'capacities', async (req, res) => {
    res.json(claimView(await licences.held(capacityOf(req), idParam(req))));
  });
  r.post('/capacities/:capacity/claims/:id/heartbeat', 'capacities', async (req, res) => {
    const body = validate(heartbeatBody, req.body ?? {});
    const renewed = await licences.heartbeat(capacityOf(req), idParam(req), body.ttlSeconds);
    res.json(claimView(renewed.claim, renewed));
  });
  r.delete('/capacities/:capacity/claims/:id', 'capacities', async (req, res) => {
    await licences.release(capacityOf(req), idParam(req), askerOf(req, res, trustedProxies));
    res.status(204).end();
  });
  return r.router;
}
