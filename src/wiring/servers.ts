import { createServer, type RequestListener, type Server, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { Server as NetServer, type AddressInfo } from 'node:net';
import type { Config } from '../../config/settings.ts';
import type { Logger } from '../lib/logger.ts';
import { doorOf, FrontDoors } from '../http/front-doors.ts';
import { isSesPath } from '../ses/routes.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { Preflight } from './preflight.ts';

export interface Listeners {
  server: Server;
  url: string;
  httpsServer?: Server;
  httpsUrl?: string;
  metricsUrl?: string;
}

export interface Doors {
  check: (req: Parameters<RequestListener>[0], res: Parameters<RequestListener>[1], query: string) => void;
  ses: (req: Parameters<RequestListener>[0], res: Parameters<RequestListener>[1], path: string, query: string) => void;
  app: RequestListener;
}

/**
 * The rUS check's paths (GET, HEAD), answered on plain node:http before express: each
 * configured path (ENTGATE_CHECK_PATHS, kept without a trailing slash) also with one.
 */
export function checkPathSet(paths: readonly string[]): ReadonlySet<string> {
  return new Set(paths.flatMap((p) => (p === '/' ? [p] : [p, `${p}/`])));
}

/**
 * The two protocols clients hit at their own rate run on plain node:http; everything else on
 * express. Each front door has its own budget: slow bodies on SES or /v1 never take the check's.
 */
function dispatcher(config: Config, pre: Preflight, doors: Doors): { handler: RequestListener; frontDoors: FrontDoors } {
  const checkPaths = checkPathSet(config.checkPaths);
  const frontDoors = new FrontDoors({
    maxConcurrent: config.maxConcurrentRequests,
    bodyTimeoutMs: config.bodyTimeoutMs,
    maxPerClient: config.maxRequestsPerClient,
    trustedProxies: pre.trustedProxies,
  });
  const handler: RequestListener = (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const door = doorOf(path, checkPaths, isSesPath);
    if (!frontDoors.admit(req, res, door)) return;
    if (door === 'check') doors.check(req, res, query);
    else if (door === 'ses') doors.ses(req, res, path, query);
    else doors.app(req, res);
  };
  return { handler, frontDoors };
}

/**
 * Binds every listener (HTTP, HTTPS when configured, metrics when METRICS_PORT is set), each
 * added to the lifecycle as soon as it listens, so that a port already taken closes the rest.
 * Closing drains: new connections are refused, requests in flight finish (bounded by
 * ENTGATE_SHUTDOWN_TIMEOUT_MS), and only then do the parts below close.
 */
export async function openListeners(
  config: Config,
  pre: Preflight,
  doors: Doors,
  ops: { metrics: Metrics; isClosing: () => boolean; logger: Logger; life: Lifecycle },
): Promise<Listeners> {
  const { logger, life } = ops;
  const { handler, frontDoors } = dispatcher(config, pre, doors);
  // Every listener: Node itself answers 408 (too slow), 431 (headers too large) and closes
  // connections past the cap; no 'clientError' listener, so that stays Node's behaviour.
  const limits = serverLimits(config);
  // One entry for every listener, added with the first: on close, in-flight requests are told
  // the connection closes, and all listeners stop and drain together.
  const listening: Server[] = [];
  const bind = async (name: string, server: Server, port: number, scheme: 'http' | 'https') => {
    capConnections(server, config.maxConnections, logger, name);
    const url = await listen(server, port, config.host, scheme);
    if (listening.push(server) === 1) {
      life.add('listeners', async () => {
        frontDoors.close();
        await Promise.all(listening.map((s) => drain(s, config.shutdownTimeoutMs, logger)));
      });
    }
    return url;
  };
  const server = createServer(limits, handler);
  const url = await bind('http', server, config.port, 'http');
  const out: Listeners = { server, url };
  if (config.metricsPort !== undefined) {
    out.metricsUrl = await bind('metrics', createServer(limits, metricsListener(ops)), config.metricsPort, 'http');
  }
  if (pre.tls) {
    // A handshake that never completes holds a socket for 120 s by default.
    const httpsServer = createHttpsServer({ ...limits, handshakeTimeout: config.headersTimeoutMs, ...pre.tls, minVersion: 'TLSv1.2' }, handler);
    out.httpsUrl = await bind('https', httpsServer, config.httpsPort, 'https');
    out.httpsServer = httpsServer;
  }
  return out;
}

/** Metrics on a port of their own when METRICS_PORT is set (else on the API's, through the app). */
function metricsListener({ metrics, isClosing, logger }: { metrics: Metrics; isClosing: () => boolean; logger: Logger }): RequestListener {
  return (req, res) => {
    if (isClosing()) res.setHeader('Connection', 'close');
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('only GET /metrics here\n');
      return;
    }
    metrics.render().then(
      ({ contentType, body }) => res.writeHead(200, { 'Content-Type': contentType }).end(body),
      (err: Error) => {
        logger.error({ err: err.message }, 'metrics failed');
        res.writeHead(503).end();
      },
    );
  };
}

/**
 * Stops listening, but not through http.Server#close: that also closes idle keep-alive
 * connections at once, and a request a client sent on one at that moment is reset (~25 per
 * restart at 50 connections). Each connection instead ends after its next answer (which
 * carries `Connection: close`), or at the keep-alive timeout, as any idle one does; past
 * `timeoutMs` the rest are closed.
 */
async function drain(server: Server, timeoutMs: number, logger: Logger): Promise<void> {
  const drained = new Promise<void>((r) => NetServer.prototype.close.call(server, () => r()));
  const forced = setTimeout(() => {
    logger.warn('in-flight requests did not finish in time; closing their connections');
    server.closeAllConnections();
  }, timeoutMs);
  await drained;
  clearTimeout(forced);
}

/**
 * Slow or idle clients cannot hold connections for long, nor large headers memory. Node checks
 * the header and request deadlines only every `connectionsCheckingInterval` (30 s by default,
 * which let a slow-loris connection live 40 s): here at least twice per headers timeout.
 */
function serverLimits(config: Config): ServerOptions {
  return {
    maxHeaderSize: config.maxHeaderBytes,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.headersTimeoutMs / 2))),
  };
}

/**
 * Past `max` open connections Node closes new ones at once; warned at most once a minute. A
 * socket with no traffic either way for two minutes is closed too: the request timeout ends
 * when a request has arrived, so without this a client that never reads its answer would
 * hold its socket (and its place under the concurrency cap) for ever.
 */
function capConnections(server: Server, max: number, logger: Logger, listener: string): void {
  server.maxConnections = max;
  server.timeout = 120_000;
  let dropped = 0;
  let quietUntil = 0;
  server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now < quietUntil) return;
    quietUntil = now + 60_000;
    logger.warn({ listener, maxConnections: max, dropped }, 'ENTGATE_MAX_CONNECTIONS reached: new connections are closed at once');
    dropped = 0;
  });
}

/** Listens, resolves with the URL a local client can use (a wildcard address becomes loopback). */
async function listen(server: Server, port: number, host: string, scheme: 'http' | 'https'): Promise<string> {
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const address = server.address() as AddressInfo;
  const bound = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${scheme}://${bound === '0.0.0.0' ? '127.0.0.1' : bound === '[::]' ? '[::1]' : bound}:${address.port}`;
}
