import type { EventTable } from '../store/check-events.ts';
import type { TokenEvent } from './service.ts';

/** Where token decisions are written: `token_events`, one row per SES request. */
export const TOKEN_EVENTS: EventTable<TokenEvent> = {
  table: 'token_events',
  columns: ['occurred_at', 'operation', 'api_version', 'token_id', 'application_id', 'caller_ip', 'outcome', 'reason', 'entitlement_id', 'latency_us'],
  toRow: (e) => ({
    occurred_at: e.occurredAt,
    operation: e.operation,
    api_version: e.apiVersion,
    token_id: e.tokenId,
    application_id: e.applicationId,
    caller_ip: e.callerIp,
    outcome: e.outcome,
    reason: e.reason,
    entitlement_id: e.entitlementId,
    latency_us: e.latencyUs,
  }),
};
