/** What an API credential may do. Every admin route states the scopes that may call it. */
export const SCOPES = ['read', 'write', 'admin', 'tokens:mint', 'leases', 'leases:client', 'capacities'] as const;
export type Scope = (typeof SCOPES)[number];

/** What each scope allows, as `entgate credential create --help` lists it. */
export const SCOPE_DOCS: Record<Scope, string> = {
  read: 'read entitlements, virtual keys (their lookup too), products, pools, leases, lease events, client keys, guessing blocks, the check audit, and the licence with its capacities, claims and events',
  write: 'everything `read` may, and change entitlements, virtual keys (the CSV import too) and products, lift guessing blocks, and install a licence',
  leases: 'manage pools, leases (force-release) and client keys, and read them and the lease events',
  'leases:client': 'hold floating leases as a client at /v1/leases (its own leases only); no admin route',
  capacities: "a service of the installation: read the licence (/v1/licence, its events and features) and claim, heartbeat and release capacities at /v1/capacities; no admin route",
  'tokens:mint': 'mint software entitlement tokens (POST /admin/v1/tokens)',
  admin: 'everything: every scope, and API credentials, the bootstrap credential and the admin audit trail',
};

/** Who made an admin request: a stored API credential, or the bootstrap credential from ENTGATE_ADMIN_TOKEN. */
export interface Principal {
  name: string;
  /** The stored credential's id (`tokenId` on the wire); null for the bootstrap credential. */
  credentialId: number | null;
  scopes: readonly Scope[];
}

/** The scopes a credential effectively holds: `admin` holds every scope, `write` holds `read`. */
export function effectiveScopes(held: readonly Scope[]): Set<Scope> {
  if (held.includes('admin')) return new Set(SCOPES);
  const out = new Set(held);
  if (out.has('write')) out.add('read');
  return out;
}

/** True when a credential holding `held` may call a route that any of `anyOf` may call. */
export function allows(held: readonly Scope[], anyOf: readonly Scope[]): boolean {
  const effective = effectiveScopes(held);
  return anyOf.some((s) => effective.has(s));
}
