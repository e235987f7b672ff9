import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sesAnswer } from '../../../src/ses/routes.ts';

const expiry = new Date('2026-12-11T10:10:00.000Z');
const error = (code: string, value: string) => ({ code, message: { lang: 'en-us', value } });

describe('SES outcomes in the protocol', () => {
  it('answers approvals and acquires 200 in the shape of their api-version', () => {
    assert.deepEqual(sesAnswer({ kind: 'approved_v1', id: 'entitlement-1', vmid: 'vm-42' }), { status: 200, body: { id: 'entitlement-1', vmid: 'vm-42' } });
    assert.deepEqual(sesAnswer({ kind: 'approved_v2', id: 'entitlement-2', expiry }), {
      status: 200,
      body: { id: 'entitlement-2', expiry: '2026-12-11T10:10:00.000Z' },
    });
    assert.deepEqual(sesAnswer({ kind: 'acquired', entitlementId: 'e-3', expiry }), {
      status: 200,
      body: { entitlementId: 'e-3', initialExpiryTime: '2026-12-11T10:10:00.000Z' },
    });
    assert.deepEqual(sesAnswer({ kind: 'renewed', expiry }), { status: 200, body: { expiryTime: '2026-12-11T10:10:00.000Z' } });
    assert.deepEqual(sesAnswer({ kind: 'released' }), { status: 204 });
  });

  it('answers refusals with the protocol codes: a denial (no seat alike) 403, never saying why', () => {
    assert.deepEqual(sesAnswer({ kind: 'denied', applicationId: 'ContosoApp' }), {
      status: 403,
      body: error('EntitlementDenied', 'Entitlement for ContosoApp was denied.'),
    });
    assert.deepEqual(sesAnswer({ kind: 'duration_too_long', maxSeconds: 604_800 }), {
      status: 400,
      body: error('EntitlementDenied', 'The duration is longer than 604800 seconds.'),
    });
    assert.deepEqual(sesAnswer({ kind: 'not_found', entitlementId: 'x' }), { status: 404, body: error('NotFound', 'Entitlement x was not found.') });
    assert.deepEqual(sesAnswer({ kind: 'already_released', entitlementId: 'x' }), {
      status: 409,
      body: error('AlreadyReleased', 'Entitlement x was already released.'),
    });
    assert.deepEqual(sesAnswer({ kind: 'expired', entitlementId: 'x' }), { status: 409, body: error('EntitlementExpired', 'Entitlement x has expired.') });
  });
});
