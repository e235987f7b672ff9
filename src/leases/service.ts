import type { Knex } from 'knex';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { KeyHasher } from '../domain/virtual-key.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import type { AcquireRequest, ClientKey, Lease, LeaseEvent, LeasesRepo, Pool, PoolInput } from './repo.ts';
import { ownerOfNewPool } from './pool-kinds.ts';
import { defaultHeartbeatInterval, resolveTtl } from './rules.ts';
import { readPublicKey } from './signed-request.ts';
import type { AcquireBody, HeartbeatBody, PoolCreate, PoolPatch, ReleaseBody } from './schemas.ts';
import { Idempotency, type IdempotencyKey, type Replayed } from './idempotency.ts';
import { SeatEngine, type SeatTarget } from './seats.ts';
import { LeaseCredentials, type Caller, type LeaseGuessing } from './credentials.ts';
import { LeaseRefusal, type AcquireOutcome, type HeartbeatOutcome, type ReleaseOutcome } from './outcomes.ts';
import { leaseView, poolView } from './views.ts';

export interface LeaseServiceOptions {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  signedRequestWindowMs: number;
  tidyIntervalMs: number;
  retentionHours: number;
}

/** A request of the lease protocol as the routes hand it over: who asks, and its Idempotency-Key if it has one. */
export interface LeaseRequest<O> extends Caller {
  idempotency: IdempotencyKey<O> | undefined;
}

/**
 * Floating leases: the rules of the /v1 protocol (whose credential, which pool, in what order
 * a request is checked) over the seat engine, which takes and gives back the seats; pool and
 * client-key administration; the background tidy-up. Answers are outcomes, put in HTTP by the
 * routes.
 */
export class LeaseService {
  /** The one seat engine, shared with the SES protocol. */
  readonly seats: SeatEngine;
  private readonly credentials: LeaseCredentials;
  private readonly idempotency: Idempotency;
  private tidyTimer: NodeJS.Timeout | undefined;
  private tidying: Promise<unknown> | undefined;

  constructor(
    private readonly repo: LeasesRepo,
    virtualKeys: VirtualKeysRepo,
    hashKey: KeyHasher,
    private readonly options: LeaseServiceOptions,
    private readonly logger: Logger,
    guessing: LeaseGuessing = { guard: undefined, recordEvent: () => {} },
  ) {
    this.seats = new SeatEngine(repo);
    this.credentials = new LeaseCredentials(repo, virtualKeys, hashKey, options.signedRequestWindowMs, guessing);
    this.idempotency = new Idempotency(repo);
  }

  // ---- the client protocol -------------------------------------------------------------

  /**
   * Checked in this order: the virtual key or the pool, the credential, a retried request's
   * kept answer (it holds the lease id), the signature, the TTL, a full pool (refused without
   * the lock), and then the seat engine under the pool's lock.
   */
  async acquire(body: AcquireBody, req: LeaseRequest<AcquireOutcome>): Promise<AcquireOutcome> {
    const target = await this.targetOf(body, req);
    const name = this.seats.nameOf(target);
    const known = await this.seats.poolOf(target);
    if (!known && target.kind === 'named') throw new NotFoundError(`pool ${name}`);
    // A virtual key's pool is reached with the key, an SES application's through the SES
    // protocol with a token: never by name, which would skip what guards them.
    if (known && known.kind !== target.kind) throw notByName(name);
    const credential = target.kind === 'virtual_key' ? `vk:${target.virtualKeyId}` : await this.credentials.forAcquire(known!, req, body.clientId);
    // Keys are scoped to the pool and client, so two clients that pick the same key never meet.
    const scope = `POST /v1/leases ${name} ${body.clientId}`;
    const replayed = req.idempotency && (await this.idempotency.replay(scope, req.idempotency));
    if (replayed) return replayed;
    // A virtual key's pool is made on first use, unsigned; a signed request to it is checked all the same.
    await this.credentials.authenticate(known ?? { name, requireSignedRequests: false }, req.signed, body.clientId);
    const holder = { clientId: body.clientId, ttlSeconds: body.ttlSeconds, clientAddress: req.clientAddress, metadata: body.metadata ?? {}, credential };
    if (known) {
      const ttl = resolveTtl(body.ttlSeconds, known);
      if ('problem' in ttl) throw new ValidationError(`invalid request body: ${ttl.problem}`);
      const full = await this.seats.refuseWhenFull(known, target.kind === 'virtual_key' ? target.seats : known.seats, holder);
      if (full) return full;
    }
    return this.idempotency.write(scope, req.idempotency, (db) => this.take(target, holder, db));
  }

  async heartbeat(id: string, body: HeartbeatBody, req: LeaseRequest<HeartbeatOutcome>): Promise<HeartbeatOutcome> {
    const scope = `POST /v1/leases/${id}/heartbeat`;
    const found = await this.held(id, scope, body, req);
    if ('answer' in found) return found;
    if (found.pool.kind === 'virtual_key' && !(await this.credentials.stillHoldsLeases(found.pool.virtualKeyId!))) {
      // The key was revoked, suspended, expired or lost its leases: its leases end at their next heartbeat.
      await this.seats.release(id, 'virtual_key_not_entitled', req.clientAddress);
      throw new LeaseRefusal('lease_revoked', 'the virtual key no longer holds floating leases; the lease has ended');
    }
    const ttl = resolveTtl(body.ttlSeconds, found.pool, found.lease.ttlSeconds);
    if ('problem' in ttl) throw new ValidationError(`invalid request body: ${ttl.problem}`);
    return this.idempotency.write(scope, req.idempotency, async (db) => {
      const renewed = await this.seats.renew(id, ttl.ttlSeconds, req.clientAddress, db);
      if (renewed.kind === 'renewed') return { kind: 'renewed', lease: renewed.lease, pool: found.pool };
      throw renewed.as === 'released'
        ? new LeaseRefusal('lease_released', 'the lease was released; acquire a new one')
        : new LeaseRefusal('lease_expired', 'the lease expired before this heartbeat; its seat may be taken: acquire a new one');
    });
  }

  async release(id: string, body: ReleaseBody, req: LeaseRequest<ReleaseOutcome>): Promise<ReleaseOutcome> {
    const scope = `DELETE /v1/leases/${id}`;
    const found = await this.held(id, scope, body, req);
    if ('answer' in found) return found;
    return this.idempotency.write(scope, req.idempotency, async (db) => {
      await this.seats.release(id, null, req.clientAddress, db);
      return { kind: 'released' };
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
    const leases = await this.repo.liveLeases(this.repo.knex, pool.id, pool.name);
    return {
      ...poolView(pool),
      inUse: leases.length,
      leases: leases.map((l) => ({ ...leaseView(l, pool), clientAddress: l.clientAddress })),
    };
  }

  /** Ends a lease on an admin's word (recorded as released, reason `forced`). */
  async forceRelease(id: string): Promise<void> {
    const result = await this.seats.release(id, 'forced', null);
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

  /** Where an acquire asks for a seat: the pool of the virtual key it gives (checked first), else the pool it names. */
  private async targetOf(body: AcquireBody, caller: Caller): Promise<SeatTarget> {
    if (body.virtualKey === undefined) return { kind: 'named', name: body.pool! };
    const vk = await this.credentials.virtualKeyHolder(body.virtualKey, caller.clientAddress);
    return { kind: 'virtual_key', virtualKeyId: vk.id, seats: vk.seats, defaults: this.virtualKeyPoolDefaults() };
  }

  /** The seat engine's answer to an acquire; what is not a grant or a full pool stops the request. */
  private async take(target: SeatTarget, holder: AcquireRequest, db: Knex | Knex.Transaction): Promise<AcquireOutcome> {
    const taken = await this.seats.take(target, holder, db);
    switch (taken.kind) {
      case 'granted':
      case 'no_seat':
        return taken;
      case 'no_pool':
        throw new NotFoundError(`pool ${taken.name}`);
      case 'other_kind':
        throw notByName(taken.pool.name);
      case 'ttl_too_long':
        throw new ValidationError(`invalid request body: ttlSeconds must be a whole number from 1 to ${taken.pool.maxTtlSeconds} for this pool`);
      case 'client_id_in_use':
        throw new LeaseRefusal(
          'client_id_in_use',
          `clientId ${holder.clientId} holds a live lease in pool ${taken.pool.name} acquired with another credential`,
        );
    }
  }

  /**
   * The lease a heartbeat or release names, with its holder's credential checked, then a
   * retried request's kept answer, then the signature.
   */
  private async held<O>(
    id: string,
    scope: string,
    body: { leaseId?: string | undefined; virtualKey?: string | undefined },
    req: LeaseRequest<O>,
  ): Promise<{ lease: Lease; pool: Pool } | Replayed> {
    const found = await this.seats.find(id);
    if (!found) throw new NotFoundError(`lease ${id}`);
    await this.credentials.checkHolder(found.lease, req, body.virtualKey);
    const replayed = req.idempotency && (await this.idempotency.replay(scope, req.idempotency));
    if (replayed) return replayed;
    await this.credentials.authenticate(found.pool, req.signed, found.lease.clientId, { leaseId: id, given: body.leaseId });
    return found;
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

const notByName = (name: string) => new LeaseRefusal('not_entitled', `pool ${name} is not acquired by name`);

const notAnonymous = (name: string) =>
  new ValidationError(`pool ${name} is reached with its virtual key or SES token only: it cannot be made anonymous`);

function notFoundPool(name: string): never {
  throw new NotFoundError(`pool ${name}`);
}
