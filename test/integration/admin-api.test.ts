import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';

for (const target of databaseTargets) {
  describe(`admin API on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    let entitlementId: number;
    const api = () => request(svc.server);
    const count = async (table: string) => Number((await svc.db.knex(table).count({ n: '*' }))[0]!.n);

    before(async () => {
      db = await target.create();
      svc = await startTestService(db);
      const res = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'realkey', class: 'c1' });
      entitlementId = res.body.id;
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('refuses requests without the bearer token, or with a wrong one', async () => {
      for (const headers of [{}, { Authorization: 'Bearer wrong-token-wrong-token' }, { Authorization: 'Basic abc' }]) {
        const res = await api().get('/admin/v1/entitlements').set(headers);
        assert.equal(res.status, 401);
        assert.equal(res.body.code, 'unauthorized');
        assert.match(res.headers['www-authenticate'] ?? '', /^Bearer/);
      }
    });

    it('refuses retry false without a cache timeout of 1 or more, on create, change and import, and changes nothing', async () => {
      const keys = await count('virtual_keys');
      for (const extra of [{ retry: false }, { retry: false, cacheTimeout: 0 }, { retry: false, cacheTimeout: null }]) {
        const res = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'no-retry-key', ...extra });
        assert.deepEqual([res.status, res.body.code], [400, 'invalid_request'], JSON.stringify(extra));
        assert.match(res.body.message, /retry: retry false needs a cacheTimeout of 1 second or more/);
      }
      const csv = await api().post('/admin/v1/virtual-keys/import').set(AUTH).type('text/csv').send(`key,entitlement_id,retry\nnr-csv,${entitlementId},false\n`);
      assert.deepEqual([csv.status, csv.body.code], [400, 'import_invalid']);
      assert.match(csv.body.message, /^line 2: retry: retry false needs a cacheTimeout/);
      assert.equal(await count('virtual_keys'), keys);

      const made = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'retry-key-1', cacheTimeout: 60, retry: false });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      for (const patch of [{ cacheTimeout: null }, { cacheTimeout: 0 }]) {
        const res = await api().patch(`/admin/v1/virtual-keys/${made.body.id}`).set(AUTH).send(patch);
        assert.deepEqual([res.status, res.body.code], [400, 'invalid_request'], JSON.stringify(patch));
      }
      const plain = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'retry-key-2' });
      assert.equal((await api().patch(`/admin/v1/virtual-keys/${plain.body.id}`).set(AUTH).send({ retry: false })).status, 400);
      // Both at once is fine, and so is dropping the timeout together with retry false.
      assert.equal((await api().patch(`/admin/v1/virtual-keys/${plain.body.id}`).set(AUTH).send({ retry: false, cacheTimeout: 5 })).status, 200);
      assert.equal((await api().patch(`/admin/v1/virtual-keys/${made.body.id}`).set(AUTH).send({ retry: true, cacheTimeout: null })).status, 200);
      const stored = await api().get(`/admin/v1/virtual-keys/${made.body.id}`).set(AUTH);
      assert.deepEqual([stored.body.retry, stored.body.cacheTimeout], [true, null]);
      // The database keeps the rule too.
      await assert.rejects(svc.db.knex('virtual_keys').where({ id: plain.body.id }).update({ cache_timeout_seconds: null }), /virtual_keys_retry_needs_timeout/);
    });

    it('warns, in the answer, when a network-locked key is given a cache timeout it cannot use', async () => {
      const both = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'warn-key-1', allowedCidrs: ['10.0.0.0/8'], cacheTimeout: 600 });
      assert.equal(both.status, 201);
      assert.equal(both.body.warnings.length, 1);
      assert.match(both.body.warnings[0], /^cacheTimeout is not sent for this key: it is locked to allowedCidrs/);
      const none = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'warn-key-2', cacheTimeout: 600 });
      assert.equal('warnings' in none.body, false);
      const patched = await api().patch(`/admin/v1/virtual-keys/${none.body.id}`).set(AUTH).send({ allowedCidrs: ['192.0.2.0/24'] });
      assert.equal(patched.body.warnings.length, 1);
      const csv = await api()
        .post('/admin/v1/virtual-keys/import')
        .set(AUTH)
        .type('text/csv')
        .send(`key,entitlement_id,allowed_cidrs,cache_timeout\nwarn-csv-1,${entitlementId},,60\nwarn-csv-2,${entitlementId},10.0.0.0/8,60\n`);
      assert.equal(csv.status, 201);
      assert.deepEqual(csv.body.warnings.map((w: { line: number }) => w.line), [3]);
    });

    it('creates, reads, lists, updates and deletes entitlements', async () => {
      const created = await api()
        .post('/admin/v1/entitlements')
        .set(AUTH)
        .send({ server: '*.example.org', key: 'k-2', description: 'second' });
      assert.equal(created.status, 201);
      assert.deepEqual(
        { server: created.body.server, key: created.body.key, class: created.body.class, description: created.body.description },
        { server: '*.example.org', key: 'k-2', class: null, description: 'second' },
      );
      const id = created.body.id as number;
      assert.equal((await api().get(`/admin/v1/entitlements/${id}`).set(AUTH)).body.key, 'k-2');
      const list = await api().get('/admin/v1/entitlements').set(AUTH);
      assert.ok(list.body.items.some((e: { id: number }) => e.id === id));
      const patched = await api().patch(`/admin/v1/entitlements/${id}`).set(AUTH).send({ class: 'newclass' });
      assert.equal(patched.body.class, 'newclass');
      assert.equal((await api().delete(`/admin/v1/entitlements/${id}`).set(AUTH)).status, 204);
      assert.equal((await api().get(`/admin/v1/entitlements/${id}`).set(AUTH)).status, 404);
    });

    it('refuses, and stores nothing for, entitlements Conary would mangle', async () => {
      const before = await count('entitlements');
      for (const body of [
        { server: 'rm.example.com', key: 'a&b' },
        { server: 'rm.example.com', key: 'k', class: 'caf\u00e9' },
        { server: 'rm.example.com', key: 'line\nbreak' },
        { server: 'rm.example.com', key: ' padded' },
        { server: 'rm.example.com', key: '' },
        { server: 'rm.example.com', key: 'x'.repeat(256) },
        { server: 'bad host', key: 'k' },
        { server: 'a.*.com', key: 'k' },
        { server: 'rm.example.com' },
        { server: 'rm.example.com', key: 'k', extra: 1 },
      ]) {
        const res = await api().post('/admin/v1/entitlements').set(AUTH).send(body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.code, 'invalid_request');
        assert.equal(typeof res.body.message, 'string');
      }
      assert.equal(await count('entitlements'), before);
    });

    it('answers malformed JSON with 400 invalid_json and unknown routes with 404 JSON', async () => {
      const bad = await api().post('/admin/v1/entitlements').set(AUTH).set('Content-Type', 'application/json').send('{"server":');
      assert.equal(bad.status, 400);
      assert.equal(bad.body.code, 'invalid_json');
      const missing = await api().get('/admin/v1/nothing-here').set(AUTH);
      assert.equal(missing.status, 404);
      assert.equal(missing.body.code, 'not_found');
      assert.equal((await api().get('/admin/v1/entitlements/abc').set(AUTH)).status, 400);
    });

    it('refuses to delete an entitlement that keys still use', async () => {
      const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'pin-entitlement' });
      assert.equal(vk.status, 201);
      const res = await api().delete(`/admin/v1/entitlements/${entitlementId}`).set(AUTH);
      assert.equal(res.status, 409);
      assert.equal(res.body.code, 'entitlement_in_use');
    });

    it('shows a generated virtual key once and stores only its hash and hint', async () => {
      const res = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, customerRef: 'ACME' });
      assert.equal(res.status, 201);
      const { id, key, hint } = res.body as { id: number; key: string; hint: string };
      assert.match(key, /^[A-Za-z0-9_-]{27}$/);
      assert.equal(hint, `${key.slice(0, 4)}…`);
      const fetched = await api().get(`/admin/v1/virtual-keys/${id}`).set(AUTH);
      assert.equal(fetched.body.key, undefined);
      assert.equal(fetched.body.customerRef, 'ACME');
      const row = await svc.db.knex('virtual_keys').where({ id }).first();
      assert.match(row.key_hash, /^[0-9a-f]{64}$/);
      assert.ok(!JSON.stringify(await svc.db.knex('virtual_keys').select('*')).includes(key));
      const found = await api().post('/admin/v1/virtual-keys/lookup').set(AUTH).send({ key });
      assert.equal(found.body.id, id);
    });

    it('refuses a duplicate key, an unknown entitlement and invalid fields, creating nothing', async () => {
      await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'dup-key' });
      const before = await count('virtual_keys');
      const dup = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'dup-key' });
      assert.equal(dup.status, 409);
      assert.equal(dup.body.code, 'virtual_key_exists');
      const noEnt = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: 999999, key: 'x1' });
      assert.equal(noEnt.status, 404);
      for (const body of [
        { entitlementId, key: 'x2', allowedCidrs: ['10.0.0.1/8'] },
        { entitlementId, key: 'x3', allowedCidrs: ['nonsense'] },
        { entitlementId, key: 'x4', expiresAt: 'tomorrow' },
        { entitlementId, key: 'x5', notBefore: '2030-01-01', expiresAt: '2029-01-01' },
        { entitlementId, key: 'x6', cacheTimeout: -1 },
        { entitlementId, key: 'tab\tkey' },
        { entitlementId, key: 'x7', status: 'active' },
      ]) {
        const res = await api().post('/admin/v1/virtual-keys').set(AUTH).send(body);
        assert.equal(res.status, 400, JSON.stringify(body));
      }
      const hostBits = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: 'x8', allowedCidrs: ['10.0.0.1/8'] });
      assert.match(hostBits.body.message, /did you mean 10\.0\.0\.0\/8/);
      assert.equal(await count('virtual_keys'), before);
    });

    it('lists virtual keys page by page and filters them', async () => {
      const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'paging' });
      for (let i = 0; i < 5; i++) {
        await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: `page-${i}` });
      }
      const seen: number[] = [];
      let cursor: number | null = null;
      do {
        const res: request.Response = await api()
          .get(`/admin/v1/virtual-keys?entitlementId=${ent.body.id}&limit=2${cursor ? `&cursor=${cursor}` : ''}`)
          .set(AUTH);
        assert.equal(res.status, 200);
        seen.push(...res.body.items.map((k: { id: number }) => k.id));
        cursor = res.body.nextCursor;
      } while (cursor !== null);
      assert.equal(seen.length, 5);
      assert.deepEqual([...seen].sort((a, b) => a - b), seen);
      assert.equal((await api().get('/admin/v1/virtual-keys?limit=0').set(AUTH)).status, 400);
      assert.equal((await api().get('/admin/v1/virtual-keys?status=gone').set(AUTH)).status, 400);
    });

    it('imports keys from CSV all or nothing, naming the line of each problem', async () => {
      const before = await count('virtual_keys');
      const bad = [
        'key,entitlement_id,expires_at,allowed_cidrs,cache_timeout,retry,customer_ref',
        `imp-1,${entitlementId},2030-01-01,10.0.0.0/8 192.168.0.0/16,60,false,ACME`,
        `imp-2,${entitlementId},not-a-date,,,,`,
        `imp-3,999999,,,,,`,
      ].join('\n');
      const res = await api().post('/admin/v1/virtual-keys/import').set(AUTH).set('Content-Type', 'text/csv').send(bad);
      assert.equal(res.status, 400);
      assert.equal(res.body.code, 'import_invalid');
      assert.match(res.body.message, /^line 3: expires_at: /);
      assert.equal(await count('virtual_keys'), before);

      const missingEntitlement = `key,entitlement_id\nimp-1,${entitlementId}\nimp-3,999999\n`;
      const res2 = await api().post('/admin/v1/virtual-keys/import').set(AUTH).set('Content-Type', 'text/csv').send(missingEntitlement);
      assert.equal(res2.status, 400);
      assert.match(res2.body.message, /^line 3: entitlement_id: entitlement 999999 does not exist/);
      assert.equal(await count('virtual_keys'), before);

      const good = [
        'key,entitlement_id,expires_at,allowed_cidrs,cache_timeout,retry,customer_ref',
        `imp-1,${entitlementId},2030-01-01,10.0.0.0/8 192.168.0.0/16,60,false,ACME`,
        `"imp,2",${entitlementId},,,,,`,
      ].join('\n');
      const ok = await api().post('/admin/v1/virtual-keys/import').set(AUTH).set('Content-Type', 'text/csv').send(good);
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.imported, 2);
      const first = await api().get(`/admin/v1/virtual-keys/${ok.body.ids[0]}`).set(AUTH);
      assert.deepEqual(first.body.allowedCidrs, ['10.0.0.0/8', '192.168.0.0/16']);
      assert.equal(first.body.retry, false);
      assert.equal(first.body.cacheTimeout, 60);
      assert.equal(first.body.expiresAt, '2030-01-01T00:00:00.000Z');
      assert.equal((await request(svc.server).get('/?server=rm.example.com;key=imp,2')).status, 200);

      const again = await api().post('/admin/v1/virtual-keys/import').set(AUTH).set('Content-Type', 'text/csv').send(good);
      assert.equal(again.status, 400);
      assert.match(again.body.message, /^line 2: key: that virtual key is already mapped/);

      const json = await api().post('/admin/v1/virtual-keys/import').set(AUTH).send({ rows: [] });
      assert.equal(json.status, 415);
    });

    it('imports a large CSV file all or nothing: a bad last row, or a key given again many rows later, and nothing is written; every problem has its line', async () => {
      const before = await count('virtual_keys');
      const rows = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i},${entitlementId}`);
      const lastBad = ['key,entitlement_id', ...rows(12_000, 'big'), 'big-last,999999'].join('\n');
      const res = await api().post('/admin/v1/virtual-keys/import').set(AUTH).type('text/csv').send(lastBad);
      assert.equal(res.status, 400);
      assert.deepEqual(res.body.details, [{ line: 12_002, message: 'entitlement_id: entitlement 999999 does not exist' }]);
      assert.equal(await count('virtual_keys'), before);
      assert.equal((await request(svc.server).get('/?server=rm.example.com;key=big-0')).status, 404);

      // A duplicate in another write batch than its first line, a taken key, and a bad value.
      const mixed = ['key,entitlement_id', ...rows(3_000, 'mix'), `mix-5,${entitlementId}`, `imp-1,${entitlementId}`, 'mix-bad,x'].join('\n');
      const res2 = await api().post('/admin/v1/virtual-keys/import').set(AUTH).type('text/csv').send(mixed);
      assert.equal(res2.status, 400);
      assert.deepEqual(
        res2.body.details.map((d: { line: number; message: string }) => [d.line, d.message.split(':')[0]]),
        [
          [3_002, 'key'],
          [3_003, 'key'],
          [3_004, 'entitlement_id'],
        ],
      );
      assert.equal(res2.body.details[0].message, 'key: the same key is on line 7');
      assert.equal(res2.body.details[1].message, 'key: that virtual key is already mapped');
      assert.equal(await count('virtual_keys'), before);

      const good = ['key,entitlement_id', ...rows(12_000, 'big')].join('\n');
      const ok = await api().post('/admin/v1/virtual-keys/import').set(AUTH).type('text/csv').send(good);
      assert.equal(ok.status, 201, JSON.stringify(ok.body).slice(0, 500));
      assert.equal(ok.body.imported, 12_000);
      assert.equal(ok.body.ids, undefined);
      assert.equal(ok.body.idRanges.reduce((n: number, [a, b]: [number, number]) => n + b - a + 1, 0), 12_000);
      assert.equal(await count('virtual_keys'), before + 12_000);
      assert.equal((await request(svc.server).get('/?server=rm.example.com;key=big-11999')).status, 200);
    });

    it('streams progress and then the outcome as JSON lines when asked (Accept: application/x-ndjson)', async () => {
      const lines = async (csv: string, requestId = 'nd-import') => {
        const res = await api()
          .post('/admin/v1/virtual-keys/import')
          .set(AUTH)
          .set('Accept', 'application/x-ndjson')
          .set('X-Request-Id', requestId)
          .type('text/csv')
          .send(csv);
        assert.equal(res.status, 200);
        assert.match(res.headers['content-type'] ?? '', /^application\/x-ndjson/);
        return res.text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      };
      const rows = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i},${entitlementId}`);
      const ok = await lines(['key,entitlement_id,allowed_cidrs,cache_timeout', ...rows(10_500, 'nd').map((r) => `${r},,`), `nd-locked,${entitlementId},10.0.0.0/8,60`].join('\n'));
      const last = ok.at(-1)!;
      assert.equal(last.status, 201);
      assert.equal(last.imported, 10_501);
      assert.deepEqual(last.warnings, [{ line: 10_502, message: (last.warnings as { message: string }[])[0]!.message }]);
      const progress = ok.slice(0, -1);
      assert.deepEqual(progress.filter((l) => 'validated' in l), [{ validated: 10_000 }, { validated: 10_501 }]);
      assert.deepEqual(progress.filter((l) => 'written' in l), [{ written: 10_000 }, { written: 10_501 }]);

      const bad = await lines(`key,entitlement_id\nnd-0,${entitlementId}\nnd-new,x\n`, 'nd-refused');
      assert.deepEqual(bad.slice(0, -1), [{ validated: 2 }, { written: 0 }]);
      assert.deepEqual(
        { ...bad.at(-1), requestId: undefined },
        {
          status: 400,
          code: 'import_invalid',
          message: 'line 2: key: that virtual key is already mapped (and 1 more)',
          details: [
            { line: 2, message: 'key: that virtual key is already mapped' },
            { line: 3, message: (bad.at(-1)!.details as { message: string }[])[1]!.message },
          ],
          requestId: undefined,
        },
      );
      assert.equal((await request(svc.server).get('/?server=rm.example.com;key=nd-new')).status, 404);
      // The admin audit records the outcome, not the stream's 200. Each write's row is written
      // first (102, begun) and its outcome follows through the audit queue: wait for both.
      let events: { requestId: string; status: number }[] = [];
      const settled = () => ['nd-import', 'nd-refused'].every((id) => events.some((e) => e.requestId === id && e.status !== 102));
      for (let i = 0; i < 400 && !settled(); i++) {
        events = (await api().get('/admin/v1/admin-events?limit=1000').set(AUTH)).body.items;
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.deepEqual(
        events.filter((e) => e.requestId.startsWith('nd-')).map((e) => [e.requestId, e.status]).sort(),
        [
          ['nd-import', 201],
          ['nd-refused', 400],
        ],
      );
    });
  });
}

describe('admin API without ENTGATE_ADMIN_TOKEN', () => {
  let db: TestDatabase;
  let svc: RunningService;
  before(async () => {
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db, { ENTGATE_ADMIN_TOKEN: '' });
  });
  after(async () => {
    await svc?.close();
    await db?.drop();
  });

  it('refuses every admin request, whatever token is sent', async () => {
    const res = await request(svc.server).get('/admin/v1/entitlements').set('Authorization', 'Bearer anything-anything');
    assert.equal(res.status, 401);
    assert.equal(res.body.code, 'admin_api_disabled');
  });

  it('still answers health and readiness', async () => {
    const health = await request(svc.server).get('/healthz');
    assert.equal(health.body.status, 'ok');
    assert.deepEqual(Object.keys(health.body.checkEvents).sort(), ['dropped', 'failedBatches', 'isolated', 'queued', 'written']);
    assert.equal(typeof health.body.keyCache.entries, 'number');
    const ready = await request(svc.server).get('/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.migrations, 'current');
  });
});
