import type { Knex } from 'knex';
import { AppError, ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { keyHint, type KeyHasher } from '../domain/virtual-key.ts';
import { BLOCKED_REASON, guessSubject, type GuessGuard } from '../domain/guess-guard.ts';
import type { CheckEvent } from '../store/check-events.ts';
import { allows, type Principal } from '../admin/scopes.ts';
import type { VirtualKey } from '../domain/types.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import { compileCidrs, ipInRanges, parseIp } from '../domain/ip.ts';
import type { AcquireTarget, ClientKey, Lease, LeaseEvent, LeasesRepo, Pool, PoolInput } from './repo.ts';
import { ownerOfNewPool, poolNameOf } from './pool-kinds.ts';
import { defaultHeartbeatInterval, endedAs, heartbeatFor, resolveTtl, retryAfterSeconds } from './rules.ts';
import { parseSignedRequest, readPublicKey, verifySignedRequest, type SignedRequest } from './signed-request.ts';
import type { AcquireBody, PoolCreate, PoolPatch } from './schemas.ts';
import { Idempotency, requestHashOf, type IdempotencyKey, type Replayed } from './idempotency.ts';

export interface LeaseServiceOptions {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  signedRequestWindowMs: number;
  tidyIntervalMs: number;
  retentionHours: number;
}

/**
 * Virtual keys tried at the lease endpoint count against the rUS check's guessing budgets
 * (the subject is the caller's address, an IPv6 one by its /64), and refusals are recorded as
 * check events with resolver `lease-endpoint`.
 */
export interface LeaseGuessing {
  guard: GuessGuard | undefined;
  recordEvent: (event: CheckEvent) => void;
}

/** The resolver named in check events recorded by the lease endpoint. */
export const LEASE_ENDPOINT_RESOLVER = 'lease-endpoint';

/** What a lease route answers. */
export interface LeaseResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** A request as the routes hand it over: the body as parsed JSON, or the text of a signed message. */
export interface LeaseRequestContext {
  body: unknown;
  clientAddress: string | null;
  idempotencyKey: string | undefined;
  /** Who the Authorization header names (authenticated on first call; 401 for a bad token); undefined without one. */
  principal: () => Promise<Principal | undefined>;
}

export function leaseView(lease: Lease, pool: Pool) {
  return {
    leaseId: lease.id,
    pool: pool.name,
    clientId: lease.clientId,
    acquiredAt: lease.acquiredAt.toISOString(),
    renewedAt: lease.renewedAt.toISOString(),
    expiresAt: lease.expiresAt.toISOString(),
    ttlSeconds: lease.ttlSeconds,
    heartbeatIntervalSeconds: heartbeatFor(lease.ttlSeconds, pool),
    metadata: lease.metadata,
  };
}

export function poolView(pool: Pool) {
  return {
    name: pool.name,
    seats: pool.seats,
    defaultTtlSeconds: pool.defaultTtlSeconds,
    maxTtlSeconds: pool.maxTtlSeconds,
    heartbeatIntervalSeconds: pool.heartbeatIntervalSeconds,
    requireSignedRequests: pool.requireSignedRequests,
    anonymous: pool.anonymous,
    virtualKeyId: pool.virtualKeyId,
    createdAt: pool.createdAt.toISOString(),
    updatedAt: pool.updatedAt.toISOString(),
  };
}

/**
 * Floating leases: acquire, heartbeat and release, each one transaction that holds the pool's
 * row lock (acquire) or touches one lease row (heartbeat, release), so the seat limit holds
 * across every process sharing the database. Signed requests, idempotency keys and the
 * background tidy-up live here too.
 */
export class LeaseService {
  private tidyTimer: NodeJS.Timeout | undefined;
  private tidying: Promise<unknown> | undefined;
  private readonly idempotency: Idempotency;

  constructor(
    private readonly repo: LeasesRepo,
    private readonly virtualKeys: VirtualKeysRepo,
    private readonly hashKey: KeyHasher,
    private readonly options: LeaseServiceOptions,
    private readonly logger: Logger,
    private readonly guessing: LeaseGuessing = { guard: undefined, recordEvent: () => {} },
  ) {
    this.idempotency = new Idempotency(repo);
  }

  private get knex(): Knex {
    return this.repo.knex;
  }

  // ---- the client protocol -------------------------------------------------------------

  async acquire(ctx: LeaseRequestContext, parse: (payload: unknown) => AcquireBody): Promise<LeaseResult> {
    const { payload, signed } = await this.readBody(ctx.body);
    const body = parse(payload);
    let virtualKey: { id: number; seats: number } | undefined;
    if (body.virtualKey !== undefined) virtualKey = await this.virtualKeyPool(body.virtualKey, ctx.clientAddress);
    const target: AcquireTarget = virtualKey
      ? {
          kind: 'virtual_key',
          virtualKeyId: virtualKey.id,
          name: poolNameOf({ kind: 'virtual_key', virtualKeyId: virtualKey.id }),
          seats: virtualKey.seats,
          defaults: this.virtualKeyPoolDefaults(),
        }
      : { kind: 'named', name: body.pool! };
    const poolName = target.name;
    const known = await this.repo.poolOf(target);
    if (!known && !virtualKey) throw new NotFoundError(`pool ${poolName}`);
    // A virtual key's pool is reached with the key, an SES application's through the SES
    // protocol with a token: never by name, which would skip what guards them.
    if (known && known.kind !== target.kind) {
      throw new AppError(403, 'not_entitled', `pool ${poolName} is not acquired by name`);
    }
    // Before a stored answer is replayed: it holds the lease id.
    const credential = virtualKey ? `vk:${virtualKey.id}` : await this.clientCredential(known!, signed, body.clientId, ctx);
    // Keys are scoped to the pool and client, so two clients that pick the same key never meet.
    const scope = `POST /v1/leases ${poolName} ${body.clientId}`;
    const idem = idempotencyKey(ctx, payload, signed);
    const replayed = idem && (await this.idempotency.replay(scope, idem));
    if (replayed) return replayedResult(replayed);
    // A virtual key's pool is made on first use, unsigned; a signed request to it is checked all the same.
    await this.authenticate(known ?? ({ name: poolName, requireSignedRequests: false } as Pool), signed, body.clientId);
    const ttlProblem = known ? resolveTtl(body.ttlSeconds, known) : undefined;
    if (ttlProblem && 'problem' in ttlProblem) throw new ValidationError(`invalid request body: ${ttlProblem.problem}`);
    if (known) {
      // Refusing needs no lock: full of other clients' leases now is a correct answer now.
      // Only a request that may be granted queues on the pool's row lock.
      const full = await this.repo.fullWithoutMe(known.id, virtualKey?.seats ?? known.seats, body.clientId);
      if (full) {
        await this.repo.event(this.knex, 'denied', known.name, null, body.clientId, 'no_seat_available', ctx.clientAddress);
        return noSeat({ ...known, seats: virtualKey?.seats ?? known.seats }, full);
      }
    }

    return this.write(scope, idem, async (db) => {
      const result = await this.repo.acquire(db, target, {
        clientId: body.clientId,
        ttlSeconds: body.ttlSeconds,
        clientAddress: ctx.clientAddress,
        metadata: body.metadata ?? {},
        credential,
      });
      switch (result.outcome) {
        case 'no_pool':
          throw new NotFoundError(`pool ${poolName}`);
        case 'other_kind':
          throw new AppError(403, 'not_entitled', `pool ${poolName} is not acquired by name`);
        case 'ttl_too_long':
          throw new ValidationError(`invalid request body: ttlSeconds must be a whole number from 1 to ${result.pool.maxTtlSeconds} for this pool`);
        case 'full':
          return noSeat(result.pool, result);
        case 'client_id_in_use':
          throw new ConflictError('client_id_in_use', `clientId ${body.clientId} holds a live lease in pool ${poolName} acquired with another credential`);
        default:
          return { status: result.outcome === 'acquired' ? 201 : 200, body: leaseView(result.lease, result.pool) };
      }
    });
  }

  async heartbeat(id: string, ctx: LeaseRequestContext, parse: (payload: unknown) => HolderBody & { ttlSeconds?: number | undefined }): Promise<LeaseResult> {
    const { payload, signed } = await this.readBody(ctx.body ?? {});
    const body = parse(payload);
    const found = await this.repo.getLease(id);
    if (!found) throw new NotFoundError(`lease ${id}`);
    await this.checkHolder(found.lease, ctx, signed, body.virtualKey);
    const scope = `POST /v1/leases/${id}/heartbeat`;
    const idem = idempotencyKey(ctx, payload, signed);
    const replayed = idem && (await this.idempotency.replay(scope, idem));
    if (replayed) return replayedResult(replayed);
    await this.authenticate(found.pool, signed, found.lease.clientId, { leaseId: id, given: body.leaseId });
    if (found.pool.kind === 'virtual_key' && !(await this.virtualKeyStillHoldsLeases(found.pool.virtualKeyId!))) {
      // The key was revoked, suspended, expired or lost its leases: its leases end at their next heartbeat.
      await this.repo.release(this.knex, id, 'virtual_key_not_entitled', ctx.clientAddress);
      throw new AppError(410, 'lease_revoked', 'the virtual key no longer holds floating leases; the lease has ended');
    }
    const ttl = resolveTtl(body.ttlSeconds, found.pool, found.lease.ttlSeconds);
    if ('problem' in ttl) throw new ValidationError(`invalid request body: ${ttl.problem}`);
    return this.write(scope, idem, async (trx) => {
      const renewed = await this.repo.renew(trx, id, ttl.ttlSeconds, ctx.clientAddress);
      if (renewed) return { status: 200, body: leaseView(renewed, found.pool) };
      const now = await this.repo.getLease(id, trx);
      const ended = now ? (endedAs(now.lease, new Date()) ?? 'expired') : 'expired';
      throw new AppError(
        410,
        ended === 'released' ? 'lease_released' : 'lease_expired',
        ended === 'released'
          ? 'the lease was released; acquire a new one'
          : 'the lease expired before this heartbeat; its seat may be taken: acquire a new one',
      );
    });
  }

  async release(id: string, ctx: LeaseRequestContext, parse: (payload: unknown) => HolderBody): Promise<LeaseResult> {
    const { payload, signed } = await this.readBody(ctx.body ?? {});
    const body = parse(payload);
    const found = await this.repo.getLease(id);
    if (!found) throw new NotFoundError(`lease ${id}`);
    await this.checkHolder(found.lease, ctx, signed, body.virtualKey);
    const scope = `DELETE /v1/leases/${id}`;
    const idem = idempotencyKey(ctx, payload, signed);
    const replayed = idem && (await this.idempotency.replay(scope, idem));
    if (replayed) return replayedResult(replayed);
    await this.authenticate(found.pool, signed, found.lease.clientId, { leaseId: id, given: body.leaseId });
    return this.write(scope, idem, async (trx) => {
      await this.repo.release(trx, id, null, ctx.clientAddress);
      return { status: 204 };
    });
  }

  // ---- administration ------------------------------------------------------------------

  async createPool(input: PoolCreate): Promise<ReturnType<typeof poolView>> {
    const owner = ownerOfNewPool(input.name);
    if (input.anonymous && owner.kind !== 'named') throw notAnonymous(input.name);
    const limits = this.completePool(input);
    try {
      return poolView(await this.repo.createPool(input.name, owner, limits));
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new ConflictError('pool_exists', `pool ${input.name} already exists`);
      throw err;
    }
  }

  async updatePool(name: string, patch: PoolPatch): Promise<ReturnType<typeof poolView>> {
    const current = (await this.repo.getPool(name)) ?? notFoundPool(name);
    if (patch.seats !== undefined && current.kind === 'virtual_key') {
      throw new ValidationError(
        `the seats of pool ${name} follow virtual key ${current.virtualKeyId}: change its maxConcurrentLeases instead`,
      );
    }
    if (patch.anonymous && current.kind !== 'named') throw notAnonymous(name);
    const merged = { ...current, ...definedOnly(patch) };
    checkPoolLimits(merged);
    return poolView((await this.repo.updatePool(name, definedOnly(patch))) ?? notFoundPool(name));
  }

  async deletePool(name: string, force: boolean): Promise<void> {
    const result = await this.repo.deletePool(name, force);
    if (result === 'not_found') notFoundPool(name);
    if (result === 'in_use') throw new ConflictError('pool_in_use', `pool ${name} has live leases; release them first or delete with force`);
  }

  async listPools() {
    return (await this.repo.listPools()).map((p) => ({ ...poolView(p), inUse: p.inUse }));
  }

  /** A pool with its live leases (addresses included: this is for admins). */
  async describePool(name: string) {
    const pool = (await this.repo.getPool(name)) ?? notFoundPool(name);
    const leases = await this.repo.liveLeases(this.knex, pool.id, pool.name);
    return {
      ...poolView(pool),
      inUse: leases.length,
      leases: leases.map((l) => ({ ...leaseView(l, pool), clientAddress: l.clientAddress })),
    };
  }

  /** Ends a lease on an admin's word (recorded as released, reason `forced`). */
  async forceRelease(id: string): Promise<void> {
    const result = await this.repo.release(this.knex, id, 'forced', null);
    if (result === 'not_found') throw new NotFoundError(`lease ${id}`);
  }

  events(filter: { pool?: string; leaseId?: string; limit: number }): Promise<LeaseEvent[]> {
    return this.repo.events(filter);
  }

  async addClientKey(clientId: string, armored: string): Promise<ClientKey> {
    const key = await readPublicKey(armored);
    try {
      return await this.repo.addClientKey(clientId, key.fingerprint, key.armored);
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw new ConflictError('client_key_exists', `the key ${key.fingerprint} is already registered`);
      }
      throw err;
    }
  }

  listClientKeys(clientId?: string): Promise<ClientKey[]> {
    return this.repo.listClientKeys(clientId);
  }

  async deleteClientKey(fingerprint: string): Promise<void> {
    if (!(await this.repo.deleteClientKey(fingerprint.toLowerCase()))) throw new NotFoundError(`client key ${fingerprint}`);
  }

  // ---- background ----------------------------------------------------------------------

  /** Logs, at start, the pools anyone who reaches /v1 may take seats of. */
  async warnAboutAnonymousPools(): Promise<void> {
    const names = await this.repo.anonymousPoolNames();
    if (names.length === 0) return;
    this.logger.warn(
      { pools: names },
      'these lease pools are anonymous: anyone who reaches /v1 may take and keep their seats. Give clients a token with the leases:client scope ' +
        '(entgate admin-token create --scope leases:client), then `entgate pool update <name> --no-anonymous`',
    );
  }

  /** Starts the tidy job (expired events, retention); its failures are logged, never thrown. */
  startTidy(): void {
    const run = () => {
      // One pass at a time: while the database cannot answer, passes must not pile up.
      if (this.tidying) return;
      this.tidying = this.repo.tidy(this.options.retentionHours).then(
        (r) => {
          if (r.expired > 0 || r.deleted > 0) this.logger.debug(r, 'leases tidied');
        },
        (err: Error) => this.logger.warn({ err: err.message }, 'lease tidy-up failed; it runs again shortly'),
      ).finally(() => (this.tidying = undefined));
    };
    this.tidyTimer = setInterval(run, this.options.tidyIntervalMs);
    this.tidyTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.tidyTimer) clearInterval(this.tidyTimer);
    await this.tidying;
  }

  /** One pass of the tidy job, for tests and operators. */
  tidyNow() {
    return this.repo.tidy(this.options.retentionHours);
  }

  // ---- helpers -------------------------------------------------------------------------

  private async readBody(body: unknown): Promise<{ payload: unknown; signed: SignedRequest | undefined }> {
    if (typeof body === 'string') {
      const signed = await parseSignedRequest(body);
      return { payload: signed.payload, signed };
    }
    return { payload: body ?? {}, signed: undefined };
  }

  /**
   * The credential an acquire of a named pool is bound to: a signed request (verified by
   * authenticate()), else a client token (scope `leases:client`), else none if the pool is
   * anonymous. 401 `client_credential_required` otherwise.
   */
  private async clientCredential(pool: Pool, signed: SignedRequest | undefined, clientId: string, ctx: LeaseRequestContext): Promise<string | null> {
    if (signed) return `signed:${clientId}`;
    const principal = await ctx.principal();
    if (principal) return tokenCredential(principal);
    if (pool.anonymous || pool.requireSignedRequests) return null; // a signed pool refuses in authenticate()
    throw credentialRequired(`pool ${pool.name}`);
  }

  /**
   * A heartbeat or release needs the credential its lease was acquired with: the same client
   * token, a request signed by the lease client's key (checked by authenticate()), or the same
   * virtual key. A lease of an anonymous pool (credential null) needs only its id.
   */
  private async checkHolder(lease: Lease, ctx: LeaseRequestContext, signed: SignedRequest | undefined, virtualKey: string | undefined): Promise<void> {
    const held = lease.credential;
    if (held === null) return;
    const notHolder = () => new AppError(403, 'not_lease_holder', 'this lease was acquired with another credential');
    if (held.startsWith('signed:')) {
      if (!signed) throw new AppError(401, 'signed_request_required', 'this lease was acquired with a signed request: sign its heartbeat and release too');
    } else if (held.startsWith('vk:')) {
      if (virtualKey === undefined) throw credentialRequired('this lease (give its virtualKey)');
      const vk = await this.findVirtualKey(virtualKey, ctx.clientAddress);
      if (vk === undefined || `vk:${vk.id}` !== held) throw notHolder();
    } else {
      const principal = await ctx.principal();
      if (!principal) throw credentialRequired('this lease (its client token)');
      if (tokenCredential(principal) !== held) throw notHolder();
    }
  }

  /**
   * Looks up a virtual key for the lease endpoint under the rUS check's guessing budgets: a
   * caller past its budget is refused before any lookup, an unknown key counts against it,
   * and both are recorded as check events. Undefined for either.
   */
  private async findVirtualKey(key: string, clientAddress: string | null): Promise<VirtualKey | undefined> {
    const guard = this.guessing.guard;
    const subject = guard ? guessSubject(clientAddress ?? undefined, null) : undefined;
    if (guard?.isRefused(subject)) {
      this.recordRefusal(key, clientAddress, null, BLOCKED_REASON);
      return undefined;
    }
    const vk = await this.virtualKeys.findByHash(this.hashKey(key));
    if (vk === undefined) {
      guard?.recordFailure(subject);
      this.recordRefusal(key, clientAddress, null, 'unknown_key');
    }
    return vk;
  }

  private recordRefusal(key: string, clientAddress: string | null, virtualKeyId: number | null, reason: string): void {
    this.guessing.recordEvent({
      occurredAt: new Date(),
      server: null,
      class: null,
      keyHint: keyHint(key),
      virtualKeyId,
      remoteIp: clientAddress,
      callerIp: clientAddress,
      decision: 'denied',
      reason,
      resolver: LEASE_ENDPOINT_RESOLVER,
      latencyUs: 0,
    });
  }

  /**
   * A pool that requires signed requests takes only those, signed by a key of the lease's
   * client, fresh, never seen before; a signed request to any other pool is checked all the same.
   */
  private async authenticate(
    pool: Pool,
    signed: SignedRequest | undefined,
    clientId: string,
    binding?: { leaseId: string; given: string | undefined },
  ): Promise<void> {
    if (!signed) {
      if (pool.requireSignedRequests) {
        throw new AppError(401, 'signed_request_required', `pool ${pool.name} takes only OpenPGP clear-signed requests (Content-Type: text/plain)`);
      }
      return;
    }
    if ((signed.payload.clientId ?? clientId) !== clientId) {
      throw new AppError(401, 'bad_signature', 'the signed clientId is not the lease holder');
    }
    if (binding && binding.given !== binding.leaseId) {
      throw new AppError(401, 'bad_signature', 'a signed heartbeat or release must carry the leaseId of its path');
    }
    const keys = await this.repo.publicKeysOf(clientId);
    await verifySignedRequest(signed, keys, this.options.signedRequestWindowMs, Date.now());
    // Kept well past the window: the database's clock, which deletes it, may differ from ours.
    const forgetAfter = new Date(Math.max(signed.payload.ts as number, Date.now()) + this.options.signedRequestWindowMs + 300_000);
    if (!(await this.repo.rememberSignature(signed.digest, forgetAfter))) {
      throw new AppError(401, 'request_replayed', 'this signed request was already used; sign a new one');
    }
  }

  private async virtualKeyStillHoldsLeases(virtualKeyId: number): Promise<boolean> {
    return holdsLeases(await this.virtualKeys.get(virtualKeyId), Date.now()) !== undefined;
  }

  /**
   * Checks a virtual key may hold leases from this address; one answer for every refusal
   * (unknown, blocked for guessing, not entitled, another network), each recorded.
   */
  private async virtualKeyPool(key: string, clientAddress: string | null): Promise<{ id: number; seats: number }> {
    const vk = await this.findVirtualKey(key, clientAddress);
    const refused = new AppError(403, 'not_entitled', 'this virtual key holds no floating leases');
    if (vk === undefined) throw refused;
    const seats = holdsLeases(vk, Date.now());
    if (seats === undefined) {
      this.recordRefusal(key, clientAddress, vk.id, 'no_floating_leases');
      throw refused;
    }
    if (vk.allowedCidrs.length > 0) {
      const ip = clientAddress ? parseIp(clientAddress) : undefined;
      if (!ip || !ipInRanges(ip, compileCidrs(vk.allowedCidrs))) {
        this.recordRefusal(key, clientAddress, vk.id, 'network_not_allowed');
        throw refused;
      }
    }
    return { id: vk.id, seats };
  }

  private virtualKeyPoolDefaults(): Omit<PoolInput, 'seats'> {
    return {
      defaultTtlSeconds: this.options.defaultTtlSeconds,
      maxTtlSeconds: Math.max(this.options.maxTtlSeconds, this.options.defaultTtlSeconds),
      heartbeatIntervalSeconds: defaultHeartbeatInterval(this.options.defaultTtlSeconds),
      requireSignedRequests: false,
      anonymous: false,
    };
  }

  private completePool(input: PoolCreate): PoolInput {
    const defaultTtlSeconds = input.defaultTtlSeconds ?? Math.min(this.options.defaultTtlSeconds, input.maxTtlSeconds ?? Infinity);
    const limits: PoolInput = {
      seats: input.seats,
      defaultTtlSeconds,
      maxTtlSeconds: input.maxTtlSeconds ?? Math.max(this.options.maxTtlSeconds, defaultTtlSeconds),
      heartbeatIntervalSeconds: input.heartbeatIntervalSeconds ?? defaultHeartbeatInterval(defaultTtlSeconds),
      requireSignedRequests: input.requireSignedRequests ?? false,
      anonymous: input.anonymous ?? false,
    };
    checkPoolLimits(limits);
    return limits;
  }

  private async write(scope: string, idem: IdempotencyKey<LeaseResult> | undefined, op: (db: Knex | Knex.Transaction) => Promise<LeaseResult>): Promise<LeaseResult> {
    const result = await this.idempotency.write(scope, idem, op);
    return 'kind' in result ? replayedResult(result) : result;
  }
}

function idempotencyKey(ctx: LeaseRequestContext, payload: unknown, signed: SignedRequest | undefined): IdempotencyKey<LeaseResult> | undefined {
  if (ctx.idempotencyKey === undefined) return undefined;
  return { key: ctx.idempotencyKey, requestHash: requestHashOf(payload, signed?.digest), answerOf: (result) => result };
}

const replayedResult = (replayed: Replayed): LeaseResult => ({ ...replayed.answer, headers: { 'Idempotent-Replayed': 'true' } });

/** The seats a virtual key holds now: active, inside its window, with maxConcurrentLeases; else undefined. */
function holdsLeases(vk: VirtualKey | undefined, now: number): number | undefined {
  if (!vk || vk.status !== 'active' || vk.maxConcurrentLeases === null) return undefined;
  if ((vk.notBefore && now < vk.notBefore.getTime()) || (vk.expiresAt && now >= vk.expiresAt.getTime())) return undefined;
  return vk.maxConcurrentLeases;
}

/** 409 with what a refused client needs: seats, in use, and when the earliest lease expires. */
function noSeat(pool: Pick<Pool, 'name' | 'seats'>, state: { inUse: number; earliestExpiry: Date | null; now: Date }): LeaseResult {
  const retryAfter = retryAfterSeconds(state.earliestExpiry, state.now);
  return {
    status: 409,
    headers: { 'Retry-After': String(retryAfter) },
    body: {
      code: 'no_seat_available',
      message: `all ${pool.seats} seats of pool ${pool.name} are in use`,
      pool: pool.name,
      seats: pool.seats,
      inUse: state.inUse,
      retryAfterSeconds: retryAfter,
    },
  };
}

function checkPoolLimits(p: Omit<PoolInput, 'seats'>): void {
  if (p.anonymous && p.requireSignedRequests) {
    throw new ValidationError('invalid pool: an anonymous pool cannot require signed requests (make it one or the other)');
  }
  if (p.maxTtlSeconds < p.defaultTtlSeconds) {
    throw new ValidationError(`invalid pool: maxTtlSeconds (${p.maxTtlSeconds}) is below defaultTtlSeconds (${p.defaultTtlSeconds})`);
  }
  if (p.heartbeatIntervalSeconds >= p.defaultTtlSeconds) {
    throw new ValidationError(
      `invalid pool: heartbeatIntervalSeconds (${p.heartbeatIntervalSeconds}) must be shorter than defaultTtlSeconds (${p.defaultTtlSeconds})`,
    );
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** What heartbeat and release bodies may carry to show they hold the lease. */
interface HolderBody {
  leaseId?: string | undefined;
  virtualKey?: string | undefined;
}

/** A client token's credential: its id (the bootstrap token has none). */
const tokenCredential = (principal: Principal): string => {
  if (!allows(principal.scopes, ['leases:client'])) {
    throw new AppError(403, 'insufficient_scope', 'this token may not hold leases: it needs the leases:client scope');
  }
  return `token:${principal.tokenId ?? principal.name}`;
};

const credentialRequired = (what: string) =>
  new AppError(
    401,
    'client_credential_required',
    `${what} needs a client credential: a bearer token with the leases:client scope, a virtual key, or a signed request`,
  );

const notAnonymous = (name: string) =>
  new ValidationError(`pool ${name} is reached with its virtual key or SES token only: it cannot be made anonymous`);

function notFoundPool(name: string): never {
  throw new NotFoundError(`pool ${name}`);
}
