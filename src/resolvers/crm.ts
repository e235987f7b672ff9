import { XMLParser } from 'fast-xml-parser';
import { z } from 'zod';
import { ConfigError } from '../lib/errors.ts';
import { compileServerPattern, type ServerMatcher } from '../domain/server-pattern.ts';
import type { ProductEntitlement, ProductsRepo } from '../store/products-repo.ts';
import type { ChainResolver } from './chain.ts';
import { fillTemplate, HttpTransport, templateProblem, transportOptions } from './http-transport.ts';
import { ResolverFailure, type Resolution, type ResolveContext, type ResolveRequest } from './resolver.ts';

/**
 * Options of the built-in `crm` resolver (the `crm` section of ENTGATE_RESOLVER_OPTIONS_FILE).
 * See docs/plugins.md for a full example.
 */
export const crmOptionsSchema = z
  .strictObject({
    /** Request URL; {server}, {class}, {key}, {remote_ip} are replaced by percent-encoded values. */
    url: z.string().min(1),
    method: z.enum(['GET', 'POST']).default('GET'),
    /** Request headers. `${NAME}` inside a value is replaced by environment variable NAME at start. */
    headers: z.record(z.string(), z.string()).default({}),
    /** Body of a POST; placeholders are replaced by JSON-escaped values. */
    body: z.string().optional(),
    /** How to read answers; `auto` follows the Content-Type. */
    format: z.enum(['auto', 'json', 'xml']).default('auto'),
    /** Dot path to the customer's status in the answer (`customer.status`). */
    statusPath: z.string().min(1).default('status'),
    /** Statuses that count as active (compared ignoring case). */
    activeStatuses: z.array(z.string()).min(1).default(['active']),
    /** Dot path to the customer's product codes: a list, a single value, or objects (see productCodeField). */
    productsPath: z.string().min(1).default('products'),
    /**
     * Dot path to when the customer's entitlement ends (`contract.endsAt`): an ISO 8601 time
     * with a zone, or epoch seconds. A grant is denied (`expired`) from then on, and no grant
     * cached by Conary outlives it. Absent or null in an answer: no end.
     */
    expiresPath: z.string().min(1).optional(),
    /** When products are objects, the field that holds the code. */
    productCodeField: z.string().min(1).optional(),
    /** HTTP statuses meaning "no such customer". */
    unknownStatuses: z.array(z.number().int().min(400).max(499)).default([404]),
    /** An unknown customer: `deny` (the default), or `pass` to let the next resolver decide. */
    onUnknown: z.enum(['deny', 'pass']).default('deny'),
    /** A customer whose status is not active: `deny` (the default) or `pass`. */
    onInactive: z.enum(['deny', 'pass']).default('deny'),
    /** How long entgate reuses a grant / a denial from the CRM (seconds). */
    ttlSeconds: z.number().int().min(0).max(86_400).optional(),
    negativeTtlSeconds: z.number().int().min(0).max(86_400).optional(),
    ...transportOptions,
  })
  .superRefine((o, ctx) => {
    const problem = templateProblem(o.url) ?? (o.body ? templateProblem(o.body) : undefined);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['url'] });
    try {
      const u = new URL(fillTemplate(o.url, {}, () => 'x'));
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be an http:// or https:// URL', path: ['url'] });
    }
  });

export type CrmOptions = z.output<typeof crmOptionsSchema>;

/** The product codes an admin mapped, with matchers for their entitlements' server patterns. */
export class ProductCatalog {
  private loaded: Promise<Map<string, ProductEntitlement & { covers: ServerMatcher }>> | undefined;

  constructor(private readonly repo: ProductsRepo) {}

  get(): Promise<Map<string, ProductEntitlement & { covers: ServerMatcher }>> {
    this.loaded ??= this.repo.catalog().then(
      (rows) => new Map(rows.map((r) => [r.code, { ...r, covers: compileServerPattern(r.server) }])),
      (err: unknown) => {
        this.loaded = undefined;
        throw err;
      },
    );
    return this.loaded;
  }

  /** The mapping changed: read it again on next use. */
  invalidate(): void {
    this.loaded = undefined;
  }
}

/**
 * Asks a CRM about the key (a customer id) over HTTP, then maps the answer to a decision:
 * unknown customer -> onUnknown; status not active -> onInactive; otherwise the first of the
 * customer's product codes that an admin mapped (`entgate product map`) to an entitlement
 * covering the requested server -> entitled; codes mapped but none covering the server ->
 * denied `server_not_covered`; no mapped code -> denied `no_entitled_product`.
 * Timeouts, transport errors, 5xx and other unexpected statuses, malformed answers and an
 * open circuit are failures (the chain's failure policy decides).
 */
export class CrmResolver implements ChainResolver {
  readonly name = 'crm';
  private readonly transport: HttpTransport;
  private readonly headers: Record<string, string>;
  private readonly xml = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false });
  /** The CRM is asked about the client's address, so its grants may depend on it. */
  private readonly asksAddress: boolean;

  constructor(
    private readonly options: CrmOptions,
    private readonly catalog: ProductCatalog,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.transport = new HttpTransport(options);
    this.headers = resolveHeaders(options.headers, env);
    this.asksAddress = [options.url, options.body ?? ''].some((t) => t.includes('{remote_ip}'));
    if (options.body && !Object.keys(this.headers).some((h) => h.toLowerCase() === 'content-type')) {
      this.headers['Content-Type'] = 'application/json';
    }
  }

  get breaker() {
    return this.transport.breakerState();
  }

  get counters() {
    return this.transport.counters;
  }

  async resolve(request: ResolveRequest, context: ResolveContext): Promise<Resolution> {
    const o = this.options;
    const values = { server: request.server, class: request.class ?? '', key: request.key, remote_ip: request.remoteIp ?? '' };
    const answer = await this.transport.call(
      {
        method: o.method,
        url: fillTemplate(o.url, values, encodeURIComponent),
        headers: this.headers,
        ...(o.body !== undefined && { data: fillTemplate(o.body, values, (v) => JSON.stringify(v).slice(1, -1)) }),
      },
      context.signal,
      (res) => {
        if (o.unknownStatuses.includes(res.status)) return { unknown: true as const };
        if (res.status < 200 || res.status > 299) throw new ResolverFailure('status', `the CRM answered HTTP ${res.status}`);
        return { unknown: false as const, customer: this.read(res.data, String(res.headers['content-type'] ?? '')) };
      },
    );
    const negative = o.negativeTtlSeconds === undefined ? {} : { ttlSeconds: o.negativeTtlSeconds };
    if (answer.unknown) return o.onUnknown === 'pass' ? { outcome: 'pass' } : { outcome: 'denied', reason: 'crm_unknown_customer', ...negative };
    const { status, products, expiresAt } = answer.customer;
    if (!o.activeStatuses.some((s) => s.toLowerCase() === status.toLowerCase())) {
      return o.onInactive === 'pass' ? { outcome: 'pass' } : { outcome: 'denied', reason: 'crm_inactive', ...negative };
    }
    const catalog = await this.catalog.get();
    let mapped = false;
    for (const code of products) {
      const product = catalog.get(code);
      if (!product) continue;
      mapped = true;
      if (product.covers(request.server)) {
        return {
          outcome: 'entitled',
          class: product.class,
          key: product.key,
          ...(o.ttlSeconds !== undefined && { ttlSeconds: o.ttlSeconds }),
          ...(expiresAt !== undefined && { expiresAt }),
          ...(this.asksAddress && { dependsOnAddress: true }),
        };
      }
    }
    return { outcome: 'denied', reason: mapped ? 'server_not_covered' : 'no_entitled_product', ...negative };
  }

  async close(): Promise<void> {
    this.transport.close();
  }

  /** The customer's status and product codes from a JSON or XML answer. */
  private read(body: string, contentType: string): { status: string; products: string[]; expiresAt?: number } {
    const xml = this.options.format === 'xml' || (this.options.format === 'auto' && /xml/i.test(contentType));
    let doc: unknown;
    try {
      doc = xml ? this.xml.parse(body, true) : JSON.parse(body);
    } catch (err) {
      throw new ResolverFailure('malformed', `the CRM's answer is not valid ${xml ? 'XML' : 'JSON'}: ${(err as Error).message}`);
    }
    const status = at(doc, this.options.statusPath);
    if (typeof status !== 'string' && typeof status !== 'number') {
      throw new ResolverFailure('malformed', `the CRM's answer has no ${this.options.statusPath}`);
    }
    const raw = at(doc, this.options.productsPath);
    const list = raw === undefined || raw === null || raw === '' ? [] : Array.isArray(raw) ? raw : [raw];
    const field = this.options.productCodeField;
    const products = list.map((item) => (field !== undefined && item !== null && typeof item === 'object' ? (item as Record<string, unknown>)[field] : item));
    if (!products.every((p) => typeof p === 'string' || typeof p === 'number')) {
      throw new ResolverFailure('malformed', `the CRM's answer has product entries without a code at ${this.options.productsPath}`);
    }
    const expiresAt = this.options.expiresPath === undefined ? undefined : expiryAt(doc, this.options.expiresPath);
    return { status: String(status), products: products.map(String), ...(expiresAt !== undefined && { expiresAt }) };
  }
}

function at(doc: unknown, path: string): unknown {
  let value = doc;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** The end of the customer's entitlement at `path` (epoch ms), undefined when there is none. */
function expiryAt(doc: unknown, path: string): number | undefined {
  const raw = at(doc, path);
  if (raw === undefined || raw === null || raw === '') return undefined;
  const text = String(raw);
  const ms = /^\d{1,12}$/.test(text)
    ? Number(text) * 1000
    : /^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})$/i.test(text)
      ? Date.parse(text)
      : Number.NaN;
  if (!Number.isFinite(ms)) throw new ResolverFailure('malformed', `the CRM's answer has an unreadable time at ${path} (ISO 8601 with a zone, or epoch seconds)`);
  return ms;
}

function resolveHeaders(headers: Record<string, string>, env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    out[name] = value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, variable: string) => {
      const v = env[variable];
      if (v === undefined || v === '') throw new ConfigError(`resolver crm: header ${name} refers to ${variable}, which is not set`);
      return v;
    });
  }
  return out;
}
