import type { AxiosInstance, AxiosResponse } from 'axios';
import { EventEmitter } from 'node:events';
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  grantsFeature,
  limitUnder,
  trustKeys,
  verifyLicence,
  windowOf,
  type CapacityKind,
  type Licence,
  type LicenceRefusalCode,
  type LicenceWindow,
  type TrustedKey,
} from '../domain/licence.ts';
import { apiHttp, refusalOf, sendApi, unreachable, type Refusal } from './http.ts';
import { keepAlive } from './keep-alive.ts';
import { SseParser, type SseEvent } from './sse.ts';

export type { Licence } from '../domain/licence.ts';

/** Where the licence held is: inside its window, past it, before it, or no licence at all. */
export type LicenceStatus = LicenceWindow | 'none';

/** A capacity claim, as the server describes it. */
export interface Claim {
  capacity: string;
  /** The entity (user, device, call) holding it. */
  id: string;
  claimId: string;
  claimedAt: string;
  /** When a `concurrent:` claim lapses unless heartbeated; null for the others (held until released). */
  expiresAt: string | null;
  ttlSeconds: number | null;
  metadata: Record<string, unknown>;
}

/** A claim as a claim or a heartbeat answers it: with the capacity's limit and use. */
export interface GrantedClaim extends Claim {
  /** How often to heartbeat a `concurrent:` claim; null for the others. */
  heartbeatIntervalSeconds: number | null;
  /** null: no limit (a feature granted without a `feature:` limit). */
  limit: number | null;
  /** null when the answer does not count it (a heartbeat). */
  inUse: number | null;
}

/** A capacity of the installation's licence and what is used of it. */
export interface CapacityUse {
  name: string;
  kind: CapacityKind;
  limit: number | null;
  inUse: number;
}

/** Any refusal or failure of a call to entgate; `status` 0 when it could not be reached. */
export class LicenceRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'LicenceRequestError';
  }
}

/** 409 capacity_exceeded: every unit of the capacity is in use. */
export class CapacityExceededError extends LicenceRequestError {
  constructor(
    message: string,
    readonly capacity: string,
    readonly limit: number,
    readonly inUse: number,
    /** For a `concurrent:` capacity: when the first claim held lapses unless renewed. */
    readonly retryAfterSeconds: number | undefined,
  ) {
    super(409, 'capacity_exceeded', message);
    this.name = 'CapacityExceededError';
  }
}

/** 403 feature_not_licensed: the licence does not grant the feature (of a `feature:` capacity). */
export class FeatureNotLicensedError extends LicenceRequestError {
  constructor(
    message: string,
    readonly capacity: string,
  ) {
    super(403, 'feature_not_licensed', message);
    this.name = 'FeatureNotLicensedError';
  }
}

/** 403 licence_expired: nothing new may be claimed (what is held stays until released). */
export class LicenceExpiredError extends LicenceRequestError {
  constructor(message: string) {
    super(403, 'licence_expired', message);
    this.name = 'LicenceExpiredError';
  }
}

/** 403 licence_not_yet_valid: the licence's window has not begun. */
export class LicenceNotYetValidError extends LicenceRequestError {
  constructor(message: string) {
    super(403, 'licence_not_yet_valid', message);
    this.name = 'LicenceNotYetValidError';
  }
}

/** 404 unknown_capacity (the licence names no such capacity) or no_licence (none is installed). */
export class CapacityNotLicensedError extends LicenceRequestError {
  constructor(code: 'unknown_capacity' | 'no_licence', message: string) {
    super(404, code, message);
    this.name = 'CapacityNotLicensedError';
  }
}

/** 404 claim_not_held (released, or a `concurrent:` claim that lapsed); `claim_lapsed` when a held claim got no heartbeat through before it lapsed. */
export class ClaimNotHeldError extends LicenceRequestError {
  constructor(code: 'claim_not_held' | 'claim_lapsed', message: string) {
    super(code === 'claim_not_held' ? 404 : 0, code, message);
    this.name = 'ClaimNotHeldError';
  }
}

/** A licence token the client refused: it never replaces the licence held. */
export class LicenceVerificationError extends Error {
  constructor(
    readonly code: LicenceRefusalCode | 'licence_installation_mismatch',
    message: string,
    /** Where the token came from. */
    readonly source: LicenceSource,
  ) {
    super(message);
    this.name = 'LicenceVerificationError';
  }
}

/** The licence file could not be read or written (the licence in memory is unaffected). */
export class LicenceFileError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'LicenceFileError';
  }
}

export type LicenceSource = 'file' | 'server';

/** What comes with a licence adopted. */
export interface LicenceInfo {
  /** The token, as verified. */
  token: string;
  /** Its installation sequence number on entgate; undefined for a licence read from the file. */
  seq: number | undefined;
  source: LicenceSource;
  /** Its status when adopted. */
  status: LicenceWindow;
}

/** The events of a LicenceClient (`client.on(name, listener)`). */
export interface LicenceClientEvents {
  /** A licence was adopted (from the file at start, or pushed by entgate), and written to the file. */
  licence: [licence: Licence, info: LicenceInfo];
  /** A token was refused (forged, tampered, bound elsewhere, or expired while a valid one is held). */
  invalid: [error: LicenceVerificationError];
  /** The stream is open: licences installed from now on are pushed. */
  connected: [];
  /** The stream ended or failed (it is reopened after a backoff). */
  disconnected: [error: Error | undefined];
}

/** What the client logs with (a pino logger, or `console`, fits). */
export interface LicenceClientLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface LicenceClientOptions {
  /** entgate's base URL, e.g. `http://entgate.internal:8080`. */
  baseUrl: string;
  /**
   * An API credential with the `capacities` scope, sent as a bearer credential with every
   * request. Default: the ENTGATE_CLIENT_TOKEN environment variable, as the LeaseClient's; an
   * empty string sends none.
   */
  token?: string;
  /**
   * The vendor keys trusted to sign licences (PEM public keys or certificates, or KeyObjects):
   * the client verifies every licence itself, from the file or from entgate, with these.
   */
  publicKeys: readonly (string | KeyObject)[];
  /** Where the current licence token is kept (written atomically on each new one; read at start). */
  file: string;
  /** This installation's id: a licence bound to another installation is refused. Default: not checked. */
  installationId?: string;
  /** Clock difference tolerated on the licence's window; default 60 s, as entgate. */
  clockToleranceSeconds?: number;
  /** Per request (and to open the stream); default 10 s. */
  timeoutMs?: number;
  /** Waits between reconnections of the stream: from `minDelayMs` (or the server's `retry`, if longer), doubling to `maxDelayMs`. Defaults 1 s and 30 s. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number };
  /** The stream is called dead, and reopened, after this long without a byte; default 45 s (entgate sends a comment every 15 s). */
  idleTimeoutMs?: number;
  logger?: LicenceClientLogger;
  /** Every problem the client works around: a token refused, the stream lost, the file unwritable. */
  onError?: (error: Error) => void;
}

export interface HeldClaim {
  /** The claim as last claimed or heartbeated. */
  readonly claim: GrantedClaim;
  /** Stops heartbeating and releases the claim. */
  release(): Promise<void>;
}

interface Held {
  licence: Licence;
  token: string;
  seq: number | undefined;
}

const enc = encodeURIComponent;
/** The most of a refused stream's answer read to learn why. */
const MAX_ERROR_BODY = 64 * 1024;

/**
 * The installation's licence, for its own services (docs/licences.md): it follows entgate's
 * licence stream, verifies every licence itself with the vendor keys (never taking entgate's
 * word), keeps the current one in memory and in a file, and starts from that file when entgate
 * cannot be reached. It also makes capacity claims: `claim`, `release`, `heartbeat`, and
 * `hold`, which heartbeats a `concurrent:` claim in the background.
 *
 * `start()` resolves (never rejects) with the status once:
 * 1. the file was read: a licence in it that verifies is adopted even if expired (reported as
 *    `expired`); a file that does not verify is reported and ignored;
 * 2. the first attempt to open the stream ended: opened, or failed (entgate unreachable, a
 *    refused credential, `timeoutMs` passed);
 * 3. when it opened, entgate's current licence was asked for once (`GET /v1/licence`) and
 *    adopted if it verifies: so when entgate is reachable, the licence held after `start()` is
 *    its current one, and when it is not, the file's.
 * From then on the stream runs until `close()`, reopened with backoff after every failure or
 * end, each new licence adopted as it comes. The open stream keeps the process running until
 * `close()`.
 */
export class LicenceClient extends EventEmitter<LicenceClientEvents> {
  private readonly http: AxiosInstance;
  private readonly keys: KeyObject[];
  private trusted: TrustedKey[] | undefined;
  private held: Held | undefined;
  /** Adoptions one at a time, in the order offered. */
  private adopting: Promise<void> = Promise.resolve();
  private starting: Promise<LicenceStatus> | undefined;
  private closed = false;
  private open = false;
  private failures = 0;
  private serverRetryMs: number | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private abort: AbortController | undefined;
  private stream: Readable | undefined;
  private readonly holds = new Set<{ stop(): Promise<void> }>();
  private firstAttempt: (() => void) | undefined;

  constructor(private readonly options: LicenceClientOptions) {
    super();
    if (options.publicKeys.length === 0) throw new TypeError('LicenceClient: publicKeys names no trusted vendor key');
    this.keys = options.publicKeys.map((k) => (typeof k === 'string' ? createPublicKey(k) : k.type === 'private' ? createPublicKey(k) : k));
    this.http = apiHttp(options.baseUrl, this.timeoutMs);
    const token = (options.token ?? process.env.ENTGATE_CLIENT_TOKEN) || undefined;
    if (token !== undefined) this.http.defaults.headers.common.Authorization = `Bearer ${token}`;
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 10_000;
  }

  private get tolerance(): number {
    return this.options.clockToleranceSeconds ?? 60;
  }

  /** The licence held (valid or not: see `status`); undefined when none. */
  get licence(): Licence | undefined {
    return this.held?.licence;
  }

  /** The token of the licence held. */
  get token(): string | undefined {
    return this.held?.token;
  }

  /** Whether the stream is open now. */
  get connected(): boolean {
    return this.open;
  }

  /** The licence's status now, with the clock tolerance. */
  get status(): LicenceStatus {
    return this.held ? windowOf(this.held.licence, new Date(), this.tolerance) : 'none';
  }

  /** Whether the licence grants `feature` now: false with no licence, outside its window, or not granted. */
  hasFeature(feature: string): boolean {
    return this.status === 'valid' && grantsFeature(this.held!.licence, feature);
  }

  /**
   * The licence's limit on `capacity` (whatever its window): its number; null (no limit) for a
   * `feature:` capacity of a feature granted without one; 0 when there is no licence or it
   * names no such capacity (nothing may be claimed).
   */
  limit(capacity: string): number | null {
    return this.held ? limitUnder(this.held.licence, capacity) : 0;
  }

  /** Reads the file, opens the stream, asks for the current licence: see the class. Once only; the same promise after. */
  start(): Promise<LicenceStatus> {
    this.starting ??= (async () => {
      this.trusted = await trustKeys(this.keys);
      await this.loadFile();
      if (this.closed) return this.status;
      const attempted = new Promise<void>((resolve) => (this.firstAttempt = resolve));
      this.connect();
      await attempted;
      if (this.open) await this.fetchCurrent();
      await this.adopting;
      return this.status;
    })();
    return this.starting;
  }

  /** Stops the stream, its timers and the heartbeats of held claims (it does not release them). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.idleTimer);
    this.abort?.abort();
    this.stream?.destroy();
    this.firstAttempt?.();
    await Promise.all([...this.holds].map((h) => h.stop()));
    await this.adopting;
  }

  // --- the licence -------------------------------------------------------------------------

  private async loadFile(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.options.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.report(new LicenceFileError(this.options.file, `cannot read the licence file ${this.options.file}: ${(err as Error).message}`));
      return;
    }
    await this.offer(text.trim(), undefined, 'file');
  }

  private async fetchCurrent(): Promise<void> {
    let res: AxiosResponse;
    try {
      res = await sendApi(this.http, this.options.baseUrl, { method: 'GET', url: '/licence', headers: { Accept: 'application/json' } }, licenceError);
    } catch (err) {
      if ((err as LicenceRequestError).code !== 'no_licence') this.report(err as Error);
      return;
    }
    const body = res.data as { token?: unknown; seq?: unknown };
    if (typeof body.token === 'string') await this.offer(body.token, Number.isSafeInteger(body.seq) ? (body.seq as number) : undefined, 'server');
  }

  /** Offers a token for adoption. */
  private offer(token: string, seq: number | undefined, source: LicenceSource): Promise<void> {
    return this.inTurn(() => this.consider(token, seq, source));
  }

  /** Adoptions and refusals run one at a time, in the order the tokens came. */
  private inTurn(step: () => void | Promise<void>): Promise<void> {
    this.adopting = this.adopting.then(step).catch((err: unknown) => this.report(err as Error));
    return this.adopting;
  }

  private async consider(token: string, seq: number | undefined, source: LicenceSource): Promise<void> {
    const held = this.held;
    if (held && token === held.token) {
      held.seq = seq ?? held.seq;
      return;
    }
    if (seq !== undefined && held?.seq !== undefined && seq < held.seq) {
      this.options.logger?.info({ seq, held: held.seq }, 'licence: ignored a licence older than the one held');
      return;
    }
    const verified = await verifyLicence(token, this.trusted!, { checkWindow: false });
    if (!verified.ok) return this.refuse(new LicenceVerificationError(verified.code, `licence refused (${source}): ${verified.reason}`, source));
    const licence = verified.licence;
    const { installationId } = this.options;
    if (installationId !== undefined && licence.installation !== null && licence.installation !== installationId) {
      return this.refuse(
        new LicenceVerificationError('licence_installation_mismatch', `licence refused (${source}): it is bound to installation ${licence.installation}, not ${installationId}`, source),
      );
    }
    const status = windowOf(licence, new Date(), this.tolerance);
    if (status !== 'valid' && this.status === 'valid') {
      const why = status === 'expired' ? `it expired at ${licence.expiresAt.toISOString()}` : `it is not valid before ${licence.notBefore.toISOString()}`;
      return this.refuse(new LicenceVerificationError(`licence_${status}`, `licence refused (${source}): ${why}, and the licence held is valid`, source));
    }
    if (source === 'server') await this.writeFile(token);
    this.held = { licence, token, seq };
    this.options.logger?.info({ licenceId: licence.id, seq, source, status, expiresAt: licence.expiresAt.toISOString() }, 'licence adopted');
    this.emit('licence', licence, { token, seq, source, status });
  }

  private refuse(error: LicenceVerificationError): void {
    this.emit('invalid', error);
    this.report(error);
  }

  /** Writes the token beside the file, then renames it over: a reader sees the old licence or the new, never half of one. */
  private async writeFile(token: string): Promise<void> {
    const file = this.options.file;
    const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await mkdir(dirname(file), { recursive: true });
      await writeFile(temp, `${token}\n`, { mode: 0o644, flush: true });
      await rename(temp, file);
    } catch (err) {
      await rm(temp, { force: true }).catch(() => {});
      this.report(new LicenceFileError(file, `cannot write the licence file ${file}: ${(err as Error).message}`));
    }
  }

  private report(error: Error): void {
    this.options.logger?.warn({ err: error.message, code: (error as { code?: unknown }).code }, 'licence client');
    this.options.onError?.(error);
  }

  // --- the stream --------------------------------------------------------------------------

  private connect(): void {
    if (this.closed) return;
    const abort = new AbortController();
    this.abort = abort;
    const headers: Record<string, string> = { Accept: 'text/event-stream', 'Cache-Control': 'no-cache' };
    if (this.held?.seq !== undefined) headers['Last-Event-ID'] = String(this.held.seq);
    this.http
      .get('/licence/events', { responseType: 'stream', signal: abort.signal, headers })
      .then(
        (res) => this.opened(res, abort),
        (err: unknown) => this.ended(abort, this.closed ? undefined : licenceError(unreachable(this.options.baseUrl, err))),
      )
      .catch((err: unknown) => this.report(err as Error));
  }

  private async opened(res: AxiosResponse, abort: AbortController): Promise<void> {
    const stream = res.data as Readable;
    if (res.status !== 200) {
      const body = await readSmall(stream);
      let data: unknown;
      try {
        data = JSON.parse(body);
      } catch {
        data = undefined;
      }
      return this.ended(abort, licenceError(refusalOf(res.status, data)));
    }
    if (this.closed || abort.signal.aborted) {
      stream.destroy();
      return;
    }
    this.stream = stream;
    this.open = true;
    this.failures = 0;
    this.emit('connected');
    this.firstAttempt?.();
    const parser = new SseParser({ event: (e) => this.onEvent(e), retry: (ms) => (this.serverRetryMs = ms) });
    const idleMs = this.options.idleTimeoutMs ?? 45_000;
    this.idleTimer = setTimeout(() => stream.destroy(new Error(`the licence stream sent nothing for ${idleMs} ms`)), idleMs);
    stream.on('data', (chunk: Buffer) => {
      this.idleTimer?.refresh();
      try {
        parser.push(chunk);
      } catch (err) {
        stream.destroy(err as Error);
      }
    });
    stream.once('error', (err) => this.ended(abort, this.closed ? undefined : licenceError(unreachable(this.options.baseUrl, err))));
    stream.once('close', () => this.ended(abort, undefined));
  }

  private onEvent(event: SseEvent): void {
    if (event.type !== 'licence') return;
    let body: { token?: unknown; seq?: unknown } | null;
    try {
      body = JSON.parse(event.data) as typeof body;
    } catch {
      body = null;
    }
    if (typeof body !== 'object' || body === null || typeof body.token !== 'string') {
      void this.inTurn(() => this.refuse(new LicenceVerificationError('licence_malformed', 'licence refused (server): the event carries no token (its data is not {"token": ...})', 'server')));
      return;
    }
    const fromId = /^[0-9]+$/.test(event.lastEventId) ? Number(event.lastEventId) : undefined;
    const seq = Number.isSafeInteger(body.seq) ? (body.seq as number) : fromId;
    void this.offer(body.token, seq, 'server');
  }

  /** The end of one connection (each reported once): reopened after a backoff unless closed. */
  private ended(abort: AbortController, error: Error | undefined): void {
    if (abort !== this.abort) return;
    this.abort = undefined;
    clearTimeout(this.idleTimer);
    this.stream = undefined;
    const wasOpen = this.open;
    this.open = false;
    if (wasOpen) this.emit('disconnected', error);
    if (error) this.report(error);
    this.firstAttempt?.();
    this.firstAttempt = undefined;
    if (this.closed) return;
    const min = this.options.reconnect?.minDelayMs ?? 1000;
    const max = Math.max(min, this.options.reconnect?.maxDelayMs ?? 30_000);
    const base = Math.min(max, Math.max(min, this.serverRetryMs ?? min));
    // Jittered, so that services restarted together do not all come back at once.
    const delay = Math.max(min, Math.min(max, base * 2 ** this.failures) * (0.75 + Math.random() * 0.25));
    if (!wasOpen) this.failures = Math.min(this.failures + 1, 30);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  // --- capacities --------------------------------------------------------------------------

  /**
   * Claims `capacity` for entity `id`: `created` false when it held it already (a
   * `concurrent:` claim is then renewed). Throws CapacityExceededError, FeatureNotLicensedError,
   * LicenceExpiredError, LicenceNotYetValidError, CapacityNotLicensedError, or
   * LicenceRequestError (400 invalid_capacity, invalid_request; status 0: unreachable).
   */
  async claim(capacity: string, id: string, options: { ttlSeconds?: number; metadata?: Record<string, unknown> } = {}): Promise<{ created: boolean; claim: GrantedClaim }> {
    const res = await this.send('POST', `/capacities/${enc(capacity)}/claims`, { id, ...options });
    return { created: res.status === 201, claim: res.data as GrantedClaim };
  }

  /** Renews a `concurrent:` claim; ClaimNotHeldError when it is not held (released, or lapsed). */
  async heartbeat(capacity: string, id: string, options: { ttlSeconds?: number } = {}): Promise<GrantedClaim> {
    return (await this.send('POST', `/capacities/${enc(capacity)}/claims/${enc(id)}/heartbeat`, options)).data as GrantedClaim;
  }

  /** Releases a claim; ClaimNotHeldError when it is not held. */
  async release(capacity: string, id: string): Promise<void> {
    await this.send('DELETE', `/capacities/${enc(capacity)}/claims/${enc(id)}`);
  }

  /** The claim `id` holds on `capacity`, or undefined. */
  async find(capacity: string, id: string): Promise<Claim | undefined> {
    try {
      return (await this.send('GET', `/capacities/${enc(capacity)}/claims/${enc(id)}`)).data as Claim;
    } catch (err) {
      if (err instanceof ClaimNotHeldError) return undefined;
      throw err;
    }
  }

  /** The licence's capacities and what is used of each, as entgate counts them now. */
  async capacities(): Promise<CapacityUse[]> {
    return ((await this.send('GET', '/capacities')).data as { items: CapacityUse[] }).items;
  }

  /**
   * Claims, and for a `concurrent:` claim heartbeats it every `heartbeatIntervalSeconds` until
   * released. A heartbeat that fails for a transport reason is retried while the claim may
   * still be live; a claim found not held, or no heartbeat through before it lapses, calls
   * `onLost` once (ClaimNotHeldError). Other claims are held until released, without heartbeats.
   */
  async hold(
    capacity: string,
    id: string,
    options: { ttlSeconds?: number; metadata?: Record<string, unknown> } = {},
    handlers: { onLost?: (error: ClaimNotHeldError) => void } = {},
  ): Promise<HeldClaim> {
    const { claim } = await this.claim(capacity, id, options);
    const renewal = options.ttlSeconds === undefined ? {} : { ttlSeconds: options.ttlSeconds };
    const kept =
      claim.heartbeatIntervalSeconds === null
        ? { current: claim, stop: async () => {} }
        : keepAlive(claim, {
            renew: () => this.heartbeat(capacity, id, renewal),
            intervalSeconds: (c) => c.heartbeatIntervalSeconds ?? 1,
            expiresAt: (c) => (c.expiresAt === null ? Infinity : Date.parse(c.expiresAt)),
            isLoss: (err): err is ClaimNotHeldError => err instanceof ClaimNotHeldError,
            lapsed: (err) => new ClaimNotHeldError('claim_lapsed', `no heartbeat succeeded before the claim lapsed: ${err.message}`),
            onLost: (err) => {
              this.holds.delete(kept);
              handlers.onLost?.(err);
            },
          });
    this.holds.add(kept);
    return {
      get claim() {
        return kept.current;
      },
      release: async () => {
        this.holds.delete(kept);
        await kept.stop();
        await this.release(capacity, id);
      },
    };
  }

  private send(method: 'GET' | 'POST' | 'DELETE', url: string, data?: object): Promise<AxiosResponse> {
    return sendApi(this.http, this.options.baseUrl, { method, url, data }, licenceError);
  }
}

/** The typed error for a refusal of entgate's licence API. */
function licenceError(r: Refusal): LicenceRequestError {
  const capacity = typeof r.fields.capacity === 'string' ? r.fields.capacity : typeof r.fields.feature === 'string' ? r.fields.feature : '';
  switch (r.code) {
    case 'capacity_exceeded': {
      const retry = Number(r.headers['retry-after']);
      return new CapacityExceededError(r.message, capacity, Number(r.fields.limit), Number(r.fields.inUse), Number.isFinite(retry) && retry > 0 ? retry : undefined);
    }
    case 'feature_not_licensed':
      return new FeatureNotLicensedError(r.message, capacity);
    case 'licence_expired':
      return new LicenceExpiredError(r.message);
    case 'licence_not_yet_valid':
      return new LicenceNotYetValidError(r.message);
    case 'unknown_capacity':
    case 'no_licence':
      return r.status === 404 ? new CapacityNotLicensedError(r.code, r.message) : new LicenceRequestError(r.status, r.code, r.message);
    case 'claim_not_held':
      return new ClaimNotHeldError('claim_not_held', r.message);
    default:
      return new LicenceRequestError(r.status, r.code, r.message);
  }
}

/** A refused stream's answer, as text (at most MAX_ERROR_BODY bytes). */
async function readSmall(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= MAX_ERROR_BODY) break;
    }
  } catch {
    // what arrived is enough
  }
  stream.destroy();
  return Buffer.concat(chunks).toString('utf8');
}
