import { Router } from 'express';
import type { Logger } from '../lib/logger.ts';
import type { Metrics } from './metrics.ts';
import { openApiRoute } from './openapi.ts';

export interface OperationsRoutesDeps {
  logger: Logger;
  /** Serves GET /metrics here when given (no METRICS_PORT of its own). */
  metrics: Metrics | undefined;
  /** Readiness: the database answers and migrations are applied. */
  ready: () => Promise<{ ok: boolean; checks: Record<string, unknown> }>;
  isClosing: () => boolean;
  /** Counters for operators (audit queues, caches), shown on /healthz. */
  stats: () => Record<string, unknown>;
}

/** /healthz (alive, with counters), /readyz (ready for traffic), /openapi.json and /metrics. */
export function operationsRoutes(deps: OperationsRoutesDeps): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', ...deps.stats() });
  });
  r.get('/openapi.json', openApiRoute(deps.logger));
  if (deps.metrics) {
    const metrics = deps.metrics;
    r.get('/metrics', async (_req, res) => {
      const { contentType, body } = await metrics.render();
      res.type(contentType).send(body);
    });
  }
  r.get('/readyz', async (_req, res) => {
    const { ok, checks } = deps.isClosing() ? { ok: false, checks: { shuttingDown: true } } : await deps.ready();
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'not_ready', ...checks });
  });
  return r;
}
