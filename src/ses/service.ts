import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from '../lib/logger.ts';
import type { IpAddress } from '../lib/ip.ts';
import type { PoolInput } from '../leases/repo.ts';
import type { SeatEngine } from '../leases/seats.ts';
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

import type { TokenEvent } from '../domain/events.ts';
export type { TokenEvent };

/** What an SES request comes to; the routes answer it in the protocol's shape (routes.ts). */
export type SesOutcome =
  | { kind: 'denied'; applicationId: string }
  | { kind: 'approved_v1'; id: string; vmid: string }
  | { kind: 'approved_v2'; id: string; expiry: Date }
  | { kind: 'acquired'; entitlementId: string; expiry: Date }
  | { kind: 'renewed'; expiry: Date }
  | { kind: 'released' }
  | { kind: 'duration_too_long'; maxSeconds: number }
  | { kind: 'not_found'; entitlementId: string }
  | { kind: 'already_released'; entitlementId: string }
  | { kind: 'expired'; entitlementId: string };

/** The longest entitlement duration: a week, as the leases' longest TTL. */
export const MAX_DURATION_SECONDS = 7 * 86_400;

/** An application's pool as made on its first acquire: no practical limit until an admin sets its seats. */
const APPLICATION_POOL: PoolInput = {
  seats: 1_000_000,
  defaultTtlSeconds: 300,
  maxTtlSeconds: MAX_DURATION_SECONDS,
  heartbeatIntervalSeconds: 100,
  requireSignedRequests: false,
  anonymous: false,
};

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
  /** The seat engine the lease protocol uses too (LeaseService.seats). */
  seats: SeatEngine;
  events: { record(event: TokenEvent): void };
  logger: Logger;
}

/**
 * The Software Entitlement Service: approve (v1, v2) verifies a token against the request;
 * acquire does the same and takes a seat of the application's pool through the seat engine
 * (a lease, unlimited unless an admin set the pool's seats); renew and release act on that
 * lease, and only on leases of SES applications' pools. The reason of a denial is logged and
 * audited, never sent.
 */
export class SesService {
  constructor(private readonly deps: SesServiceDeps) {}

  async approve(
    apiVersion: string,
    kind: 'approve-v1' | 'approve-v2' | 'latest',
    body: { token: string; applicationId: string; durationSeconds?: number },
    caller: IpAddress | undefined,
  ): Promise<SesOutcome> {
    const started = process.hrtime.bigint();
    const operation = kind === 'latest' ? 'acquire' : 'approve';
    const audit = (outcome: TokenEvent['outcome'], reason: string | null, tokenId: string | null, entitlementId: string | null = null) =>
      this.record({ operation, apiVersion, tokenId, applicationId: body.applicationId, caller, outcome, reason, entitlementId, started });

    const verification = await this.deps.verifier.verify(body.token);
    if (!verification.ok) {
      this.deps.logger.info({ applicationId: body.applicationId, reason: verification.reason }, 'software entitlement refused');
      // A malformed token is denied like any other, as the reference does; the audit tells it apart.
      audit(verification.kind === 'malformed' ? 'invalid' : 'denied', verification.reason, null);
      return { kind: 'denied', applicationId: body.applicationId };
    }
    const { claims } = verification;
    const grant = decideGrant(claims, body.applicationId, caller);
    if (!grant.granted) {
      this.deps.logger.info({ tokenId: claims.id, applicationId: body.applicationId, reason: grant.reason }, 'software entitlement denied');
      audit('denied', grant.reason, claims.id);
      return { kind: 'denied', applicationId: body.applicationId };
    }

    if (kind !== 'latest') {
      const id = `entitlement-${randomUUID()}`;
      audit('approved', null, claims.id, id);
      if (kind === 'approve-v1') return { kind: 'approved_v1', id, vmid: vmidOf(claims) };
      return { kind: 'approved_v2', id, expiry: claims.expires };
    }

    const taken = await this.deps.seats.take(
      { kind: 'ses_application', application: applicationOf(body.applicationId), create: APPLICATION_POOL },
      {
        clientId: `${claims.id.slice(0, 80)}#${randomUUID().slice(0, 8)}`,
        ttlSeconds: body.durationSeconds!,
        clientAddress: caller?.toString() ?? null,
        metadata: { tokenId: claims.id, applicationId: body.applicationId, ...(claims.vmid !== null && { vmid: claims.vmid }) },
        // The SES protocol's own rules guard these leases (the token, the entitlement id).
        credential: null,
      },
    );
    switch (taken.kind) {
      case 'granted':
        audit('approved', null, claims.id, taken.lease.id);
        return { kind: 'acquired', entitlementId: taken.lease.id, expiry: taken.lease.expiresAt };
      case 'ttl_too_long':
        audit('invalid', `duration over the pool's maximum of ${taken.pool.maxTtlSeconds} s`, claims.id);
        return { kind: 'duration_too_long', maxSeconds: taken.pool.maxTtlSeconds };
      case 'no_seat':
        this.deps.logger.info({ tokenId: claims.id, applicationId: body.applicationId, pool: taken.pool }, 'software entitlement denied: no seat');
        audit('denied', 'no_seat_available', claims.id);
        return { kind: 'denied', applicationId: body.applicationId };
      default:
        // The pool is made when missing and found by its application; each acquire names a fresh clientId.
        throw new Error(`the seat engine answered ${taken.kind} to an acquire of application ${body.applicationId}`);
    }
  }

  async renew(apiVersion: string, id: string, durationSeconds: number, caller: IpAddress | undefined): Promise<SesOutcome> {
    const started = process.hrtime.bigint();
    const audit = (outcome: TokenEvent['outcome'], reason: string | null) =>
      this.record({ operation: 'renew', apiVersion, tokenId: null, applicationId: null, caller, outcome, reason, entitlementId: id, started });
    const found = await this.deps.seats.find(id, 'ses_application');
    if (!found) {
      audit('not_found', null);
      return { kind: 'not_found', entitlementId: id };
    }
    if (durationSeconds > found.pool.maxTtlSeconds) {
      audit('invalid', 'duration too long');
      return { kind: 'duration_too_long', maxSeconds: found.pool.maxTtlSeconds };
    }
    const renewed = await this.deps.seats.renew(id, durationSeconds, caller?.toString() ?? null);
    if (renewed.kind === 'renewed') {
      audit('renewed', null);
      return { kind: 'renewed', expiry: renewed.lease.expiresAt };
    }
    audit('conflict', renewed.as);
    return { kind: renewed.as === 'released' ? 'already_released' : 'expired', entitlementId: id };
  }

  async release(apiVersion: string, id: string, caller: IpAddress | undefined): Promise<SesOutcome> {
    const started = process.hrtime.bigint();
    const audit = (outcome: TokenEvent['outcome']) =>
      this.record({ operation: 'release', apiVersion, tokenId: null, applicationId: null, caller, outcome, reason: null, entitlementId: id, started });
    if (!(await this.deps.seats.find(id, 'ses_application'))) {
      audit('not_found');
      return { kind: 'not_found', entitlementId: id };
    }
    await this.deps.seats.release(id, null, caller?.toString() ?? null);
    audit('released');
    return { kind: 'released' };
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
