import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { SignJWT } from 'jose';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { AUTH, serviceFixture, startTestService } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';
import { issueLicence, type LicenceSpec } from '../../src/domain/licence.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DAY = 86_400_000;

/** The vendor's key pair, with its public half in a file the installations trust. */
const keyDir = tempDir('entgate-licence-keys-');
const vendor = generateKeyPairSync('ed25519');
const PUBLIC_KEYS = join(keyDir, 'vendor.pem');
writeFileSync(PUBLIC_KEYS, vendor.publicKey.export({ type: 'spki', format: 'pem' }));
after(() => rmSync(keyDir, { recursive: true, force: true }));
const TRUSTING = { ENTGATE_LICENCE_PUBLIC_KEYS: PUBLIC_KEYS, ENTGATE_LEASE_TIDY_SECONDS: '3600' };

/** What the licences of these tests allow, unless a test says otherwise. */
const BASE: Record<string, number> = { 'assigned:users': 2, 'assigned:devices': 3, 'assigned:seats': 1, 'concurrent:calls': 2, 'feature:export': 1 };
const FEATURES = ['export', 'reports'];
const issue = (spec: Partial<LicenceSpec> = {}, key: KeyObject = vendor.privateKey) =>
  issueLicence({ tenant: 'acme', features: FEATURES, capacities: BASE, expiresAt: new Date(Date.now() + DAY), ...spec }, key);

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const claimPath = (capacity: string, id?: string) => `/v1/capacities/${capacity}/claims${id === undefined ? '' : `/${id}`}`;

interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/** A real HTTP subscription to GET /v1/licence/events: its frames as they come. */
function subscribe(url: string, token: string, lastEventId?: string) {
  const events: SseEvent[] = [];
  const raw: string[] = [];
  let buffer = '';
  let waiting: (() => void) | undefined;
  let req: ClientRequest;
  const opened = new Promise<{ status: number; contentType: string }>((resolve, reject) => {
    req = httpRequest(
      `${url}/v1/licence/events`,
      { headers: { ...bearer(token), Accept: 'text/event-stream', ...(lastEventId !== undefined && { 'Last-Event-ID': lastEventId }) } },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            raw.push(block);
            const fields = new Map<string, string>();
            for (const line of block.split('\n')) {
              const colon = line.indexOf(':');
              if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
            }
            if (fields.has('data')) events.push({ id: fields.get('id'), event: fields.get('event'), data: fields.get('data')! });
          }
          waiting?.();
        });
        res.on('error', () => {});
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']) });
      },
    );
    req.on('error', reject);
    req.end();
  });
  opened.catch(() => {}); // a test that awaits it sees the failure
  return {
    opened,
    events,
    raw,
    /** The next frame to arrive (or the first already arrived past `seen`), within `limitMs`. */
    async frameAfter(seen: number, limitMs = 10_000): Promise<string[]> {
      const deadline = Date.now() + limitMs;
      while (raw.length <= seen) {
        if (Date.now() > deadline) assert.fail(`no frame within ${limitMs} ms; had ${JSON.stringify(raw)}`);
        await new Promise<void>((resolve) => {
          waiting = resolve;
          setTimeout(resolve, 50);
        });
      }
      return raw.slice(seen);
    },
    async eventAt(index: number, limitMs = 10_000): Promise<SseEvent> {
      const deadline = Date.now() + limitMs;
      while (events.length <= index) {
        if (Date.now() > deadline) assert.fail(`no event #${index} within ${limitMs} ms; had ${JSON.stringify(raw)}`);
        await new Promise<void>((resolve) => {
          waiting = resolve;
          setTimeout(resolve, 20);
        });
      }
      return events[index]!;
    },
    close: () => req.destroy(),
  };
}

for (const target of databaseTargets) {
  describe(`licences and capacities on ${target.name}`, () => {
    const fixture = serviceFixture(TRUSTING, target);
    const api = () => request(fixture.svc.server);
    const knex = () => fixture.svc.db.knex;
    const install = (token: string) => api().put('/admin/v1/licence').set(AUTH).set('Content-Type', 'text/plain').send(token);
    const claim = (capacity: string, body: Record<string, unknown>, headers: Record<string, string> = AUTH) =>
      api().post(claimPath(capacity)).set(headers).send(body);
    const release = (capacity: string, id: string) => api().delete(claimPath(capacity, id)).set(AUTH);
    const licenceState = async () => (await api().get('/admin/v1/licence').set(AUTH).expect(200)).body;
    const count = async (table: string) => Number((await knex()(table).count({ n: '*' }))[0]!.n);
    /** The licence events of a filter, oldest first. */
    const eventsOf = async (query: string) => ((await api().get(`/admin/v1/licence/events?${query}&limit=1000`).set(AUTH).expect(200)).body.items as Record<string, unknown>[]).reverse();
    let installationId: string;

    it('before any licence: no licence, no capacities, nothing to claim', async () => {
      const state = await licenceState();
      assert.match(state.installation.id, /^[0-9a-f-]{36}$/);
      assert.ok(!Number.isNaN(Date.parse(state.installation.createdAt)));
      assert.deepEqual([state.current, state.capacities, state.history], [null, [], []]);
      installationId = state.installation.id;
      const none = await api().get('/v1/licence').set(AUTH);
      assert.deepEqual([none.status, none.body.code], [404, 'no_licence']);
      const claimed = await claim('assigned:users', { id: 'early' });
      assert.deepEqual([claimed.status, claimed.body.code], [404, 'no_licence']);
      const feature = await api().get('/v1/licence/features/export').set(AUTH);
      assert.deepEqual([feature.status, feature.body.code, feature.body.licensed, feature.body.feature], [403, 'no_licence', false, 'export']);
      assert.deepEqual((await api().get('/v1/capacities').set(AUTH).expect(200)).body, { items: [], licence: null });
    });

    it('installs a licence (201); the same again is 200 and adds nothing; each new one is kept, newest first', async () => {
      const first = await issue({ id: 'lic-1' });
      const put = await install(first);
      assert.equal(put.status, 201, JSON.stringify(put.body));
      assert.equal(put.body.installed, true);
      assert.deepEqual([put.body.current.licenceId, put.body.current.tenant, put.body.current.status, put.body.current.token], ['lic-1', 'acme', 'valid', first]);
      assert.equal(put.body.current.installedBy, 'bootstrap');
      assert.deepEqual(put.body.capacities, [
        { name: 'assigned:devices', kind: 'assigned', limit: 3, inUse: 0 },
        { name: 'assigned:seats', kind: 'assigned', limit: 1, inUse: 0 },
        { name: 'assigned:users', kind: 'assigned', limit: 2, inUse: 0 },
        { name: 'concurrent:calls', kind: 'concurrent', limit: 2, inUse: 0 },
        { name: 'feature:export', kind: 'feature', limit: 1, inUse: 0 },
        { name: 'feature:reports', kind: 'feature', limit: null, inUse: 0 },
      ]);

      const again = await api().put('/admin/v1/licence').set(AUTH).send({ token: `${first}\n` });
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.deepEqual([again.body.installed, again.body.current.seq], [false, put.body.current.seq]);
      assert.equal(await count('licences'), 1, 'no new history row');

      const second = await issue({ id: 'lic-2', tenant: 'acme-2' });
      const put2 = await api().put('/admin/v1/licence').set(AUTH).set('Content-Type', 'application/jwt').send(second);
      assert.equal(put2.status, 201, JSON.stringify(put2.body));
      assert.equal(put2.body.current.seq, put.body.current.seq + 1);

      const state = await licenceState();
      assert.equal(state.installation.id, installationId);
      assert.deepEqual([state.current.licenceId, state.current.tenant, state.current.token, state.current.status], ['lic-2', 'acme-2', second, 'valid']);
      assert.deepEqual(state.current.features, FEATURES);
      assert.deepEqual(state.current.capacities, BASE);
      assert.deepEqual(state.history.map((h: { licenceId: string }) => h.licenceId), ['lic-2', 'lic-1']);
      assert.ok(state.history.every((h: Record<string, unknown>) => !('token' in h)), 'the history shows no tokens');
      assert.equal(state.capacities.length, 6);
      assert.ok(state.capacities.every((c: { inUse: number }) => c.inUse === 0));

      const installed = await eventsOf('type=licence_installed');
      assert.deepEqual(installed.map((e) => [e.licenceId, e.actor, (e.detail as { replaced: string | null }).replaced]), [
        ['lic-1', 'bootstrap', null],
        ['lic-2', 'bootstrap', 'lic-1'],
      ]);

      const asService = await api().get('/v1/licence').set(AUTH).expect(200);
      assert.deepEqual([asService.body.seq, asService.body.licenceId, asService.body.token, asService.body.status], [put2.body.current.seq, 'lic-2', second, 'valid']);
      const raw = await api().get('/v1/licence').set(AUTH).set('Accept', 'application/jwt').expect(200);
      assert.match(String(raw.headers['content-type']), /^application\/jwt/);
      assert.equal(raw.text, second);
    });

    it('installs a licence bound to this installation, and refuses one bound to another', async () => {
      const before = await count('licences');
      const other = await install(await issue({ id: 'lic-elsewhere', installation: randomUUID() }));
      assert.deepEqual([other.status, other.body.code], [400, 'licence_installation_mismatch']);
      assert.match(other.body.message, new RegExp(installationId));
      assert.equal(await count('licences'), before);
      const bound = await install(await issue({ id: 'lic-bound', installation: installationId }));
      assert.equal(bound.status, 201, JSON.stringify(bound.body));
      assert.equal(bound.body.current.installation, installationId);
      const [refusal] = (await eventsOf('type=licence_refused')).slice(-1);
      assert.deepEqual([refusal!.reason, refusal!.licenceId], ['licence_installation_mismatch', 'lic-elsewhere']);
    });

    it('refuses a licence it cannot trust or use now, recording each refusal and changing nothing', async () => {
      const before = await licenceState();
      const refusalsBefore = (await eventsOf('type=licence_refused')).length;
      const stranger = generateKeyPairSync('ed25519').privateKey;
      const now = Date.now();
      const good = await issue({ id: 'lic-tampered' });
      const [h, , s] = good.split('.');
      const tamperedClaims = Buffer.from(JSON.stringify({ jti: 'lic-tampered', tenant: 'acme', features: [], capacities: { 'assigned:users': 1_000_000 }, iat: 1, nbf: 1, exp: 4_000_000_000 })).toString('base64url');
      const plainJwt = await new SignJWT({ jti: 'x', tenant: 'acme', features: [], capacities: {} }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(vendor.privateKey);
      const cases: [string, string, string][] = [
        ['another key', await issue({ id: 'lic-stranger' }, stranger), 'licence_signature_invalid'],
        ['claims changed after signing', `${h}.${tamperedClaims}.${s}`, 'licence_signature_invalid'],
        ['not a JWS', 'this is not a licence', 'licence_malformed'],
        ['three parts of nonsense', 'aaa.bbb.ccc', 'licence_malformed'],
        ['a JWT of another type', plainJwt, 'licence_malformed'],
        ['expired', await issue({ id: 'lic-old', issuedAt: new Date(now - 3 * DAY), expiresAt: new Date(now - DAY) }), 'licence_expired'],
        // Within the clock tolerance verify allows, but of no use installed: it would refuse every claim.
        ['expired a moment ago', await issue({ id: 'lic-just-old', issuedAt: new Date(now - DAY), expiresAt: new Date(now - 5_000) }), 'licence_expired'],
        ['not yet valid', await issue({ id: 'lic-future', notBefore: new Date(now + DAY), expiresAt: new Date(now + 2 * DAY) }), 'licence_not_yet_valid'],
      ];
      for (const [what, token, code] of cases) {
        const res = await install(token);
        assert.deepEqual([res.status, res.body.code], [400, code], `${what}: ${JSON.stringify(res.body)}`);
      }
      const empty = await api().put('/admin/v1/licence').set(AUTH).set('Content-Type', 'application/json').send({});
      assert.deepEqual([empty.status, empty.body.code], [400, 'invalid_request']);
      const refusals = (await eventsOf('type=licence_refused')).slice(refusalsBefore);
      assert.deepEqual(refusals.map((e) => e.reason), cases.map(([, , code]) => code));
      assert.ok(refusals.every((e) => e.actor === 'bootstrap' && typeof (e.detail as { reason?: string }).reason === 'string'));
      const afterwards = await licenceState();
      assert.deepEqual(afterwards, before, 'nothing changed');
    });

    it('claims an assigned: capacity: 201, the same again 200, 409 at the limit; release 204 then 404; a claim after release is new', async () => {
      const alice = await claim('assigned:users', { id: 'alice', metadata: { email: 'alice@example.com' } });
      assert.equal(alice.status, 201, JSON.stringify(alice.body));
      const { claimId, claimedAt, ...rest } = alice.body;
      assert.match(claimId, /^[0-9a-f-]{36}$/);
      assert.ok(Math.abs(Date.parse(claimedAt) - Date.now()) < 60_000);
      assert.deepEqual(rest, {
        capacity: 'assigned:users',
        id: 'alice',
        expiresAt: null,
        ttlSeconds: null,
        heartbeatIntervalSeconds: null,
        limit: 2,
        inUse: 1,
        metadata: { email: 'alice@example.com' },
      });
      const again = await claim('assigned:users', { id: 'alice' });
      assert.deepEqual([again.status, again.body.claimId, again.body.claimedAt, again.body.inUse], [200, claimId, claimedAt, 1]);
      assert.equal((await claim('assigned:users', { id: 'bob' })).status, 201);
      const full = await claim('assigned:users', { id: 'carol' });
      assert.equal(full.status, 409);
      assert.deepEqual([full.body.code, full.body.capacity, full.body.limit, full.body.inUse], ['capacity_exceeded', 'assigned:users', 2, 2]);
      assert.equal(full.headers['retry-after'], undefined, 'an assigned claim is held until released: no time to retry at');

      const held = await api().get(claimPath('assigned:users', 'alice')).set(AUTH).expect(200);
      assert.equal(held.body.claimId, claimId);
      assert.equal((await api().get(claimPath('assigned:users', 'carol')).set(AUTH)).body.code, 'claim_not_held');
      const listed = await api().get('/admin/v1/licence/capacities/assigned:users/claims').set(AUTH).expect(200);
      assert.deepEqual(listed.body.items.map((c: { id: string }) => c.id), ['alice', 'bob']);
      assert.match(listed.body.items[0].clientAddress, /127\.0\.0\.1/);

      assert.equal((await release('assigned:users', 'alice')).status, 204);
      const twice = await release('assigned:users', 'alice');
      assert.deepEqual([twice.status, twice.body.code], [404, 'claim_not_held']);
      assert.equal((await api().get(claimPath('assigned:users', 'alice')).set(AUTH)).status, 404);
      assert.equal((await claim('assigned:users', { id: 'carol' })).status, 201);
      assert.equal((await claim('assigned:users', { id: 'alice' })).status, 409);
      assert.equal((await release('assigned:users', 'bob')).status, 204);
      const back = await claim('assigned:users', { id: 'alice' });
      assert.equal(back.status, 201);
      assert.notEqual(back.body.claimId, claimId, 'a claim after a release is a new claim');
      assert.equal(back.body.inUse, 2);
      assert.equal(await knex()('capacity_claims').where({ capacity: 'assigned:users' }).whereNull('released_at').count({ n: '*' }).then((r) => Number(r[0]!.n)), 2);
    });

    it('gives an entity racing itself one claim', async () => {
      const results = await Promise.all(Array.from({ length: 12 }, () => claim('assigned:devices', { id: 'dave' })));
      assert.deepEqual(results.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
      assert.equal(new Set(results.map((r) => r.body.claimId)).size, 1);
      assert.equal(await knex()('capacity_claims').where({ capacity: 'assigned:devices', entity_id: 'dave' }).count({ n: '*' }).then((r) => Number(r[0]!.n)), 1);
    });

    it('refuses what the licence does not name or grant, and bad requests, with stable codes and no claim', async () => {
      const claimsBefore = await count('capacity_claims');
      const cases: [string, Record<string, unknown>, number, string][] = [
        ['assigned:nothing', { id: 'x' }, 404, 'unknown_capacity'],
        ['concurrent:nothing', { id: 'x' }, 404, 'unknown_capacity'],
        ['feature:beta', { id: 'x' }, 403, 'feature_not_licensed'],
        ['seats:users', { id: 'x' }, 400, 'invalid_capacity'],
        ['assigned:', { id: 'x' }, 400, 'invalid_capacity'],
        ['users', { id: 'x' }, 400, 'invalid_capacity'],
        ['assigned:users', {}, 400, 'invalid_request'],
        ['assigned:users', { id: '' }, 400, 'invalid_request'],
        ['assigned:users', { id: 'has space' }, 400, 'invalid_request'],
        ['assigned:users', { id: 'x'.repeat(257) }, 400, 'invalid_request'],
        ['assigned:users', { id: 'x', extra: 1 }, 400, 'invalid_request'],
        ['assigned:users', { id: 'x', ttlSeconds: 30 }, 400, 'invalid_request'],
        ['assigned:users', { id: 7 }, 400, 'invalid_request'],
        ['assigned:users', { id: 'x', metadata: 'no' }, 400, 'invalid_request'],
        ['concurrent:calls', { id: 'x', ttlSeconds: 0 }, 400, 'invalid_request'],
        ['concurrent:calls', { id: 'x', ttlSeconds: 1.5 }, 400, 'invalid_request'],
        ['concurrent:calls', { id: 'x', ttlSeconds: 7200 }, 400, 'invalid_request'],
      ];
      for (const [capacity, body, status, code] of cases) {
        const res = await claim(capacity, body);
        assert.deepEqual([res.status, res.body.code], [status, code], `${capacity} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      }
      const notJson = await api().post(claimPath('assigned:users')).set(AUTH).set('Content-Type', 'application/json').send('{"id":');
      assert.equal(notJson.status, 400);
      assert.equal(await count('capacity_claims'), claimsBefore);
      // Refusals the licence decides are recorded; requests that are not claims at all (400) are not.
      const refused = (await eventsOf('type=refused')).filter((e) => e.entityId === 'x').map((e) => [e.capacity, e.reason]);
      assert.deepEqual(refused, [
        ['assigned:nothing', 'unknown_capacity'],
        ['concurrent:nothing', 'unknown_capacity'],
        ['feature:beta', 'feature_not_licensed'],
      ]);
      assert.equal((await api().get('/admin/v1/licence/capacities/nope/claims').set(AUTH)).body.code, 'invalid_capacity');
      assert.equal((await api().delete(claimPath('assigned:users', 'nobody')).set(AUTH)).body.code, 'claim_not_held');
    });

    it('answers features: granted with a limit, granted without one, not granted', async () => {
      const limited = await api().get('/v1/licence/features/export').set(AUTH).expect(200);
      assert.deepEqual({ ...limited.body, expiresAt: undefined }, { feature: 'export', licensed: true, limit: 1, inUse: 0, expiresAt: undefined });
      assert.ok(Date.parse(limited.body.expiresAt) > Date.now());
      const unlimited = await api().get('/v1/licence/features/reports').set(AUTH).expect(200);
      assert.deepEqual([unlimited.body.licensed, unlimited.body.limit, unlimited.body.inUse], [true, null, 0]);
      const not = await api().get('/v1/licence/features/beta').set(AUTH);
      assert.deepEqual([not.status, not.body.code, not.body.licensed, not.body.feature], [403, 'feature_not_licensed', false, 'beta']);
      assert.equal((await api().get('/v1/licence/features/bad%20name').set(AUTH)).status, 400);

      // feature:export allows one user; feature:reports any number.
      assert.equal((await claim('feature:export', { id: 'u1' })).status, 201);
      const second = await claim('feature:export', { id: 'u2' });
      assert.deepEqual([second.status, second.body.code, second.body.limit, second.body.inUse], [409, 'capacity_exceeded', 1, 1]);
      assert.equal((await api().get('/v1/licence/features/export').set(AUTH)).body.inUse, 1);
      for (let i = 0; i < 5; i++) {
        const r = await claim('feature:reports', { id: `r${i}` });
        assert.deepEqual([r.status, r.body.limit, r.body.inUse], [201, null, i + 1]);
      }
      assert.equal((await api().get('/v1/licence/features/reports').set(AUTH)).body.inUse, 5);
    });

    it('concurrent: claims lapse at their TTL (recorded by the tidy job), take heartbeats, and answer Retry-After when full', async () => {
      const short = await claim('concurrent:calls', { id: 'call-1', ttlSeconds: 1 });
      assert.equal(short.status, 201, JSON.stringify(short.body));
      assert.deepEqual([short.body.ttlSeconds, short.body.heartbeatIntervalSeconds, short.body.limit, short.body.inUse], [1, 1, 2, 1]);
      const lapsesAt = Date.parse(short.body.expiresAt);
      assert.ok(lapsesAt - Date.now() <= 1000);
      const long = await claim('concurrent:calls', { id: 'call-2' });
      assert.deepEqual([long.status, long.body.ttlSeconds, long.body.heartbeatIntervalSeconds, long.body.inUse], [201, 60, 20, 2]);
      const full = await claim('concurrent:calls', { id: 'call-3', ttlSeconds: 30 });
      assert.deepEqual([full.status, full.body.code, full.body.limit, full.body.inUse], [409, 'capacity_exceeded', 2, 2]);
      assert.ok(['1', '2'].includes(String(full.headers['retry-after'])), String(full.headers['retry-after']));

      // call-1's seat is free once its TTL passes, not before.
      let granted: number | undefined;
      while (granted === undefined) {
        const r = await claim('concurrent:calls', { id: 'call-3', ttlSeconds: 30 });
        if (r.status === 201) granted = Date.now();
        else {
          assert.equal(r.status, 409);
          assert.ok(Date.now() < lapsesAt + 10_000, 'the seat must be freed at the TTL');
          await sleep(50);
        }
      }
      assert.ok(granted >= lapsesAt - 50, `granted ${lapsesAt - granted} ms before the claim lapsed`);
      await fixture.svc.leases.tidyNow();
      const expired = await eventsOf('capacity=concurrent:calls&type=expired');
      assert.deepEqual(expired.map((e) => [e.entityId, e.reason]), [['call-1', 'not_renewed']]);
      const [lapse] = expired;
      assert.equal(typeof lapse!.licenceId, 'string');
      assert.equal(typeof lapse!.limit, 'number');
      assert.equal(typeof lapse!.inUse, 'number');
      assert.ok(Date.parse((lapse!.detail as { expiredAt: string }).expiredAt) <= Date.parse(lapse!.occurredAt as string), 'recorded once lapsed, with when');

      const beat = await api().post(`${claimPath('concurrent:calls', 'call-2')}/heartbeat`).set(AUTH).send({ ttlSeconds: 120 });
      assert.equal(beat.status, 200, JSON.stringify(beat.body));
      assert.equal(beat.body.claimId, long.body.claimId);
      assert.ok(Date.parse(beat.body.expiresAt) > Date.parse(long.body.expiresAt) + 30_000);
      assert.deepEqual([beat.body.ttlSeconds, beat.body.limit], [120, 2]);
      const dead = await api().post(`${claimPath('concurrent:calls', 'call-1')}/heartbeat`).set(AUTH).send({});
      assert.deepEqual([dead.status, dead.body.code], [404, 'claim_not_held']);
      const assigned = await api().post(`${claimPath('assigned:users', 'alice')}/heartbeat`).set(AUTH).send({});
      assert.deepEqual([assigned.status, assigned.body.code], [400, 'not_concurrent']);
      const tooLong = await api().post(`${claimPath('concurrent:calls', 'call-2')}/heartbeat`).set(AUTH).send({ ttlSeconds: 7200 });
      assert.deepEqual([tooLong.status, tooLong.body.code], [400, 'invalid_request']);
      const again = await claim('concurrent:calls', { id: 'call-2' });
      assert.deepEqual([again.status, again.body.claimId], [200, long.body.claimId]);
      assert.equal((await release('concurrent:calls', 'call-3')).status, 204);
      assert.equal((await release('concurrent:calls', 'call-3')).status, 404);
      const capacities = (await api().get('/v1/capacities').set(AUTH).expect(200)).body;
      assert.deepEqual(
        capacities.items.map((c: { name: string; inUse: number }) => [c.name, c.inUse]),
        [
          ['assigned:devices', 1],
          ['assigned:seats', 0],
          ['assigned:users', 2],
          ['concurrent:calls', 1],
          ['feature:export', 1],
          ['feature:reports', 5],
        ],
      );
      assert.deepEqual([capacities.licence.licenceId, capacities.licence.status], ['lic-bound', 'valid']);
    });

    it('refuses a licence below what is in use (409, naming each capacity) and keeps the current one; drops an unused capacity', async () => {
      const before = await licenceState();
      const smaller = await install(
        await issue({ id: 'lic-small', features: ['export'], capacities: { 'assigned:users': 1, 'assigned:devices': 3, 'assigned:seats': 1, 'feature:export': 1 } }),
      );
      assert.equal(smaller.status, 409, JSON.stringify(smaller.body));
      assert.equal(smaller.body.code, 'licence_below_usage');
      assert.deepEqual(smaller.body.capacities, [
        { capacity: 'assigned:users', inUse: 2, limit: 1 },
        { capacity: 'concurrent:calls', inUse: 1, limit: 0 },
        { capacity: 'feature:reports', inUse: 5, limit: 0 },
      ]);
      assert.deepEqual(await licenceState(), before);
      const [refusal] = (await eventsOf('type=licence_refused')).slice(-1);
      assert.deepEqual([refusal!.reason, refusal!.licenceId, (refusal!.detail as { capacities: unknown }).capacities], ['licence_below_usage', 'lic-small', smaller.body.capacities]);
      // A feature granted without a limit allows any use.
      const unlimitedExport = await install(await issue({ id: 'lic-wide', capacities: { ...BASE, 'feature:export': 1, 'assigned:spare': 4 } }));
      assert.equal(unlimitedExport.status, 201, JSON.stringify(unlimitedExport.body));
      assert.equal((await claim('assigned:spare', { id: 'nobody-yet' })).status, 201);
      assert.equal((await release('assigned:spare', 'nobody-yet')).status, 204);
      // Dropped while unused: fine, and then the capacity is unknown.
      const dropped = await install(await issue({ id: 'lic-base' }));
      assert.equal(dropped.status, 201, JSON.stringify(dropped.body));
      assert.ok(!dropped.body.capacities.some((c: { name: string }) => c.name === 'assigned:spare'));
      const gone = await claim('assigned:spare', { id: 'x' });
      assert.deepEqual([gone.status, gone.body.code], [404, 'unknown_capacity']);
      // Dropped while in use: refused.
      assert.equal((await claim('assigned:seats', { id: 'sitting' })).status, 201);
      const withoutSeats = { ...BASE };
      delete withoutSeats['assigned:seats'];
      const refused = await install(await issue({ id: 'lic-no-seats', capacities: withoutSeats }));
      assert.deepEqual([refused.status, refused.body.capacities], [409, [{ capacity: 'assigned:seats', inUse: 1, limit: 0 }]]);
      assert.equal((await release('assigned:seats', 'sitting')).status, 204);
      assert.equal((await licenceState()).current.licenceId, 'lic-base');
    });

    it('records every claim, release and refusal in order, with the use and the limit after it; an admin may force a release', async () => {
      const start = (await eventsOf('capacity=assigned:seats')).length;
      assert.equal((await claim('assigned:seats', { id: 's1' })).status, 201);
      assert.equal((await claim('assigned:seats', { id: 's2' })).status, 409);
      assert.equal((await release('assigned:seats', 's1')).status, 204);
      assert.equal((await claim('assigned:seats', { id: 's2' })).status, 201);
      assert.equal((await api().delete('/admin/v1/licence/capacities/assigned:seats/claims/s2').set(AUTH)).status, 204);
      const twice = await api().delete('/admin/v1/licence/capacities/assigned:seats/claims/s2').set(AUTH);
      assert.deepEqual([twice.status, twice.body.code], [404, 'claim_not_held']);
      const events = (await eventsOf('capacity=assigned:seats')).slice(start);
      assert.deepEqual(
        events.map((e) => [e.type, e.entityId, e.inUse, e.limit, e.reason, e.licenceId, e.actor]),
        [
          ['claimed', 's1', 1, 1, null, 'lic-base', 'bootstrap'],
          ['refused', 's2', 1, 1, 'capacity_exceeded', 'lic-base', 'bootstrap'],
          ['released', 's1', 0, 1, null, 'lic-base', 'bootstrap'],
          ['claimed', 's2', 1, 1, null, 'lic-base', 'bootstrap'],
          ['released', 's2', 0, 1, 'admin', 'lic-base', 'bootstrap'],
        ],
      );
      assert.ok(events.every((e) => String(e.clientAddress).includes('127.0.0.1')));
      const times = events.map((e) => Date.parse(String(e.occurredAt)));
      assert.deepEqual([...times].sort((a, b) => a - b), times, 'in the order they happened');
      assert.deepEqual((await eventsOf('id=s2&capacity=assigned:seats')).map((e) => e.type), ['refused', 'claimed', 'released']);
      // Pages: newest first, nextBefore to the next page.
      const page = (await api().get('/admin/v1/licence/events?capacity=assigned:seats&limit=2').set(AUTH).expect(200)).body;
      assert.deepEqual(page.items.map((e: { entityId: string; type: string }) => `${e.type}:${e.entityId}`), ['released:s2', 'claimed:s2']);
      const next = (await api().get(`/admin/v1/licence/events?capacity=assigned:seats&limit=2&before=${page.nextBefore}`).set(AUTH).expect(200)).body;
      assert.deepEqual(next.items.map((e: { entityId: string; type: string }) => `${e.type}:${e.entityId}`), ['released:s1', 'refused:s2']);
      assert.equal((await api().get('/admin/v1/licence/events?type=nonsense').set(AUTH)).status, 400);
      // Everything else recorded has its licence and, for claims, the use and limit.
      const all = await eventsOf('');
      assert.ok(all.filter((e) => e.type === 'claimed').every((e) => typeof e.inUse === 'number' && e.licenceId !== null));
      assert.ok(all.filter((e) => e.type === 'released').every((e) => typeof e.inUse === 'number'));
    });

    it('a credential of scope capacities claims and reads the licence but not the admin API; read cannot claim; none is 401', async () => {
      const made = async (name: string, scopes: string[]) => (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name, scopes }).expect(201)).body.token as string;
      const service = bearer(await made('user-service', ['capacities']));
      const reader = bearer(await made('reader', ['read']));
      const claimed = await claim('assigned:devices', { id: 'eve' }, service);
      assert.equal(claimed.status, 201, JSON.stringify(claimed.body));
      assert.equal((await api().get('/v1/licence').set(service)).status, 200);
      assert.equal((await api().get('/v1/capacities').set(service)).status, 200);
      assert.equal((await api().get('/v1/licence/features/export').set(service)).status, 200);
      assert.equal((await api().get(claimPath('assigned:devices', 'eve')).set(service)).status, 200);
      // Any holder of the scope may release an entity's claim (the entity is the id).
      assert.equal((await api().delete(claimPath('assigned:devices', 'dave')).set(service)).status, 204);
      for (const [method, path] of [
        ['get', '/admin/v1/licence'],
        ['put', '/admin/v1/licence'],
        ['get', '/admin/v1/licence/events'],
        ['delete', '/admin/v1/licence/capacities/assigned:devices/claims/eve'],
      ] as const) {
        const res = await api()[method](path).set(service);
        assert.deepEqual([res.status, res.body.code], [403, 'insufficient_scope'], `${method} ${path}`);
      }
      const readerClaim = await claim('assigned:devices', { id: 'mallory' }, reader);
      assert.deepEqual([readerClaim.status, readerClaim.body.code], [403, 'insufficient_scope']);
      assert.equal((await api().get('/v1/capacities').set(reader)).body.code, 'insufficient_scope');
      assert.equal((await api().get('/v1/licence').set(reader)).status, 403);
      assert.equal((await api().get('/admin/v1/licence').set(reader)).status, 200);
      assert.equal((await api().put('/admin/v1/licence').set(reader).send({ token: 'x' })).status, 403);
      for (const res of [
        await api().get('/v1/capacities'),
        await api().post(claimPath('assigned:devices')).send({ id: 'anon' }),
        await api().get('/v1/licence'),
        await api().get('/v1/licence/events'),
        await api().get('/v1/capacities').set(bearer('egt_not-a-real-credential')),
        await api().get('/admin/v1/licence'),
      ]) {
        assert.equal(res.status, 401);
      }
      const events = await eventsOf('capacity=assigned:devices');
      assert.deepEqual(events.slice(-2).map((e) => [e.type, e.entityId, e.actor]), [
        ['claimed', 'eve', 'user-service'],
        ['released', 'dave', 'user-service'],
      ]);
      assert.equal(await knex()('capacity_claims').where({ entity_id: 'mallory' }).count({ n: '*' }).then((r) => Number(r[0]!.n)), 0);
    });

    it('keeps the pool of a concurrent: capacity to the licence: no seats PATCHed, no delete, no lease by name or admin release', async () => {
      const pools = (await api().get('/admin/v1/pools').set(AUTH).expect(200)).body.items as { name: string; seats: number; inUse: number }[];
      const pool = pools.find((p) => p.name === 'concurrent:calls');
      assert.ok(pool, JSON.stringify(pools));
      assert.deepEqual([pool.seats, pool.inUse], [2, 1]);
      const shown = await api().get('/admin/v1/pools/concurrent:calls').set(AUTH);
      assert.equal(shown.status, 200, JSON.stringify(shown.body));
      const patched = await api().patch('/admin/v1/pools/concurrent:calls').set(AUTH).send({ seats: 50 });
      assert.equal(patched.status, 400, JSON.stringify(patched.body));
      assert.match(patched.body.message, /licence/);
      const signed = await api().patch('/admin/v1/pools/concurrent:calls').set(AUTH).send({ requireSignedRequests: true });
      assert.equal(signed.status, 400, JSON.stringify(signed.body));
      const deleted = await api().delete('/admin/v1/pools/concurrent:calls?force=true').set(AUTH);
      assert.deepEqual([deleted.status, deleted.body.code], [409, 'pool_owned_by_licence']);
      const byName = await api().post('/v1/leases').set(AUTH).send({ pool: 'concurrent:calls', clientId: 'sneaky' });
      assert.ok([400, 403, 404].includes(byName.status), JSON.stringify(byName.body));
      const lease = shown.body.leases[0] as { leaseId: string };
      // 60: the claim made again without a TTL was renewed for the default.
      const claims = (await api().get('/admin/v1/licence/capacities/concurrent:calls/claims').set(AUTH).expect(200)).body.items;
      assert.deepEqual(claims.map((c: { id: string; claimId: string; ttlSeconds: number }) => [c.id, c.claimId, c.ttlSeconds]), [['call-2', lease.leaseId, 60]]);
      assert.match(claims[0].clientAddress, /127\.0\.0\.1/);
      const forced = await api().delete(`/admin/v1/leases/${lease.leaseId}`).set(AUTH);
      assert.deepEqual([forced.status, forced.body.code], [409, 'pool_owned_by_licence']);
      assert.equal((await api().get(claimPath('concurrent:calls', 'call-2')).set(AUTH)).status, 200, 'the claim is still held');
      assert.equal((await api().get('/admin/v1/pools/concurrent:calls').set(AUTH)).body.seats, 2);
    });

    it('streams the licence: the current one at connect, then each new one; Last-Event-ID of the current one skips it', async () => {
      const token = (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'streamer', scopes: ['capacities'] }).expect(201)).body.token as string;
      const current = await api().get('/v1/licence').set(AUTH).expect(200);
      const stream = subscribe(fixture.svc.url, token);
      const caughtUp = subscribe(fixture.svc.url, token, String(current.body.seq));
      try {
        const opened = await stream.opened;
        assert.deepEqual([opened.status, opened.contentType], [200, 'text/event-stream; charset=utf-8']);
        const [retry] = await stream.frameAfter(0);
        assert.equal(retry, 'retry: 2000');
        const first = await stream.eventAt(0);
        assert.deepEqual([first.event, first.id], ['licence', String(current.body.seq)]);
        const { status: _status, ...withoutStatus } = current.body;
        assert.deepEqual(JSON.parse(first.data), withoutStatus);
        assert.deepEqual(await caughtUp.frameAfter(0), ['retry: 2000']);

        const next = await issue({ id: 'lic-streamed' });
        const installed = await install(next);
        assert.equal(installed.status, 201);
        const pushed = await stream.eventAt(1);
        assert.equal(pushed.id, String(installed.body.current.seq));
        assert.deepEqual([JSON.parse(pushed.data).licenceId, JSON.parse(pushed.data).token], ['lic-streamed', next]);
        const skipped = await caughtUp.eventAt(0);
        assert.equal(skipped.id, String(installed.body.current.seq), 'the first event it got is the new licence');
        assert.equal(caughtUp.events.length, 1);
        // Installing the same licence again pushes nothing; the next one is pushed once.
        assert.equal((await install(next)).status, 200);
        const last = await install(await issue({ id: 'lic-streamed-2' }));
        assert.equal((await stream.eventAt(2)).id, String(last.body.current.seq));
        await sleep(100);
        assert.deepEqual(stream.events.map((e) => e.id), [current.body.seq, installed.body.current.seq, last.body.current.seq].map(String));
      } finally {
        stream.close();
        caughtUp.close();
      }
      const refused = subscribe(fixture.svc.url, 'egt_not-a-real-credential');
      assert.equal((await refused.opened).status, 401);
      refused.close();
    });

    it('an expired licence refuses new claims (403) while what is held stays, renews and releases; a licence not valid yet refuses too', async () => {
      const now = Date.now();
      const expiring = await install(await issue({ id: 'lic-expiring', notBefore: new Date(now - 60_000), expiresAt: new Date(now + 3000) }));
      assert.equal(expiring.status, 201, JSON.stringify(expiring.body));
      const expiresAt = Date.parse(expiring.body.current.expiresAt);
      const held = await claim('assigned:devices', { id: 'kept' });
      assert.equal(held.status, 201, JSON.stringify(held.body));
      const call = await claim('concurrent:calls', { id: 'kept-call', ttlSeconds: 60 });
      assert.equal(call.status, 201, JSON.stringify(call.body));
      await sleep(expiresAt - Date.now() + 250);

      const fresh = await claim('assigned:devices', { id: 'newcomer' });
      assert.deepEqual([fresh.status, fresh.body.code], [403, 'licence_expired']);
      const freshCall = await claim('concurrent:calls', { id: 'new-call' });
      assert.deepEqual([freshCall.status, freshCall.body.code], [403, 'licence_expired']);
      const again = await claim('assigned:devices', { id: 'kept' });
      assert.deepEqual([again.status, again.body.claimId], [200, held.body.claimId]);
      const callAgain = await claim('concurrent:calls', { id: 'kept-call' });
      assert.deepEqual([callAgain.status, callAgain.body.claimId], [200, call.body.claimId]);
      assert.equal((await api().post(`${claimPath('concurrent:calls', 'kept-call')}/heartbeat`).set(AUTH).send({})).status, 200);
      assert.equal((await release('assigned:devices', 'kept')).status, 204);
      assert.equal((await release('concurrent:calls', 'kept-call')).status, 204);
      const feature = await api().get('/v1/licence/features/export').set(AUTH);
      assert.deepEqual([feature.status, feature.body.code, feature.body.licensed], [403, 'licence_expired', false]);
      assert.equal((await licenceState()).current.status, 'expired');
      assert.equal((await api().get('/v1/capacities').set(AUTH)).body.licence.status, 'expired');
      assert.equal((await api().get('/v1/licence').set(AUTH)).body.status, 'expired');
      const refusals = (await eventsOf('type=refused')).slice(-2);
      assert.deepEqual(refusals.map((e) => [e.entityId, e.reason, e.licenceId]), [
        ['newcomer', 'licence_expired', 'lic-expiring'],
        ['new-call', 'licence_expired', 'lic-expiring'],
      ]);

      // Not valid for another 30 s: within the clock tolerance of an install, but nothing may be claimed yet.
      const early = await install(await issue({ id: 'lic-early', notBefore: new Date(Date.now() + 30_000), expiresAt: new Date(Date.now() + DAY) }));
      assert.equal(early.status, 201, JSON.stringify(early.body));
      assert.equal(early.body.current.status, 'not_yet_valid');
      const tooEarly = await claim('assigned:devices', { id: 'newcomer' });
      assert.deepEqual([tooEarly.status, tooEarly.body.code], [403, 'licence_not_yet_valid']);
      assert.equal((await api().get('/v1/licence/features/export').set(AUTH)).body.code, 'licence_not_yet_valid');

      assert.equal((await install(await issue({ id: 'lic-renewed' }))).status, 201);
      assert.equal((await claim('assigned:devices', { id: 'newcomer' })).status, 201);
    });
  });

  describe(`licence streams hold no place meant for requests, on ${target.name}`, () => {
    const fixture = serviceFixture({ ...TRUSTING, ENTGATE_MAX_REQUESTS_PER_CLIENT: '2' }, target);

    it('more open streams than the per-address cap, and claims from that address still answered', async () => {
      const api = () => request(fixture.svc.server);
      assert.equal((await api().put('/admin/v1/licence').set(AUTH).type('application/jwt').send(await issue())).status, 201);
      const token = AUTH.Authorization.slice('Bearer '.length);
      const streams: ReturnType<typeof subscribe>[] = [];
      try {
        // One after another: a stream counts as a request until it is established.
        for (let i = 0; i < 4; i++) {
          const s = subscribe(fixture.svc.url, token);
          streams.push(s);
          assert.equal((await s.opened).status, 200);
          assert.equal((await s.eventAt(0)).event, 'licence');
        }
        const res = await fetch(`${fixture.svc.url}${claimPath('assigned:users')}`, {
          method: 'POST',
          headers: { ...AUTH, 'Content-Type': 'application/json' },
          body: JSON.stringify({ id: 'beside-streams' }),
        });
        assert.equal(res.status, 201, await res.text());
      } finally {
        for (const s of streams) s.close();
      }
    });
  });

  describe(`an installation that trusts no vendor key, on ${target.name}`, () => {
    const fixture = serviceFixture({}, target);
    const api = () => request(fixture.svc.server);

    it('refuses every licence with 409 no_trusted_keys, records the refusal, and has nothing to claim', async () => {
      const res = await api().put('/admin/v1/licence').set(AUTH).set('Content-Type', 'text/plain').send(await issue());
      assert.deepEqual([res.status, res.body.code], [409, 'no_trusted_keys']);
      assert.match(res.body.message, /ENTGATE_LICENCE_PUBLIC_KEYS/);
      const state = (await api().get('/admin/v1/licence').set(AUTH).expect(200)).body;
      assert.deepEqual([state.current, state.history], [null, []]);
      const events = (await api().get('/admin/v1/licence/events').set(AUTH).expect(200)).body.items as { type: string; reason: string }[];
      assert.deepEqual(events.map((e) => [e.type, e.reason]), [['licence_refused', 'no_trusted_keys']]);
      assert.equal((await api().post(claimPath('assigned:users')).set(AUTH).send({ id: 'x' })).body.code, 'no_licence');
      assert.equal((await api().post(claimPath('feature:export')).set(AUTH).send({ id: 'x' })).body.code, 'feature_not_licensed');
    });
  });
}

const pgTarget = databaseTargets.find((t) => t.name === 'postgres');

describe('the licence stream across two instances on one PostgreSQL', { skip: pgTarget ? false : 'TEST_DATABASE_URL is not set' }, () => {
  let db: TestDatabase;
  let a: RunningService;
  let b: RunningService;

  before(async () => {
    db = await pgTarget!.create();
    // Many streams from one address: no cap on requests in flight per address (a stream is one as long as it is open).
    const env = { ...TRUSTING, ENTGATE_MAX_REQUESTS_PER_CLIENT: '0' };
    a = await startTestService(db, env);
    b = await startTestService(db, env);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  it("pushes a licence installed through one to the other's subscribers (measured), and both decide claims against it", async (t) => {
    const token = (await request(a.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'svc', scopes: ['capacities'] }).expect(201)).body.token as string;
    const stream = subscribe(b.url, token);
    try {
      await stream.frameAfter(0);
      // From the install's request: the install itself, NOTIFY, the other's read and push.
      const delays: number[] = [];
      for (let i = 0; i < 5; i++) {
        const licence = await issue({ id: `lic-across-${i}`, capacities: { 'assigned:users': i + 1 } });
        const sent = Date.now();
        const res = await request(a.server).put('/admin/v1/licence').set(AUTH).set('Content-Type', 'text/plain').send(licence);
        assert.equal(res.status, 201, JSON.stringify(res.body));
        const event = await stream.eventAt(i, 10_000);
        delays.push(Date.now() - sent);
        assert.deepEqual([event.id, JSON.parse(event.data).licenceId], [String(res.body.current.seq), `lic-across-${i}`]);
      }
      t.diagnostic(`licence delivered to the other instance's subscriber ${delays.join(', ')} ms after the install was sent (max ${Math.max(...delays)} ms)`);
      // The generous bound is for loaded machines; the issue asks for a second.
      assert.ok(Math.max(...delays) < 5000, delays.join());
    } finally {
      stream.close();
    }
    // The limit installed through a holds on b: assigned:users = 5.
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => request(i % 2 ? a.server : b.server).post(claimPath('assigned:users')).set(AUTH).send({ id: `user-${i}` })),
    );
    assert.deepEqual([results.filter((r) => r.status === 201).length, results.filter((r) => r.status === 409).length], [5, 7]);
  });

  it('gives a stream that opens while a licence is installed every licence once, in order', async () => {
    const token = (await request(a.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'racer', scopes: ['capacities'] }).expect(201)).body.token as string;
    const streams: ReturnType<typeof subscribe>[] = [];
    let last = 0;
    try {
      for (let round = 0; round < 10; round++) {
        const licence = await issue({ id: `lic-race-${round}`, capacities: { ...BASE, 'assigned:users': 5 } });
        let answered = false;
        const put = request(a.server).put('/admin/v1/licence').set(AUTH).set('Content-Type', 'text/plain').send(licence).then((r) => ((answered = true), r));
        // Streams open all through the install, and a few after it.
        for (let i = 0, after = 0; i < 40 && after < 4; i++, after += answered ? 1 : 0) {
          streams.push(subscribe((i % 2 ? a : b).url, token));
          await sleep(2);
        }
        const res = await put;
        assert.equal(res.status, 201, JSON.stringify(res.body));
        last = res.body.current.seq;
      }
      for (const [i, stream] of streams.entries()) {
        await stream.frameAfter(0);
        const deadline = Date.now() + 10_000;
        while (stream.events.at(-1)?.id !== String(last) && Date.now() < deadline) await sleep(20);
        const ids = stream.events.map((e) => Number(e.id));
        assert.equal(ids.at(-1), last, `stream ${i} has ${ids.join()}`);
        assert.ok(ids.every((id, k) => k === 0 || id > ids[k - 1]!), `stream ${i} got ${ids.join()}: each licence once, in order`);
      }
    } finally {
      for (const s of streams) s.close();
    }
  });
});
