import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { AxiosInstance, AxiosRequestConfig, AxiosResponse } from 'axios';
import { z } from 'zod';
import { ResolverFailure } from './resolver.ts';

/** Options every HTTP-backed resolver shares. */
export const transportOptions = {
  /** Hard limit for one call, retries included (the check's own deadline may be shorter). */
  timeoutMs: z.number().int().min(50).max(30_000).default(2000),
  /** Most calls in flight at once; further checks wait for a slot (within their deadline). */
  maxConcurrency: z.number().int().min(1).max(1024).default(32),
  /** Retries after a transport error (no HTTP answer at all); never after an answer. */
  retries: z.number().int().min(0).max(5).default(2),
  /** Base of the jittered exponential backoff between retries. */
  retryBackoffMs: z.number().int().min(1).max(5000).default(50),
  breaker: z
    .strictObject({
      /** Consecutive failures that open the circuit. */
      failureThreshold: z.number().int().min(1).max(1000).default(5),
      /** How long the circuit stays open before one probe is let through. */
      openMs: z.number().int().min(100).max(600_000).default(10_000),
    })
    .default({ failureThreshold: 5, openMs: 10_000 }),
};

export type TransportOptions = z.output<z.ZodObject<typeof transportOptions>>;
export type BreakerState = 'closed' | 'open' | 'half-open';

const TRANSPORT_ERRORS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * One upstream service as a resolver sees it. `call()` runs a request and a parser of its
 * answer as one unit for the circuit breaker: a timeout, a transport error, a 5xx (reported by
 * the parser) or an answer the parser rejects all count as failures. Breaker: closed until
 * `failureThreshold` consecutive failures; then open (calls fail at once with `breaker_open`)
 * for `openMs`; then half-open: one probe call, whose success closes it and whose failure
 * opens it again.
 */
export class HttpTransport {
  /** axios, loaded when the first transport is made: a server without HTTP resolvers never loads it (~0.25 CPU-s at start). */
  private readonly http: Promise<AxiosInstance>;
  private readonly agents: [HttpAgent, HttpsAgent];
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private state: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing = false;
  readonly counters = { calls: 0, failures: 0, retries: 0, rejectedOpen: 0 };

  constructor(
    private readonly options: TransportOptions,
    private readonly now: () => number = Date.now,
  ) {
    const agentOptions = { keepAlive: true, maxSockets: options.maxConcurrency };
    const [httpAgent, httpsAgent] = (this.agents = [new HttpAgent(agentOptions), new HttpsAgent(agentOptions)]);
    this.http = import('axios').then(({ default: axios }) =>
      axios.create({
        httpAgent,
        httpsAgent,
        responseType: 'text',
        transformResponse: [(data: unknown) => data],
        validateStatus: () => true,
        maxRedirects: 0,
        maxContentLength: 1024 * 1024,
        proxy: false,
      }),
    );
  }

  breakerState(): BreakerState {
    if (this.state === 'open' && this.now() - this.openedAt >= this.options.breaker.openMs) return 'half-open';
    return this.state;
  }

  async call<T>(request: AxiosRequestConfig, signal: AbortSignal, parse: (res: AxiosResponse<string>) => T): Promise<T> {
    const state = this.breakerState();
    if (state === 'open' || (state === 'half-open' && this.probing)) {
      this.counters.rejectedOpen++;
      throw new ResolverFailure('breaker_open', 'the circuit breaker is open');
    }
    const probe = state === 'half-open';
    if (probe) this.probing = true;
    this.counters.calls++;
    const deadline = this.now() + this.options.timeoutMs;
    try {
      await this.acquire(signal);
      let result: T;
      try {
        result = parse(await this.send(request, signal, deadline));
      } finally {
        this.release();
      }
      this.failures = 0;
      this.state = 'closed';
      return result;
    } catch (err) {
      this.counters.failures++;
      if (probe || ++this.failures >= this.options.breaker.failureThreshold) {
        this.state = 'open';
        this.openedAt = this.now();
      }
      throw err instanceof ResolverFailure ? err : new ResolverFailure('error', (err as Error).message, { cause: err });
    } finally {
      if (probe) this.probing = false;
    }
  }

  private async send(request: AxiosRequestConfig, signal: AbortSignal, deadline: number): Promise<AxiosResponse<string>> {
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline - this.now();
      if (remaining <= 0) throw new ResolverFailure('timeout', `no answer within ${this.options.timeoutMs} ms`);
      try {
        return await (await this.http).request<string>({ ...request, timeout: remaining, signal });
      } catch (err) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new ResolverFailure('timeout', 'aborted');
        const code = (err as { code?: string }).code ?? '';
        if (code === 'ECONNABORTED' || code === 'ETIMEDOUT') {
          throw new ResolverFailure('timeout', `no answer within ${this.options.timeoutMs} ms`);
        }
        // No complete answer: refused, reset (before or in the middle of the body), hung up.
        const message = (err as Error).message;
        const transport =
          TRANSPORT_ERRORS.has(code) || /socket hang up/i.test(message) || (code === 'ERR_BAD_RESPONSE' && /aborted/i.test(message));
        if (!transport) throw new ResolverFailure('error', (err as Error).message, { cause: err });
        const backoff = this.options.retryBackoffMs * 2 ** attempt * (0.5 + Math.random());
        if (attempt >= this.options.retries || this.now() + backoff >= deadline) {
          throw new ResolverFailure('transport', `${code || 'connection failed'}`, { cause: err });
        }
        this.counters.retries++;
        await sleep(backoff, signal);
      }
    }
  }

  private acquire(signal: AbortSignal): Promise<void> {
    if (this.active < this.options.maxConcurrency) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new ResolverFailure('timeout', 'no free slot for the upstream call before the deadline'));
      };
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        this.active++;
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(grant);
    });
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
  }

  close(): void {
    for (const agent of this.agents) agent.destroy();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new ResolverFailure('timeout', 'aborted during backoff'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Fills `{server}`, `{class}`, `{key}`, `{remote_ip}` placeholders with encoded values. */
export function fillTemplate(template: string, values: Record<string, string>, encode: (v: string) => string): string {
  return template.replace(/\{(server|class|key|remote_ip)\}/g, (_, name: string) => encode(values[name] ?? ''));
}

/** Checks a template names only known placeholders. */
export function templateProblem(template: string): string | undefined {
  const unknown = [...template.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).filter((n) => !['server', 'class', 'key', 'remote_ip'].includes(n!));
  return unknown.length > 0 ? `unknown placeholder {${unknown[0]}}; use {server}, {class}, {key} or {remote_ip}` : undefined;
}
