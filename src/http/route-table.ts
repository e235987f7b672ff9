import type express from 'express';
import { ROUTE_SCOPES } from '../auth/scoped-router.ts';
import type { Scope } from '../auth/scopes.ts';

/** One route of the express app as registered: method, full path, and the scopes its check names. */
export interface RouteEntry {
  method: string;
  /** The full path with express parameters (`/admin/v1/virtual-keys/:id`). */
  path: string;
  /** The scopes of the route's scope check; undefined when the route has none. */
  scopes: readonly Scope[] | undefined;
}

interface Layer {
  route?: { path: string; methods: Record<string, boolean>; stack: { handle: unknown }[] };
  handle: { stack?: Layer[] } & Record<PropertyKey, unknown>;
  rawPath?: unknown;
}

/**
 * Walks the app's router stack (express 5 / router 2) and lists every route, mounted routers
 * included. The tests use it to prove that no admin route lacks a scope and that every route
 * is documented.
 */
export function routeTable(app: express.Express): RouteEntry[] {
  const out: RouteEntry[] = [];
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const check = layer.route.stack.map((l) => l.handle as Record<PropertyKey, unknown>).find((h) => ROUTE_SCOPES in h);
        for (const [method, on] of Object.entries(layer.route.methods)) {
          if (on && method !== '_all') {
            out.push({ method: method.toUpperCase(), path: `${prefix}${layer.route.path}`, scopes: check?.[ROUTE_SCOPES] as Scope[] | undefined });
          }
        }
      } else if (Array.isArray(layer.handle.stack)) {
        const mount = typeof layer.rawPath === 'string' && layer.rawPath !== '/' ? layer.rawPath : '';
        walk(layer.handle.stack, `${prefix}${mount}`);
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return out;
}
