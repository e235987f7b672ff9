import { randomUUID } from 'node:crypto';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { AppError } from '../lib/errors.ts';
import { declaredBodyLimit, MiB } from '../lib/http/body-limit.ts';
import type { Logger } from '../lib/logger.ts';
import { adminRoutes } from '../admin/routes.ts';
import type { ApiCredentials } from '../auth/credentials.ts';
import { credentialRoutes } from '../admin/credential-routes.ts';
import { guessRoutes } from '../admin/guess-routes.ts';
import type { GuessBudgetsRepo } from '../store/guess-budgets.ts';
import type { Invalidation } from '../store/invalidation-bus.ts';
import { claimAdminEvent, recordAdminWrites, type AdminEvent } from '../auth/admin-events.ts';
import type { Knex } from 'knex';
import type { AdminService } from '../admin/service.ts';
import type { LeaseService } from '../leases/service.ts';
import { leaseAdminRoutes, leaseRoutes } from '../leases/routes.ts';
import { mintRoutes, type MintConfig } from '../ses/mint-routes.ts';
import type { IpRange } from '../lib/ip.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { AuditRepo } from '../store/audit.ts';
import { openApiRoute } from './openapi.ts';
import { errorAnswer } from '../lib/http/error-answer.ts';

export interface AppDeps {
  admin: AdminService;
  audit: AuditRepo;
  leases: LeaseService;
  mint: MintConfig;
  /** Serves GET /metrics here when given (no METRICS_PORT of its own). */
  metrics?: Metrics;
  /** Proxies whose X-Forwarded-For names the client (leases, SES). */
  trustedProxies: readonly IpRange[];
  /** Authenticates admin requests (stored tokens and the bootstrap token). */
  credentials: ApiCredentials;
  /** Records an admin write for the admin audit trail. */
  recordAdminEvent: (event: AdminEvent) => void;
  knex: Knex;
  /** Guessing budgets: blocks listed and lifted through the admin API. */
  guessBudgets: GuessBudgetsRepo;
  /** Tells every instance about a change (here: a lifted guessing block). */
  publish: (change: Invalidation) => void;
  logger: Logger;
  /** Readiness: the database answers and migrations are applied. */
  ready: () => Promise<{ ok: boolean; checks: Record<string, unknown> }>;
  isClosing: () => boolean;
  /** Counters for operators (audit queue, key cache), shown on /healthz. */
  stats: () => Record<string, unknown>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Everything but the rUS check: health, readiness, floating leases and the admin API. */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(requestContext(deps.logger, deps.isClosing));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', ...deps.stats() });
  });
  app.get('/openapi.json', openApiRoute(deps.logger));
  if (deps.metrics) {
    const metrics = deps.metrics;
    app.get('/metrics', async (_req, res) => {
      const { contentType, body } = await metrics.render();
      res.type(contentType).send(body);
    });
  }
  app.get('/readyz', async (_req, res) => {
    const { ok, checks } = deps.isClosing() ? { ok: false, checks: { shuttingDown: true } } : await deps.ready();
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'not_ready', ...checks });
  });

  const authenticate = deps.credentials.authenticate();
  app.use('/v1', leaseRoutes(deps.leases, authenticate, (header) => deps.credentials.principalFor(header), deps.trustedProxies));
  // Every admin route names its scopes (scopedRouter); writes are recorded, refused ones too.
  app.use(
    '/admin/v1',
    recordAdminWrites(deps.recordAdminEvent, deps.trustedProxies, claimAdminEvent(deps.knex)),
    authenticate,
    declaredBodyLimit((req) => (req.is('text/csv') ? 32 * MiB : MiB)),
    express.json({ limit: MiB }),
    // The CSV import is kept as bytes (bounded here) and parsed as a stream by its route.
    express.raw({ type: 'text/csv', limit: 32 * MiB }),
    adminRoutes(deps.admin, deps.audit),
    leaseAdminRoutes(deps.leases),
    mintRoutes(deps.mint),
    credentialRoutes(deps.credentials, deps.knex),
    guessRoutes(deps.guessBudgets, deps.publish),
  );

  app.use((req, _res, next) => next(new AppError(404, 'not_found', `no route for ${req.method} ${req.path}`)));
  app.use(errorHandler(deps.logger));
  return app;
}

function requestContext(logger: Logger, isClosing: () => boolean): RequestHandler {
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    res.locals.requestId = id;
    res.locals.log = logger.child({ requestId: id });
    res.setHeader('X-Request-Id', id);
    if (isClosing()) res.setHeader('Connection', 'close');
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      if (req.path === '/healthz' || req.path === '/readyz' || req.path === '/metrics') return;
      (res.locals.log as Logger).info(
        { method: req.method, path: loggedPath(req.path), status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        'request',
      );
    });
    next();
  };
}

/** A lease id is its holder's handle on a seat: logs show where it was, not what it was. */
function loggedPath(path: string): string {
  return path.replace(/\/leases\/[^/]+/g, '/leases/:id');
}

/**
 * The one terminal handler: AppErrors as `{code, message}`; a database that cannot answer
 * (timeouts, lost or refused connections) as 503 `database_unavailable` with Retry-After, since
 * the same request may well succeed shortly; everything else a logged 500.
 */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    const { status, headers, body } = errorAnswer(err, res.locals.log ?? logger, res.locals.requestId);
    if (res.headersSent) return;
    if (status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="entgate-admin"');
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.status(status).json(body);
  };
}
