import { keyHint, type KeyHasher } from '../domain/virtual-key.ts';
import { BLOCKED_REASON, guessSubject, type GuessGuard } from '../domain/guess-guard.ts';
import type { CheckEvent } from '../store/check-events.ts';
import { allows, type Principal } from '../auth/scopes.ts';
import type { VirtualKey } from '../domain/types.ts';
import type { VirtualKeysRepo } from '../store/virtual-keys-repo.ts';
import { compileCidrs, ipInRanges, parseIp } from '../lib/ip.ts';
import type { Lease, LeasesRepo, Pool } from './repo.ts';
import { verifySignedRequest, type SignedRequest } from '../lib/signed-request.ts';
import { LeaseRefusal } from './outcomes.ts';

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

/** Who asks, as the routes hand it over: a signed request, the caller's address and its bearer token. */
export interface Caller {
  signed: SignedRequest | undefined;
  clientAddress: string | null;
  /** Who the Authorization header names (authenticated on first call; 401 for a bad token); undefined without one. */
  principal: () => Promise<Principal | undefined>;
}

/**
 * The client credentials of the lease protocol: what a lease is bound to when acquired
 * (`token:<id>`, `signed:<clientId>`, `vk:<id>`, or nothing in an anonymous pool), the same
 * credential again for its heartbeat and release, signed requests, and virtual keys under the
 * rUS check's guessing budgets.
 */
export class LeaseCredentials {
  constructor(
    private readonly repo: LeasesRepo,
    private readonly virtualKeys: VirtualKeysRepo,
    private readonly hashKey: KeyHasher,
    private readonly signedRequestWindowMs: number,
    private readonly guessing: LeaseGuessing,
  ) {}

  /**
   * The credential an acquire of a named pool is bound to: a signed request (verified by
   * authenticate()), else a client token (scope `leases:client`), else none if the pool is
   * anonymous. `client_credential_required` otherwise.
   */
  async forAcquire(pool: Pool, caller: Caller, clientId: string): Promise<string | null> {
    if (caller.signed) return `signed:${clientId}`;
    const principal = await caller.principal();
    if (principal) return tokenCredential(principal);
    if (pool.anonymous || pool.requireSignedRequests) return null; // a signed pool refuses in authenticate()
    throw credentialRequired(`pool ${pool.name}`);
  }

  /**
   * A heartbeat or release needs the credential its lease was acquired with: the same client
   * token, a request signed by the lease client's key (checked by authenticate()), or the same
   * virtual key. A lease of an anonymous pool (credential null) needs only its id.
   */
  async checkHolder(lease: Lease, caller: Caller, virtualKey: string | undefined): Promise<void> {
    const held = lease.credential;
    if (held === null) return;
    const notHolder = () => new LeaseRefusal('not_lease_holder', 'this lease was acquired with another credential');
    if (held.startsWith('signed:')) {
      if (!caller.signed) throw new LeaseRefusal('signed_request_required', 'this lease was acquired with a signed request: sign its heartbeat and release too');
    } else if (held.startsWith('vk:')) {
      if (virtualKey === undefined) throw credentialRequired('this lease (give its virtualKey)');
      const vk = await this.findVirtualKey(virtualKey, caller.clientAddress);
      if (vk === undefined || `vk:${vk.id}` !== held) throw notHolder();
    } else {
      const principal = await caller.principal();
      if (!principal) throw credentialRequired('this lease (its client token)');
      if (tokenCredential(principal) !== held) throw notHolder();
    }
  }

  /**
   * A pool that requires signed requests takes only those, signed by a key of the lease's
   * client, fresh, never seen before; a signed request to any other pool is checked all the same.
   */
  async authenticate(
    pool: Pick<Pool, 'name' | 'requireSignedRequests'>,
    signed: SignedRequest | undefined,
    clientId: string,
    binding?: { leaseId: string; given: string | undefined },
  ): Promise<void> {
    if (!signed) {
      if (pool.requireSignedRequests) {
        throw new LeaseRefusal('signed_request_required', `pool ${pool.name} takes only OpenPGP clear-signed requests (Content-Type: text/plain)`);
      }
      return;
    }
    if ((signed.payload.clientId ?? clientId) !== clientId) {
      throw new LeaseRefusal('bad_signature', 'the signed clientId is not the lease holder');
    }
    if (binding && binding.given !== binding.leaseId) {
      throw new LeaseRefusal('bad_signature', 'a signed heartbeat or release must carry the leaseId of its path');
    }
    const keys = await this.repo.publicKeysOf(clientId);
    const problem = await verifySignedRequest(signed, keys, this.signedRequestWindowMs, Date.now());
    if (problem) throw new LeaseRefusal(problem.code, problem.message);
    // Kept well past the window: the database's clock, which deletes it, may differ from ours.
    const forgetAfter = new Date(Math.max(signed.payload.ts as number, Date.now()) + this.signedRequestWindowMs + 300_000);
    if (!(await this.repo.rememberSignature(signed.digest, forgetAfter))) {
      throw new LeaseRefusal('request_replayed', 'this signed request was already used; sign a new one');
    }
  }

  /**
   * The virtual key that may hold leases from this address, with its seats; one refusal for
   * every reason (unknown, blocked for guessing, not entitled, another network), each recorded.
   */
  async virtualKeyHolder(key: string, clientAddress: string | null): Promise<{ id: number; seats: number }> {
    const vk = await this.findVirtualKey(key, clientAddress);
    const refused = new LeaseRefusal('not_entitled', 'this virtual key holds no floating leases');
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

  /** Whether a virtual key still holds leases (active, inside its window, with maxConcurrentLeases). */
  async stillHoldsLeases(virtualKeyId: number): Promise<boolean> {
    return holdsLeases(await this.virtualKeys.get(virtualKeyId), Date.now()) !== undefined;
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
}

/** The seats a virtual key holds now: active, inside its window, with maxConcurrentLeases; else undefined. */
function holdsLeases(vk: VirtualKey | undefined, now: number): number | undefined {
  if (!vk || vk.status !== 'active' || vk.maxConcurrentLeases === null) return undefined;
  if ((vk.notBefore && now < vk.notBefore.getTime()) || (vk.expiresAt && now >= vk.expiresAt.getTime())) return undefined;
  return vk.maxConcurrentLeases;
}

/** A client token's credential: its id (the bootstrap token has none). */
const tokenCredential = (principal: Principal): string => {
  if (!allows(principal.scopes, ['leases:client'])) {
    throw new LeaseRefusal('insufficient_scope', 'this credential may not hold leases: it needs the leases:client scope');
  }
  return `token:${principal.credentialId ?? principal.name}`;
};

const credentialRequired = (what: string) =>
  new LeaseRefusal(
    'client_credential_required',
    `${what} needs a client credential: an API credential with the leases:client scope, a virtual key, or a signed request`,
  );
