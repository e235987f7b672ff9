import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { closeConaryJudge, conaryRepository } from '../helpers/conary-judge.ts';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import type { RunningService } from '../../src/service.ts';

/*
 * Conary repositories, played by the judge as getAuthorizedRoles runs (shared/reference/
 * conary-client.md): the URL built with `;` and urllib.quote, the document read by Conary's
 * parser rules, and above all its grant cache, keyed on server + class + key and not on the
 * client's address, kept for the document's `<timeout val>` or the repository's
 * authCacheTimeout. What a repository would do with entgate's answers, not just what the
 * answers say.
 */

after(() => closeConaryJudge());

const SERVER = 'rm.example.com';
const nowSeconds = () => Date.now() / 1000;

for (const target of databaseTargets) {
  describe(`Conary repositories against entgate on ${target.name}`, () => {
    let db: TestDatabase;
    let pathsDb: TestDatabase;
    let svc: RunningService;
    let paths: RunningService;

    async function map(entitlement: Record<string, unknown>, key: string, extra: Record<string, unknown> = {}, on = svc): Promise<void> {
      const e = await request(on.server).post('/admin/v1/entitlements').set(AUTH).send(entitlement);
      assert.equal(e.status, 201, JSON.stringify(e.body));
      const v = await request(on.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: e.body.id, key, ...extra });
      assert.equal(v.status, 201, JSON.stringify(v.body));
    }

    before(async () => {
      db = await target.create();
      // The repositories here cache grants for an hour when the answer says nothing.
      svc = await startTestService(db, { ENTGATE_RUS_AUTH_CACHE_TIMEOUT: '3600', ENTGATE_GUESS_BUDGET: '0' });
      pathsDb = await target.create();
      paths = await startTestService(pathsDb, { ENTGATE_CHECK_PATHS: '/service,/rus/check' });
    });
    after(async () => {
      await paths?.close();
      await svc?.close();
      await db?.drop();
      await pathsDb?.drop();
    });

    it('grants an entitlement without a class (the *.example.org kind), with or without a class asked', async () => {
      await map({ server: '*.example.org', key: 'REAL-ORG' }, 'vk-org');
      const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/`, realKeys: ['REAL-ORG'] });
      const plain = await repo.present({ server: 'rm.example.org', key: 'vk-org' });
      assert.deepEqual([plain.granted, plain.asked, plain.class, plain.key], [true, true, 'None', 'REAL-ORG'], JSON.stringify(plain));
      const classed = await repo.present({ server: 'rm.example.org', class: 'asked', key: 'vk-org' });
      assert.deepEqual([classed.granted, classed.class], [true, 'asked'], JSON.stringify(classed));
    });

    it('asks again for a network-locked key from another address, and that address is denied (the grant is never cached)', async () => {
      await map({ server: SERVER, class: 'net', key: 'REAL-NET' }, 'vk-net', { allowedCidrs: ['203.0.113.0/24'], cacheTimeout: 600 });
      await map({ server: SERVER, class: 'net', key: 'REAL-NET' }, 'vk-net-default', { allowedCidrs: ['203.0.113.0/24'] });
      for (const key of ['vk-net', 'vk-net-default']) {
        const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/`, authCacheTimeout: 3600 });
        const t0 = nowSeconds();
        const inside = await repo.present({ server: SERVER, class: 'net', key, remoteIp: '203.0.113.9', now: t0 });
        assert.deepEqual([inside.granted, inside.timeout, inside.retry], [true, 0, true], JSON.stringify(inside));
        const outside = await repo.present({ server: SERVER, class: 'net', key, remoteIp: '198.51.100.7', now: t0 + 1 });
        assert.deepEqual([outside.granted, outside.asked, outside.status], [false, true, 404], `${key}: ${JSON.stringify(outside)}`);
      }
    });

    it("ends a cached grant when the key expires: its own cache timeout, or the repository's, is cut to what is left", async () => {
      const expiresMs = Date.now() + 120_000;
      const expiresAt = new Date(expiresMs).toISOString();
      await map({ server: SERVER, class: 'exp', key: 'REAL-EXP' }, 'vk-exp-own', { expiresAt, cacheTimeout: 86_400 });
      await map({ server: SERVER, class: 'exp', key: 'REAL-EXP' }, 'vk-exp-repo', { expiresAt });
      for (const key of ['vk-exp-own', 'vk-exp-repo']) {
        const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/`, authCacheTimeout: 3600 });
        const t0 = nowSeconds();
        const first = await repo.present({ server: SERVER, class: 'exp', key, now: t0 });
        assert.equal(first.granted, true, JSON.stringify(first));
        assert.ok(first.timeout !== null && first.timeout !== undefined && first.timeout <= 120, `${key}: val ${first.timeout}`);
        const cached = await repo.present({ server: SERVER, class: 'exp', key, now: t0 + 60 });
        assert.deepEqual([cached.granted, cached.asked], [true, false], `${key} is cached while valid`);
        const after = await repo.present({ server: SERVER, class: 'exp', key, now: expiresMs / 1000 + 0.5 });
        assert.equal(after.asked, true, `${key}: the repository still held the grant after the key expired`);
      }
    });

    it('denies a key once it has expired, although the repository had cached its grant for longer', async () => {
      await map({ server: SERVER, class: 'soon', key: 'REAL-SOON' }, 'vk-soon', { expiresAt: new Date(Date.now() + 2000).toISOString(), cacheTimeout: 3600 });
      const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/` });
      assert.equal((await repo.present({ server: SERVER, class: 'soon', key: 'vk-soon' })).granted, true);
      await sleep(2600);
      const later = await repo.present({ server: SERVER, class: 'soon', key: 'vk-soon' });
      assert.deepEqual([later.granted, later.asked, later.status], [false, true, 404], JSON.stringify(later));
    });

    it('with retry False, reports one entitlement timeout when the cached grant ends, then asks again', async () => {
      await map({ server: SERVER, class: 'nr', key: 'REAL-NR' }, 'vk-noretry', { cacheTimeout: 60, retry: false });
      const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/` });
      const t0 = nowSeconds();
      const verdicts = [];
      for (const dt of [0, 30, 61, 62]) verdicts.push(await repo.present({ server: SERVER, class: 'nr', key: 'vk-noretry', now: t0 + dt }));
      assert.deepEqual(
        verdicts.map((v) => [v.granted, v.asked, v.error ?? null]),
        [
          [true, true, null],
          [true, false, null],
          [false, false, 'EntitlementTimeout'],
          [true, true, null],
        ],
      );
    });

    it('grants whatever remote_ip a repository passes (with a port, bracketed, empty, unreadable) for a key not locked to a network', async () => {
      await map({ server: SERVER, class: 'open', key: 'REAL-OPEN' }, 'vk-open');
      await map({ server: SERVER, class: 'lock', key: 'REAL-LOCK' }, 'vk-lock', { allowedCidrs: ['203.0.113.0/24', '2001:db8::/32'] });
      const repo = conaryRepository({ entitlementCheckURL: `${svc.url}/` });
      const cases: [string, boolean][] = [
        ['203.0.113.9:5555', true],
        ['[2001:db8::1]:5555', true],
        ['[2001:db8::1]', true],
        ['', false],
        ['unknown', false],
        ['198.51.100.7:5555', false],
      ];
      for (const [remoteIp, lockedGranted] of cases) {
        const open = await repo.present({ server: SERVER, class: 'open', key: 'vk-open', remoteIp });
        assert.deepEqual([open.granted, open.status], [true, 200], `open key, remote_ip=${JSON.stringify(remoteIp)}: ${JSON.stringify(open)}`);
        const locked = await repo.present({ server: SERVER, class: 'lock', key: 'vk-lock', remoteIp });
        assert.deepEqual([locked.granted, locked.status], [lockedGranted, lockedGranted ? 200 : 404], `locked key, remote_ip=${JSON.stringify(remoteIp)}`);
      }
    });

    it('answers where the admin pointed the repository: a trailing slash, and the paths of ENTGATE_CHECK_PATHS', async () => {
      await map({ server: SERVER, class: 'p', key: 'REAL-PATH' }, 'vk-path');
      await map({ server: SERVER, class: 'p', key: 'REAL-PATH' }, 'vk-path', {}, paths);
      for (const url of [`${svc.url}/`, `${svc.url}/rus/check`, `${svc.url}/rus/check/`, `${paths.url}/service`, `${paths.url}/service/`, `${paths.url}/rus/check/`]) {
        const v = await conaryRepository({ entitlementCheckURL: url }).present({ server: SERVER, class: 'p', key: 'vk-path' });
        assert.deepEqual([v.granted, v.key], [true, 'REAL-PATH'], `${url}: ${JSON.stringify(v)}`);
      }
      // `/` is not in that instance's list: it is not the check there.
      const root = await conaryRepository({ entitlementCheckURL: `${paths.url}/` }).present({ server: SERVER, class: 'p', key: 'vk-path' });
      assert.deepEqual([root.granted, root.status], [false, 404]);
    });
  });
}
