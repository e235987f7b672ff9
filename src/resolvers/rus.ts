import { XMLParser } from 'fast-xml-parser';
import { z } from 'zod';
import type { ChainResolver } from './chain.ts';
import { HttpTransport, transportOptions } from './http-transport.ts';
import { ResolverFailure, type Resolution, type ResolveContext, type ResolveRequest } from './resolver.ts';

/**
 * Options of the built-in `rus` resolver: another service that speaks the rPath external
 * entitlement check (an existing verification service, or another entgate).
 */
export const rusOptionsSchema = z
  .strictObject({
    /** The service's entitlementCheckURL, e.g. http://crm.example.com/service */
    url: z.url({ protocol: /^https?$/ }),
    /** How long entgate reuses a grant / a denial (seconds). */
    ttlSeconds: z.number().int().min(0).max(86_400).optional(),
    negativeTtlSeconds: z.number().int().min(0).max(86_400).optional(),
    ...transportOptions,
  });

export type RusOptions = z.output<typeof rusOptionsSchema>;

/** Python 2 urllib.quote: letters, digits, `_.-/` stay, every other byte is %XX. */
export function pythonQuote(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_.\-/]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * Asks another entitlementCheckURL service, exactly as a Conary repository would
 * (`GET url?server=..;class=..;key=..;remote_ip=..`): 200 with an entitlement document is a
 * grant of that document's class, key and timeout; 404 is a denial (`upstream_denied`);
 * anything else, or a document whose server differs from the one asked, is a failure.
 */
export class RusResolver implements ChainResolver {
  readonly name = 'rus';
  private readonly transport: HttpTransport;
  private readonly xml = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false, processEntities: true });

  constructor(private readonly options: RusOptions) {
    this.transport = new HttpTransport(options);
  }

  get breaker() {
    return this.transport.breakerState();
  }

  async resolve(request: ResolveRequest, context: ResolveContext): Promise<Resolution> {
    const params = [`server=${pythonQuote(request.server)}`];
    if (request.class !== undefined) params.push(`class=${pythonQuote(request.class)}`);
    params.push(`key=${pythonQuote(request.key)}`);
    if (request.remoteIp !== undefined) params.push(`remote_ip=${pythonQuote(request.remoteIp)}`);
    const o = this.options;
    return this.transport.call({ method: 'GET', url: `${o.url}?${params.join(';')}` }, context.signal, (res) => {
      if (res.status === 404) {
        return { outcome: 'denied', reason: 'upstream_denied', ...(o.negativeTtlSeconds !== undefined && { ttlSeconds: o.negativeTtlSeconds }) };
      }
      if (res.status !== 200) throw new ResolverFailure('status', `the upstream check answered HTTP ${res.status}`);
      return { ...this.read(res.data, request.server), ...(o.ttlSeconds !== undefined && { ttlSeconds: o.ttlSeconds }) };
    });
  }

  async close(): Promise<void> {
    this.transport.close();
  }

  private read(body: string, server: string): Resolution {
    let doc: { entitlement?: Record<string, unknown> };
    try {
      doc = this.xml.parse(body, true) as typeof doc;
    } catch (err) {
      throw new ResolverFailure('malformed', `the upstream document is not valid XML: ${(err as Error).message}`);
    }
    const e = doc.entitlement;
    const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
    if (!e || text(e.key) === undefined) throw new ResolverFailure('malformed', 'the upstream document has no <entitlement><key>');
    if (text(e.server) !== server) throw new ResolverFailure('malformed', 'the upstream document names another server');
    const timeout = e.timeout as Record<string, string> | undefined;
    let parsedTimeout: { val: number; retry: boolean } | undefined;
    if (timeout && typeof timeout === 'object' && timeout['@val'] !== undefined) {
      const val = Number(timeout['@val']);
      if (!Number.isInteger(val) || val < 0) throw new ResolverFailure('malformed', 'the upstream timeout is not a whole number');
      parsedTimeout = { val, retry: timeout['@retry'] !== 'False' };
    }
    return {
      outcome: 'entitled',
      class: text(e.class) ?? null,
      key: text(e.key)!,
      ...(parsedTimeout && { timeout: parsedTimeout }),
    };
  }
}
