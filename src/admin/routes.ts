import type { Request, Router } from 'express';
import { AppError } from '../lib/errors.ts';
import { scopedRouter } from '../auth/scoped-router.ts';
import { pageOf, validate } from '../lib/http/validate.ts';
import type { AdminService } from './service.ts';
import type { VirtualKey } from '../domain/types.ts';
import type { AuditRepo } from '../store/audit.ts';
import { readImportCsv } from './csv-import.ts';
import { errorAnswer } from '../lib/http/error-answer.ts';
import {
  entitlementCreate,
  entitlementPatch,
  idParam,
  productCode,
  productMap,
  virtualKeyCreate,
  virtualKeyWarnings,
  virtualKeyListQuery,
  virtualKeyLookup,
  virtualKeyPatch,
  auditQuery,
} from './schemas.ts';

const idOf = (req: Request) => validate(idParam, req.params.id, 'id');

/**
 * The admin REST API, mounted at /admin/v1 behind the bearer-token check. JSON in and out;
 * errors are `{code, message}` with a stable code. Virtual keys are addressed by id; a key
 * itself only ever travels in a request body.
 */
export function adminRoutes(admin: AdminService, audit: AuditRepo): Router {
  const r = scopedRouter();

  // The check's audit trail, newest first; `cursor` is the previous page's nextCursor. With
  // `after`, oldest first from that id on (for following and exporting).
  r.get('/audit', 'read', async (req, res) => {
    const q = validate(auditQuery, req.query, 'query');
    if (q.cursor !== undefined && q.after !== undefined) throw new AppError(400, 'invalid_request', 'give cursor or after, not both');
    const items = await audit.list({
      limit: q.limit,
      ...(q.cursor !== undefined && { before: q.cursor }),
      ...(q.after !== undefined && { after: q.after }),
      ...(q.keyHint !== undefined && { keyHint: q.keyHint }),
      ...(q.server !== undefined && { server: q.server }),
      ...(q.decision !== undefined && { decision: q.decision }),
      ...(q.since !== undefined && { since: q.since }),
      ...(q.until !== undefined && { until: q.until }),
    });
    res.json(pageOf(items, q.limit));
  });

  r.post('/entitlements', 'write', async (req, res) => {
    const created = await admin.createEntitlement(validate(entitlementCreate, req.body));
    res.locals.auditTarget = `id=${created.id}`;
    res.status(201).json(created);
  });
  r.get('/entitlements', 'read', async (_req, res) => {
    res.json({ items: await admin.listEntitlements() });
  });
  r.get('/entitlements/:id', 'read', async (req, res) => {
    res.json(await admin.getEntitlement(idOf(req)));
  });
  r.patch('/entitlements/:id', 'write', async (req, res) => {
    res.json(await admin.updateEntitlement(idOf(req), validate(entitlementPatch, req.body)));
  });
  r.delete('/entitlements/:id', 'write', async (req, res) => {
    await admin.deleteEntitlement(idOf(req));
    res.status(204).end();
  });

  r.post('/virtual-keys', 'write', async (req, res) => {
    const created = await admin.createVirtualKey(validate(virtualKeyCreate, req.body));
    res.locals.auditTarget = `id=${created.id}`;
    res.status(201).json(withWarnings(created));
  });
  // Parsed and written as a stream (see csv-import.ts, AdminService.importVirtualKeys). With
  // Accept: application/x-ndjson the answer is a stream too: progress lines, then the answer
  // the request would otherwise get, with its status in `status`.
  r.post('/virtual-keys/import', 'write', async (req, res) => {
    if (!Buffer.isBuffer(req.body)) {
      throw new AppError(415, 'unsupported_media_type', 'send the import as Content-Type: text/csv');
    }
    const rows = readImportCsv(req.body);
    // The server closes a socket idle for two minutes; a plain import says nothing until it is
    // done, and a large one on PGlite takes longer than that. Its idle timer waits meanwhile.
    const idle = req.socket.timeout;
    req.socket.setTimeout(0);
    res.once('finish', () => {
      if (idle) req.socket.setTimeout(idle);
    });
    if (!acceptsNdjson(req)) {
      res.status(201).json(await admin.importVirtualKeys(rows));
      return;
    }
    res.status(200).type('application/x-ndjson').setHeader('Cache-Control', 'no-store');
    res.flushHeaders();
    const line = (o: object) => res.write(`${JSON.stringify(o)}\n`);
    let outcome: { status: number; body: object };
    try {
      outcome = { status: 201, body: await admin.importVirtualKeys(rows, line) };
    } catch (err) {
      outcome = errorAnswer(err, res.locals.log, res.locals.requestId);
    }
    res.locals.outcomeStatus = outcome.status;
    line({ status: outcome.status, ...outcome.body });
    res.end();
  });
  r.post('/virtual-keys/lookup', 'read', async (req, res) => {
    res.json(await admin.findVirtualKey(validate(virtualKeyLookup, req.body).key));
  });
  r.get('/virtual-keys', 'read', async (req, res) => {
    const q = validate(virtualKeyListQuery, req.query, 'query');
    const items = await admin.listVirtualKeys({
      limit: q.limit,
      ...(q.entitlementId !== undefined && { entitlementId: q.entitlementId }),
      ...(q.status !== undefined && { status: q.status }),
      ...(q.cursor !== undefined && { afterId: q.cursor }),
    });
    res.json(pageOf(items, q.limit));
  });
  r.get('/virtual-keys/:id', 'read', async (req, res) => {
    res.json(await admin.getVirtualKey(idOf(req)));
  });
  r.patch('/virtual-keys/:id', 'write', async (req, res) => {
    res.json(withWarnings(await admin.updateVirtualKey(idOf(req), validate(virtualKeyPatch, req.body))));
  });

  r.get('/products', 'read', async (_req, res) => {
    res.json({ items: await admin.listProducts() });
  });
  r.put('/products/:code', 'write', async (req, res) => {
    const code = validate(productCode, req.params.code, 'product code');
    res.json(await admin.mapProduct(code, validate(productMap, req.body).entitlementId));
  });
  r.delete('/products/:code', 'write', async (req, res) => {
    await admin.unmapProduct(validate(productCode, req.params.code, 'product code'));
    res.status(204).end();
  });

  return r.router;
}

/** A virtual key as a write answers it: with `warnings` when a setting cannot act as written. */
function withWarnings<K extends VirtualKey>(key: K): K & { warnings?: string[] } {
  const warnings = virtualKeyWarnings(key);
  return warnings.length > 0 ? { ...key, warnings } : key;
}

function acceptsNdjson(req: Request): boolean {
  return (req.headers.accept ?? '').split(',').some((t) => t.split(';')[0]!.trim().toLowerCase() === 'application/x-ndjson');
}
