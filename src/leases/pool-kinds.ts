/**
 * What a pool is for, stored as `lease_pools.kind` with the pool's owner:
 *
 * - `named`: made by an admin, acquired at /v1 by its name with a client credential;
 * - `virtual_key`: the seats a virtual key's `maxConcurrentLeases` defines (`virtual_key_id`),
 *   acquired at /v1 with the key, never by name;
 * - `ses_application`: the seats of one SES application (`ses_application`), taken through
 *   the SES protocol with a token, never at /v1.
 * - `licence_capacity`: the seats of a licence's `concurrent:` capacity (`licence_capacity`,
 *   named by it), set by the installed licence and taken as capacity claims (src/licensing/).
 *
 * A pool's seats are taken only by a holder of its kind. Names are for people: once a pool
 * exists its kind decides, never its name. This module is the one place that knows how owned
 * pools are named (`vk-<id>`, `ses-<application>`), as admins see them in pool lists.
 */
export type PoolKind = 'named' | 'virtual_key' | 'ses_application' | 'licence_capacity';

export type PoolOwner =
  | { kind: 'named' }
  | { kind: 'virtual_key'; virtualKeyId: number }
  /** `application`: the application's id in lower case, or a hash of it when that is not plain (see the SES service). */
  | { kind: 'ses_application'; application: string }
  /** `capacity`: the licence capacity's name (`concurrent:<name>`), which is also the pool's. */
  | { kind: 'licence_capacity'; capacity: string };

const VIRTUAL_KEY_NAME = 'vk-';
const SES_APPLICATION_NAME = 'ses-';

/** The name an owned pool is shown by. */
export function poolNameOf(owner: Exclude<PoolOwner, { kind: 'named' }>): string {
  switch (owner.kind) {
    case 'virtual_key':
      return `${VIRTUAL_KEY_NAME}${owner.virtualKeyId}`;
    case 'ses_application':
      return `${SES_APPLICATION_NAME}${owner.application}`;
    case 'licence_capacity':
      return owner.capacity;
  }
}

/** Names admins may give a pool: 1 to 63 of a-z 0-9 . _ -, not in the form of a virtual key's pool (made only for the key). */
export const POOL_NAME = new RegExp(`^(?!${VIRTUAL_KEY_NAME})[a-z0-9][a-z0-9._-]{0,62}$`);

/**
 * What a pool an admin creates is, decided once from the name given and then stored as its
 * kind. `ses-<application>` is the documented way to set an SES application's seats before it
 * is first used, so that name makes the application's pool; any other name a named pool.
 */
export function ownerOfNewPool(name: string): Extract<PoolOwner, { kind: 'named' | 'ses_application' }> {
  return name.startsWith(SES_APPLICATION_NAME) ? { kind: 'ses_application', application: name.slice(SES_APPLICATION_NAME.length) } : { kind: 'named' };
}
