import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { ConaryJudge } from '../helpers/conary-judge.ts';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { PROLOG, PROLOG_WITH_TIMEOUT } from '../../src/domain/entitlement-document.ts';
import type { RunningService } from '../../src/service.ts';

const doc = (body: string, prolog = PROLOG) => `${prolog}${body}\n`;

describe('the Conary judge reproduces the client parser quirks', () => {
  let judge: ConaryJudge;
  before(() => {
    judge = new ConaryJudge();
  });
  after(() => judge.close());

  it('reads a plain document', async () => {
    const v = await judge.judge(doc('<entitlement><server>s.example</server><class>c</class><key>k</key></entitlement>'), 's.example');
    assert.deepEqual(v, { granted: true, server: 's.example', class: 'c', key: 'k', timeout: null, retry: true });
  });

  it('keeps only the last chunk of text: entity references and newlines split it', async () => {
    const amp = await judge.judge(doc('<entitlement><server>s</server><class>my&amp;Product</class><key>k</key></entitlement>'), 's');
    assert.equal(amp.class, 'Product');
    const nl = await judge.judge(doc('<entitlement><server>s</server><key>ab\ncd</key></entitlement>'), 's');
    assert.equal(nl.key, 'cd');
    const cdata = await judge.judge(doc('<entitlement><server>s</server><key><![CDATA[a&b]]></key></entitlement>'), 's');
    assert.equal(cdata.key, 'a&b');
  });

  it('reads an empty element as the string None and keeps inner whitespace', async () => {
    const v = await judge.judge(doc('<entitlement><server>s</server><class></class><key> k </key></entitlement>'), 's');
    assert.equal(v.class, 'None');
    assert.equal(v.key, ' k ');
  });

  it('refuses unknown elements, non-ASCII values, a missing key and a different server', async () => {
    const cases: [string, string][] = [
      [doc('<entitlement><server>s</server><key>k</key><extra/></entitlement>'), 's'],
      [doc('<entitlement><server>s</server><key>k\u00e9</key></entitlement>'), 's'],
      [doc('<entitlement><server>s</server></entitlement>'), 's'],
      [doc('<entitlement><server>S</server><key>k</key></entitlement>'), 's'],
      ['not xml at all', 's'],
    ];
    for (const [d, server] of cases) assert.equal((await judge.judge(d, server)).granted, false, d);
  });

  it('needs retry on <timeout>: from the attribute, or defaulted by the DOCTYPE', async () => {
    const bare = await judge.judge(doc('<entitlement><server>s</server><key>k</key><timeout val="5"/></entitlement>'), 's');
    assert.equal(bare.granted, false);
    assert.match(bare.error ?? '', /KeyError/);
    const declared = await judge.judge(
      doc('<entitlement><server>s</server><key>k</key><timeout val="5"/></entitlement>', PROLOG_WITH_TIMEOUT),
      's',
    );
    assert.deepEqual([declared.granted, declared.timeout, declared.retry], [true, 5, true]);
    const explicit = await judge.judge(doc('<entitlement><server>s</server><key>k</key><timeout val="7" retry="False"/></entitlement>'), 's');
    assert.deepEqual([explicit.granted, explicit.timeout, explicit.retry], [true, 7, false]);
  });
});

describe("entgate's answers, read by the Conary judge", () => {
  let db: TestDatabase;
  let svc: RunningService;
  let judge: ConaryJudge;
  const api = () => request(svc.server);

  async function map(entitlement: Record<string, unknown>, key: string, extra: Record<string, unknown> = {}) {
    const ent = await api().post('/admin/v1/entitlements').set(AUTH).send(entitlement);
    assert.equal(ent.status, 201, JSON.stringify(ent.body));
    const vk = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key, ...extra });
    assert.equal(vk.status, 201, JSON.stringify(vk.body));
  }

  async function ask(server: string, key: string) {
    const res = await api().get(`/?server=${encodeURIComponent(server)};key=${encodeURIComponent(key)}`);
    assert.equal(res.status, 200, `${server} ${key}`);
    return judge.judge(res.text, server);
  }

  before(async () => {
    judge = new ConaryJudge();
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db);
  });
  after(async () => {
    await judge.close();
    await svc?.close();
    await db?.drop();
  });

  it('reads the server asked, the class and the real key', async () => {
    await map({ server: 'rm.example.com', class: 'myProduct', key: '03d59e663c1af9ac33a9949d1193505a8460731e' }, 'vk-plain');
    assert.deepEqual(await ask('rm.example.com', 'vk-plain'), {
      granted: true,
      server: 'rm.example.com',
      class: 'myProduct',
      key: '03d59e663c1af9ac33a9949d1193505a8460731e',
      timeout: null,
      retry: true,
    });
  });

  it('leaves the class unset when the entitlement has none', async () => {
    await map({ server: 'rm.example.com', key: 'no-class-key' }, 'vk-noclass');
    const v = await ask('rm.example.com', 'vk-noclass');
    assert.equal(v.granted, true);
    assert.equal(v.class, undefined);
    assert.equal(v.key, 'no-class-key');
  });

  it('carries the cache timeout with retry True and False', async () => {
    await map({ server: 'rm.example.com', key: 'timed' }, 'vk-retry', { cacheTimeout: 600 });
    await map({ server: 'rm.example.com', key: 'timed2' }, 'vk-noretry', { cacheTimeout: 0, retry: false });
    assert.deepEqual(
      [(await ask('rm.example.com', 'vk-retry')).timeout, (await ask('rm.example.com', 'vk-retry')).retry],
      [600, true],
    );
    const noRetry = await ask('rm.example.com', 'vk-noretry');
    assert.deepEqual([noRetry.granted, noRetry.timeout, noRetry.retry], [true, 0, false]);
  });

  it('echoes each requested server exactly for wildcard patterns', async () => {
    await map({ server: '*.example.net', class: 'c', key: 'wild' }, 'vk-wild');
    await map({ server: '*', key: 'any' }, 'vk-any');
    await map({ server: '*.example.org:8443', key: 'ported' }, 'vk-port');
    assert.equal((await ask('a.example.org:8443', 'vk-port')).server, 'a.example.org:8443');
    for (const server of ['a.example.net', 'Deep.Sub.EXAMPLE.net', 'x-1.example.net']) {
      const v = await ask(server, 'vk-wild');
      assert.deepEqual([v.granted, v.server, v.key], [true, server, 'wild']);
    }
    for (const server of ['localhost', 'repo_1.internal', '10.0.0.1']) {
      assert.equal((await ask(server, 'vk-any')).server, server);
    }
  });

  it('round-trips every Conary-safe punctuation character in class and key', async () => {
    const punct = "!#$%()*+,-./:;=?@[]^_`{|}~";
    await map({ server: 'rm.example.com', class: `c${punct}`, key: `k${punct}\\` }, 'vk-punct');
    const v = await ask('rm.example.com', 'vk-punct');
    assert.deepEqual([v.granted, v.class, v.key], [true, `c${punct}`, `k${punct}\\`]);
  });

  it('refuses, at creation, every class or key Conary would misread', async () => {
    const before = await api().get('/admin/v1/entitlements').set(AUTH);
    for (const bad of ['a&b', 'a<b', 'a>b', 'a"b', "a'b", 'caf\u00e9', 'a\nb', 'a\tb', ' a', 'a ', '', 'x'.repeat(256)]) {
      for (const field of ['class', 'key']) {
        const body = { server: 'rm.example.com', key: 'okkey', [field]: bad };
        const res = await api().post('/admin/v1/entitlements').set(AUTH).send(body);
        assert.equal(res.status, 400, `${field}=${JSON.stringify(bad)}`);
      }
    }
    const after = await api().get('/admin/v1/entitlements').set(AUTH);
    assert.equal(after.body.items.length, before.body.items.length);
  });
});
