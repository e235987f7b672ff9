/** Plain records shared by the layers. Times are Date objects; absent values are null. */

export interface Entitlement {
  id: number;
  /** `host`, `*.domain` or `*` (see server-pattern.ts). */
  server: string;
  class: string | null;
  /** The real entitlement key that Conary looks up in its own database. */
  key: string;
  description: string;
  createdAt: Date;
  updatedAt: Date;
}

export const VIRTUAL_KEY_STATUSES = ['active', 'suspended', 'revoked'] as const;
export type VirtualKeyStatus = (typeof VIRTUAL_KEY_STATUSES)[number];

export interface VirtualKey {
  id: number;
  entitlementId: number;
  /** A few leading characters, for people; never the key. */
  hint: string;
  status: VirtualKeyStatus;
  notBefore: Date | null;
  expiresAt: Date | null;
  /** Canonical CIDR texts; empty = any address (and no address) may use the key. */
  allowedCidrs: string[];
  /** Seconds Conary may cache a grant (`<timeout val>`); null = no `<timeout>` element. */
  cacheTimeout: number | null;
  /** `<timeout retry>`: whether Conary asks again when its cached grant expires. */
  retry: boolean;
  customerRef: string | null;
  /** Seats of the floating-lease pool this key defines; null = the key holds no leases. */
  maxConcurrentLeases: number | null;
  createdAt: Date;
  updatedAt: Date;
  lastUsedAt: Date | null;
}

/**
 * What the check needs to know about one virtual key: its rules and its entitlement, and
 * nothing else (this is read at the check's rate on every cache miss). Times are epoch ms.
 */
export interface KeyMapping {
  virtualKeyId: number;
  status: VirtualKeyStatus;
  notBefore: number | null;
  expiresAt: number | null;
  allowedCidrs: string[];
  cacheTimeout: number | null;
  retry: boolean;
  entitlement: { server: string; class: string | null; key: string };
}

/** A check request as Conary sends it, already parsed and validated. */
export interface CheckRequest {
  server: string;
  class?: string;
  key: string;
  remoteIp?: string;
}
