import { compileServerPattern, type ServerMatcher } from './server-pattern.ts';
import { compileCidrs, ipInRanges, parseIp, type IpRange } from '../lib/ip.ts';
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
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export interface GrantedEntitlement {
  /** Echoed exactly as requested: Conary compares it character for character. */
  server: string;
  class: string | null;
  key: string;
  /** The key's own cache timeout, as configured (see conaryTimeout for what is sent). */
  timeout: { val: number; retry: boolean } | null;
  /** When the key stops being valid (epoch ms); null: never. */
  expiresAt: number | null;
  /** The grant depends on the client's address (the key is network-locked). */
  dependsOnAddress: boolean;
}

export type CheckDecision =
  | { granted: true; virtualKeyId: number; entitlement: GrantedEntitlement }
  | { granted: false; virtualKeyId: number | null; reason: DenyReason };

/**
 * A key mapping prepared once for many decisions: patterns compiled. This is what the key
 * cache holds.
 */
export interface CompiledMapping {
  mapping: KeyMapping;
  serverMatches: ServerMatcher;
  cidrs: IpRange[];
}

export function compileMapping(mapping: KeyMapping): CompiledMapping {
  return {
    mapping,
    serverMatches: compileServerPattern(mapping.entitlement.server),
    cidrs: compileCidrs(mapping.allowedCidrs),
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
  const m = compiled.mapping;
  const deny = (reason: DenyReason): CheckDecision => ({ granted: false, virtualKeyId: m.virtualKeyId, reason });

  if (m.status === 'revoked') return deny('revoked');
  if (m.status === 'suspended') return deny('suspended');
  if (m.notBefore !== null && nowMs < m.notBefore) return deny('not_yet_valid');
  if (m.expiresAt !== null && nowMs >= m.expiresAt) return deny('expired');
  // The server is echoed into the document: one Conary would mangle can never be granted.
  if (!compiled.serverMatches(request.server) || !isConarySafe(request.server)) return deny('server_not_covered');
  if (compiled.cidrs.length > 0) {
    if (request.remoteIp === undefined) return deny('ip_required');
    const ip = parseIp(request.remoteIp);
    if (ip === undefined || !ipInRanges(ip, compiled.cidrs)) return deny('ip_not_allowed');
  }
  if (options.requireClassMatch && (request.class ?? null) !== m.entitlement.class) return deny('class_mismatch');

  return {
    granted: true,
    virtualKeyId: m.virtualKeyId,
    entitlement: {
      server: request.server,
      class: m.entitlement.class,
      key: m.entitlement.key,
      timeout: m.cacheTimeout === null ? null : { val: m.cacheTimeout, retry: m.retry },
      expiresAt: m.expiresAt,
      dependsOnAddress: compiled.cidrs.length > 0,
    },
  };
}
