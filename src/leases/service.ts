import type { Knex } from 'knex';
import { NotFoundError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import type { KeyHasher } from '../domain/virtual-key.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import type { AcquireRequest, Lease, LeasesRepo, Pool } from './repo.ts';
import { defaultHeartbeatInterval, resolveTtl } from './rules.ts';
import type { AcquireBody, HeartbeatBody, ReleaseBody } from './schemas.ts';
import { Idempotency, type IdempotencyKey, type Replayed } from './idempotency.ts';
import { SeatEngine, type PoolDefaults, type SeatTarget } from './seats.ts';
import { LeaseCredentials, type Caller, type LeaseGuessing } from './credentials.ts';
import { LeaseRefusal, type AcquireOutcome, type HeartbeatOutcome, type ReleaseOutcome } from './outcomes.ts';
import { PoolAdmin } from './pools.ts';

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
 * a request is checked) over the seat engine, which takes and gives back the seats; the
 * administration of pools (`pools`); the background tidy-up. Answers are outcomes and typed
 * refusals, put in HTTP by the routes.
 */
export class LeaseService {
  /** The one seat engine, shared with the SES protocol. */
  readonly seats: SeatEngine;
  /** Pools, force-release, lease events and client keys, for the admin API. */
  readonly pools: PoolAdmin;
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
    this.pools = new PoolAdmin(repo, this.seats, options);
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

  // ---- background ----------------------------------------------------------------------

  /** Logs, at start, the pools anyone who reaches /v1 may take seats of. */
  async warnAboutAnonymousPools(): Promise<void> {
    const names = await this.repo.anonymousPoolNames();
    if (names.length === 0) return;
    this.logger.warn(
      { pools: names },
      'these lease pools are anonymous: anyone who reaches /v1 may take and keep their seats. Give clients a token with the leases:client scope ' +
        '(entgate credential create --scope leases:client), then `entgate pool update <name> --no-anonymous`',
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

  /** A virtual key's pool is made on its first acquire with the server's defaults. */
  private virtualKeyPoolDefaults(): PoolDefaults {
    return {
      defaultTtlSeconds: this.options.defaultTtlSeconds,
      maxTtlSeconds: Math.max(this.options.maxTtlSeconds, this.options.defaultTtlSeconds),
      heartbeatIntervalSeconds: defaultHeartbeatInterval(this.options.defaultTtlSeconds),
    };
  }
}

const notByName = (name: string) => new LeaseRefusal('not_entitled', `pool ${name} is not acquired by name`);
