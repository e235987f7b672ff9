import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { loadConfig } from '../../config/load.ts';
import { ConfigError } from '../../src/lib/errors.ts';
import { createDevCertificates } from '../../src/ses/certs.ts';
import type { RunningService } from '../../src/service.ts';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { serviceFixture, startTestService, ADMIN_TOKEN } from '../helpers/service.ts';

/**
 * Slow, oversized and too many clients, on real loopback sockets: slow-loris headers and
 * bodies are cut at ENTGATE_HEADERS_TIMEOUT_MS / ENTGATE_REQUEST_TIMEOUT_MS (408), headers past
 * ENTGATE_MAX_HEADER_BYTES get 431, bodies past their caps 413, sockets past
 * ENTGATE_MAX_CONNECTIONS are closed at once, idle keep-alive connections after
 * ENTGATE_KEEP_ALIVE_TIMEOUT_MS; meanwhile ordinary requests are answered. Bounds are on when
 * a socket is closed, with margins of seconds (the machine is shared).
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SERVER = 'rm.example.com';
const REAL_KEY = '03d59e663c1af9ac33a9949d1193505a8460731e';
const VKEY = 'slow-clients-vk-0001';
const CHECK = `/?server=${SERVER};class=myProduct;key=${VKEY};remote_ip=10.1.2.3`;
const SES = '/softwareEntitlements?api-version=9999-09-09.99.99';
/** Added to every bound: scheduling on a shared, busy machine. */
const MARGIN_MS = 3000;
/** What service.ts derives from ENTGATE_HEADERS_TIMEOUT_MS: how often Node sweeps for expired requests. */
const checkingInterval = (headersTimeoutMs: number) => Math.max(50, Math.min(1000, Math.floor(headersTimeoutMs / 2)));

/** Every connection a test opens, destroyed after each test whatever happened. */
const open = new Set<Socket>();
afterEach(() => {
  for (const s of open) s.destroy();
  open.clear();
});

/** A raw client connection: everything it received (latin1), and when it closed. */
class Conn {
  readonly opened = Date.now();
  data = '';
  closedAt: number | undefined;
  readonly ready: Promise<void>;
  readonly closed: Promise<void>;

  constructor(readonly socket: Socket, readyEvent: 'connect' | 'secureConnect' = 'connect') {
    open.add(socket);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (this.data += d));
    socket.on('error', () => {}); // resets are part of the game; 'close' follows
    this.closed = new Promise((r) =>
      socket.once('close', () => {
        this.closedAt = Date.now();
        r();
      }),
    );
    this.ready = new Promise((resolve, reject) => {
      socket.once(readyEvent, () => resolve());
      void this.closed.then(() => reject(new Error(`closed before ${readyEvent}`)));
    });
    this.ready.catch(() => {});
  }

  get isClosed(): boolean {
    return this.closedAt !== undefined;
  }

  get status(): number | undefined {
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(this.data);
    return m ? Number(m[1]) : undefined;
  }

  /** Writes unless closed; resolves once handed to the OS (or at once when closed meanwhile). */
  write(chunk: string | Buffer): Promise<void> {
    if (this.isClosed || this.socket.destroyed || !this.socket.writable) return Promise.resolve();
    return new Promise((r) => {
      this.socket.write(chunk, () => r());
      void this.closed.then(() => r());
    });
  }

  /** Resolves when closed, or after `ms`; true when closed. */
  async closedWithin(ms: number): Promise<boolean> {
    await Promise.race([this.closed, sleep(ms)]);
    return this.isClosed;
  }
}

const tcp = async (port: number): Promise<Conn> => {
  const c = new Conn(connect(port, '127.0.0.1'));
  await c.ready;
  return c;
};
const portOf = (url: string) => Number(new URL(url).port);

/** A complete answer in `data`: head, and the body its Content-Length promises. */
function complete(data: string): boolean {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(data.slice(0, end));
  return length ? data.length - end - 4 >= Number(length[1]) : false;
}

interface Answer {
  status: number | undefined;
  head: string;
  body: string;
  json: () => Record<string, unknown>;
}
function answerOf(data: string): Answer {
  const end = data.indexOf('\r\n\r\n');
  const head = end < 0 ? data : data.slice(0, end);
  const body = end < 0 ? '' : data.slice(end + 4);
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(data);
  return { status: m ? Number(m[1]) : undefined, head, body, json: () => JSON.parse(Buffer.from(body, 'latin1').toString('utf8')) };
}

/** Waits (bounded) for a complete answer or the end of the connection, then closes it. */
async function answer(c: Conn, boundMs = 15_000): Promise<Answer> {
  const deadline = Date.now() + boundMs;
  while (!c.isClosed && !complete(c.data) && Date.now() < deadline) await sleep(10);
  assert.ok(c.isClosed || complete(c.data), `no answer within ${boundMs} ms: ${JSON.stringify(c.data.slice(0, 200))}`);
  c.socket.destroy();
  return answerOf(c.data);
}

/** One request on a fresh connection (`Connection: close`), answered. */
async function send(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const c = await tcp(port);
  const all = { Host: '127.0.0.1', Connection: 'close', ...headers, ...(body !== undefined && { 'Content-Length': String(Buffer.byteLength(body)) }) };
  await c.write(`${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body ?? ''}`);
  return answer(c);
}
const AUTH = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const JSON_TYPE = { 'Content-Type': 'application/json' };

/** An entitlement with a virtual key (for a granted check) and a lease pool. */
async function seed(port: number): Promise<void> {
  const e = await send(port, 'POST', '/admin/v1/entitlements', { ...AUTH, ...JSON_TYPE }, JSON.stringify({ server: SERVER, key: REAL_KEY, class: 'myProduct' }));
  assert.equal(e.status, 201, e.body);
  const k = await send(port, 'POST', '/admin/v1/virtual-keys', { ...AUTH, ...JSON_TYPE }, JSON.stringify({ entitlementId: e.json().id, key: VKEY }));
  assert.equal(k.status, 201, k.body);
  const p = await send(port, 'POST', '/admin/v1/pools', { ...AUTH, ...JSON_TYPE }, JSON.stringify({ name: 'cad', seats: 5, anonymous: true }));
  assert.equal(p.status, 201, p.body);
}

/** The check grants, health and the admin API answer: the server is fine. */
async function assertServing(port: number, label: string): Promise<void> {
  const check = await send(port, 'GET', CHECK);
  assert.equal(check.status, 200, `${label}: the rUS check: ${check.head}`);
  assert.match(check.body, new RegExp(`<key>${REAL_KEY}</key>`));
  const health = await send(port, 'GET', '/healthz');
  assert.equal(health.status, 200, `${label}: /healthz: ${health.head}`);
  const admin = await send(port, 'GET', '/admin/v1/entitlements', AUTH);
  assert.equal(admin.status, 200, `${label}: the admin API: ${admin.head}`);
  assert.equal((admin.json().items as unknown[]).length, 1);
}

/** Writes `text` a few bytes at a time until the connection is closed or `maxSteps` steps are done. */
async function trickle(c: Conn, text: string, stepMs: number, maxSteps: number): Promise<void> {
  for (let i = 0; i < maxSteps && !c.isClosed; i++) {
    await c.write(text.slice((i * 3) % text.length, ((i * 3) % text.length) + 3) || 'a');
    await Promise.race([c.closed, sleep(stepMs)]);
  }
}

describe('settings for slow clients', () => {
  it('refuses a headers timeout longer than the request timeout, naming both settings', () => {
    assert.throws(
      () => loadConfig({ ENTGATE_HEADERS_TIMEOUT_MS: '20000', ENTGATE_REQUEST_TIMEOUT_MS: '15000' }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^invalid configuration: ENTGATE_HEADERS_TIMEOUT_MS=20000 must not exceed ENTGATE_REQUEST_TIMEOUT_MS=15000/.test(err.message),
    );
    const c = loadConfig({ ENTGATE_HEADERS_TIMEOUT_MS: '15000', ENTGATE_REQUEST_TIMEOUT_MS: '15000' });
    assert.deepEqual([c.headersTimeoutMs, c.requestTimeoutMs], [15_000, 15_000]);
    for (const [env, value] of [
      ['ENTGATE_HEADERS_TIMEOUT_MS', '0'],
      ['ENTGATE_REQUEST_TIMEOUT_MS', '0'],
      ['ENTGATE_KEEP_ALIVE_TIMEOUT_MS', '0'],
      ['ENTGATE_MAX_HEADER_BYTES', '100'],
      ['ENTGATE_MAX_CONNECTIONS', '0'],
    ] as const) {
      assert.throws(() => loadConfig({ [env]: value }), (err: unknown) => err instanceof ConfigError && err.message.includes(`${env}="${value}"`), env);
    }
  });
});

describe('slow clients', () => {
  const HEADERS_MS = 1000;
  const REQUEST_MS = 2000;
  const KEEP_ALIVE_MS = 1000;
  const fixture = serviceFixture({
    ENTGATE_HEADERS_TIMEOUT_MS: String(HEADERS_MS),
    ENTGATE_REQUEST_TIMEOUT_MS: String(REQUEST_MS),
    ENTGATE_KEEP_ALIVE_TIMEOUT_MS: String(KEEP_ALIVE_MS),
    // Small, so that a request the server forgot to count out would soon be a 503.
    ENTGATE_MAX_CONCURRENT_REQUESTS: '4',
  });
  let port: number;
  before(async () => {
    port = portOf(fixture.svc.url);
    await seed(port);
  });

  it('closes slow-loris connections (partial headers, or nothing at all) within the headers timeout, serving others meanwhile', async () => {
    const loris: Conn[] = [];
    for (let i = 0; i < 50; i++) loris.push(await tcp(port));
    const started = Date.now();
    // 40 trickle a request line and headers, 3 bytes every 150 ms; 10 say nothing at all.
    const request = `GET ${CHECK} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'z'.repeat(200)}`;
    const trickling = loris.slice(0, 40).map((c) => trickle(c, request, 150, 200));
    await sleep(200);
    // (Unless this machine stalled for most of a second, which is no fault of the server's.)
    if (Date.now() - started < HEADERS_MS / 2) assert.ok(loris.every((c) => !c.isClosed), 'all 50 are open before the headers timeout');
    // Ordinary requests while they are open.
    await assertServing(port, 'during slow-loris');

    const bound = HEADERS_MS + checkingInterval(HEADERS_MS) + MARGIN_MS;
    const deadline = started + bound;
    await Promise.race([Promise.all(loris.map((c) => c.closed)), sleep(Math.max(0, deadline - Date.now()))]);
    const stillOpen = loris.filter((c) => !c.isClosed).length;
    assert.equal(stillOpen, 0, `${stillOpen} of 50 slow-loris connections still open ${bound} ms after they started`);
    for (const c of loris) {
      assert.ok(c.closedAt! - c.opened >= HEADERS_MS - 100, `closed after ${c.closedAt! - c.opened} ms: not before the headers timeout`);
      assert.ok(c.data === '' || c.status === 408, `a 408 or nothing: ${JSON.stringify(c.data.slice(0, 60))}`);
    }
    assert.ok(loris.filter((c) => c.status === 408).length >= 40, 'Node answers 408 Request Timeout');
    await Promise.all(trickling);
    await assertServing(port, 'after slow-loris');
  });

  it('cuts a body trickled to the admin API, a lease acquire and the SES endpoint at the request timeout, and counts them out', async () => {
    const targets = [
      ['admin', `POST /admin/v1/entitlements HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`],
      ['lease', 'POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n'],
      ['ses', `POST ${SES} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`],
    ] as const;
    const slow: Conn[] = [];
    for (const [, head] of targets) {
      const c = await tcp(port);
      await c.write(head);
      slow.push(c);
    }
    const trickling = slow.map((c) => trickle(c, '{"server":"aaaaaaaaaaaaaaaaaaaaaaaa', 250, 100));
    await sleep(300);
    await assertServing(port, 'during slow bodies'); // three in flight of four: one request at a time still fits

    const bound = REQUEST_MS + checkingInterval(HEADERS_MS) + MARGIN_MS;
    await Promise.race([Promise.all(slow.map((c) => c.closed)), sleep(Math.max(0, slow[0]!.opened + bound - Date.now()))]);
    targets.forEach(([name], i) => {
      const c = slow[i]!;
      assert.ok(c.isClosed && c.closedAt! - c.opened <= bound, `${name}: a slow body is cut within ${bound} ms`);
      const after = c.closedAt! - c.opened;
      assert.ok(after >= REQUEST_MS - 100, `${name}: cut after ${after} ms, by the request timeout, not the headers timeout`);
      assert.equal(c.status, 408, `${name}: ${JSON.stringify(c.data.slice(0, 60))}`);
    });
    await Promise.all(trickling);

    // Clients that give up half-way through a body.
    for (const head of [...targets.map(([, h]) => h), `GET ${CHECK} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n`]) {
      const c = await tcp(port);
      await c.write(`${head}{"ser`);
      await sleep(50);
      c.socket.destroy();
    }
    await sleep(200);

    // None of those is still counted in flight: three new slow bodies and a fourth request fit under the cap of four.
    const holding: Conn[] = [];
    for (const [, head] of targets) {
      const c = await tcp(port);
      await c.write(`${head}{"ser`);
      holding.push(c);
    }
    await sleep(200);
    const fourth = await send(port, 'GET', '/healthz');
    assert.equal(fourth.status, 200, `the in-flight count went back to zero: ${fourth.head}`);
    for (const c of holding) c.socket.destroy();
    await sleep(200);

    const entitlements = await send(port, 'GET', '/admin/v1/entitlements', AUTH);
    assert.equal((entitlements.json().items as unknown[]).length, 1, 'no entitlement was created');
    assert.equal(Number((await fixture.svc.db.knex('leases').count({ n: '*' }))[0]!.n), 0, 'no lease was granted');
    await assertServing(port, 'after slow bodies');
  });

  it('answers a body declared far past its cap at once (413), then drops the connection at the request timeout', async () => {
    const huge = `Content-Type: application/json\r\nContent-Length: ${10 * 1024 * 1024 * 1024}\r\n\r\n{"po`;
    const targets = [
      ['admin', `POST /admin/v1/entitlements HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n${huge}`, 413],
      ['lease', `POST /v1/leases HTTP/1.1\r\nHost: x\r\n${huge}`, 413],
      ['ses', `POST ${SES} HTTP/1.1\r\nHost: x\r\n${huge}`, 413],
    ] as const;
    const conns: Conn[] = [];
    for (const [, head] of targets) {
      const c = await tcp(port);
      await c.write(head);
      conns.push(c);
    }
    const bound = REQUEST_MS + checkingInterval(HEADERS_MS) + MARGIN_MS;
    const deadline = conns[0]!.opened + bound;
    for (const c of conns) while (!complete(c.data) && !c.isClosed && Date.now() < deadline) await sleep(10);
    // A 408 would mean no answer had begun when the request timeout struck.
    for (const c of conns) assert.ok(complete(c.data) && c.status === 413 && Date.now() < conns[0]!.opened + REQUEST_MS, 'answered before the request timeout');
    await Promise.race([Promise.all(conns.map((c) => c.closed)), sleep(Math.max(0, deadline - Date.now()))]);
    targets.forEach(([name, , status], i) => {
      assert.ok(conns[i]!.isClosed, `${name}: closed within ${bound} ms`);
      assert.equal(conns[i]!.status, status, `${name}: ${JSON.stringify(conns[i]!.data.slice(0, 60))}`);
    });
    // Answered at once, but the connection lives until the request timeout, while Node reads
    // and drops the body (closing with unread data would reset it and could lose the answer).
    for (const c of conns) assert.ok(c.closedAt! - c.opened >= REQUEST_MS - 100, `closed after ${c.closedAt! - c.opened} ms`);
    await assertServing(port, 'after huge declared bodies');
  });

  it('closes an idle keep-alive connection after the keep-alive timeout, and serves it until then', async () => {
    const c = await tcp(port);
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    for (let i = 0; i < 500 && !complete(c.data); i++) await sleep(10);
    const first = answerOf(c.data);
    assert.equal(first.status, 200);
    assert.match(first.head, /\r\nConnection: keep-alive\r\n/i);
    assert.match(first.head, new RegExp(`\\r\\nKeep-Alive: timeout=${KEEP_ALIVE_MS / 1000}(\\r\\n|$)`, 'i'), 'the advertised timeout is the setting');
    // Reused well within the timeout.
    await sleep(KEEP_ALIVE_MS / 4);
    c.data = '';
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    for (let i = 0; i < 500 && !complete(c.data); i++) await sleep(10);
    assert.equal(answerOf(c.data).status, 200, 'the connection is reused');
    const answered = Date.now();
    // Node keeps the socket one second longer than it advertises, so that clients close first.
    const bound = KEEP_ALIVE_MS + 1000 + MARGIN_MS;
    assert.ok(await c.closedWithin(bound), `an idle keep-alive connection is closed within ${bound} ms`);
    assert.ok(c.closedAt! - answered >= KEEP_ALIVE_MS - 100, `closed ${c.closedAt! - answered} ms after the answer: not before the keep-alive timeout`);
  });
});

describe('front doors under a slow-body attack', () => {
  const MAX_CONCURRENT = 40;
  const PER_CLIENT = 10;
  const BODY_MS = 3000;
  const fixture = serviceFixture({
    ENTGATE_MAX_CONCURRENT_REQUESTS: String(MAX_CONCURRENT),
    ENTGATE_MAX_REQUESTS_PER_CLIENT: String(PER_CLIENT),
    ENTGATE_BODY_TIMEOUT_MS: String(BODY_MS),
    // Long: the body deadline, not the request timeout, is what cuts a slow body.
    ENTGATE_REQUEST_TIMEOUT_MS: '120000',
    // The attackers come "through a proxy" (X-Forwarded-For), each from its own address.
    ENTGATE_TRUSTED_PROXIES: '127.0.0.1/32',
  });
  let port: number;
  before(async () => {
    port = portOf(fixture.svc.url);
    await seed(port);
  });
  const slowHead = (path: string, from: string) =>
    `POST ${path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${from}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{`;
  const acquire = (from: string, clientId: string) =>
    send(port, 'POST', '/v1/leases', { ...JSON_TYPE, 'X-Forwarded-For': from }, JSON.stringify({ pool: 'cad', clientId }));

  it('keeps answering every rUS check while slow bodies hold the SES and lease doors, and cuts those bodies at the body deadline (408)', async () => {
    // 240 attackers, 6 per address (under the per-client cap), alternating SES and leases, a
    // byte every 500 ms; each connects again as soon as it is cut or refused.
    const ended: Conn[] = [];
    let attacking = true;
    const attacker = async (i: number) => {
      while (attacking) {
        const c = await tcp(port).catch(() => undefined);
        if (!c) {
          await sleep(50);
          continue;
        }
        await c.write(slowHead(i % 2 === 0 ? '/v1/leases' : SES, `203.0.113.${i % 40}`));
        await trickle(c, 'aaaaaaaaa', 500, 1000);
        ended.push(c);
      }
    };
    const attackers = Array.from({ length: 240 }, (_, i) => attacker(i));
    await sleep(500);
    // Conary's checks, a fresh connection each, while the doors are held.
    const checks: Answer[] = [];
    for (let round = 0; round < 4; round++) {
      checks.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => send(port, 'GET', i % 2 === 0 ? CHECK : `/?server=${SERVER};key=unknown-${round}-${i}`)))));
      await sleep(BODY_MS / 4);
    }
    attacking = false;
    await Promise.race([Promise.all(attackers), sleep(BODY_MS + MARGIN_MS * 2)]);
    for (const s of open) s.destroy();
    await Promise.all(attackers);

    const statuses = checks.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 200).length, 20, `every granted check is granted: ${statuses.join(' ')}`);
    assert.equal(statuses.filter((s) => s === 404).length, 20, `every unknown key is a 404, never a 503: ${statuses.join(' ')}`);
    // The attack did fill both doors: past their budget attackers were refused at once, and
    // those let in were cut at the body deadline, long before the request timeout.
    const byStatus = (s: number) => ended.filter((c) => c.status === s);
    assert.ok(byStatus(503).length > 0, 'the doors were full: attackers past the budget got 503');
    assert.ok(byStatus(408).length >= 2 * MAX_CONCURRENT, `slow bodies cut with 408: ${byStatus(408).length}`);
    for (const c of byStatus(408)) {
      const after = c.closedAt! - c.opened;
      assert.ok(after >= BODY_MS - 100 && after <= BODY_MS + MARGIN_MS, `a slow body cut after ${after} ms: at the body deadline`);
    }
    const other = ended.filter((c) => c.status !== 408 && c.status !== 503 && !(c.status === undefined && c.closedAt! - c.opened < BODY_MS));
    assert.equal(other.length, 0, `every attacker got 408 or 503: ${other.map((c) => JSON.stringify(c.data.slice(0, 40))).join(' ')}`);
    assert.equal(Number((await fixture.svc.db.knex('leases').count({ n: '*' }))[0]!.n), 0, 'no lease was granted');
    await assertServing(port, 'after the attack');
  });

  it('caps the requests in flight from one address on SES and /v1 (429), not other addresses', async () => {
    const held: Conn[] = [];
    for (let i = 0; i < PER_CLIENT; i++) {
      const c = await tcp(port);
      await c.write(slowHead(i % 2 === 0 ? '/v1/leases' : SES, '198.51.100.7'));
      held.push(c);
    }
    await sleep(200);
    for (const path of ['/v1/leases', SES]) {
      const refused = await send(port, 'POST', path, { ...JSON_TYPE, 'X-Forwarded-For': '198.51.100.7' }, '{}');
      assert.equal(refused.status, 429, `${path}: ${refused.head}`);
      assert.match(refused.head, /\r\nRetry-After: 1/i);
    }
    const refusedBody = await send(port, 'POST', '/v1/leases', { ...JSON_TYPE, 'X-Forwarded-For': '198.51.100.7' }, '{}');
    assert.equal(refusedBody.json().code, 'too_many_requests');
    // Another address is served meanwhile, and so is the check.
    const other = await acquire('198.51.100.8', 'other-client');
    assert.equal(other.status, 201, other.body);
    assert.equal((await send(port, 'GET', CHECK)).status, 200);
    // Cut at the body deadline, the held ones free the address's places.
    for (const c of held) assert.ok(await c.closedWithin(Math.max(0, c.opened + BODY_MS + MARGIN_MS - Date.now())), 'cut at the body deadline');
    for (const c of held) assert.equal(c.status, 408, JSON.stringify(c.data.slice(0, 60)));
    assert.equal(answerOf(held[0]!.data).json().code, 'body_timeout');
    assert.equal(answerOf(held[1]!.data).json().code, 'body_timeout', 'SES too');
    const again = await acquire('198.51.100.7', 'same-client');
    assert.equal(again.status, 201, again.body);
  });
});

for (const target of databaseTargets) {
  describe(`oversized requests on ${target.name}`, () => {
    const MAX_HEADER_BYTES = 4096;
    const fixture = serviceFixture({ ENTGATE_MAX_HEADER_BYTES: String(MAX_HEADER_BYTES) }, target);
    let port: number;
    const counts = async () => {
      const out: Record<string, number> = {};
      for (const table of ['entitlements', 'virtual_keys', 'lease_pools', 'leases', 'lease_events']) {
        out[table] = Number((await fixture.svc.db.knex(table).count({ n: '*' }))[0]!.n);
      }
      return out;
    };
    before(async () => {
      port = portOf(fixture.svc.url);
      await seed(port);
    });

    it('answers 431 to headers past ENTGATE_MAX_HEADER_BYTES, on the check, the API and SES, and stays fine', async () => {
      const near = await send(port, 'GET', '/healthz', { 'X-Filler': 'a'.repeat(MAX_HEADER_BYTES / 2) });
      assert.equal(near.status, 200, 'headers under the limit are fine');
      for (const path of ['/healthz', CHECK, SES, '/admin/v1/entitlements']) {
        const big = await send(port, 'GET', path, { ...AUTH, 'X-Filler': 'a'.repeat(MAX_HEADER_BYTES * 2) });
        assert.equal(big.status, 431, `${path}: ${big.head}`);
      }
      // Many headers, each small.
      const many = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`X-H${i}`, 'b'.repeat(30)]));
      assert.equal((await send(port, 'GET', '/healthz', many)).status, 431);
      await assertServing(port, 'after 431s');
    });

    it('answers a huge query string on the rUS check with a clean 4xx', async () => {
      const huge = await send(port, 'GET', `/?server=${SERVER};key=${'k'.repeat(MAX_HEADER_BYTES * 2)}`);
      assert.equal(huge.status, 431, huge.head);
      const long = await send(port, 'GET', `/?server=${SERVER};key=${'k'.repeat(MAX_HEADER_BYTES / 2)}`);
      assert.equal(long.status, 400, long.head);
      assert.match(long.body, /255/);
      const many = await send(port, 'GET', `/?server=${SERVER};key=k${';x=1'.repeat(MAX_HEADER_BYTES / 8)}`);
      assert.equal(many.status, 404, 'unknown parameters are ignored: an unknown key');
      await assertServing(port, 'after huge queries');
    });

    it('answers 413 to bodies past their caps (admin 1 MiB, leases and SES 64 KiB), declared or chunked, and changes nothing', async () => {
      const before = await counts();
      /** Sends the head and at most `total` bytes of body, stopping at the first answer. */
      const oversized = async (path: string, headers: Record<string, string>, total: number, chunked: boolean): Promise<Answer> => {
        const c = await tcp(port);
        const framing = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${total}`;
        await c.write(`POST ${path} HTTP/1.1\r\nHost: x\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}${framing}\r\n\r\n`);
        const piece = 16 * 1024;
        let sent = 0;
        const body = (n: number) => (sent === 0 ? `{"server":"${'a'.repeat(n - 11)}` : 'a'.repeat(n));
        for (let i = 0; i < 200 && sent < total && !c.isClosed && c.data === ''; i++) {
          const n = Math.min(piece, total - sent);
          await c.write(chunked ? `${n.toString(16)}\r\n${body(n)}\r\n` : body(n));
          sent += n;
          await sleep(1);
        }
        if (chunked && c.data === '' && !c.isClosed) await c.write('0\r\n\r\n');
        return answer(c);
      };
      const cases: [string, string, Record<string, string>, number, string][] = [
        ['admin JSON', '/admin/v1/entitlements', { ...AUTH, ...JSON_TYPE }, 1024 * 1024 + 1024, 'payload_too_large'],
        ['lease acquire', '/v1/leases', JSON_TYPE, 64 * 1024 + 1024, 'payload_too_large'],
        ['SES', SES, JSON_TYPE, 64 * 1024 + 1024, 'EntitlementDenied'],
      ];
      for (const [name, path, headers, total, code] of cases) {
        for (const chunked of [false, true]) {
          const res = await oversized(path, headers, total, chunked);
          assert.equal(res.status, 413, `${name} ${chunked ? 'chunked' : 'declared'}: ${res.head}`);
          assert.equal(res.json().code, code, `${name}: ${res.body}`);
        }
      }
      assert.deepEqual(await counts(), before, 'nothing changed in the database');
      await assertServing(port, 'after oversized bodies');
    });
  });
}

describe('the connection cap', () => {
  const HEADERS_MS = 2500;
  const MAX = 5;
  const fixture = serviceFixture({
    ENTGATE_MAX_CONNECTIONS: String(MAX),
    ENTGATE_HEADERS_TIMEOUT_MS: String(HEADERS_MS),
    ENTGATE_REQUEST_TIMEOUT_MS: '5000',
    METRICS_PORT: '0',
  });

  it('closes connections past ENTGATE_MAX_CONNECTIONS at once, and serves again when idle ones go', async () => {
    const port = portOf(fixture.svc.url);
    const idle: Conn[] = [];
    for (let i = 0; i < MAX; i++) idle.push(await tcp(port));
    await sleep(100);
    const extra: Conn[] = [];
    for (let i = 0; i < 3; i++) extra.push(new Conn(connect(port, '127.0.0.1')));
    for (const c of extra) assert.ok(await c.closedWithin(MARGIN_MS), 'a connection past the cap is closed');
    for (const c of extra) assert.equal(c.data, '', 'closed without an answer (not a 408)');
    if (Date.now() - idle[0]!.opened < HEADERS_MS / 2) {
      assert.ok(idle.every((c) => !c.isClosed), 'the idle ones are still open: the extra ones were closed at once, not timed out');
    }

    // A request while the cap is reached gets no answer.
    const refused = new Conn(connect(port, '127.0.0.1'));
    refused.socket.on('connect', () => refused.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.ok(await refused.closedWithin(MARGIN_MS));
    assert.equal(refused.status, undefined);

    // One idle client leaves: there is room again.
    idle[0]!.socket.destroy();
    let status: number | undefined;
    for (let i = 0; i < 50 && status !== 200; i++) {
      await sleep(50);
      const c = new Conn(connect(port, '127.0.0.1'));
      c.socket.on('connect', () => c.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      status = (await answer(c)).status;
    }
    assert.equal(status, 200, 'served once an idle connection went');

    // The others are timed out by the server (408), and then every slot is free again.
    const bound = HEADERS_MS + checkingInterval(HEADERS_MS) + MARGIN_MS;
    for (const c of idle.slice(1)) {
      assert.ok(await c.closedWithin(Math.max(0, c.opened + bound - Date.now())), `an idle connection is closed by the server within ${bound} ms`);
      assert.equal(c.status, 408);
    }
    // (The server may take a moment to see the last connections go.)
    let statuses: (number | undefined)[] = [];
    for (let i = 0; i < 20 && (i === 0 || !statuses.every((s) => s === 200)); i++) {
      if (i > 0) await sleep(100);
      statuses = (await Promise.all(Array.from({ length: MAX }, () => send(port, 'GET', '/healthz')))).map((a) => a.status);
    }
    assert.deepEqual(statuses, Array(MAX).fill(200), 'every slot is free again');
  });

  it('caps the metrics listener too', async () => {
    const port = portOf(fixture.svc.metricsUrl!);
    const idle: Conn[] = [];
    for (let i = 0; i < MAX; i++) idle.push(await tcp(port));
    await sleep(100);
    const extra = new Conn(connect(port, '127.0.0.1'));
    assert.ok(await extra.closedWithin(MARGIN_MS));
    assert.equal(extra.data, '');
    assert.ok(idle.every((c) => !c.isClosed));
    for (const c of idle) c.socket.destroy();
    let status: number | undefined;
    for (let i = 0; i < 50 && status !== 200; i++) {
      await sleep(50);
      status = (await send(port, 'GET', '/metrics')).status;
    }
    assert.equal(status, 200);
  });
});

describe('slow and oversized clients on HTTPS', () => {
  const HEADERS_MS = 2000;
  let dir: string;
  let db: TestDatabase;
  let svc: RunningService;
  let port: number;
  before(async () => {
    dir = tempDir();
    const certs = createDevCertificates(join(dir, 'tls'));
    db = await databaseTargets[0]!.create();
    svc = await startTestService(db, {
      TLS_CERT_FILE: certs.chainFile,
      TLS_KEY_FILE: certs.keyFile,
      HTTPS_PORT: '0',
      ENTGATE_HEADERS_TIMEOUT_MS: String(HEADERS_MS),
      ENTGATE_REQUEST_TIMEOUT_MS: '3000',
      ENTGATE_MAX_HEADER_BYTES: '4096',
      ENTGATE_MAX_CONNECTIONS: '3',
    });
    port = portOf(svc.httpsUrl!);
  });
  after(async () => {
    await svc?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });
  const tls = async (): Promise<Conn> => {
    const c = new Conn(tlsConnect({ port, host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false }), 'secureConnect');
    await c.ready;
    return c;
  };

  it('drops a connection that never completes the TLS handshake within the headers timeout', async () => {
    const silent = await tcp(port);
    const bound = HEADERS_MS + MARGIN_MS;
    assert.ok(await silent.closedWithin(bound), `closed within ${bound} ms (Node's default handshake timeout is 120 s)`);
    assert.ok(silent.closedAt! - silent.opened >= HEADERS_MS - 100);
  });

  it('answers 408 to slow headers and 431 to oversized ones over TLS, and caps connections', async () => {
    const slow = await tls();
    const trickling = trickle(slow, 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: zzzzzzzzzzzzzzzzzzzz', 150, 200);
    const big = await tls();
    await big.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ${'a'.repeat(8192)}\r\n\r\n`);
    assert.equal((await answer(big)).status, 431);

    // With `slow` held, two more fit (one served and kept alive); a fourth is closed at once.
    const held = await tls();
    const kept = await tls();
    await kept.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    for (let i = 0; i < 500 && !complete(kept.data); i++) await sleep(10);
    assert.equal(kept.status, 200);
    await sleep(100);
    const fourth = new Conn(tlsConnect({ port, host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false }), 'secureConnect');
    await assert.rejects(fourth.ready, /closed before secureConnect/, 'no handshake past the cap');
    assert.ok(!held.isClosed && !kept.isClosed, 'the held connections were not the ones closed');

    const bound = HEADERS_MS + checkingInterval(HEADERS_MS) + MARGIN_MS;
    assert.ok(await slow.closedWithin(Math.max(0, slow.opened + bound - Date.now())), `slow headers cut within ${bound} ms`);
    assert.equal(slow.status, 408);
    await trickling;
  });
});
