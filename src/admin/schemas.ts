import { z } from 'zod';
import { conaryValueProblem } from '../domain/conary-values.ts';
import { serverPatternProblem } from '../domain/server-pattern.ts';
import { normalizeCidr } from '../lib/ip.ts';
import { virtualKeyProblem } from '../domain/virtual-key.ts';
import { VIRTUAL_KEY_STATUSES } from '../domain/types.ts';
import { SCOPES } from '../auth/scopes.ts';

/**
 * The admin API's inputs. Everything that would let a stored value break the rUS answer is
 * refused here, at creation, with a message that names the field and says why.
 */
const checked = (problem: (v: string) => string | undefined) =>
  z.string().superRefine((v, ctx) => {
    const p = problem(v);
    if (p) ctx.addIssue({ code: 'custom', message: p });
  });

const conaryValue = checked(conaryValueProblem);
const serverPattern = checked(serverPatternProblem);

/** An ISO-8601 time with a zone (`2027-01-31T12:00:00Z`) or a date (`2027-01-31`, midnight UTC). */
export const isoTime = z
  .union([z.iso.datetime({ offset: true }), z.iso.date()], {
    error: 'must be an ISO-8601 time with a zone (2027-01-31T12:00:00Z) or a date (2027-01-31)',
  })
  .transform((v) => new Date(v.length === 10 ? `${v}T00:00:00Z` : v));

export const cidr = z.string().transform((v, ctx) => {
  const r = normalizeCidr(v);
  if ('problem' in r) {
    ctx.addIssue({ code: 'custom', message: r.problem });
    return z.NEVER;
  }
  return r.cidr;
});

/**
 * A whole number given as a JSON number or, in a path, query or CSV cell, as plain decimal
 * digits: `0x10`, `1e1` and ` 7` are refused rather than read as another number.
 */
const wholeNumber = z.union([
  z.number(),
  z.string().regex(/^\d{1,16}$/, { error: 'must be a whole number' }).transform(Number),
]);
const id = wholeNumber.pipe(z.number().int().positive().max(2_147_483_647));

export const entitlementCreate = z.strictObject({
  server: serverPattern,
  key: conaryValue,
  class: conaryValue.nullable().optional(),
  description: z.string().max(1000).optional(),
});

export const entitlementPatch = entitlementCreate
  .partial()
  .refine((p) => Object.keys(p).length > 0, { message: 'nothing to change' });

export const cacheTimeout = z.number().int().min(0).max(31_536_000);

const virtualKeyFields = {
  notBefore: isoTime.nullable().optional(),
  expiresAt: isoTime.nullable().optional(),
  allowedCidrs: z.array(cidr).max(100).optional(),
  cacheTimeout: cacheTimeout.nullable().optional(),
  retry: z.boolean().optional(),
  customerRef: z.string().min(1).max(255).nullable().optional(),
  maxConcurrentLeases: z.number().int().min(1).max(1_000_000).nullable().optional(),
};

const windowIsOpen = (v: { notBefore?: Date | null; expiresAt?: Date | null }) =>
  !(v.notBefore && v.expiresAt && v.notBefore.getTime() >= v.expiresAt.getTime());
const windowMessage = { message: 'notBefore must be earlier than expiresAt', path: ['expiresAt'] };

/**
 * `retry: false` says what Conary does when its cached grant expires (report a timeout instead
 * of asking again): without a cache timeout of 1 second or more there is no such grant, and
 * Conary would fail every second request of the client instead. Refused.
 */
export function retryProblem(retry: boolean, cacheTimeout: number | null): string | undefined {
  return !retry && (cacheTimeout === null || cacheTimeout < 1)
    ? 'retry false needs a cacheTimeout of 1 second or more: without a cached grant to expire, Conary would fail every second request of the client'
    : undefined;
}

/** Settings that are accepted but cannot act as written. */
export function virtualKeyWarnings(v: { allowedCidrs: readonly string[]; cacheTimeout: number | null }): string[] {
  return v.allowedCidrs.length > 0 && v.cacheTimeout !== null && v.cacheTimeout > 0
    ? [
        'cacheTimeout is not sent for this key: it is locked to allowedCidrs, and Conary caches a grant without regard to the client address, so its grants carry <timeout val="0"/>',
      ]
    : [];
}

export const virtualKeyCreate = z
  .strictObject({
    entitlementId: id,
    /** Omitted: entgate generates one (shown once). */
    key: checked(virtualKeyProblem).optional(),
    ...virtualKeyFields,
  })
  .refine(windowIsOpen, windowMessage)
  .superRefine((v, ctx) => {
    const problem = retryProblem(v.retry ?? true, v.cacheTimeout ?? null);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['retry'] });
  });

export const virtualKeyPatch = z
  .strictObject({
    entitlementId: id.optional(),
    status: z.enum(VIRTUAL_KEY_STATUSES).optional(),
    ...virtualKeyFields,
  })
  .refine((p) => Object.keys(p).length > 0, { message: 'nothing to change' })
  .refine(windowIsOpen, windowMessage);

export const virtualKeyLookup = z.strictObject({ key: z.string().min(1).max(255) });

export const virtualKeyListQuery = z.strictObject({
  entitlementId: id.optional(),
  status: z.enum(VIRTUAL_KEY_STATUSES).optional(),
  cursor: id.optional(),
  limit: wholeNumber.pipe(z.number().int().min(1).max(1000)).default(100),
});

export const idParam = id;

export const auditQuery = z.strictObject({
  cursor: id.optional(),
  after: wholeNumber.pipe(z.number().int().min(0)).optional(),
  keyHint: z.string().min(1).max(16).optional(),
  server: z.string().min(1).max(255).optional(),
  decision: z.enum(['granted', 'denied', 'invalid']).optional(),
  since: isoTime.optional(),
  until: isoTime.optional(),
  limit: wholeNumber.pipe(z.number().int().min(1).max(1000)).default(100),
});

/** An API credential's name: what the audit trail shows for everything it does. */
export const credentialCreate = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit'),
  scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
  expiresAt: isoTime.optional(),
});
export const credentialListQuery = z.strictObject({ all: z.enum(['true', 'false']).optional() });
export const credentialRef = z.string().regex(/^(\d{1,15}|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/, 'a credential id or name');
export const bootstrapCredentialPut = z.strictObject({ enabled: z.boolean() });
export const adminEventsQuery = z.strictObject({
  cursor: id.optional(),
  after: wholeNumber.pipe(z.number().int().min(0)).optional(),
  actor: z.string().min(1).max(64).optional(),
  since: isoTime.optional(),
  limit: wholeNumber.pipe(z.number().int().min(1).max(1000)).default(100),
});

/** A CRM product code: what the CRM returns, so anything printable up to 128 characters. */
export const productCode = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters');
export const productMap = z.strictObject({ entitlementId: id });

export type EntitlementCreate = z.output<typeof entitlementCreate>;
export type VirtualKeyCreate = z.output<typeof virtualKeyCreate>;
export type VirtualKeyPatchInput = z.output<typeof virtualKeyPatch>;
