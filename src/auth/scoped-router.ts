import { Router, type RequestHandler } from 'express';
import { AppError } from '../lib/errors.ts';
import { allows, type Principal, type Scope } from './scopes.ts';
import { claimWrite } from './admin-events.ts';

/** The route a request matched, as its scope check saw it (for the admin audit trail). */
export interface MatchedRoute {
  route: string;
  params: Record<string, string | string[]>;
}

/** Marks the scope check of a route, so that a walk of the route table can find it. */
export const ROUTE_SCOPES = Symbol('entgate.routeScopes');
export type ScopeCheck = RequestHandler & { [ROUTE_SCOPES]: readonly Scope[] };

/**
 * The scope check of one route: 401 when the request carries no authenticated principal
 * (fails closed if authentication was not mounted), 403 `insufficient_scope` when its credential
 * holds none of `anyOf`; then, for a write, the admin audit's row (503 `audit_unavailable`
 * when it cannot be written, and the handler does not run).
 */
export function requireScope(anyOf: readonly Scope[]): ScopeCheck {
  if (anyOf.length === 0) throw new Error('a route must name at least one scope');
  const check: RequestHandler = (req, res, next) => {
    const path = (req.route as { path?: unknown } | undefined)?.path;
    res.locals.matchedRoute = { route: `${req.baseUrl}${typeof path === 'string' ? path : ''}`, params: { ...req.params } } satisfies MatchedRoute;
    const principal = res.locals.principal as Principal | undefined;
    if (!principal) throw new AppError(401, 'unauthorized', 'a valid API credential is required');
    if (!allows(principal.scopes, anyOf)) {
      res.setHeader('WWW-Authenticate', `Bearer realm="entgate-admin", error="insufficient_scope", scope="${anyOf.join(' ')}"`);
      throw new AppError(403, 'insufficient_scope', `this credential may not do that: it needs one of the scopes ${anyOf.join(', ')}`, {
        details: { required: anyOf, held: principal.scopes },
      });
    }
    // An allowed write runs only once its audit row is written (503 when it cannot be).
    return claimWrite(req.method, res.locals).then(() => next());
  };
  return Object.assign(check, { [ROUTE_SCOPES]: anyOf });
}

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
/** Route handlers see their path parameters as plain strings (no wildcard routes here). */
type Handler = RequestHandler<Record<string, string>>;
type Add = (path: string, scopes: Scope | readonly Scope[], ...handlers: Handler[]) => ScopedRouter;

/** A router whose every route must name its scopes: there is no way to add one without. */
export interface ScopedRouter {
  readonly router: Router;
  get: Add;
  post: Add;
  put: Add;
  patch: Add;
  delete: Add;
}

export function scopedRouter(): ScopedRouter {
  const router = Router();
  const add =
    (method: Method): Add =>
    (path, scopes, ...handlers) => {
      router[method](path, requireScope(typeof scopes === 'string' ? [scopes] : scopes), ...(handlers as RequestHandler[]));
      return api;
    };
  const api: ScopedRouter = { router, get: add('get'), post: add('post'), put: add('put'), patch: add('patch'), delete: add('delete') };
  return api;
}
