import { AppError } from '../lib/errors.ts';
import { pageOf, validate } from '../lib/http/validate.ts';
import type { AdminEventQuery, AdminEvent } from '../auth/admin-events.ts';
import { adminEventsQuery, bootstrapCredentialPut, credentialCreate, credentialListQuery, credentialRef } from './schemas.ts';
import { SCOPES, type Principal } from '../auth/scopes.ts';
import { scopedRouter } from '../auth/scoped-router.ts';
import type { ApiCredentials } from '../auth/credentials.ts';

/**
 * API credentials, the bootstrap credential's switch and the admin audit trail (scope `admin`),
 * and `GET /admin/v1/whoami` (any credential) under /admin/v1. The paths keep their historical
 * names (`/admin-tokens`, `/bootstrap-token`), as do the JSON fields (`tokenId`, `token`).
 */
export function credentialRoutes(credentials: ApiCredentials, listAdminEvents: (q: AdminEventQuery) => Promise<(AdminEvent & { id: number })[]>) {
  const r = scopedRouter();
  r.get('/whoami', SCOPES, (_req, res) => {
    const p = res.locals.principal as Principal;
    res.json({ name: p.name, tokenId: p.credentialId, scopes: p.scopes });
  });
  r.post('/admin-tokens', 'admin', async (req, res) => {
    const body = validate(credentialCreate, req.body);
    const created = await credentials.create(body, (res.locals.principal as Principal).name);
    res.locals.auditTarget = `id=${created.id} name=${created.name} scopes=${created.scopes.join(',')}`;
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(created);
  });
  r.get('/admin-tokens', 'admin', async (req, res) => {
    const q = validate(credentialListQuery, req.query, 'query');
    res.json({ items: await credentials.list(q.all === 'true') });
  });
  r.delete('/admin-tokens/:ref', 'admin', async (req, res) => {
    await credentials.revoke(validate(credentialRef, req.params.ref, 'credential'));
    res.status(204).end();
  });
  r.get('/bootstrap-token', 'admin', async (_req, res) => {
    res.json(await credentials.bootstrapState());
  });
  r.put('/bootstrap-token', 'admin', async (req, res) => {
    res.json(await credentials.setBootstrapEnabled(validate(bootstrapCredentialPut, req.body).enabled));
  });
  r.get('/admin-events', 'admin', async (req, res) => {
    const q = validate(adminEventsQuery, req.query, 'query');
    if (q.cursor !== undefined && q.after !== undefined) throw new AppError(400, 'invalid_request', 'give cursor or after, not both');
    const items = await listAdminEvents({
      limit: q.limit,
      ...(q.cursor !== undefined && { before: q.cursor }),
      ...(q.after !== undefined && { after: q.after }),
      ...(q.actor !== undefined && { actor: q.actor }),
      ...(q.since !== undefined && { since: q.since }),
    });
    res.json(pageOf(items, q.limit));
  });
  return r.router;
}
