import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { FakeCrm } from '../helpers/fake-crm.ts';
import type { RunningService } from '../../src/service.ts';

const SERVER = 'rm.example.com';

interface Setup {
  db: TestDatabase;
  svc: RunningService;
  dir: string;
}

async function startWithCrm(crm: FakeCrm, crmOptions: Record<string, unknown>, env: Record<string, string> = {}): Promise<Setup> {
  const dir = tempDir();
  const optionsFile = join(dir, 'resolvers.json');
  writeFileSync(
    optionsFile,
    JSON.stringify({
      crm: {
        url: `${crm.url}/customers/{key}?server={server}`,
        headers: { Authorization: 'Bearer ${TEST_CRM_TOKEN}' },
        statusPath: 'customer.status',
        productsPath: 'customer.products',
        timeoutMs: 400,
        retries: 1,
        retryBackoffMs: 10,
        ...crmOptions,
      },
    }),
  );
  process.env.TEST_CRM_TOKEN = 'crm-secret-token';
  const db = await databaseTargets[0]!.create();
  const svc = await startTestService(db, { ENTGATE_RESOLVERS: 'postgres,crm', ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile, ...env });
  const api = request(svc.server);
  const ent = await api.post('/admin/v1/entitlements').set(AUTH).send({ server: SERVER, key: 'REAL-GOLD', class: 'gold' });
  const other = await request(svc.server).post('/admin/v1/entitlements').set(AUTH).send({ server: 'other.example.net', key: 'REAL-OTHER' });
  assert.equal((await request(svc.server).put('/admin/v1/products/GOLD').set(AUTH).send({ entitlementId: ent.body.id })).status, 200);
  assert.equal((await request(svc.server).put('/admin/v1/products/OTHER').set(AUTH).send({ entitlementId: other.body.id })).status, 200);
  return { db, svc, dir };
}

async function teardown(s: Setup | undefined): Promise<void> {
  await s?.svc.close();
  await s?.db.drop();
  if (s) rmSync(s.dir, { recursive: true, force: true });
}

async function lastEvent(svc: RunningService) {
  await svc.events.flush();
  return svc.db.knex('check_events').orderBy('id', 'desc').first();
}

describe('crm resolver against a fake CRM', () => {
  const crm = new FakeCrm();
  let s: Setup;
  const check = (key: string, server = SERVER) => request(s.svc.server).get(`/?server=${server};key=${encodeURIComponent(key)}`);

  before(async () => {
    await crm.start();
    // A check deadline far past the CRM's own timeout (400 ms), and a cache TTL far past the
    // test's length: 1,000 concurrent checks on a loaded machine (36 s seen at load 15) must be
    // cut neither by the chain's deadline nor by the grant's expiry, which are not tested here.
    s = await startWithCrm(crm, {}, { ENTGATE_CHECK_TIMEOUT_MS: '30000', ENTGATE_CACHE_TTL_SECONDS: '3600' });
  });
  after(async () => {
    await teardown(s);
    await crm.stop();
  });

  it('grants an active customer with a mapped product, from JSON and from XML', async () => {
    crm.scripts.set('cust-json', { kind: 'json', products: ['BRONZE', 'GOLD'] });
    crm.scripts.set('cust-xml', { kind: 'xml', products: ['GOLD'] });
    for (const key of ['cust-json', 'cust-xml']) {
      const res = await check(key);
      assert.equal(res.status, 200, key);
      assert.match(res.text, /<server>rm\.example\.com<\/server><class>gold<\/class><key>REAL-GOLD<\/key>/);
    }
    const event = await lastEvent(s.svc);
    assert.deepEqual([event.decision, event.resolver], ['granted', 'crm']);
  });

  it('sends the configured headers with values from the environment, and the encoded key', async () => {
    crm.scripts.set('a b/c', { kind: 'json', products: ['GOLD'] });
    assert.equal((await check('a b/c')).status, 200);
    const call = crm.calls.find((c) => c.id === 'a b/c');
    assert.equal(call?.headers.authorization, 'Bearer crm-secret-token');
  });

  it('denies unknown and inactive customers, unmapped products and uncovered servers', async () => {
    crm.scripts.set('cust-inactive', { kind: 'json', status: 'suspended', products: ['GOLD'] });
    crm.scripts.set('cust-nothing', { kind: 'json', products: ['BRONZE'] });
    crm.scripts.set('cust-gold', { kind: 'json', products: ['GOLD'] });
    const cases: [string, string, string][] = [
      ['cust-unknown', SERVER, 'crm_unknown_customer'],
      ['cust-inactive', SERVER, 'crm_inactive'],
      ['cust-nothing', SERVER, 'no_entitled_product'],
      ['cust-gold', 'third.example.org', 'server_not_covered'],
    ];
    for (const [key, server, reason] of cases) {
      assert.equal((await check(key, server)).status, 404, key);
      assert.equal((await lastEvent(s.svc)).reason, reason, key);
    }
  });

  it('still lets entgate’s own keys win first in the chain', async () => {
    const ent = (await request(s.svc.server).get('/admin/v1/entitlements').set(AUTH)).body.items[0];
    await request(s.svc.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.id, key: 'local-key' });
    const before = crm.calls.length;
    assert.equal((await check('local-key')).status, 200);
    assert.equal(crm.calls.length, before);
  });

  it('fails closed on 500, malformed bodies, resets and timeouts, within the timeout', async () => {
    crm.scripts.set('cust-500', { kind: 'error', code: 500 });
    crm.scripts.set('cust-bad', { kind: 'malformed' });
    crm.scripts.set('cust-reset', { kind: 'reset' });
    crm.scripts.set('cust-slow', { kind: 'slow', delayMs: 3000 });
    for (const [key, reason] of [
      ['cust-500', 'resolver_failed:status'],
      ['cust-bad', 'resolver_failed:malformed'],
      ['cust-reset', 'resolver_failed:transport'],
      ['cust-slow', 'resolver_failed:timeout'],
    ] as const) {
      const started = Date.now();
      const res = await check(key);
      const elapsed = Date.now() - started;
      assert.equal(res.status, 404, key);
      assert.ok(elapsed < 400 + 600, `${key} answered after ${elapsed} ms`);
      assert.equal((await lastEvent(s.svc)).reason, reason, key);
    }
    assert.ok(crm.callsFor('cust-reset') >= 2, 'a reset is retried once');
    assert.equal(crm.callsFor('cust-500'), 1, 'an HTTP answer is never retried');
  });

  it('makes one CRM call for 1,000 concurrent checks of one uncached key', async () => {
    crm.scripts.set('cust-busy', { kind: 'json', products: ['GOLD'], delayMs: 150 });
    const url = `${s.svc.url}/?server=${SERVER};key=cust-busy`;
    const statuses = await Promise.all(Array.from({ length: 1000 }, () => fetch(url).then((r) => r.status)));
    assert.ok(statuses.every((st) => st === 200));
    assert.equal(crm.callsFor('cust-busy'), 1);
  });

  it('uses a changed product mapping at once', async () => {
    crm.scripts.set('cust-remap', { kind: 'json', products: ['SILVER'] });
    assert.equal((await check('cust-remap')).status, 404);
    const ent = (await request(s.svc.server).get('/admin/v1/entitlements').set(AUTH)).body.items[0];
    assert.equal((await request(s.svc.server).put('/admin/v1/products/SILVER').set(AUTH).send({ entitlementId: ent.id })).status, 200);
    assert.equal((await check('cust-remap')).status, 200);
    assert.equal((await request(s.svc.server).delete('/admin/v1/products/SILVER').set(AUTH)).status, 204);
    assert.equal((await check('cust-remap')).status, 404);
  });
});

describe("crm resolver: the customer's entitlement end and the client's address", () => {
  const crm = new FakeCrm();
  let ends: Setup;
  let byAddress: Setup;
  const check = (s: Setup, key: string, extra = '') => request(s.svc.server).get(`/?server=${SERVER};key=${encodeURIComponent(key)}${extra}`);
  const timeoutOf = (xml: string) => /<timeout val="(\d+)" retry="(True|False)"\/>/.exec(xml)?.slice(1) ?? null;

  before(async () => {
    await crm.start();
    ends = await startWithCrm(crm, { expiresPath: 'customer.endsAt' }, { ENTGATE_RUS_AUTH_CACHE_TIMEOUT: '3600' });
    byAddress = await startWithCrm(crm, { url: `${crm.url}/customers/{key}?server={server}&ip={remote_ip}`, ttlSeconds: 60 });
  });
  after(async () => {
    await teardown(ends);
    await teardown(byAddress);
    await crm.stop();
  });

  it('caps the timeout Conary is sent at the end the CRM gives (ISO 8601 or epoch seconds)', async () => {
    crm.scripts.set('ends-iso', { kind: 'json', products: ['GOLD'], endsAt: new Date(Date.now() + 90_000).toISOString() });
    crm.scripts.set('ends-epoch', { kind: 'json', products: ['GOLD'], endsAt: Math.floor(Date.now() / 1000) + 90 });
    for (const key of ['ends-iso', 'ends-epoch']) {
      const res = await check(ends, key);
      assert.equal(res.status, 200, key);
      const [val, retry] = timeoutOf(res.text) ?? [];
      assert.ok(Number(val) >= 80 && Number(val) <= 90, `${key}: val ${val}`);
      assert.equal(retry, 'True');
    }
    crm.scripts.set('ends-never', { kind: 'json', products: ['GOLD'], endsAt: null });
    const never = await check(ends, 'ends-never');
    assert.deepEqual([never.status, timeoutOf(never.text)], [200, null]);
  });

  it('denies a customer whose end has passed (expired), and one whose end cannot be read (malformed)', async () => {
    crm.scripts.set('ended', { kind: 'json', products: ['GOLD'], endsAt: new Date(Date.now() - 1000).toISOString() });
    assert.equal((await check(ends, 'ended')).status, 404);
    assert.deepEqual([(await lastEvent(ends.svc)).reason, (await lastEvent(ends.svc)).resolver], ['expired', 'crm']);
    crm.scripts.set('garbled', { kind: 'json', products: ['GOLD'], endsAt: 'next tuesday' });
    assert.equal((await check(ends, 'garbled')).status, 404);
    assert.equal((await lastEvent(ends.svc)).reason, 'resolver_failed:malformed');
  });

  it('denies a cached grant once its end passes, without asking the CRM again', async () => {
    crm.scripts.set('ends-soon', { kind: 'json', products: ['GOLD'], endsAt: new Date(Date.now() + 1500).toISOString() });
    assert.equal((await check(ends, 'ends-soon')).status, 200);
    const calls = crm.callsFor('ends-soon');
    await new Promise((r) => setTimeout(r, 1700));
    assert.equal((await check(ends, 'ends-soon')).status, 404);
    assert.equal(crm.callsFor('ends-soon'), calls, 'answered from the cache, and still denied');
  });

  it('sends val 0 for every grant of a CRM asked with {remote_ip}: Conary must ask again for each client', async () => {
    crm.scripts.set('by-ip', { kind: 'json', products: ['GOLD'] });
    const res = await check(byAddress, 'by-ip', ';remote_ip=203.0.113.9');
    assert.equal(res.status, 200);
    assert.deepEqual(timeoutOf(res.text), ['0', 'True']);
  });
});

describe('crm resolver: circuit breaker and stale-if-error', () => {
  const crm = new FakeCrm();
  let s: Setup;
  const check = (key: string) => request(s.svc.server).get(`/?server=${SERVER};key=${key}`);

  before(async () => {
    await crm.start();
    s = await startWithCrm(
      crm,
      { retries: 0, breaker: { failureThreshold: 3, openMs: 600 } },
      { ENTGATE_FAILURE_POLICY: 'stale-if-error', ENTGATE_STALE_GRACE_SECONDS: '2', ENTGATE_CACHE_TTL_SECONDS: '1', ENTGATE_CACHE_NEGATIVE_TTL_SECONDS: '1' },
    );
  });
  after(async () => {
    await teardown(s);
    await crm.stop();
  });

  it('opens after repeated failures, stops calling, probes after openMs and closes on success', async () => {
    crm.fallback = { kind: 'error', code: 503 };
    for (let i = 0; i < 3; i++) assert.equal((await check(`down-${i}`)).status, 404);
    const calls = crm.calls.length;
    assert.equal((await check('down-3')).status, 404);
    assert.equal(crm.calls.length, calls, 'an open circuit does not call the CRM');
    assert.equal((await lastEvent(s.svc)).reason, 'resolver_failed:breaker_open');

    await new Promise((r) => setTimeout(r, 700));
    crm.fallback = { kind: 'json', products: ['GOLD'] };
    assert.equal((await check('probe-1')).status, 200, 'the half-open probe goes through');
    assert.equal((await check('probe-2')).status, 200, 'and the circuit is closed again');
  });

  it('serves the last grant while the CRM fails, for the grace period only', async () => {
    crm.fallback = { kind: 'json', products: ['GOLD'] };
    assert.equal((await check('stale-cust')).status, 200);
    await new Promise((r) => setTimeout(r, 1100)); // past the 1 s decision TTL
    crm.fallback = { kind: 'error', code: 500 };
    assert.equal((await check('stale-cust')).status, 200);
    const event = await lastEvent(s.svc);
    assert.deepEqual([event.decision, event.reason], ['granted', 'stale_if_error']);
    assert.equal((await check('never-granted')).status, 404, 'no grant is made up');
    await new Promise((r) => setTimeout(r, 1200)); // past the 2 s grace
    assert.equal((await check('stale-cust')).status, 404);
  });
});

describe('rus resolver chained to another entitlementCheckURL service', () => {
  let upstreamDb: TestDatabase;
  let upstream: RunningService;
  let dir: string;
  let db: TestDatabase;
  let svc: RunningService;

  before(async () => {
    upstreamDb = await databaseTargets[0]!.create();
    upstream = await startTestService(upstreamDb);
    const ent = await request(upstream.server).post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'UPSTREAM-REAL', class: 'up' });
    await request(upstream.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'up key+1', cacheTimeout: 90, retry: false });
    dir = tempDir();
    const file = join(dir, 'r.json');
    writeFileSync(file, JSON.stringify({ rus: { url: `${upstream.url}/rus/check` } }));
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db, { ENTGATE_RESOLVERS: 'rus', ENTGATE_RESOLVER_OPTIONS_FILE: file });
  });
  after(async () => {
    await svc?.close();
    await upstream?.close();
    await db?.drop();
    await upstreamDb?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('relays the upstream grant (class, key, timeout) and its denials', async () => {
    const res = await request(svc.server).get('/?server=repo.example.com;key=up%20key%2B1');
    assert.equal(res.status, 200);
    assert.match(res.text, /<server>repo\.example\.com<\/server><class>up<\/class><key>UPSTREAM-REAL<\/key><timeout val="90" retry="False"\/>/);
    assert.equal((await request(svc.server).get('/?server=repo.example.com;key=nobody')).status, 404);
    await svc.events.flush();
    const reasons = (await svc.db.knex('check_events').orderBy('id')).map((e) => [e.decision, e.reason, e.resolver]);
    assert.deepEqual(reasons, [
      ['granted', null, 'rus'],
      ['denied', 'upstream_denied', 'rus'],
    ]);
  });
});
