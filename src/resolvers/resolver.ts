/**
 * The resolver contract: how entgate asks "is this virtual key entitled, and to what?".
 *
 * A resolver is plain data in, plain data out, async everywhere. entgate calls the resolvers
 * configured in ENTGATE_RESOLVERS in order; the first definitive answer (`entitled` or
 * `denied`) wins; when every resolver passes, the check is denied. A resolver that throws, or
 * that has not answered when the check's deadline passes, has *failed*: the configured failure
 * policy decides (deny, or serve the last grant within a grace period). It never reaches
 * Conary as an error.
 *
 * A plugin is an ES module whose default export is a {@link ResolverFactory}. It may also
 * export `optionsSchema` (a zod schema); entgate validates the plugin's options with it at
 * start and passes the parsed value to the factory. A module that does not fit this contract
 * stops start-up with a message naming it.
 */
import type { ZodType } from 'zod';
import type { Logger } from '../lib/logger.ts';
import type { Config } from '../../config/settings.ts';

/** One rUS check, parsed and validated: what Conary asked. */
export interface ResolveRequest {
  /** The repository host name asked about (already checked to be Conary-safe when it matters). */
  readonly server: string;
  /** Entitlement class, when the client sent one (deprecated by rPath; usually ignore it). */
  readonly class?: string;
  /** The virtual key the client presented: a credential. Never log it. */
  readonly key: string;
  /** The client's address, when the repository sent it. */
  readonly remoteIp?: string;
}

export interface ResolveContext {
  /** Aborted when the check's deadline passes: stop work and reject. */
  readonly signal: AbortSignal;
  /** A child logger for this resolver. Never log the key or a credential. */
  readonly logger: Logger;
  /** entgate's keyed hash (HMAC-SHA-256, hex) of the key, for resolvers that index by it. */
  readonly keyHash: string;
}

/** The key is entitled to this real entitlement. */
export interface Entitled {
  outcome: 'entitled';
  /** The real entitlement's class; null for none. Printable ASCII without & < > " ' (Conary-safe). */
  class: string | null;
  /** The real entitlement key Conary looks up. Conary-safe, 1 to 255 characters. */
  key: string;
  /**
   * Conary's own cache of this grant: `<timeout val retry>`. entgate lowers `val` so that the
   * cached grant never outlives `expiresAt`, and sends `val="0"` when `dependsOnAddress`.
   */
  timeout?: { val: number; retry: boolean };
  /**
   * When this grant stops being valid (a subscription's end, say): a Date or epoch
   * milliseconds. entgate denies it (`expired`) from then on, even from its caches, and no
   * cached grant in Conary outlives it.
   */
  expiresAt?: Date | number;
  /**
   * True when the decision depended on `request.remoteIp`. Conary caches grants without
   * regard to the client's address, so such a grant is sent with `<timeout val="0"/>`.
   */
  dependsOnAddress?: boolean;
  /** How long entgate may reuse this answer (seconds); 0 = do not cache. Default: ENTGATE_CACHE_TTL_SECONDS. */
  ttlSeconds?: number;
  /** For audit: the virtual key id, when the resolver has one. */
  virtualKeyId?: number;
}

/** The key is definitely not entitled. */
export interface Denied {
  outcome: 'denied';
  /** A short snake_case reason, recorded (never sent to the client). */
  reason: string;
  /** How long entgate may reuse this answer (seconds); 0 = do not cache. Default: ENTGATE_CACHE_NEGATIVE_TTL_SECONDS. */
  ttlSeconds?: number;
  virtualKeyId?: number;
}

/** No opinion: let the next resolver decide. */
export interface Pass {
  outcome: 'pass';
  /** How long entgate may reuse this answer (seconds); 0 = do not cache (a resolver with a cache of its own). Default: ENTGATE_CACHE_NEGATIVE_TTL_SECONDS. */
  ttlSeconds?: number;
}

export type Resolution = Entitled | Denied | Pass;

export interface Resolver {
  /** Shown in logs and in the audit of each decision. */
  readonly name: string;
  /**
   * Decides one request. Must settle (resolve or reject) promptly once `context.signal` aborts.
   * Throwing means "I failed", not "denied".
   */
  resolve(request: ResolveRequest, context: ResolveContext): Promise<Resolution>;
  /** Releases connections and timers at shutdown. */
  close?(): Promise<void>;
}

export interface ResolverFactoryContext {
  /** entgate's validated configuration (read-only). */
  readonly config: Config;
  /** A logger for the plugin. */
  readonly logger: Logger;
}

/** A plugin module's default export. */
export type ResolverFactory<Options = unknown> = (
  options: Options,
  context: ResolverFactoryContext,
) => Resolver | Promise<Resolver>;

/** The shape of a plugin module. */
export interface ResolverModule<Options = unknown> {
  default: ResolverFactory<Options>;
  optionsSchema?: ZodType<Options>;
}

/** Thrown by a resolver that could not decide (timeout, transport, malformed answer, breaker open). */
export class ResolverFailure extends Error {
  constructor(
    readonly kind: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ResolverFailure';
  }
}
