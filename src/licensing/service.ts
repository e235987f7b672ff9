import type { Knex } from 'knex';
import { AppError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import {
  licenceJson,
  limitUnder,
  parseCapacityName,
  verifyLicence,
  windowOf,
  type CapacityKind,
  type Licence,
  type TrustedKey,
} from '../domain/licence.ts';
import type { SeatEngine } from '../leases/seats.ts';
import { heartbeatFor, retryAfterSeconds } from '../leases/rules.ts';
import { LicenceRepo, leaseClaim, type CapacityState, type Claim, type ClaimResult, type InstalledLicence, type Installation, type LicenceEvent, type LicenceEventType } from './repo.ts';

export interface CapacityDefaults {
  /** A `concurrent:` claim's TTL when the claim names none, its largest, and the heartbeat interval advised. */
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  heartbeatIntervalSeconds: number;
  retentionHours: number;
}

export interface LicenceHooks {
  /** Told the seq of every licence installed here (the feed tells every process). */
  installed?: (seq: number) => void;
  /** Told each claim's outcome: `created`, `existing`, or the refusal's code (metrics). */
  claimed?: (kind: CapacityKind, outcome: string) => void;
}

type InstallOutcome =
  | { kind: 'installed' | 'unchanged'; current: InstalledLicence }
  | { kind: 'below_usage'; over: { capacity: string; inUse: number; limit: number }[] };

/** Who asks, for the records. */
export interface Asker {
  actor: string | null;
  clientAddress: string | null;
}

/** A claim granted: new (`created`), or the one the entity held already. */
export interface Granted {
  created: boolean;
  claim: Claim;
  limit: number | null;
  inUse: number | null;
  heartbeatIntervalSeconds: number | null;
}

/** Where the current licence is, for an admin or a service. */
export interface LicenceState {
  installation: Installation;
  current: (InstalledLicence & { status: ReturnType<typeof windowOf> }) | null;
  capacities: CapacityState[];
}

export { limitUnder };

/** The capacities a licence makes: each it names, and each feature it grants without a `feature:` limit (no limit). */
export function capacitiesOf(licence: Pick<Licence, 'features' | 'capacities'>): Map<string, { kind: CapacityKind; limit: number | null }> {
  const out = new Map<string, { kind: CapacityKind; limit: number | null }>();
  for (const [name, limit] of Object.entries(licence.capacities)) out.set(name, { kind: parseCapacityName(name)!.kind, limit });
  for (const feature of licence.features) if (!out.has(`feature:${feature}`)) out.set(`feature:${feature}`, { kind: 'feature', limit: null });
  return out;
}

/** Capacities whose use now is above what a new licence allows. */
export function belowUsage(licence: Pick<Licence, 'features' | 'capacities'>, use: ReadonlyMap<string, number>): { capacity: string; inUse: number; limit: number }[] {
  const over: { capacity: string; inUse: number; limit: number }[] = [];
  for (const [capacity, inUse] of [...use].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const limit = limitUnder(licence, capacity);
    if (limit !== null && inUse > limit) over.push({ capacity, inUse, limit });
  }
  return over;
}

/** A refusal; `fields` are answered beside code and message (the limit and the use, say). */
const refused = (status: number, code: string, message: string, fields?: Record<string, unknown>, headers?: Record<string, string>) =>
  new AppError(status, code, message, { ...(fields !== undefined && { fields }), ...(headers && { headers }) });

/**
 * The installation's side of the licence (docs/licences.md): installing a vendor-signed licence
 * (verified, bound, not below what is in use), answering what it grants, and deciding every
 * capacity claim against it in the database (LicenceRepo, the capacity functions), so that no
 * process anywhere grants more than the licence allows.
 */
export class LicenceService {
  private installationId: Promise<Installation> | undefined;

  constructor(
    readonly repo: LicenceRepo,
    private readonly seats: SeatEngine,
    private readonly trusted: readonly TrustedKey[],
    private readonly defaults: CapacityDefaults,
    private readonly logger: Logger,
    private readonly hooks: LicenceHooks = {},
  ) {}

  installation(): Promise<Installation> {
    this.installationId ??= this.repo.installation().catch((err: unknown) => {
      this.installationId = undefined;
      throw err;
    });
    return this.installationId;
  }

  /**
   * Installs a licence: verified with the trusted vendor keys (signature, window, installation),
   * then, holding every capacity, refused with 409 licence_below_usage when anything in use is
   * above its new limit. Installing the current licence again changes nothing. Refusals are
   * recorded as licence events.
   */
  async install(token: string, who: Asker): Promise<{ installed: boolean; current: InstalledLicence }> {
    const text = token.trim();
    if (this.trusted.length === 0) {
      await this.recordRefusal('no_trusted_keys', undefined, who, { reason: 'ENTGATE_LICENCE_PUBLIC_KEYS names no vendor key' });
      throw refused(409, 'no_trusted_keys', 'this installation trusts no vendor key: set ENTGATE_LICENCE_PUBLIC_KEYS to the vendor\'s public key file and restart');
    }
    const verified = await verifyLicence(text, this.trusted);
    if (!verified.ok) {
      await this.recordRefusal(verified.code, undefined, who, { reason: verified.reason });
      throw refused(400, verified.code, `licence refused: ${verified.reason}`);
    }
    const licence = verified.licence;
    // The clock tolerance is for a licence that starts now; one already past its end is of no use installed.
    if (licence.expiresAt.getTime() <= Date.now()) {
      await this.recordRefusal('licence_expired', licence, who, { reason: `it expired at ${licence.expiresAt.toISOString()}` });
      throw refused(400, 'licence_expired', `licence refused: it expired at ${licence.expiresAt.toISOString()}`);
    }
    const installation = await this.installation();
    if (licence.installation !== null && licence.installation !== installation.id) {
      await this.recordRefusal('licence_installation_mismatch', licence, who, { installation: licence.installation });
      throw refused(400, 'licence_installation_mismatch', `licence refused: it is bound to installation ${licence.installation}; this is installation ${installation.id}`);
    }
    const outcome = await this.repo.knex.transaction(async (trx: Knex.Transaction): Promise<InstallOutcome> => {
      await this.repo.lockInstallation(trx);
      const current = await this.repo.current(trx);
      if (current?.token === text) return { kind: 'unchanged', current };
      const over = belowUsage(licence, await this.repo.lockCapacitiesAndCountUse(trx));
      if (over.length > 0) return { kind: 'below_usage', over };
      const seq = await this.repo.install(trx, text, licence, capacitiesOf(licence), who.actor);
      await this.repo.event(
        {
          type: 'licence_installed',
          licenceId: licence.id,
          actor: who.actor,
          clientAddress: who.clientAddress,
          detail: { seq, ...licenceJson(licence), replaced: current?.licence.id ?? null },
        },
        trx,
      );
      return { kind: 'installed', current: (await this.repo.current(trx))! };
    });
    switch (outcome.kind) {
      case 'below_usage': {
        await this.recordRefusal('licence_below_usage', licence, who, { capacities: outcome.over });
        const list = outcome.over.map((o) => `${o.capacity}: ${o.inUse} in use, new limit ${o.limit}`).join('; ');
        throw refused(409, 'licence_below_usage', `licence refused: more is in use than it allows (${list}); release some first`, { capacities: outcome.over });
      }
      case 'installed':
        this.logger.info({ licenceId: licence.id, tenant: licence.tenant, seq: outcome.current.seq, expiresAt: licence.expiresAt.toISOString() }, 'licence installed');
        this.hooks.installed?.(outcome.current.seq);
        return { installed: true, current: outcome.current };
      case 'unchanged':
        return { installed: false, current: outcome.current };
    }
  }

  private async recordRefusal(reason: string, licence: Licence | undefined, who: Asker, detail: Record<string, unknown>): Promise<void> {
    await this.repo.event({ type: 'licence_refused', reason, licenceId: licence?.id ?? null, actor: who.actor, clientAddress: who.clientAddress, detail });
  }

  current(): Promise<InstalledLicence | undefined> {
    return this.repo.current();
  }

  async state(now = new Date()): Promise<LicenceState> {
    const [installation, current, capacities] = await Promise.all([this.installation(), this.repo.current(), this.repo.capacities()]);
    return { installation, current: current ? { ...current, status: windowOf(current.licence, now) } : null, capacities };
  }

  history(): Promise<InstalledLicence[]> {
    return this.repo.history();
  }

  /**
   * Whether the current licence grants a feature now, with its per-entity limit and use:
   * 403 feature_not_licensed (or licence_expired, licence_not_yet_valid, no_licence) otherwise.
   */
  async feature(name: string): Promise<{ feature: string; licensed: true; limit: number | null; inUse: number; expiresAt: string }> {
    const current = await this.repo.current();
    if (!current) throw refused(403, 'no_licence', 'no licence is installed', { feature: name, licensed: false });
    const window = windowOf(current.licence, new Date());
    if (window !== 'valid') {
      throw refused(403, `licence_${window}`, window === 'expired' ? `the licence expired at ${current.licence.expiresAt.toISOString()}` : `the licence is not valid before ${current.licence.notBefore.toISOString()}`, {
        feature: name,
        licensed: false,
      });
    }
    if (!current.licence.features.includes(name)) throw refused(403, 'feature_not_licensed', `the licence does not grant feature ${name}`, { feature: name, licensed: false });
    const capacity = `feature:${name}`;
    const use = await this.repo.use();
    return { feature: name, licensed: true, limit: limitUnder(current.licence, capacity), inUse: use.get(capacity) ?? 0, expiresAt: current.licence.expiresAt.toISOString() };
  }

  /**
   * May `entityId` hold `capacity`: 201 new, 200 held already (a `concurrent:` one renewed), or
   * refused: 409 capacity_exceeded, 403 feature_not_licensed / licence_expired /
   * licence_not_yet_valid, 404 for a capacity the licence does not name.
   */
  async claim(capacity: string, entityId: string, options: { ttlSeconds?: number; metadata?: Record<string, unknown> }, who: Asker): Promise<Granted> {
    const kind = kindOf(capacity);
    if (options.ttlSeconds !== undefined && kind !== 'concurrent') {
      throw new ValidationError(`ttlSeconds is for concurrent: claims; ${capacity} is held until released`);
    }
    const result = await this.repo.claim({
      capacity,
      entityId,
      ttlSeconds: options.ttlSeconds,
      clientAddress: who.clientAddress,
      metadata: options.metadata ?? {},
      actor: who.actor,
      pool: { defaultTtlSeconds: this.defaults.defaultTtlSeconds, maxTtlSeconds: this.defaults.maxTtlSeconds, heartbeatIntervalSeconds: this.defaults.heartbeatIntervalSeconds },
    });
    try {
      const granted = this.granted(capacity, kind, result);
      this.hooks.claimed?.(kind, granted.created ? 'created' : 'existing');
      return granted;
    } catch (err) {
      this.hooks.claimed?.(kind, err instanceof AppError ? err.code : 'error');
      throw err;
    }
  }

  private granted(capacity: string, kind: CapacityKind, result: ClaimResult): Granted {
    switch (result.outcome) {
      case 'acquired':
      case 'existing':
        return {
          created: result.outcome === 'acquired',
          claim: result.claim,
          limit: result.limit,
          inUse: result.inUse,
          heartbeatIntervalSeconds: result.pool ? heartbeatFor(result.claim.ttlSeconds ?? 0, result.pool) : null,
        };
      case 'full': {
        const retry = result.earliestExpiry && result.now ? retryAfterSeconds(result.earliestExpiry, result.now) : undefined;
        return throwing(
          refused(409, 'capacity_exceeded', result.limit === 0 ? `the licence allows none of ${capacity}` : `all ${result.limit} of ${capacity} are in use`, { capacity, limit: result.limit, inUse: result.inUse }, retry !== undefined ? { 'Retry-After': String(retry) } : undefined),
        );
      }
      case 'expired':
        return throwing(refused(403, 'licence_expired', `the licence expired at ${result.expiresAt.toISOString()}: nothing new may be claimed`, { capacity }));
      case 'not_yet_valid':
        return throwing(refused(403, 'licence_not_yet_valid', `the licence is not valid before ${result.notBefore.toISOString()}`, { capacity }));
      case 'ttl_too_long':
        return throwing(new ValidationError(`ttlSeconds is at most ${result.maxTtlSeconds} for ${capacity}`));
      case 'no_licence':
      case 'unknown_capacity':
        return throwing(this.notLicensed(capacity, kind, result.outcome === 'no_licence'));
    }
  }

  private notLicensed(capacity: string, kind: CapacityKind, noLicence: boolean): AppError {
    if (kind === 'feature') return refused(403, 'feature_not_licensed', `the licence does not grant feature ${capacity.slice('feature:'.length)}`, { capacity });
    return noLicence
      ? refused(404, 'no_licence', 'no licence is installed', { capacity })
      : refused(404, 'unknown_capacity', `the licence names no capacity ${capacity}`, { capacity });
  }

  /** Renews a `concurrent:` claim (its lease) to now + ttl; 404 claim_not_held when it is not held (released, or lapsed). */
  async heartbeat(capacity: string, entityId: string, ttlSeconds: number | undefined): Promise<Granted> {
    const kind = kindOf(capacity);
    if (kind !== 'concurrent') throw refused(400, 'not_concurrent', `${capacity} is held until released: only concurrent: claims take heartbeats`);
    const leaseId = await this.repo.liveLeaseId(capacity, entityId);
    const held = leaseId ? await this.seats.find(leaseId, 'licence_capacity') : undefined;
    if (!leaseId || !held) throw notHeld(capacity, entityId);
    const ttl = ttlSeconds ?? held.lease.ttlSeconds;
    if (ttl > held.pool.maxTtlSeconds) throw new ValidationError(`ttlSeconds is at most ${held.pool.maxTtlSeconds} for ${capacity}`);
    const renewed = await this.seats.renew(leaseId, ttl, null);
    if (renewed.kind !== 'renewed') throw notHeld(capacity, entityId);
    return { created: false, claim: leaseClaim(capacity, renewed.lease), limit: held.pool.seats, inUse: null, heartbeatIntervalSeconds: heartbeatFor(ttl, held.pool) };
  }

  async release(capacity: string, entityId: string, who: Asker, reason: string | null = null): Promise<void> {
    kindOf(capacity);
    const result = await this.repo.release(capacity, entityId, reason, who.clientAddress, who.actor);
    if (result.outcome === 'not_held') throw notHeld(capacity, entityId);
  }

  async held(capacity: string, entityId: string): Promise<Claim> {
    kindOf(capacity);
    return (await this.repo.held(capacity, entityId)) ?? notHeldThrow(capacity, entityId);
  }

  async claims(capacity: string, limit: number): Promise<Claim[]> {
    kindOf(capacity);
    return this.repo.claims(capacity, { limit });
  }

  events(filter: { capacity?: string; entityId?: string; type?: LicenceEventType; before?: number; limit: number }): Promise<LicenceEvent[]> {
    return this.repo.events(filter);
  }

  tidy(): Promise<number> {
    return this.repo.tidy(this.defaults.retentionHours);
  }
}

function throwing(err: Error): never {
  throw err;
}

/** The kind a capacity name says; 400 for a name that is none (a licence can never name it). */
export function kindOf(capacity: string): CapacityKind {
  const parsed = parseCapacityName(capacity);
  if (!parsed) throw refused(400, 'invalid_capacity', `'${capacity.slice(0, 80)}' is not a capacity: concurrent:<name>, assigned:<name> or feature:<feature>`);
  return parsed.kind;
}

const notHeld = (capacity: string, entityId: string) => refused(404, 'claim_not_held', `${entityId.slice(0, 200)} holds no claim on ${capacity}`, { capacity });
const notHeldThrow = (capacity: string, entityId: string): never => throwing(notHeld(capacity, entityId));
