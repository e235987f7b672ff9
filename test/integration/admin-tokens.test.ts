import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import request from 'supertest';
import { databaseTargets } from '../helpers/databases.ts';
import { serviceFixture, startTestService, AUTH } from '../helpers/service.ts';
import { routeTable } from '../../src/http/route-table.ts';
import { SCOPES, allows, type Scope } from '../../src/auth/scopes.ts';
import { enableBootstrapCredential } from '../../src/auth/credentials.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** Values that satisfy each route parameter's validation, so that a request reaches its handler. */
const PARAMS: Record<string, string> = {
  id: '999999',
  code: 'NO-SUCH-PRODUCT',
  name: 'no-such-pool',
  ref: 'no-such-token',
  fingerprint: 'a'.repeat(40),
};
const fill = (path: string) => path.replace(/:(\w+)/g, (_m, p: string) => PARAMS[p] ?? 'x');

/** Admin routes: everything under /admin/v1, and the admin-only GET /v1/pools/:name. */
const isAdminRoute = (path: string) => path.startsWith('/admin/v1/') || path.startsWith('/v1/pools');

for (const target of databaseTargets) {
  describe(`admin tokens and scopes on ${target.name}`, () => {
    const fixture = serviceFixture({}, target);
    const api = () => request(fixture.svc.server);
    const tokens = new Map<string, string>();
    /** A token holding exactly `scopes`, made once per set through the API. */
    const tokenFor = async (scopes: readonly Scope[]) => {
      const name = scopes.length === 0 ? 'none' : [...scopes].sort().join('_').replace(/:/g, '.');
      if (!tokens.has(name)) {
        const res = await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name, scopes });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        tokens.set(name, res.body.token as string);
      }
      return tokens.get(name)!;
    };

    it('every admin route names its scopes (the route table is walked, none can be forgotten)', () => {
      const routes = routeTable(fixture.svc.app).filter((r) => isAdminRoute(r.path));
      assert.ok(routes.length >= 30, `found ${routes.length} admin routes`);
      const unscoped = routes.filter((r) => r.scopes === undefined || r.scopes.length === 0);
      assert.deepEqual(unscoped, [], 'routes without a scope check');
    });

    it('every admin route refuses a token without its scopes (403, nothing done) and lets one with them through', async () => {
      const routes = routeTable(fixture.svc.app).filter((r) => isAdminRoute(r.path));
      for (const route of routes) {
        const scopes = route.scopes!;
        // The strongest token that must still be refused: every scope that does not allow the route.
        const refused = SCOPES.filter((s) => !allows([s], scopes));
        const path = fill(route.path);
        const send = (token: string) => api()[route.method.toLowerCase() as 'get'](path).set(bearer(token)).send(route.method === 'GET' ? undefined : {});
        if (refused.length > 0) {
          const res = await send(await tokenFor(refused));
          assert.equal(res.status, 403, `${route.method} ${route.path} with ${refused.join(',')}: ${res.status} ${JSON.stringify(res.body)}`);
          assert.equal(res.body.code, 'insufficient_scope');
          assert.match(String(res.headers['www-authenticate']), /insufficient_scope/);
        }
        for (const scope of scopes) {
          const res = await send(await tokenFor([scope]));
          assert.ok(res.status !== 401 && res.status !== 403, `${route.method} ${route.path} with ${scope}: ${res.status} ${JSON.stringify(res.body)}`);
        }
        const none = await api()[route.method.toLowerCase() as 'get'](path);
        assert.equal(none.status, 401, `${route.method} ${route.path} without a token`);
      }
    });

    it('implications: admin holds every scope, write holds read, read holds no write', async () => {
      const read = await tokenFor(['read']);
      const write = await tokenFor(['write']);
      await api().get('/admin/v1/entitlements').set(bearer(write)).expect(200);
      await api().post('/admin/v1/entitlements').set(bearer(read)).send({ server: 'a.example.com', key: 'k' }).expect(403);
      await api().post('/admin/v1/entitlements').set(bearer(write)).send({ server: 'a.example.com', key: 'k' }).expect(201);
      await api().get('/admin/v1/admin-tokens').set(bearer(write)).expect(403);
      const who = await api().get('/admin/v1/whoami').set(bearer(read)).expect(200);
      assert.deepEqual(who.body.scopes, ['read']);
      assert.equal(who.body.name, 'read');
    });

    it('a token is shown once, stored only as its digest, and listed without it', async () => {
      const res = await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'ci-deploy', scopes: ['write', 'leases'] }).expect(201);
      assert.match(res.body.token, /^egt_[A-Za-z0-9_-]{43}$/);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.deepEqual(res.body.scopes, ['write', 'leases']);
      assert.equal(res.body.createdBy, 'bootstrap');
      const listed = (await api().get('/admin/v1/admin-tokens').set(AUTH).expect(200)).body.items as Record<string, unknown>[];
      const mine = listed.find((t) => t.name === 'ci-deploy')!;
      assert.equal(mine.token, undefined);
      assert.equal(mine.hint, `${res.body.token.slice(0, 8)}…`);
      assert.ok(!JSON.stringify(listed).includes(res.body.token));
      const rows = await fixture.svc.db.knex('admin_tokens').where({ name: 'ci-deploy' }).select('*');
      assert.equal(rows.length, 1);
      assert.equal(rows[0].token_hash, createHash('sha256').update(res.body.token).digest('hex'));
      assert.ok(!JSON.stringify(rows).includes(res.body.token.slice(4)), 'the token itself is not stored');
      await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'ci-deploy', scopes: ['read'] }).expect(409);
    });

    it('bad input is refused with a stable code and creates nothing', async () => {
      const before = await fixture.svc.db.knex('admin_tokens').count<{ n: string }[]>({ n: '*' });
      for (const body of [
        { name: 'x', scopes: [] },
        { name: 'x', scopes: ['root'] },
        { name: '', scopes: ['read'] },
        { name: 'has space', scopes: ['read'] },
        { name: 'bootstrap', scopes: ['read'] },
        { name: 'x', scopes: ['read'], expiresAt: '2000-01-01T00:00:00Z' },
        { name: 'x', scopes: ['read'], extra: 1 },
        { name: 'x', scopes: 'read' },
      ]) {
        const res = await api().post('/admin/v1/admin-tokens').set(AUTH).send(body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.code, 'invalid_request');
      }
      const after = await fixture.svc.db.knex('admin_tokens').count<{ n: string }[]>({ n: '*' });
      assert.equal(after[0]!.n, before[0]!.n);
      await api().delete('/admin/v1/admin-tokens/no-such-token').set(AUTH).expect(404);
      await api().delete('/admin/v1/admin-tokens/bad%20name').set(AUTH).expect(400);
    });

    it('revoked and expired tokens are refused at once; last use is recorded', async () => {
      const made = (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'short-lived', scopes: ['read'] }).expect(201)).body;
      await api().get('/admin/v1/entitlements').set(bearer(made.token)).expect(200);
      for (let i = 0; i < 100; i++) {
        const [row] = await fixture.svc.db.knex('admin_tokens').where({ id: made.id }).select('last_used_at');
        if (row.last_used_at) break;
        await sleep(20);
      }
      const [used] = await fixture.svc.db.knex('admin_tokens').where({ id: made.id }).select('last_used_at');
      assert.ok(used.last_used_at instanceof Date);
      await api().delete('/admin/v1/admin-tokens/short-lived').set(AUTH).expect(204);
      const refused = await api().get('/admin/v1/entitlements').set(bearer(made.token)).expect(401);
      assert.equal(refused.body.code, 'unauthorized');
      assert.match(String(refused.headers['www-authenticate']), /Bearer/);
      await api().delete(`/admin/v1/admin-tokens/${made.id}`).set(AUTH).expect(404);
      // The name of a revoked token may be used again; the old token stays dead.
      await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'short-lived', scopes: ['read'] }).expect(201);
      await api().get('/admin/v1/entitlements').set(bearer(made.token)).expect(401);
      const all = (await api().get('/admin/v1/admin-tokens?all=true').set(AUTH)).body.items as { name: string; revokedAt: string | null }[];
      assert.equal(all.filter((t) => t.name === 'short-lived').length, 2);

      const soon = (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'expiring', scopes: ['read'], expiresAt: new Date(Date.now() + 1500).toISOString() }).expect(201)).body;
      await api().get('/admin/v1/entitlements').set(bearer(soon.token)).expect(200);
      await sleep(1600);
      await api().get('/admin/v1/entitlements').set(bearer(soon.token)).expect(401);
      // A well-formed token that was never issued.
      await api().get('/admin/v1/entitlements').set(bearer(`egt_${'A'.repeat(43)}`)).expect(401);
    });

    it('the bootstrap token can be turned off only once a live admin token exists, and turned back on', async () => {
      await api().put('/admin/v1/admin-tokens/no').set(AUTH).expect(404);
      // Revoke the admin tokens earlier tests made: revoked or expired admin tokens do not count.
      const live = (await api().get('/admin/v1/admin-tokens').set(AUTH).expect(200)).body.items as { id: number; scopes: string[] }[];
      for (const t of live.filter((t) => t.scopes.includes('admin'))) await api().delete(`/admin/v1/admin-tokens/${t.id}`).set(AUTH).expect(204);
      await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'soon-gone', scopes: ['admin'], expiresAt: new Date(Date.now() + 300).toISOString() }).expect(201);
      await sleep(400);
      await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'old-admin', scopes: ['admin'] }).expect(201);
      await api().delete('/admin/v1/admin-tokens/old-admin').set(AUTH).expect(204);
      const refused = await api().put('/admin/v1/bootstrap-token').set(AUTH).send({ enabled: false });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.code, 'no_admin_token');
      await api().get('/admin/v1/entitlements').set(AUTH).expect(200);

      const admin = (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'ops-admin', scopes: ['admin'] }).expect(201)).body.token as string;
      assert.deepEqual((await api().put('/admin/v1/bootstrap-token').set(AUTH).send({ enabled: false }).expect(200)).body, { configured: true, enabled: false });
      const off = await api().get('/admin/v1/entitlements').set(AUTH).expect(401);
      assert.equal(off.body.code, 'bootstrap_token_disabled');
      await api().get('/admin/v1/entitlements').set(bearer(admin)).expect(200);
      assert.deepEqual((await api().get('/admin/v1/bootstrap-token').set(bearer(admin))).body, { configured: true, enabled: false });
      await api().put('/admin/v1/bootstrap-token').set(bearer(admin)).send({ enabled: true }).expect(200);
      await api().get('/admin/v1/entitlements').set(AUTH).expect(200);

      // The way back in when every admin token is lost: on the database directly.
      await api().put('/admin/v1/bootstrap-token').set(bearer(admin)).send({ enabled: false }).expect(200);
      assert.equal(await enableBootstrapCredential(fixture.svc.db.knex), true);
      await api().get('/admin/v1/entitlements').set(AUTH).expect(200);
      assert.equal(await enableBootstrapCredential(fixture.svc.db.knex), false);
    });

    it('every admin write is audited with the token name, refused ones too; reads and bodies are not', async () => {
      const writer = (await api().post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'audited-writer', scopes: ['write'] }).expect(201)).body.token as string;
      const ent = await api().post('/admin/v1/entitlements').set(bearer(writer)).send({ server: 'rm.example.com', key: 'real-key-audit' }).expect(201);
      await api().post('/admin/v1/virtual-keys').set(bearer(writer)).send({ entitlementId: ent.body.id, key: 'secret-virtual-key-77' }).expect(201);
      await api().patch(`/admin/v1/entitlements/${ent.body.id}`).set(bearer(writer)).send({ description: 'x' }).expect(200);
      await api().post('/admin/v1/pools').set(bearer(writer)).send({ name: 'p1', seats: 1 }).expect(403);
      await api().post('/admin/v1/entitlements').set(bearer('wrong')).set('X-Request-Id', 'anonymous-write-1').send({}).expect(401);
      await api().get('/admin/v1/entitlements').set(bearer(writer)).expect(200);

      let items: Record<string, unknown>[] = [];
      for (let i = 0; i < 100; i++) {
        items = (await api().get('/admin/v1/admin-events?limit=1000').set(AUTH).expect(200)).body.items;
        if (items.some((e) => e.requestId === 'anonymous-write-1')) break;
        await sleep(20);
      }
      const byWriter = items.filter((e) => e.actor === 'audited-writer');
      assert.deepEqual(
        byWriter.map((e) => [e.method, e.route, e.status]).reverse(),
        [
          ['POST', '/admin/v1/entitlements', 201],
          ['POST', '/admin/v1/virtual-keys', 201],
          ['PATCH', '/admin/v1/entitlements/:id', 200],
          ['POST', '/admin/v1/pools', 403],
        ],
      );
      assert.equal(byWriter.find((e) => e.method === 'PATCH')!.target, `id=${ent.body.id}`);
      assert.equal(byWriter.find((e) => e.route === '/admin/v1/entitlements')!.target, `id=${ent.body.id}`);
      const created = items.find((e) => e.route === '/admin/v1/admin-tokens' && e.status === 201 && String(e.target).includes('name=audited-writer'));
      assert.match(String(created?.target), /^id=\d+ name=audited-writer scopes=write$/);
      assert.ok(byWriter.every((e) => typeof e.requestId === 'string' && e.callerIp === '127.0.0.1'));
      const anonymous = items.find((e) => e.requestId === 'anonymous-write-1');
      assert.equal(anonymous?.actor, null);
      assert.equal(anonymous?.status, 401);
      assert.equal(anonymous?.route, '/admin/v1/*');
      assert.ok(!items.some((e) => e.method === 'GET'), 'reads are not recorded');
      assert.ok(!JSON.stringify(items).includes('secret-virtual-key-77'));
      assert.ok(!JSON.stringify(items).includes('real-key-audit'));
      const filtered = (await api().get('/admin/v1/admin-events?actor=audited-writer&limit=2').set(AUTH)).body;
      assert.equal(filtered.items.length, 2);
      const next = (await api().get(`/admin/v1/admin-events?actor=audited-writer&cursor=${filtered.nextCursor}`).set(AUTH)).body;
      assert.equal(next.items.length, 2);
      assert.ok(next.items.every((e: { id: number }) => e.id < filtered.nextCursor));
    });

    it('counts refused tokens in /metrics', async () => {
      await api().get('/admin/v1/entitlements').set(bearer('nope')).expect(401);
      const text = (await api().get('/metrics')).text;
      assert.match(text, /entgate_admin_auth_failures_total\{reason="unknown_token"\} [1-9]/);
    });
  });
}

describe('admin API without a bootstrap token', () => {
  it('is closed until a token exists, and stored tokens work without ENTGATE_ADMIN_TOKEN', async () => {
    const target = databaseTargets[databaseTargets.length - 1]!;
    const db = await target.create();
    try {
      let svc = await startTestService(db);
      const made = (await request(svc.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'first', scopes: ['admin'] }).expect(201)).body;
      await svc.close();
      svc = await startTestService(db, { ENTGATE_ADMIN_TOKEN: '' });
      try {
        await request(svc.server).get('/admin/v1/entitlements').set(AUTH).expect(401);
        await request(svc.server).get('/admin/v1/entitlements').set(bearer(made.token)).expect(200);
        await request(svc.server).delete('/admin/v1/admin-tokens/first').set(bearer(made.token)).expect(204);
        await request(svc.server).get('/admin/v1/entitlements').set(bearer(made.token)).expect(401);
        const closed = await request(svc.server).get('/admin/v1/entitlements').set(AUTH).expect(401);
        assert.equal(closed.body.code, 'admin_api_disabled');
      } finally {
        await svc.close();
      }
    } finally {
      await db.drop();
    }
  });
});

if (databaseTargets.some((t) => t.name === 'postgres')) {
  describe('admin tokens across two processes on one PostgreSQL', () => {
    it('a token revoked through one instance is refused by the other at its next request', async () => {
      const db = await databaseTargets.find((t) => t.name === 'postgres')!.create();
      const a = await startTestService(db);
      const b = await startTestService(db);
      try {
        const made = (await request(a.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'shared', scopes: ['read'] }).expect(201)).body;
        await request(b.server).get('/admin/v1/entitlements').set(bearer(made.token)).expect(200);
        await request(a.server).delete('/admin/v1/admin-tokens/shared').set(AUTH).expect(204);
        await request(b.server).get('/admin/v1/entitlements').set(bearer(made.token)).expect(401);
      } finally {
        await a.close();
        await b.close();
        await db.drop();
      }
    });
  });
}
