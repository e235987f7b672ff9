import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import request from 'supertest';
import {
  closeConaryJudge,
  conaryCheckQuery,
  judgeEntitlement,
  judgeEntitlements,
  type ConaryVerdict,
} from '../helpers/conary-judge.ts';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { renderEntitlementDocument } from '../../src/domain/entitlement-document.ts';
import type { RunningService } from '../../src/service.ts';
import { DECLARATION, DTD, DTD_WITH_TIMEOUT } from '../helpers/conary-prolog.ts';

/*
 * Contract with Conary's client (shared/reference/conary-client.md): every document entgate
 * grants with must be read by Conary's parser (real expat, through python3) as exactly the
 * server asked, the entitlement's class and real key, and the timeout; and every class or key
 * that parser would mangle must be refused when it is stored.
 */

const doc = (body: string, dtd = DTD) => `${DECLARATION}${dtd}${body}\n`;
const ent = (inner: string) => doc(`<entitlement>${inner}</entitlement>`);

/** The seed's example answer, whitespace between elements and all. */
const SEED_DOCUMENT =
  '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?> <!DOCTYPE entitlement [ <!ELEMENT entitlement (server, class, key)> ' +
  '<!ELEMENT server (#PCDATA)> <!ELEMENT class (#PCDATA)> <!ELEMENT key (#PCDATA)> ]> <entitlement> ' +
  '<server>rm.example.com</server> <class>myProduct</class> <key>03d59e663c1af9ac33a9949d1193505a8460731e</key> </entitlement>';

after(() => closeConaryJudge());

/** What Conary reads from the seed's example document. */
const SEED_VERDICT = {
  granted: true,
  server: 'rm.example.com',
  class: 'myProduct',
  key: '03d59e663c1af9ac33a9949d1193505a8460731e',
  timeout: null,
  retry: true,
};

describe('the Conary judge reproduces the quirks of Conary’s entitlement parser', () => {
  it("when given the seed's example document, then it grants the seed's server, class and key", async () => {
    assert.deepEqual(await judgeEntitlement(SEED_DOCUMENT, 'rm.example.com'), SEED_VERDICT);
  });

  it('when a value contains an entity reference, then only the text after it is kept (my&amp;Product reads Product)', async () => {
    const v = await judgeEntitlement(ent('<server>s</server><class>my&amp;Product</class><key>real&lt;key</key>'), 's');
    assert.deepEqual([v.granted, v.class, v.key], [true, 'Product', 'key']);
    const charRef = await judgeEntitlement(ent('<server>s</server><class>c</class><key>ab&#65;cd</key>'), 's');
    assert.equal(charRef.key, 'cd');
  });

  it('when a value contains a newline, then only the text after it is kept (ab\\ncd reads cd)', async () => {
    const v = await judgeEntitlement(ent('<server>s</server><class>c</class><key>ab\ncd</key>'), 's');
    assert.deepEqual([v.granted, v.key], [true, 'cd']);
    const trailing = await judgeEntitlement(ent('<server>s</server><class>c</class><key>k\n</key>'), 's');
    assert.equal(trailing.key, '\n');
  });

  it('when a value is a CDATA section, then it is delivered in one piece', async () => {
    const v = await judgeEntitlement(ent('<server>s</server><class>c</class><key><![CDATA[a&b<c]]></key>'), 's');
    assert.equal(v.key, 'a&b<c');
  });

  it('when an element is empty, then it reads as the string None', async () => {
    const v = await judgeEntitlement(ent('<server>s</server><class></class><key/>'), 's');
    assert.deepEqual([v.granted, v.class, v.key], [true, 'None', 'None']);
  });

  it('when whitespace is inside an element, then it is part of the value; between elements it is harmless', async () => {
    const v = await judgeEntitlement(doc('<entitlement>\n  <server>s</server>\n  <class>c</class>\n  <key> k </key>\n</entitlement>'), 's');
    assert.deepEqual([v.granted, v.server, v.key], [true, 's', ' k ']);
  });

  it('when the document has any element but entitlement, server, class, key and timeout, then there is no access', async () => {
    for (const inner of ['<server>s</server><class>c</class><key>k</key><foo/>', '<server>s</server><Key>k</Key>', '<server>s</server><class>c</class><key><b>k</b></key>']) {
      const v = await judgeEntitlement(ent(inner), 's');
      assert.equal(v.granted, false, inner);
      assert.match(v.error ?? '', /^SyntaxError: element <\w+> is not allowed/, inner);
    }
    const otherRoot = await judgeEntitlement(`${DECLARATION}<grant><server>s</server><class>c</class><key>k</key></grant>`, 's');
    assert.equal(otherRoot.granted, false);
  });

  it('when any value (server, class or key) has a non-ASCII character, then there is no access', async () => {
    for (const inner of [
      '<server>s</server><class>c</class><key>k\u00e9</key>',
      '<server>s</server><class>caf\u00e9</class><key>k</key>',
      '<server>s\u00e9</server><key>k</key>',
      '<server>s</server><class>c</class><key>&#233;</key>',
    ]) {
      const v = await judgeEntitlement(ent(inner), inner.includes('s\u00e9') ? 's\u00e9' : 's');
      assert.equal(v.granted, false, inner);
      assert.match(v.error ?? '', /^UnicodeEncodeError/, inner);
    }
  });

  it('when the server read differs from the server asked in any character, then there is no access', async () => {
    for (const [answered, asked] of [
      ['rm.example.com', 'RM.example.com'],
      ['rm.example.com', 'rm.example.com.'],
      [' rm.example.com', 'rm.example.com'],
    ] as const) {
      const v = await judgeEntitlement(ent(`<server>${answered}</server><key>k</key>`), asked);
      assert.deepEqual([v.granted, v.server], [false, answered]);
      assert.match(v.error ?? '', /server mismatch/);
    }
  });

  it('when the class, the key or the server is missing, then there is no access (Conary reads each unconditionally)', async () => {
    const noClass = await judgeEntitlement(ent('<server>s</server><key>k</key>'), 's');
    assert.equal(noClass.granted, false);
    assert.match(noClass.error ?? '', /^KeyError: 'class'/);
    const noKey = await judgeEntitlement(ent('<server>s</server><class>c</class>'), 's');
    assert.equal(noKey.granted, false);
    assert.match(noKey.error ?? '', /^KeyError: 'key'/);
    const noServer = await judgeEntitlement(ent('<class>c</class><key>k</key>'), 's');
    assert.deepEqual([noServer.granted, noServer.error], [false, "KeyError: 'server'"]);
  });

  it('when <timeout val="5"/> has no retry and no DOCTYPE default, then reading it fails (KeyError) and there is no access', async () => {
    const bare = await judgeEntitlement(ent('<server>s</server><class>c</class><key>k</key><timeout val="5"/>'), 's');
    assert.equal(bare.granted, false);
    assert.equal(bare.error, "KeyError: 'retry'");
    const noDtd = await judgeEntitlement(`${DECLARATION}<entitlement><server>s</server><class>c</class><key>k</key><timeout val="5"/></entitlement>`, 's');
    assert.equal(noDtd.granted, false);
  });

  it('when the DOCTYPE declares the retry default, then <timeout val="5"/> reads as timeout 5 with retry True', async () => {
    const v = await judgeEntitlement(doc('<entitlement><server>s</server><class>c</class><key>k</key><timeout val="5"/></entitlement>', DTD_WITH_TIMEOUT), 's');
    assert.deepEqual(v, { granted: true, server: 's', class: 'c', key: 'k', timeout: 5, retry: true });
  });

  it('when retry is anything but the exact string True, then retry is False; val is optional and must be an integer', async () => {
    const read = (attrs: string) => judgeEntitlement(ent(`<server>s</server><class>c</class><key>k</key><timeout ${attrs}/>`), 's');
    const explicitFalse = await read('val="7" retry="False"');
    assert.deepEqual([explicitFalse.granted, explicitFalse.timeout, explicitFalse.retry], [true, 7, false]);
    assert.equal((await read('val="7" retry="true"')).retry, false);
    assert.equal((await read('val="7" retry="True"')).retry, true);
    const noVal = await read('retry="True"');
    assert.deepEqual([noVal.granted, noVal.timeout], [true, null]);
    for (const val of ['abc', '5.0', '1_000', '']) {
      const bad = await read(`val="${val}" retry="True"`);
      assert.equal(bad.granted, false, val);
      assert.match(bad.error ?? '', /^ValueError/, val);
    }
  });

  it('when the body is not well-formed where expat can tell mid-stream, then there is no access', async () => {
    for (const body of ['not xml at all', '<entitlement><server>s</server><class>c</class><key>k</key></entitlement><key>x</key>', '<entitlement><server>s</server><class>c</class><key>k</server>', '']) {
      assert.equal((await judgeEntitlement(body, 's')).granted, false, JSON.stringify(body));
    }
  });

  it('when the document is cut short after the key, then it is still read, as Conary parses with isfinal left False', async () => {
    const v = await judgeEntitlement(`${DECLARATION}${DTD}<entitlement><server>s</server><class>c</class><key>k</key>`, 's');
    assert.deepEqual([v.granted, v.server, v.key], [true, 's', 'k']);
  });

  it('judges many documents at once, each answer for its own document', async () => {
    const verdicts = await judgeEntitlements(
      Array.from({ length: 50 }, (_, i) => ({ document: ent(`<server>s${i}</server><class>c</class><key>k${i}</key>`), requestedServer: i % 2 ? `s${i}` : 'x' })),
    );
    verdicts.forEach((v, i) => assert.deepEqual([v.granted, v.key], [i % 2 === 1, `k${i}`]));
  });
});

/** Printable ASCII minus the characters Conary's parser mangles, without leading or trailing spaces. */
const SAFE_CHARS = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).filter((c) => !`&<>"'`.includes(c));
const conarySafe = fc
  .string({ unit: fc.constantFrom(...SAFE_CHARS), minLength: 1, maxLength: 255 })
  .filter((s) => s.trim() === s && s.length > 0);

describe("entgate's document renderer, read by the Conary judge", () => {
  it('when any Conary-safe server, class and key are rendered, then Conary reads exactly them back', async () => {
    const grant = fc.record({
      server: conarySafe,
      class: fc.oneof(conarySafe, fc.constant('')),
      key: conarySafe,
      timeout: fc.option(fc.record({ val: fc.nat({ max: 31_536_000 }), retry: fc.boolean() }), { nil: null }),
    });
    const samples = fc.sample(grant, process.env.FC_SEED ? { numRuns: 300, seed: Number(process.env.FC_SEED) } : { numRuns: 300 });
    const verdicts = await judgeEntitlements(samples.map((g) => ({ document: renderEntitlementDocument(g), requestedServer: g.server })));
    samples.forEach((g, i) => {
      const expected: ConaryVerdict = {
        granted: true,
        server: g.server,
        key: g.key,
        timeout: g.timeout?.val ?? null,
        retry: g.timeout?.retry ?? true,
        class: g.class === '' ? 'None' : g.class,
      };
      assert.deepEqual(verdicts[i], expected, JSON.stringify(g));
    });
  });
});

describe("entgate's answers, read by the Conary judge", () => {
  let db: TestDatabase;
  let svc: RunningService;
  const api = () => request(svc.server);

  interface Mapped {
    entitlementId: number;
    virtualKey: string;
  }

  async function createEntitlement(body: Record<string, unknown>): Promise<number> {
    const res = await api().post('/admin/v1/entitlements').set(AUTH).send(body);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.id as number;
  }

  async function map(entitlement: Record<string, unknown>, virtualKey: string, extra: Record<string, unknown> = {}): Promise<Mapped> {
    const entitlementId = await createEntitlement(entitlement);
    const res = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId, key: virtualKey, ...extra });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.key, virtualKey);
    return { entitlementId, virtualKey };
  }

  /** Asks as a Conary repository would (`;`-separated, urllib.quote'd) and judges the answer's bytes. */
  async function ask(q: { server: string; class?: string; key: string; remoteIp?: string }): Promise<ConaryVerdict> {
    const res = await api()
      .get(`/?${conaryCheckQuery(q)}`)
      .buffer(true)
      .parse((r, done) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => done(null, Buffer.concat(chunks)));
      });
    assert.equal(res.status, 200, `expected a grant for ${JSON.stringify(q)}`);
    assert.equal(res.headers['content-type'], 'application/xml; charset=utf-8');
    return judgeEntitlement(res.body as Buffer, q.server);
  }

  async function entitlementCount(): Promise<number> {
    const res = await api().get('/admin/v1/entitlements').set(AUTH);
    assert.equal(res.status, 200);
    return (res.body.items as unknown[]).length;
  }

  before(async () => {
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db);
  });
  after(async () => {
    await svc?.close();
    await db?.drop();
  });

  it("when the seed's example is mapped and asked for, then Conary reads the seed's server, class and real key", async () => {
    await map({ server: 'rm.example.com', class: 'myProduct', key: '03d59e663c1af9ac33a9949d1193505a8460731e' }, 'w45tv-23xda-e4dd2-11zgv');
    const v = await ask({ server: 'rm.example.com', class: 'myProduct', key: 'w45tv-23xda-e4dd2-11zgv', remoteIp: '192.0.2.10' });
    assert.deepEqual(v, SEED_VERDICT);
  });

  it('when the entitlement has no class, then Conary still reads a class: the one asked with, else an empty one (None)', async () => {
    await map({ server: 'rm.example.com', key: 'no-class-real-key' }, 'vk-noclass');
    for (const [cls, read] of [[undefined, 'None'], ['someClass', 'someClass'], ['caf\u00e9', 'None'], ['a&b', 'None']] as const) {
      const v = await ask({ server: 'rm.example.com', key: 'vk-noclass', ...(cls !== undefined && { class: cls }) });
      assert.deepEqual(v, { granted: true, server: 'rm.example.com', class: read, key: 'no-class-real-key', timeout: null, retry: true }, String(cls));
    }
  });

  it('when the key has a cache timeout, then Conary reads the timeout and retry True or False', async () => {
    const cases = [
      { cacheTimeout: 600, retry: true },
      { cacheTimeout: 600, retry: false },
      { cacheTimeout: 1, retry: false },
      { cacheTimeout: 0, retry: true },
      { cacheTimeout: 31_536_000 }, // retry left to its default (true)
    ];
    for (const [i, extra] of cases.entries()) {
      await map({ server: 'rm.example.com', class: 'timed', key: `timed-real-${i}` }, `vk-timed-${i}`, extra);
      const v = await ask({ server: 'rm.example.com', key: `vk-timed-${i}` });
      assert.deepEqual(
        v,
        { granted: true, server: 'rm.example.com', class: 'timed', key: `timed-real-${i}`, timeout: extra.cacheTimeout, retry: extra.retry ?? true },
        JSON.stringify(extra),
      );
    }
  });

  it('when a *.domain entitlement is asked for different servers, in any case, then Conary reads each server exactly as asked', async () => {
    await map({ server: '*.example.net', class: 'wild', key: 'wild-real' }, 'vk-wild');
    await map({ server: '*.example.org:8443', key: 'ported-real' }, 'vk-port');
    const servers = ['a.example.net', 'A.EXAMPLE.NET', 'Deep.Sub.Example.Net', 'x-1.example.net', 'repo_2.EXAMPLE.net'];
    for (const server of servers) {
      assert.deepEqual(await ask({ server, key: 'vk-wild' }), { granted: true, server, class: 'wild', key: 'wild-real', timeout: null, retry: true });
    }
    for (const server of ['a.example.org:8443', 'B.Example.ORG:8443']) {
      const v = await ask({ server, key: 'vk-port' });
      assert.deepEqual([v.granted, v.server, v.key], [true, server, 'ported-real']);
    }
    for (const server of ['example.net', 'a.example.net.evil', 'a.example.org']) {
      const res = await api().get(`/?${conaryCheckQuery({ server, key: server.endsWith('.org') ? 'vk-port' : 'vk-wild' })}`);
      assert.equal(res.status, 404, server);
    }
  });

  it('when a * entitlement is asked for any server name, then Conary reads that name exactly, odd characters included', async () => {
    await map({ server: '*', key: 'any-real' }, 'vk-any');
    const odd = '!#$%()*+,-./:;=?@[]^_`{|}~\\';
    const servers = ['localhost', 'REPO_1.Internal', '10.0.0.1', '[2001:db8::1]:8443', 'rm.example.com:80', `odd${odd}name`, 'two words'];
    const verdicts = await Promise.all(servers.map((server) => ask({ server, key: 'vk-any' })));
    servers.forEach((server, i) =>
      assert.deepEqual(verdicts[i], { granted: true, server, class: 'None', key: 'any-real', timeout: null, retry: true }, server),
    );
  });

  it('when class and real key use every Conary-safe punctuation character, then Conary reads them unchanged', async () => {
    const punct = '!#$%()*+,-./:;=?@[]^_`{|}~\\';
    const virtualKey = `vk ${punct} \u00e9`; // a virtual key only travels in the query: anything printable
    await map({ server: 'rm.example.com', class: `c${punct}c`, key: `k${punct}k` }, virtualKey, { cacheTimeout: 60, retry: false });
    await map({ server: 'rm.example.com', class: punct, key: punct }, 'vk-only-punct');
    await map({ server: 'rm.example.com', class: 'in side', key: 'a b  c' }, 'vk-spaces');
    assert.deepEqual(await ask({ server: 'rm.example.com', class: `c${punct}c`, key: virtualKey }), {
      granted: true,
      server: 'rm.example.com',
      class: `c${punct}c`,
      key: `k${punct}k`,
      timeout: 60,
      retry: false,
    });
    const only = await ask({ server: 'rm.example.com', key: 'vk-only-punct' });
    assert.deepEqual([only.granted, only.class, only.key], [true, punct, punct]);
    const spaces = await ask({ server: 'rm.example.com', key: 'vk-spaces' });
    assert.deepEqual([spaces.granted, spaces.class, spaces.key], [true, 'in side', 'a b  c']);
  });

  it('when the key is restricted to CIDRs and asked from inside them, then Conary reads the grant with timeout 0 (never cached), retry True', async () => {
    await map({ server: 'rm.example.com', class: 'net', key: 'net-real' }, 'vk-net', { allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'] });
    await map({ server: 'rm.example.com', class: 'net', key: 'net-real' }, 'vk-net-timed', { allowedCidrs: ['10.0.0.0/8'], cacheTimeout: 600, retry: false });
    for (const remoteIp of ['10.1.2.3', '::ffff:10.9.9.9', '2001:db8::7', '10.1.2.3:5555', '[2001:db8::7]:443']) {
      const v = await ask({ server: 'rm.example.com', key: 'vk-net', remoteIp });
      assert.deepEqual(v, { granted: true, server: 'rm.example.com', class: 'net', key: 'net-real', timeout: 0, retry: true }, remoteIp);
    }
    const timed = await ask({ server: 'rm.example.com', key: 'vk-net-timed', remoteIp: '10.0.0.1' });
    assert.deepEqual([timed.timeout, timed.retry], [0, true], 'its own cache timeout is not sent');
  });

  const MANGLED = ['a&b', 'a<b', 'a>b', 'a"b', "a'b", '<', '>', '&', 'caf\u00e9', 'a\nb', 'a\tb', 'a\rb', ' a', 'a ', ' ', '', 'x'.repeat(256)];

  it('when a class or real key Conary would mangle is posted, then the admin API refuses it (400, naming the field) and creates nothing', async () => {
    const count = await entitlementCount();
    for (const bad of MANGLED) {
      for (const field of ['class', 'key'] as const) {
        const body = { server: 'rm.example.com', key: 'fine-key', class: 'fineClass', [field]: bad };
        const res = await api().post('/admin/v1/entitlements').set(AUTH).send(body);
        assert.equal(res.status, 400, `${field}=${JSON.stringify(bad)}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.code, 'invalid_request');
        assert.match(res.body.message, new RegExp(`\\b${field}: `), JSON.stringify(bad));
      }
    }
    assert.equal(await entitlementCount(), count);
  });

  it('when a class or real key Conary would mangle is patched in, then the admin API refuses it and the entitlement is unchanged', async () => {
    const id = await createEntitlement({ server: 'rm.example.com', key: 'patch-me', class: 'patchClass' });
    for (const bad of MANGLED) {
      for (const field of ['class', 'key'] as const) {
        const res = await api().patch(`/admin/v1/entitlements/${id}`).set(AUTH).send({ [field]: bad });
        assert.equal(res.status, 400, `${field}=${JSON.stringify(bad)}`);
      }
    }
    const stored = await api().get(`/admin/v1/entitlements/${id}`).set(AUTH);
    assert.deepEqual([stored.body.key, stored.body.class], ['patch-me', 'patchClass']);
  });

  it('when the longest Conary-safe class and key (255 characters) are stored, then Conary reads them whole', async () => {
    const cls = `c${'x'.repeat(254)}`;
    const key = `k${'y'.repeat(254)}`;
    await map({ server: 'rm.example.com', class: cls, key }, 'vk-long');
    const v = await ask({ server: 'rm.example.com', key: 'vk-long' });
    assert.deepEqual([v.granted, v.class, v.key], [true, cls, key]);
  });
});
