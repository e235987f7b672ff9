/** entgate's public API for embedding and for integrators. */
export { startService, type RunningService } from './service.ts';
export { loadConfig } from '../config/load.ts';
export { settings, type Config } from '../config/settings.ts';
export { createLogger, type Logger } from './lib/logger.ts';
export { AppError } from './lib/errors.ts';
export { decide, type CheckDecision, type DenyReason, type GrantedEntitlement } from './domain/check.ts';
export { renderEntitlementDocument } from './domain/entitlement-document.ts';
export { parseCheckQuery } from './http/rus-query.ts';
export type { CheckRequest, Entitlement, VirtualKey, KeyMapping } from './domain/types.ts';
export {
  LeaseClient,
  LeaseRequestError,
  NoSeatAvailableError,
  LeaseLostError,
  type Lease,
  type AcquireRequest,
  type HeldLease,
  type LeaseClientOptions,
} from './client/lease-client.ts';
export {
  LicenceClient,
  LicenceRequestError,
  CapacityExceededError,
  FeatureNotLicensedError,
  LicenceExpiredError,
  LicenceNotYetValidError,
  CapacityNotLicensedError,
  ClaimNotHeldError,
  LicenceVerificationError,
  LicenceFileError,
  type Licence,
  type LicenceStatus,
  type LicenceSource,
  type LicenceInfo,
  type LicenceClientEvents,
  type LicenceClientLogger,
  type LicenceClientOptions,
  type Claim,
  type GrantedClaim,
  type CapacityUse,
  type HeldClaim,
} from './client/licence-client.ts';
/** The resolver contract, for writing a plugin (docs/plugins.md); its test suite is `entgate/testing`. */
export type {
  Resolver,
  ResolverFactory,
  ResolverFactoryContext,
  ResolverModule,
  ResolveRequest,
  ResolveContext,
  Resolution,
} from './resolvers/resolver.ts';
