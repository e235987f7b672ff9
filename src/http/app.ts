import { randomUUID } from 'node:crypto';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { AppError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { errorAnswer } from '../lib/http/error-answer.ts';

/** Handlers mounted at one path, in order (a router, or a chain ending in routers). */
export interface Mount {
  path: string;
  handlers: RequestHandler[];
}

export interface AppDeps {
  logger: Logger;
  isClosing: () => boolean;
  /** What each front door serves on express, mounted in order. */
  mounts: readonly Mount[];
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The express shell for everything but the rUS check and SES (which run on plain node:http):
 * request ids and request logs, the routers each front door hands over, one 404, one error
 * handler. It knows no service and no database.
 */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(requestContext(deps.logger, deps.isClosing));
  for (const { path, handlers } of deps.mounts) app.use(path, ...handlers);
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
