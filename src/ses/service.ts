import { createHash, randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from '../logger.ts';
import type { IpAddress } from '../domain/ip.ts';
import type { LeasesRepo } from '../leases/repo.ts';
import { endedAs } from '../leases/rules.ts';
import { poolNameOf } from '../leases/pool-kinds.ts';
import { decideGrant, type TokenVerifier } from './verifier.ts';

/** The api-versions of the reference, by what they do. */
export const API_VERSIONS: Record<string, 'approve-v1' | 'approve-v2' | 'latest'> = {
  '2017-05-01.5.0': 'approve-v1',
  '2017-06-01.5.1': 'approve-v1',
  '2017-09-01.6.0': 'approve-v2',
  '2018-03-01.6.1': 'approve-v2',
  '2018-08-01.7.0': 'approve-v2',
  '9999-09-09.99.99': 'latest',
};

export interface TokenEvent {
  occurredAt: Date;
  operation: 'approve' | 'acquire' | 'renew' | 'release';
  apiVersion: string | null;
  tokenId: string | null;
  applicationId: string | null;
  callerIp: string | null;
  outcome: 'approved' | 'denied' | 'invalid' | 'renewed' | 'released' | 'not_found' | 'conflict';
  reason: string | null;
  entitlementId: string | null;
  latencyUs: number;
}

/** An SES answer: status and body, the body in the protocol's own shape. */
export interface SesResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export const sesError = (status: number, code: string, value: string): SesResult => ({
  status,
  body: { code, message: { lang: 'en-us', value } },
});

const deniedFor = (applicationId: string) => sesError(403, 'EntitlementDenied', `Entitlement for ${applicationId} was denied.`);

/** The longest entitlement duration: a week, as the leases' longest TTL. */
export const MAX_DURATION_SECONDS = 7 * 86_400;

/**
 * A name-based UUID (RFC 9562 version 5: SHA-1 of the namespace's 16 bytes and the name in
 * UTF-8, version and variant bits set), written in lower case.
 */
export function nameBasedUuid(namespace: string, name: string): string {
  const hash = createHash('sha1').update(Buffer.from(namespace.replaceAll('-', ''), 'hex')).update(name, 'utf8').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** entgate's namespace for the vmid of tokens that carry none. */
export const VMID_NAMESPACE = '27bb05f3-5f97-4799-8662-4e9b3aa68381';

/**
 * The vmid an approval (v1) answers: the token's `vmid`, else the name-based UUID of its `id`
 * in VMID_NAMESPACE, so that every request with one token sees the same value. The SDK's
 * native client reads `vmid` unconditionally (production Azure Batch always sends one): an
 * approval without it makes the client throw where the application does not catch.
 */
export const vmidOf = (claims: { id: string; vmid: string | null }): string => claims.vmid ?? nameBasedUuid(VMID_NAMESPACE, claims.id);

/**
 * The application whose seats a pool holds, as lease pools record it: the id in lower case when
 * it is plain (and short enough to name the pool), else the first 32 hex digits of its SHA-256.
 */
export function applicationOf(applicationId: string): string {
  const id = applicationId.toLowerCase();
  if (/^[a-z0-9][a-z0-9._-]{0,58}$/.test(id)) return id;
  return createHash('sha256').update(id).digest('hex').slice(0, 32);
}

/** The name of an application's pool, as admins see it: `ses-<id>` when the id is plain, else `ses-<hash>`. */
export const poolOfApplication = (applicationId: string): string =>
  poolNameOf({ kind: 'ses_application', application: applicationOf(applicationId) });

export interface SesServiceDeps {
  verifier: TokenVerifier;
  repo: LeasesRepo;
  events: { record(event: TokenEvent): void };
  logger: Logger;
}

/**
 * The Software Entitlement Service: approve (v1, v2) verifies a token against the request;
 * acquire does the same and takes a durable lease from the application's pool
 * (`ses-<application>`, unlimited unless an admin set its seats); renew and release act on
 * that lease. The reason of a denial is logged and audited, never sent.
 */
export class SesService {
  constructor(private readonly deps: SesServiceDeps) {}

  private get knex(): Knex {
    return this.deps.repo.knex;
  }

  async approve(
    apiVersion: string,
    kind: 'approve-v1' | 'approve-v2' | 'latest',
    body: { token: string; applicationId: string; durationSeconds?: number },
    caller: IpAddress | undefined,
  ): Promise<SesResult> {
    const started = process.hrtime.bigint();
    const operation = kind === 'latest' ? 'acquire' : 'approve';
    const audit = (outcome: TokenEvent['outcome'], reason: string | null, tokenId: string | null, entitlementId: string | null = null) =>
      this.record({ operation, apiVersion, tokenId, applicationId: body.applicationId, caller, outcome, reason, entitlementId, started });

    const verification = await this.deps.verifier.verify(body.token);
    if (!verification.ok) {
      this.deps.logger.info({ applicationId: body.applicationId, reason: verification.reason }, 'software entitlement refused');
      // A malformed token is denied like any other, as the reference does; the audit tells it apart.
      audit(verification.kind === 'malformed' ? 'invalid' : 'denied', verification.reason, null);
      return deniedFor(body.applicationId);
    }
    const { claims } = verification;
    const grant = decideGrant(claims, body.applicationId, caller);
    if (!grant.granted) {
      this.deps.logger.info({ tokenId: claims.id, applicationId: body.applicationId, reason: grant.reason }, 'software entitlement denied');
      audit('denied', grant.reason, claims.id);
      return deniedFor(body.applicationId);
    }

    if (kind !== 'latest') {
      const id = `entitlement-${randomUUID()}`;
      audit('approved', null, claims.id, id);
      if (kind === 'approve-v1') return { status: 200, body: { id, vmid: vmidOf(claims) } };
      return { status: 200, body: { id, expiry: claims.expires.toISOString() } };
    }

    const ttlSeconds = body.durationSeconds!;
    const result = await this.deps.repo.acquire(
      this.knex,
      {
        kind: 'ses_application',
        application: applicationOf(body.applicationId),
        name: poolOfApplication(body.applicationId),
        create: { seats: 1_000_000, defaultTtlSeconds: 300, maxTtlSeconds: MAX_DURATION_SECONDS, heartbeatIntervalSeconds: 100, requireSignedRequests: false, anonymous: false },
      },
      {
        clientId: `${claims.id.slice(0, 80)}#${randomUUID().slice(0, 8)}`,
        ttlSeconds,
        clientAddress: caller?.toString() ?? null,
        metadata: { tokenId: claims.id, applicationId: body.applicationId, ...(claims.vmid !== null && { vmid: claims.vmid }) },
        // The SES protocol's own rules guard these leases (the token, the entitlement id).
        credential: null,
      },
    );
    if (result.outcome === 'no_pool') throw new Error(`pool ${poolOfApplication(body.applicationId)} vanished while acquiring`);
    // Each acquire names a fresh clientId, so no live lease can hold it.
    if (result.outcome === 'other_kind') throw new Error(`the pool of application ${body.applicationId} is of another kind`);
    if (result.outcome === 'client_id_in_use') throw new Error(`a fresh SES clientId was already in use in ${result.pool.name}`);
    if (result.outcome === 'ttl_too_long') {
      audit('invalid', `duration over the pool's maximum of ${result.pool.maxTtlSeconds} s`, claims.id);
      return sesError(400, 'EntitlementDenied', `The duration is longer than ${result.pool.maxTtlSeconds} seconds.`);
    }
    if (result.outcome === 'full') {
      this.deps.logger.info({ tokenId: claims.id, applicationId: body.applicationId, pool: result.pool.name }, 'software entitlement denied: no seat');
      audit('denied', 'no_seat_available', claims.id);
      return deniedFor(body.applicationId);
    }
    audit('approved', null, claims.id, result.lease.id);
    return { status: 200, body: { entitlementId: result.lease.id, initialExpiryTime: result.lease.expiresAt.toISOString() } };
  }

  async renew(apiVersion: string, id: string, durationSeconds: number, caller: IpAddress | undefined): Promise<SesResult> {
    const started = process.hrtime.bigint();
    const audit = (outcome: TokenEvent['outcome'], reason: string | null) =>
      this.record({ operation: 'renew', apiVersion, tokenId: null, applicationId: null, caller, outcome, reason, entitlementId: id, started });
    return this.knex.transaction(async (trx) => {
      const found = await this.deps.repo.getLease(id, trx);
      if (!found || found.pool.kind !== 'ses_application') {
        audit('not_found', null);
        return sesError(404, 'NotFound', `Entitlement ${id} was not found.`);
      }
      if (durationSeconds > found.pool.maxTtlSeconds) {
        audit('invalid', 'duration too long');
        return sesError(400, 'EntitlementDenied', `The duration is longer than ${found.pool.maxTtlSeconds} seconds.`);
      }
      const renewed = await this.deps.repo.renew(trx, id, durationSeconds, caller?.toString() ?? null);
      if (renewed) {
        audit('renewed', null);
        return { status: 200, body: { expiryTime: renewed.expiresAt.toISOString() } };
      }
      const ended = endedAs(found.lease, new Date()) ?? 'expired';
      audit('conflict', ended);
      return ended === 'released'
        ? sesError(409, 'AlreadyReleased', `Entitlement ${id} was already released.`)
        : sesError(409, 'EntitlementExpired', `Entitlement ${id} has expired.`);
    });
  }

  async release(apiVersion: string, id: string, caller: IpAddress | undefined): Promise<SesResult> {
    const started = process.hrtime.bigint();
    const audit = (outcome: TokenEvent['outcome']) =>
      this.record({ operation: 'release', apiVersion, tokenId: null, applicationId: null, caller, outcome, reason: null, entitlementId: id, started });
    const found = await this.deps.repo.getLease(id);
    if (!found || found.pool.kind !== 'ses_application') {
      audit('not_found');
      return sesError(404, 'NotFound', `Entitlement ${id} was not found.`);
    }
    await this.deps.repo.release(this.knex, id, null, caller?.toString() ?? null);
    audit('released');
    return { status: 204 };
  }

  /**
   * Records a request answered 404 before any lookup: a renew or release of an id that cannot
   * name an entitlement (not a UUID), or a request on plain HTTP when SES is served on HTTPS
   * only. The id as given, cut at 100 characters.
   */
  recordNotFound(operation: TokenEvent['operation'], apiVersion: string, id: string | null, caller: IpAddress | undefined, reason: string): void {
    this.record({ operation, apiVersion, tokenId: null, applicationId: null, caller, outcome: 'not_found', reason, entitlementId: id?.slice(0, 100) ?? null, started: process.hrtime.bigint() });
  }

  /** Records a request refused before any token was read (bad body, applicationId, duration); a renew names its entitlement. */
  recordInvalid(
    operation: TokenEvent['operation'],
    apiVersion: string | null,
    applicationId: string | null,
    caller: IpAddress | undefined,
    reason: string,
    entitlementId: string | null = null,
  ): void {
    this.record({ operation, apiVersion, tokenId: null, applicationId, caller, outcome: 'invalid', reason, entitlementId, started: process.hrtime.bigint() });
  }

  private record(e: {
    operation: TokenEvent['operation'];
    apiVersion: string | null;
    tokenId: string | null;
    applicationId: string | null;
    caller: IpAddress | undefined;
    outcome: TokenEvent['outcome'];
    reason: string | null;
    entitlementId: string | null;
    started: bigint;
  }): void {
    this.deps.events.record({
      occurredAt: new Date(),
      operation: e.operation,
      apiVersion: e.apiVersion,
      tokenId: e.tokenId,
      applicationId: e.applicationId === null ? null : e.applicationId.slice(0, 256),
      callerIp: e.caller?.toString() ?? null,
      outcome: e.outcome,
      reason: e.reason,
      entitlementId: e.entitlementId,
      latencyUs: Number((process.hrtime.bigint() - e.started) / 1000n),
    });
  }
}
