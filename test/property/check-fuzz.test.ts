import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import request from 'supertest';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { ConaryJudge } from '../helpers/conary-judge.ts';
import { parseCheckQuery } from '../../src/http/rus-query.ts';
import type { RunningService } from '../../src/service.ts';

/**
 * Random and hostile query strings against a running service: never a 5xx, never a grant
 * for anything but an active mapped key, every grant readable by Conary with the server
 * echoed, every 400 a one-line text reason. FC_SEED=<n> reproduces a run.
 */
const RUNS = Number(process.env.FC_RUNS ?? 300);
const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;
const params = { numRuns: RUNS, ...(seed !== undefined && { seed }) };

const ACTIVE = ['good-key-1', 'good key+2;x'];
const INACTIVE = ['revoked-key'];

const tokens = fc.constantFrom(
  ';', '&', '=', '%', '%%', '%3B', '%26', '%3D', '%25', '%00', '%0A', '%C0%AF', '%FF', '%E2%82', '%ED%A0%80', '%F0%9F%94%91',
  '+', '/', '?', '#', 'server', 'key', 'class', 'remote_ip', 'a.example.com', 'A.EXAMPLE.COM', 'example.com', 'x&y.example.com',
  ACTIVE[0]!, encodeURIComponent(ACTIVE[1]!), INACTIVE[0]!, '10.0.0.1', '::ffff:10.0.0.1', '999.0.0.1', '::', 'é', '\u0000', ' ',
);
const value = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(...ACTIVE, ...INACTIVE, 'a.example.com', 'b.example.com', 'example.com', 'rm.other.org'),
  fc.constantFrom(...ACTIVE).map(encodeURIComponent),
  fc.nat({ max: 400 }).map((n) => 'k'.repeat(n)),
  fc.array(tokens, { maxLength: 6 }).map((t) => t.join('')),
);
const structured = fc
  .tuple(
    fc.array(fc.tuple(fc.constantFrom('server', 'key', 'class', 'remote_ip', 'other', 'KEY', 'ser%76er'), value), { maxLength: 6 }),
    fc.constantFrom(';', '&'),
  )
  .map(([pairs, sep]) => pairs.map(([k, v]) => `${k}=${v}`).join(sep));
const soup = fc.array(tokens, { maxLength: 20 }).map((t) => t.join(''));
const anyQuery = fc.oneof(structured, soup, fc.string({ unit: 'binary', maxLength: 300 }));

/** Percent-encodes only what an HTTP request target cannot carry; everything else stays raw. */
function toTarget(query: string): string {
  let out = '';
  for (const ch of query) {
    const c = ch.codePointAt(0)!;
    out += c > 0x20 && c < 0x7f && ch !== '#' ? ch : [...Buffer.from(ch, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return out;
}

describe('hostile queries against the check', () => {
  let db: TestDatabase;
  let svc: RunningService;
  let judge: ConaryJudge;
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });

  function get(path: string): Promise<{ status: number; type: string | undefined; body: string }> {
    const { port } = new URL(svc.url);
    return new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  async function assertSafe(query: string, path: '/' | '/rus/check'): Promise<void> {
    const target = `${path}?${toTarget(query)}`;
    const res = await get(target);
    assert.ok([200, 400, 404].includes(res.status), `${res.status} for ${JSON.stringify(target)}`);
    const parsed = parseCheckQuery(toTarget(query));
    if (res.status === 200) {
      assert.ok(parsed.ok, `granted a query entgate cannot parse: ${target}`);
      assert.ok(ACTIVE.includes(parsed.request.key), `granted key ${JSON.stringify(parsed.request.key)}`);
      const verdict = await judge.judge(res.body, parsed.request.server);
      assert.equal(verdict.granted, true, `${verdict.error} for ${target}`);
    } else if (res.status === 400) {
      assert.equal(parsed.ok, false);
      assert.equal(res.type, 'text/plain; charset=utf-8');
      assert.match(res.body, /^[^\n]+\n$/);
    } else {
      assert.equal(res.body, '');
    }
  }

  before(async () => {
    judge = new ConaryJudge();
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db);
    const api = () => request(svc.server);
    const glob = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: '*.example.com', key: 'REAL1', class: 'c' });
    const any = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'REAL2' });
    await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: glob.body.id, key: ACTIVE[0] });
    await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: any.body.id, key: ACTIVE[1], cacheTimeout: 30 });
    const revoked = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: any.body.id, key: INACTIVE[0] });
    await api().patch(`/admin/v1/virtual-keys/${revoked.body.id}`).set(AUTH).send({ status: 'revoked' });
  });
  after(async () => {
    agent.destroy();
    await judge.close();
    await svc?.close();
    await db?.drop();
  });

  it('never answers 5xx, and grants only active mapped keys, readable by Conary', async () => {
    await fc.assert(
      fc.asyncProperty(anyQuery, fc.constantFrom('/' as const, '/rus/check' as const), (q, path) => assertSafe(q, path)),
      params,
    );
  });

  it('grants an active key for covered servers whatever junk surrounds it', async () => {
    const junk = fc.array(fc.tuple(fc.constantFrom('x', 'other', 'foo%20bar', 'Server', 'CLASS'), value), { maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(junk, fc.constantFrom('a.example.com', 'Deep.Sub.Example.COM'), fc.constantFrom(';', '&'), async (extra, server, sep) => {
        const parts = [...extra.map(([k, v]) => `${k}=${encodeURIComponent(v)}`), `server=${server}`, `key=${ACTIVE[0]}`];
        const res = await get(`/?${parts.join(sep)}`);
        assert.equal(res.status, 200);
        assert.equal((await judge.judge(res.body, server)).granted, true);
      }),
      { ...params, numRuns: Math.ceil(RUNS / 3) },
    );
  });

  it('answers known and unknown keys exactly as the rules say, for any server', async () => {
    // An independent model of the rules for the keys mapped above.
    const conarySafe = (v: string) => v.length > 0 && v.length <= 255 && /^[\x20-\x7e]*$/.test(v) && !/[&<>"']/.test(v) && v.trim() === v;
    const covers = (key: string, server: string) =>
      key === ACTIVE[1] || (key === ACTIVE[0] && server.length > '.example.com'.length && server.toLowerCase().endsWith('.example.com'));
    const server = fc.oneof(
      fc.constantFrom('a.example.com', 'A.Example.COM', 'example.com', '.example.com', 'rm.other.org', 'x&y.example.com', 'a b.example.com', ' a.example.com', 'é.example.com'),
      fc.string({ maxLength: 20 }),
      fc.string({ unit: 'grapheme', maxLength: 10 }).map((x) => `${x}.example.com`),
      fc.nat({ max: 300 }).map((n) => `${'s'.repeat(n)}.example.com`),
    );
    const key = fc.constantFrom(...ACTIVE, ...INACTIVE, 'unknown-key', 'GOOD-KEY-1');
    await fc.assert(
      fc.asyncProperty(key, server, fc.constantFrom(';', '&'), async (k, srv, sep) => {
        const res = await get(`/rus/check?server=${toTarget(encodeURIComponent(srv))}${sep}key=${encodeURIComponent(k)}`);
        const expected = srv === '' || srv.length > 255 ? 400 : ACTIVE.includes(k) && conarySafe(srv) && covers(k, srv) ? 200 : 404;
        assert.equal(res.status, expected, `key ${JSON.stringify(k)} server ${JSON.stringify(srv)}`);
        if (res.status === 200) assert.equal((await judge.judge(res.body, srv)).server, srv);
      }),
      params,
    );
  });

  it('survives raw bytes in the request line: never a 5xx, never a grant', async () => {
    const { port } = new URL(svc.url);
    const raw = (target: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(Number(port), '127.0.0.1');
        let out = '';
        socket.setTimeout(3000, () => socket.destroy());
        socket.on('data', (d) => (out += d.toString('latin1')));
        socket.on('close', () => resolve(out));
        socket.on('error', () => resolve(out));
        socket.end(Buffer.concat([Buffer.from('GET /?'), Buffer.from(target, 'latin1'), Buffer.from(' HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')]));
      });
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary-ascii', maxLength: 120 }), async (target) => {
        const answer = await raw(`server=a.example.com;key=${target}`);
        const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1];
        if (status === undefined) return; // the connection was refused outright: no answer is a denial
        assert.ok(!status.startsWith('5'), `${status} for ${JSON.stringify(target)}`);
        if (status === '200') assert.ok(ACTIVE.includes(target) || ACTIVE.map(encodeURIComponent).includes(target), JSON.stringify(target));
      }),
      { ...params, numRuns: Math.ceil(RUNS / 3) },
    );
  });
});
