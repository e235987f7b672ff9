import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';

const REAL_KEY = '03d59e663c1af9ac33a9949d1193505a8460731e';
const SERVER = 'rm.example.com';

for (const target of databaseTargets) {
  describe(`rUS check on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    let entitlementId: number;
    const api = () => request(svc.server);
    const check = (query: string, path = '/') => api().get(`${path}?${query}`);

    async function addKey(body: Record<string, unknown>): Promise<{ id: number; key: string }> {
      const res = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, ...body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { id: number; key: string };
    }

    before(async () => {
      db = await target.create();
      svc = await startTestService(db);
      const res = await api()
        .post('/admin/v1/entitlements')
        .set(AUTH)
        .send({ server: SERVER, key: REAL_KEY, class: 'myProduct' });
      assert.equal(res.status, 201);
      entitlementId = res.body.id;
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('grants a mapped key with the seed document, at / and at /rus/check', async () => {
      await addKey({ key: 'w45tv-23xda-e4dd2-11zgv' });
      for (const path of ['/', '/rus/check']) {
        const res = await check(`server=${SERVER};class=myProduct;key=w45tv-23xda-e4dd2-11zgv;remote_ip=10.1.2.3`, path);
        assert.equal(res.status, 200);
        assert.equal(res.headers['content-type'], 'application/xml; charset=utf-8');
        assert.equal(res.headers['cache-control'], 'no-store');
        const body = res.text;
        assert.match(body, /^<\?xml version="1\.0" encoding="UTF-8" standalone="yes" \?>\n<!DOCTYPE entitlement \[/);
        assert.ok(
          body.endsWith(
            `<entitlement><server>${SERVER}</server><class>myProduct</class><key>${REAL_KEY}</key></entitlement>\n`,
          ),
        );
        assert.doesNotMatch(body, /timeout/);
      }
    });

    it('accepts & as separator and decodes percent-escapes in the key', async () => {
      await addKey({ key: 'cust 42+a;b' });
      const res = await check(`server=${SERVER}&key=cust%2042%2Ba%3Bb`);
      assert.equal(res.status, 200);
    });

    it('denies an unknown key with 404, no body and no-store', async () => {
      const res = await check(`server=${SERVER};key=nobody`);
      assert.equal(res.status, 404);
      assert.equal(res.text, '');
      assert.equal(res.headers['cache-control'], 'no-store');
    });

    it('answers 400 with a one-line reason for malformed requests', async () => {
      for (const [query, reason] of [
        ['key=abc', /server is required/],
        [`server=${SERVER}`, /key is required/],
        [`server=${SERVER};key=a;key=b`, /repeated/],
        [`server=${SERVER};key=${'k'.repeat(256)}`, /longer than 255/],
        [`server=${SERVER};key=abc;remote_ip=%FF`, /remote_ip is not valid percent-encoded UTF-8/],
        [`server=${SERVER};key=%C0%AF`, /UTF-8/],
      ] as const) {
        const res = await check(query);
        assert.equal(res.status, 400, query);
        assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8');
        assert.match(res.text, reason);
        assert.equal(res.text.trim().split('\n').length, 1);
      }
    });

    it('never answers 400 for a remote_ip without an address (300.1.1.1, empty, a proxy port form): it is taken as absent', async () => {
      for (const remoteIp of ['300.1.1.1', '', 'unknown', '203.0.113.9:5555', '%5B2001%3Adb8%3A%3A1%5D%3A5555']) {
        const res = await check(`server=${SERVER};key=nobody-${remoteIp.length};remote_ip=${remoteIp}`);
        assert.equal(res.status, 404, remoteIp);
      }
    });

    it('answers 405 to other methods and serves HEAD', async () => {
      assert.equal((await api().post(`/?server=${SERVER};key=x`)).status, 405);
      assert.equal((await api().head(`/?server=${SERVER};key=nobody`)).status, 404);
    });

    it('adds <timeout> and declares it when the mapping sets a cache timeout', async () => {
      await addKey({ key: 'timeout-key-1', cacheTimeout: 3600, retry: false });
      const res = await check(`server=${SERVER};key=timeout-key-1`);
      assert.equal(res.status, 200);
      assert.match(res.text, /<!ELEMENT timeout EMPTY>/);
      assert.match(res.text, /<timeout val="3600" retry="False"\/><\/entitlement>\n$/);
    });

    it('echoes the requested server exactly for a wildcard entitlement, and sends an empty class, or the one asked, when it has none', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: '*.example.org', key: 'realkey2' });
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'wild-1' });
      assert.equal(vk.status, 201);
      const res = await check('server=Repo.Example.ORG;key=wild-1');
      assert.equal(res.status, 200);
      assert.match(res.text, /<entitlement><server>Repo\.Example\.ORG<\/server><class><\/class><key>realkey2<\/key><\/entitlement>/);
      const asked = await check('server=Repo.Example.ORG;class=gold;key=wild-1');
      assert.match(asked.text, /<entitlement><server>Repo\.Example\.ORG<\/server><class>gold<\/class><key>realkey2<\/key><\/entitlement>/);
      assert.equal((await check('server=example.org;key=wild-1')).status, 404);
      assert.equal((await check('server=rm.example.com;key=wild-1')).status, 404);
    });

    it('denies outside the validity window', async () => {
      const past = new Date(Date.now() - 60_000).toISOString();
      const future = new Date(Date.now() + 3_600_000).toISOString();
      await addKey({ key: 'expired-key', expiresAt: past });
      await addKey({ key: 'future-key', notBefore: future });
      await addKey({ key: 'window-key', notBefore: past, expiresAt: future });
      assert.equal((await check(`server=${SERVER};key=expired-key`)).status, 404);
      assert.equal((await check(`server=${SERVER};key=future-key`)).status, 404);
      assert.equal((await check(`server=${SERVER};key=window-key`)).status, 200);
    });

    it('enforces allowed CIDRs against remote_ip, including IPv4-mapped IPv6', async () => {
      await addKey({ key: 'cidr-key', allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'] });
      const q = (ip?: string) => check(`server=${SERVER};key=cidr-key${ip ? `;remote_ip=${ip}` : ''}`);
      assert.equal((await q('10.9.8.7')).status, 200);
      assert.equal((await q('::ffff:10.9.8.7')).status, 200);
      assert.equal((await q('2001:db8::1')).status, 200);
      assert.equal((await q('11.0.0.1')).status, 404);
      assert.equal((await q()).status, 404);
    });

    it('applies revoke, suspend and resume at once, even for a cached key', async () => {
      const { id } = await addKey({ key: 'lifecycle-key' });
      const q = () => check(`server=${SERVER};key=lifecycle-key`);
      assert.equal((await q()).status, 200);
      assert.equal((await q()).status, 200); // now cached
      const patch = (status: string) => api().patch(`/admin/v1/virtual-keys/${id}`).set(AUTH).send({ status });
      assert.equal((await patch('suspended')).status, 200);
      assert.equal((await q()).status, 404);
      assert.equal((await patch('active')).status, 200);
      assert.equal((await q()).status, 200);
      assert.equal((await patch('revoked')).status, 200);
      assert.equal((await q()).status, 404);
      assert.equal((await patch('active')).status, 409);
      assert.equal((await q()).status, 404);
    });

    it('grants a key created right after it was denied as unknown (negative cache evicted)', async () => {
      const q = () => check(`server=${SERVER};key=late-key`);
      assert.equal((await q()).status, 404);
      await addKey({ key: 'late-key' });
      assert.equal((await q()).status, 200);
    });

    it('serves the new real key at once after the entitlement changes', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: SERVER, key: 'before-key' });
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'moving-key' });
      assert.match((await check(`server=${SERVER};key=moving-key`)).text, /<key>before-key<\/key>/);
      const patched = await api().patch(`/admin/v1/entitlements/${ent.body.id}`).set(AUTH).send({ key: 'after-key' });
      assert.equal(patched.status, 200);
      assert.match((await check(`server=${SERVER};key=moving-key`)).text, /<key>after-key<\/key>/);
    });

    it('decides on the key alone by default, ignoring class', async () => {
      await addKey({ key: 'class-free' });
      assert.equal((await check(`server=${SERVER};class=otherProduct;key=class-free`)).status, 200);
    });

    it('records every decision with a hint, never the key, and marks the key as used', async () => {
      const { id } = await addKey({ key: 'audited-key-123456' });
      await check(`server=${SERVER};key=audited-key-123456;remote_ip=192.0.2.7`);
      await check(`server=other.example.net;key=audited-key-123456`);
      await check(`server=${SERVER};key=audited-unknown-99`);
      await svc.events.flush();
      const rows = await svc.db.knex('check_events').whereIn('key_hint', ['audi…']).orderBy('id');
      const mine = rows.filter((r) => r.virtual_key_id === id || r.virtual_key_id === null);
      assert.deepEqual(
        mine.map((r) => [r.decision, r.reason, r.server]),
        [
          ['granted', null, SERVER],
          ['denied', 'server_not_covered', 'other.example.net'],
          ['denied', 'unknown_key', SERVER],
        ],
      );
      assert.equal(mine[0].remote_ip, '192.0.2.7');
      assert.equal(mine[0].caller_ip, '127.0.0.1');
      assert.equal(mine[0].resolver, 'postgres');
      assert.ok(Number.isInteger(mine[0].latency_us) && mine[0].latency_us >= 0);
      const key = await svc.db.knex('virtual_keys').where({ id }).first();
      assert.ok(key.last_used_at instanceof Date);
      const dump = JSON.stringify(await svc.db.knex('check_events').select('*'));
      assert.ok(!dump.includes('audited-key-123456'));
    });

    it('denies, never errors, when the lookup fails', async () => {
      await svc.db.knex.raw('alter table virtual_keys rename to virtual_keys_away');
      try {
        const res = await check(`server=${SERVER};key=never-seen-before-key`);
        assert.equal(res.status, 404);
      } finally {
        await svc.db.knex.raw('alter table virtual_keys_away rename to virtual_keys');
      }
      await svc.events.flush();
      const row = await svc.db.knex('check_events').where({ reason: 'resolver_failed:error', resolver: 'postgres' }).first();
      assert.ok(row);
    });
  });

  describe(`rUS check with ENTGATE_REQUIRE_CLASS_MATCH on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    before(async () => {
      db = await target.create();
      svc = await startTestService(db, { ENTGATE_REQUIRE_CLASS_MATCH: 'true', ENTGATE_CACHE_MAX_ENTRIES: '0' });
      const withClass = await request(svc.server).post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'k1', class: 'prod' });
      const noClass = await request(svc.server).post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'k2' });
      await request(svc.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: withClass.body.id, key: 'with-class' });
      await request(svc.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: noClass.body.id, key: 'no-class' });
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('requires the class to match the entitlement', async () => {
      const status = async (q: string) => (await request(svc.server).get(`/?${q}`)).status;
      assert.equal(await status('server=a.b;class=prod;key=with-class'), 200);
      assert.equal(await status('server=a.b;class=other;key=with-class'), 404);
      assert.equal(await status('server=a.b;key=with-class'), 404);
      assert.equal(await status('server=a.b;key=no-class'), 200);
      assert.equal(await status('server=a.b;class=prod;key=no-class'), 404);
    });
  });
}
