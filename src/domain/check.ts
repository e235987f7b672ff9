import { compileServerPattern, type ServerMatcher } from './server-pattern.ts';
import { compileCidrs, ipInRanges, parseIp, type IpRange } from './ip.ts';
import { isConarySafe } from './conary-values.ts';
import type { CheckRequest, KeyMapping } from './types.ts';

export const DENY_REASONS = [
  'unknown_key',
  'revoked',
  'suspended',
  'not_yet_valid',
  'expired',
  'server_not_covered',
  'ip_required',
  'ip_not_allowed',
  'class_mismatch',
  'lookup_failed',
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export interface GrantedEntitlement {
  /** Echoed exactly as requested: Conary compares it character for character. */
  server: string;
  class: string | null;
  key: string;
  timeout: { val: number; retry: boolean } | null;
}

export type CheckDecision =
  | { granted: true; virtualKeyId: number; entitlement: GrantedEntitlement }
  | { granted: false; virtualKeyId: number | null; reason: DenyReason };

/**
 * A key mapping prepared once for many decisions: patterns compiled, times as numbers.
 * This is what the key cache holds.
 */
export interface CompiledMapping {
  mapping: KeyMapping;
  serverMatches: ServerMatcher;
  cidrs: IpRange[];
  notBefore: number | null;
  expiresAt: number | null;
}

export function compileMapping(mapping: KeyMapping): CompiledMapping {
  const vk = mapping.virtualKey;
  return {
    mapping,
    serverMatches: compileServerPattern(mapping.entitlement.server),
    cidrs: compileCidrs(vk.allowedCidrs),
    notBefore: vk.notBefore?.getTime() ?? null,
    expiresAt: vk.expiresAt?.getTime() ?? null,
  };
}

export interface DecideOptions {
  requireClassMatch: boolean;
}

/**
 * The rUS decision for one request, given what the store knows about its key (undefined when
 * nothing). Pure: time is passed in. Rules are applied in a fixed order so the recorded reason
 * is the first one that fails. `not_before` is inclusive, `expires_at` exclusive.
 */
export function decide(
  request: CheckRequest,
  compiled: CompiledMapping | undefined,
  nowMs: number,
  options: DecideOptions,
): CheckDecision {
  if (compiled === undefined) return { granted: false, virtualKeyId: null, reason: 'unknown_key' };
  const { virtualKey: vk, entitlement } = compiled.mapping;
  const deny = (reason: DenyReason): CheckDecision => ({ granted: false, virtualKeyId: vk.id, reason });

  if (vk.status === 'revoked') return deny('revoked');
  if (vk.status === 'suspended') return deny('suspended');
  if (compiled.notBefore !== null && nowMs < compiled.notBefore) return deny('not_yet_valid');
  if (compiled.expiresAt !== null && nowMs >= compiled.expiresAt) return deny('expired');
  // The server is echoed into the document: one Conary would mangle can never be granted.
  if (!compiled.serverMatches(request.server) || !isConarySafe(request.server)) return deny('server_not_covered');
  if (compiled.cidrs.length > 0) {
    if (request.remoteIp === undefined) return deny('ip_required');
    const ip = parseIp(request.remoteIp);
    if (ip === undefined || !ipInRanges(ip, compiled.cidrs)) return deny('ip_not_allowed');
  }
  if (options.requireClassMatch && (request.class ?? null) !== entitlement.class) return deny('class_mismatch');

  return {
    granted: true,
    virtualKeyId: vk.id,
    entitlement: {
      server: request.server,
      class: entitlement.class,
      key: entitlement.key,
      timeout: vk.cacheTimeout === null ? null : { val: vk.cacheTimeout, retry: vk.retry },
    },
  };
}
