import type { AxiosInstance } from 'axios';
import * as openpgp from 'openpgp';
import { signRequest } from '../lib/signed-request.ts';
import { apiHttp, sendApi, type Refusal } from './http.ts';
import { keepAlive } from './keep-alive.ts';

/** A held lease, as the server describes it. */
export interface Lease {
  leaseId: string;
  pool: string;
  clientId: string;
  acquiredAt: string;
  renewedAt: string;
  expiresAt: string;
  ttlSeconds: number;
  heartbeatIntervalSeconds: number;
  metadata: Record<string, unknown>;
}

export type AcquireRequest = ({ pool: string; virtualKey?: never } | { virtualKey: string; pool?: never }) & {
  clientId: string;
  ttlSeconds?: number;
  metadata?: Record<string, unknown>;
  /** Sent as Idempotency-Key: a retry with the same key and body is answered like the first. */
  idempotencyKey?: string;
};

/** Any refusal or failure; `status` 0 when the server could not be reached. */
export class LeaseRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'LeaseRequestError';
  }
}

/** 409: every seat of the pool is taken. */
export class NoSeatAvailableError extends LeaseRequestError {
  constructor(
    message: string,
    readonly seats: number,
    readonly inUse: number,
    readonly retryAfterSeconds: number,
  ) {
    super(409, 'no_seat_available', message);
    this.name = 'NoSeatAvailableError';
  }
}

/** 410: the lease expired or was released; its seat may be someone else's now. */
export class LeaseLostError extends LeaseRequestError {
  constructor(code: string, message: string) {
    super(410, code, message);
    this.name = 'LeaseLostError';
  }
}

export interface LeaseClientOptions {
  /** entgate's base URL, e.g. `http://licences.example.com:8080`. */
  baseUrl: string;
  /** An armored OpenPGP private key (unencrypted): every request is then clear-signed with it. */
  signingKey?: string;
  /**
   * A client credential (an API credential with the `leases:client` scope; the option keeps its
   * name, as ENTGATE_CLIENT_TOKEN does), sent as a bearer credential with every request: what a
   * pool that is neither anonymous nor signed needs. Default: the ENTGATE_CLIENT_TOKEN
   * environment variable; an empty string sends none.
   */
  token?: string;
  /** Per request; default 10 s. */
  timeoutMs?: number;
}

export interface HeldLease {
  /** The lease as last acquired or renewed. */
  readonly lease: Lease;
  /** Stops heartbeating and releases the seat. */
  release(): Promise<void>;
}

/**
 * A client of entgate's floating leases: acquire, heartbeat and release, and `hold`, which
 * keeps a lease alive in the background (the seed's keep-alive daemon) until released.
 */
export class LeaseClient {
  private readonly http: AxiosInstance;
  private key: Promise<openpgp.PrivateKey> | undefined;
  private readonly token: string | undefined;
  /** The virtual key each lease was acquired with: its heartbeats and release must carry it. */
  private readonly virtualKeys = new Map<string, string>();

  constructor(private readonly options: LeaseClientOptions) {
    this.http = apiHttp(options.baseUrl, options.timeoutMs ?? 10_000);
    if (options.signingKey !== undefined) this.key = openpgp.readPrivateKey({ armoredKey: options.signingKey });
    this.token = (options.token ?? process.env.ENTGATE_CLIENT_TOKEN) || undefined;
  }

  async acquire(request: AcquireRequest): Promise<Lease> {
    const { idempotencyKey, ...body } = request;
    const lease = (await this.send('POST', '/leases', body, idempotencyKey)) as Lease;
    if (request.virtualKey !== undefined) this.virtualKeys.set(lease.leaseId, request.virtualKey);
    return lease;
  }

  async heartbeat(leaseId: string, options: { ttlSeconds?: number } = {}): Promise<Lease> {
    return (await this.send('POST', `/leases/${encodeURIComponent(leaseId)}/heartbeat`, { ...options, ...this.holder(leaseId) })) as Lease;
  }

  async release(leaseId: string): Promise<void> {
    const holder = this.holder(leaseId);
    await this.send('DELETE', `/leases/${encodeURIComponent(leaseId)}`, Object.keys(holder).length > 0 ? holder : undefined);
    this.virtualKeys.delete(leaseId);
  }

  /** What a heartbeat or release carries to show it holds the lease (the token travels in a header). */
  private holder(leaseId: string): { leaseId?: string; virtualKey?: string } {
    const virtualKey = this.virtualKeys.get(leaseId);
    return { ...(this.key && { leaseId }), ...(virtualKey !== undefined && { virtualKey }) };
  }

  /**
   * Acquires a lease and heartbeats it every `heartbeatIntervalSeconds` until released. A
   * heartbeat that fails for a transport reason is retried at the next tick while the lease
   * may still be live; a 410, or no successful heartbeat before expiry, calls `onLost` once.
   */
  async hold(request: AcquireRequest, handlers: { onLost?: (error: LeaseRequestError) => void } = {}): Promise<HeldLease> {
    const kept = keepAlive(await this.acquire(request), {
      renew: (lease) => this.heartbeat(lease.leaseId, request.ttlSeconds === undefined ? {} : { ttlSeconds: request.ttlSeconds }),
      intervalSeconds: (lease) => lease.heartbeatIntervalSeconds,
      expiresAt: (lease) => Date.parse(lease.expiresAt),
      isLoss: (err): err is LeaseLostError => err instanceof LeaseLostError,
      lapsed: (err) => new LeaseLostError('lease_expired', `no heartbeat succeeded before the lease expired: ${err.message}`),
      onLost: handlers.onLost,
    });
    return {
      get lease() {
        return kept.current;
      },
      release: async () => {
        await kept.stop();
        await this.release(kept.current.leaseId);
      },
    };
  }

  private async send(method: 'POST' | 'DELETE', path: string, body: object | undefined, idempotencyKey?: string): Promise<unknown> {
    const headers: Record<string, string> = {};
    if (idempotencyKey !== undefined) headers['Idempotency-Key'] = idempotencyKey;
    if (this.token !== undefined) headers.Authorization = `Bearer ${this.token}`;
    let data: unknown = body;
    if (this.key) {
      data = await signRequest({ ...(body ?? {}) }, await this.key);
      headers['Content-Type'] = 'text/plain';
    }
    const res = await sendApi(this.http, this.options.baseUrl, { method, url: path, data, headers }, leaseError);
    return res.data;
  }
}

function leaseError(r: Refusal): LeaseRequestError {
  if (r.status === 409 && r.code === 'no_seat_available') {
    return new NoSeatAvailableError(r.message, Number(r.fields.seats), Number(r.fields.inUse), Number(r.fields.retryAfterSeconds) || 1);
  }
  if (r.status === 410) return new LeaseLostError(r.code, r.message);
  return new LeaseRequestError(r.status, r.code, r.message);
}
