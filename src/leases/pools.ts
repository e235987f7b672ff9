import { ConflictError, NotFoundError, ValidationError } from '../lib/errors.ts';
import type { ClientKey, LeaseEvent, LeasesRepo, PoolInput } from './repo.ts';
import { ownerOfNewPool } from './pool-kinds.ts';
import { defaultHeartbeatInterval } from './rules.ts';
import { readPublicKey } from '../lib/signed-request.ts';
import type { PoolCreate, PoolPatch } from './schemas.ts';
import type { SeatEngine } from './seats.ts';
import { leaseView, poolView } from './views.ts';

/**
 * Administration of floating leases: pools (an admin's named pools, and the seats of SES
 * applications' and virtual keys' pools), force-release, lease events and client keys.
 */
export class PoolAdmin {
  constructor(
    private readonly repo: LeasesRepo,
    private readonly seats: SeatEngine,
    private readonly defaults: { defaultTtlSeconds: number; maxTtlSeconds: number },
  ) {}

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
    if (patch.seats !== undefined && current.kind === 'licence_capacity') {
      throw new ValidationError(`the seats of pool ${name} are the installed licence's limit of capacity ${current.licenceCapacity}: install a licence instead`);
    }
    if (patch.requireSignedRequests !== undefined && current.kind === 'licence_capacity') {
      throw new ValidationError(`pool ${name} is taken only through capacity claims (/v1/capacities), never with signed lease requests`);
    }
    if (patch.anonymous && current.kind !== 'named') throw notAnonymous(name);
    const merged = { ...current, ...definedOnly(patch) };
    checkPoolLimits(merged);
    return poolView((await this.repo.updatePool(name, definedOnly(patch))) ?? notFoundPool(name));
  }

  async deletePool(name: string, force: boolean): Promise<void> {
    if ((await this.repo.getPool(name))?.kind === 'licence_capacity') {
      throw new ConflictError('pool_owned_by_licence', `pool ${name} holds the claims of a licence capacity: it lives as long as the licence names it (with 0 seats once it does not); release a claim at /admin/v1/licence/capacities/${name}/claims/<id>`);
    }
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

  /**
   * Ends a lease on an admin's word (recorded as released, reason `forced`). A licence
   * capacity's lease is its claim: released at /admin/v1/licence, where the release is
   * recorded as a licence event too.
   */
  async forceRelease(id: string): Promise<void> {
    const found = await this.seats.find(id, 'licence_capacity');
    if (found) {
      throw new ConflictError(
        'pool_owned_by_licence',
        `lease ${id} is the claim of ${found.lease.clientId} on licence capacity ${found.pool.licenceCapacity}: release it at /admin/v1/licence/capacities/${found.pool.licenceCapacity}/claims/${found.lease.clientId} instead`,
      );
    }
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

  private completePool(input: PoolCreate): PoolInput {
    const defaultTtlSeconds = input.defaultTtlSeconds ?? Math.min(this.defaults.defaultTtlSeconds, input.maxTtlSeconds ?? Infinity);
    const limits: PoolInput = {
      seats: input.seats,
      defaultTtlSeconds,
      maxTtlSeconds: input.maxTtlSeconds ?? Math.max(this.defaults.maxTtlSeconds, defaultTtlSeconds),
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

const notAnonymous = (name: string) =>
  new ValidationError(`pool ${name} is reached with its virtual key or SES token only: it cannot be made anonymous`);

function notFoundPool(name: string): never {
  throw new NotFoundError(`pool ${name}`);
}
