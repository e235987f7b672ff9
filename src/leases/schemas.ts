import { z } from 'zod';
import { CLIENT_ID } from './rules.ts';
import { POOL_NAME } from './pool-kinds.ts';
import { LICENCE_NAME } from '../domain/licence.ts';

export const poolName = z.string().regex(POOL_NAME, {
  error: 'a pool name is 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit (vk- is reserved)',
});

/**
 * A pool name in a path: the pools of virtual keys (`vk-<id>`) may be read and tuned too, and
 * those of licence capacities (`concurrent:<name>`, the capacity's name) read.
 */
export const anyPoolName = z.string().regex(new RegExp(`^(?:[a-z0-9][a-z0-9._-]{0,62}|concurrent:${LICENCE_NAME.source.slice(1, -1)})$`), { error: 'not a pool name' });

const clientId = z.string().regex(CLIENT_ID, { error: 'clientId is 1 to 128 printable ASCII characters without spaces' });
export const ttlSeconds = z.number().int().min(1).max(7 * 86_400);
/** Milliseconds since the epoch: required in signed requests, ignored otherwise. */
const ts = z.number().int().nonnegative().optional();

/** A holder's metadata (leases, and licence capacity claims). */
export const metadata = z
  .record(z.string().max(64), z.unknown())
  .refine((m) => Object.keys(m).length <= 32 && JSON.stringify(m).length <= 4096, {
    message: 'metadata is at most 32 keys and 4 KiB of JSON',
  });

export const acquireBody = z
  .strictObject({
    pool: anyPoolName.optional(),
    virtualKey: z.string().min(1).max(255).optional(),
    clientId,
    ttlSeconds: ttlSeconds.optional(),
    metadata: metadata.optional(),
    ts,
  })
  .refine((b) => (b.pool === undefined) !== (b.virtualKey === undefined), { message: 'give exactly one of pool and virtualKey' });

/** A lease acquired with a virtual key is renewed and released with the same key. */
const holderKey = z.string().min(1).max(255).optional();

export const heartbeatBody = z.strictObject({
  ttlSeconds: ttlSeconds.optional(),
  virtualKey: holderKey,
  /** In a signed request: the lease the signature is for (must match the path). */
  leaseId: z.string().optional(),
  ts,
});

export const releaseBody = z.strictObject({ leaseId: z.string().optional(), virtualKey: holderKey, ts });

export const leaseId = z.uuid({ error: 'not a lease id' });

const seats = z.number().int().min(1).max(1_000_000);
const poolFields = {
  defaultTtlSeconds: ttlSeconds.min(2).optional(),
  maxTtlSeconds: ttlSeconds.min(2).optional(),
  heartbeatIntervalSeconds: z.number().int().min(1).max(86_400).optional(),
  requireSignedRequests: z.boolean().optional(),
  /** Acquired without any credential: an admin's explicit choice. */
  anonymous: z.boolean().optional(),
};

export const poolCreate = z.strictObject({ name: poolName, seats, ...poolFields });
export const poolPatch = z
  .strictObject({ seats: seats.optional(), ...poolFields })
  .refine((p) => Object.keys(p).length > 0, { message: 'nothing to change' });

export const poolDeleteQuery = z.strictObject({ force: z.enum(['true', 'false']).optional() });

export const clientKeyCreate = z.strictObject({
  clientId,
  publicKey: z.string().min(1).max(64 * 1024),
});

export const clientKeyListQuery = z.strictObject({ clientId: clientId.optional() });

export const leaseEventsQuery = z.strictObject({
  pool: anyPoolName.optional(),
  leaseId: leaseId.optional(),
  limit: z
    .string()
    .regex(/^\d{1,4}$/)
    .transform(Number)
    .pipe(z.number().int().min(1).max(1000))
    .optional(),
});

export type AcquireBody = z.output<typeof acquireBody>;
export type PoolCreate = z.output<typeof poolCreate>;
export type PoolPatch = z.output<typeof poolPatch>;
export type HeartbeatBody = z.output<typeof heartbeatBody>;
export type ReleaseBody = z.output<typeof releaseBody>;
