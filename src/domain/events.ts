/**
 * The audit's records, as the parts that decide write them and as metrics count them: one
 * rUS check, one software entitlement token request. Each is written by its EventWriter
 * (`store/check-events.ts`) to its own table.
 */

/** One check, as the audit records it (\`store/check-events.ts\` writes them). */
export interface CheckEvent {
  occurredAt: Date;
  server: string | null;
  class: string | null;
  keyHint: string | null;
  virtualKeyId: number | null;
  remoteIp: string | null;
  callerIp: string | null;
  decision: 'granted' | 'denied' | 'invalid';
  reason: string | null;
  resolver: string | null;
  latencyUs: number;
}

/** One software entitlement (SES) request, as the audit records it (table token_events). */
export interface TokenEvent {
  occurredAt: Date;
  operation: 'approve' | 'acquire' | 'renew' | 'release';
  apiVersion: string | null;
  tokenId: string | null;
  applicationId: string | null;
  callerIp: string | null;
  outcome: 'approved' | 'denied' | 'invalid' | 'renewed' | 'released' | 'not_found' | 'conflict';
  reason: string | null;
  entitlementId: string | null;
  latencyUs: number;
}
