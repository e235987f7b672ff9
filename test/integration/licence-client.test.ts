import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import request from 'supertest';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { testVendor, tampered } from '../helpers/vendor.ts';
import type { RunningService } from '../../src/service.ts';
import {
  LicenceClient,
  LicenceRequestError,
  CapacityExceededError,
  FeatureNotLicensedError,
  CapacityNotLicensedError,
  ClaimNotHeldError,
  type Licence,
  type LicenceClientOptions,
  type LicenceInfo,
} from '../../src/index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dir = tempDir('entgate-licence-client-');
after(() => rmSync(dir, { recursive: true, force: true }));
const vendor = testVendor(dir);
const GRANT = { features: ['reports'], capacities: { 'assigned:users': 2, 'concurrent:calls': 5 } };

/** Resolves with the first licence `client` adopts whose id is `id` (and when, in ms of performance.now()). */
function adopted(client: LicenceClient, id: string, timeoutMs = 10_000): Promise<{ licence: Licence; info: LicenceInfo; at: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('licence', listener);
      reject(new Error(`licence ${id} did not arrive in ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (licence: Licence, info: LicenceInfo) => {
      if (licence.id !== id) return;
      clearTimeout(timer);
      client.off('licence', listener);
      resolve({ licence, info, at: performance.now() });
    };
    client.on('licence', listener);
  });
}

async function until(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(20);
  }
}

for (const target of databaseTargets) {
  describe(`LicenceClient against a real server (${target.name})`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    let credential: string;
    const clients: LicenceClient[] = [];
    const client = (options: Partial<LicenceClientOptions> = {}) => {
      const c = new LicenceClient({ baseUrl: svc.url, token: credential, publicKeys: [vendor.publicKeyPem], file: join(dir, `${target.name}-${clients.length}.jwt`), ...options });
      clients.push(c);
      return c;
    };
    const install = (server: RunningService, token: string) => fetch(`${server.url}/admin/v1/licence`, { method: 'PUT', headers: { ...AUTH, 'Content-Type': 'application/jwt' }, body: token });

    before(async () => {
      db = await target.create();
      svc = await startTestService(db, vendor.env);
      credential = (await request(svc.server).post('/admin/v1/admin-tokens').set(AUTH).send({ name: 'user-service', scopes: ['capacities'] }).expect(201)).body.token;
    });
    after(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await svc?.close();
      await db?.drop();
    });

    it('starts with no licence, then adopts the one installed: pushed over the stream, verified, written to its file', async () => {
      const file = join(dir, `${target.name}-first.jwt`);
      const c = client({ file });
      assert.equal(await c.start(), 'none');
      assert.equal(c.connected, true);
      assert.deepEqual([c.licence, c.hasFeature('reports'), c.limit('assigned:users')], [undefined, false, 0]);
      const token = await vendor.issue({ id: 'lic-1', ...GRANT });
      const arrived = adopted(c, 'lic-1');
      assert.equal((await install(svc, token)).status, 201);
      const { info } = await arrived;
      assert.deepEqual([info.source, info.status, info.seq, info.token], ['server', 'valid', 1, token]);
      assert.equal(readFileSync(file, 'utf8').trim(), token);
      assert.equal(c.status, 'valid');
      assert.deepEqual([c.hasFeature('reports'), c.hasFeature('export')], [true, false]);
      assert.deepEqual([c.limit('assigned:users'), c.limit('feature:reports'), c.limit('assigned:devices')], [2, null, 0]);

      // A client started now gets it at start, from entgate (no file yet).
      const late = client();
      assert.equal(await late.start(), 'valid');
      assert.equal(late.licence?.id, 'lic-1');
    });

    it('claims: granted, idempotent, refused with typed errors, released; a concurrent claim held is heartbeated until lost', async () => {
      const c = client();
      const first = await c.claim('assigned:users', 'alice', { metadata: { name: 'Alice' } });
      assert.deepEqual([first.created, first.claim.id, first.claim.limit, first.claim.inUse, first.claim.expiresAt], [true, 'alice', 2, 1, null]);
      assert.equal((await c.claim('assigned:users', 'alice')).created, false);
      await c.claim('assigned:users', 'bob');
      await assert.rejects(c.claim('assigned:users', 'carol'), (err: unknown) => {
        assert.ok(err instanceof CapacityExceededError);
        assert.deepEqual([err.status, err.code, err.capacity, err.limit, err.inUse], [409, 'capacity_exceeded', 'assigned:users', 2, 2]);
        return true;
      });
      assert.equal((await c.capacities()).find((u) => u.name === 'assigned:users')?.inUse, 2);
      await c.release('assigned:users', 'alice');
      await assert.rejects(c.release('assigned:users', 'alice'), (err: unknown) => err instanceof ClaimNotHeldError && err.status === 404);
      assert.equal(await c.find('assigned:users', 'alice'), undefined);
      assert.equal((await c.find('assigned:users', 'bob'))?.id, 'bob');
      await c.release('assigned:users', 'bob');
      await assert.rejects(c.claim('feature:export', 'alice'), (err: unknown) => err instanceof FeatureNotLicensedError && err.capacity === 'feature:export');
      await assert.rejects(c.claim('assigned:devices', 'd1'), (err: unknown) => err instanceof CapacityNotLicensedError && err.code === 'unknown_capacity');
      await assert.rejects(c.claim('users', 'alice'), (err: unknown) => err instanceof LicenceRequestError && err.status === 400 && err.code === 'invalid_capacity');
      const nowhere = new LicenceClient({ baseUrl: 'http://127.0.0.1:1', token: credential, publicKeys: [vendor.publicKey], file: join(dir, 'unused.jwt'), timeoutMs: 2000 });
      await assert.rejects(nowhere.claim('assigned:users', 'x'), (err: unknown) => err instanceof LicenceRequestError && err.status === 0);

      // Held past its TTL of 2 s by heartbeats every second, then released by an admin: lost.
      const lost: string[] = [];
      const held = await c.hold('concurrent:calls', 'call-1', { ttlSeconds: 2 }, { onLost: (e) => lost.push(e.code) });
      assert.equal(held.claim.heartbeatIntervalSeconds, 1);
      await sleep(2500);
      assert.ok(await c.find('concurrent:calls', 'call-1'), 'still held after its TTL');
      await request(svc.server).delete('/admin/v1/licence/capacities/concurrent%3Acalls/claims/call-1').set(AUTH).expect(204);
      await until('the loss reported', () => lost.length > 0, 5000);
      assert.deepEqual(lost, ['claim_not_held']);
      await held.release().catch(() => {});
    });

    it(
      'a second instance on the same database pushes every licence installed through the first within a second',
      { skip: target.name === 'pglite' ? 'an embedded database (PGlite) serves one process: no second instance can share it' : false },
      async (t) => {
        const b = await startTestService(db, vendor.env);
        try {
          const c = client({ baseUrl: b.url });
          await c.start();
          assert.equal(c.connected, true);
          const delays: number[] = [];
          for (let i = 2; i <= 4; i++) {
            const arrived = adopted(c, `lic-${i}`);
            const token = await vendor.issue({ id: `lic-${i}`, ...GRANT });
            const res = await install(svc, token);
            const answered = performance.now();
            assert.equal(res.status, 201);
            const { at, info } = await arrived;
            assert.equal(info.token, token);
            delays.push(Math.max(0, Math.round(at - answered)));
          }
          const median = [...delays].sort((x, y) => x - y)[1]!;
          t.diagnostic(`from PUT answered on instance A to the licence adopted by a client of instance B: ${delays.join(', ')} ms (median ${median} ms)`);
          assert.ok(median < 1000, `median delay ${median} ms (${delays.join(', ')})`);
        } finally {
          await b.close();
        }
      },
    );
  });
}

describe('LicenceClient against a hand-made stream (a real HTTP server on loopback)', () => {
  const other = testVendor(dir, 'forger');
  let server: Server;
  let url = '';
  const seen: IncomingHttpHeaders[] = [];
  let script: ((res: ServerResponse, n: number) => Promise<void>) | undefined;

  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/v1/licence') return void res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"code":"no_licence","message":"none"}');
      seen.push(req.headers);
      void script!(res, seen.length);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('parses the framing, refuses forged, tampered, foreign-bound and expired tokens, reconnects with Last-Event-ID', async () => {
    const good = await vendor.issue({ id: 'good', ...GRANT });
    const newer = await vendor.issue({ id: 'newer', ...GRANT, installation: 'inst-1' });
    const forged = await other.issue({ id: 'forged', ...GRANT });
    const inflated = tampered(good, (claims) => ((claims.capacities as Record<string, number>)['assigned:users'] = 1000));
    const elsewhere = await vendor.issue({ id: 'elsewhere', ...GRANT, installation: 'inst-2' });
    const expired = await vendor.issue({ id: 'expired', ...GRANT, issuedAt: new Date(Date.now() - 7200_000), expiresAt: new Date(Date.now() - 3600_000) });
    const event = (id: number | undefined, token: string) => `${id === undefined ? '' : `id: ${id}\n`}event: licence\ndata: ${JSON.stringify({ seq: id ?? 3, token })}\n\n`;
    const sse = (res: ServerResponse) => res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    script = async (res, n) => {
      if (n === 1) return void res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"code":"unauthenticated","message":"who are you?"}');
      sse(res);
      if (n === 2) {
        const goodEvent = event(undefined, good);
        // Each chunk is written (and flushed) on its own: comments, retry, CR LF and CR line ends,
        // data on two lines, an event split mid-line and mid-line-end, events of other types.
        for (const chunk of [
          '\uFEFF: hello\r\n\r\n',
          'retry: 20\n\n',
          event(1, forged),
          `id: 2\r\nevent: licence\r\ndata: {"seq": 2,\r\ndata: "token": "${inflated}"}\r\n\r`,
          '\n',
          goodEvent.slice(0, 30),
          goodEvent.slice(30, -1),
          goodEvent.slice(-1),
          event(4, elsewhere),
          event(5, expired),
          'event: message\ndata: not a licence\n\n',
          'event: licence\ndata: {not json\n\n',
        ]) {
          res.write(chunk);
          await sleep(5);
        }
        return void res.end();
      }
      res.write(event(6, newer) + event(2, good) + ': keepalive\n\n');
    };
    const invalid: string[] = [];
    const errors: string[] = [];
    const adoptedIds: string[] = [];
    const c = new LicenceClient({
      baseUrl: url,
      token: 'svc-token',
      publicKeys: [vendor.publicKey],
      file: join(dir, 'stream', 'licence.jwt'),
      installationId: 'inst-1',
      timeoutMs: 300,
      reconnect: { minDelayMs: 10, maxDelayMs: 100 },
      onError: (e) => errors.push((e as { code?: string }).code ?? e.message),
    });
    c.on('invalid', (e) => invalid.push(`${e.code}:${e.source}`));
    c.on('licence', (l) => adoptedIds.push(l.id));
    try {
      // The first attempt is refused (401): start resolves, with no licence.
      assert.equal(await c.start(), 'none');
      assert.equal(errors[0], 'unauthenticated');
      await until('the newer licence adopted', () => c.licence?.id === 'newer');
      assert.deepEqual(adoptedIds, ['good', 'newer']);
      assert.deepEqual(invalid, [
        'licence_signature_invalid:server',
        'licence_signature_invalid:server',
        'licence_installation_mismatch:server',
        'licence_expired:server',
        'licence_malformed:server',
      ]);
      assert.deepEqual(
        seen.map((h) => [h.authorization, h.accept, h['last-event-id']]),
        [
          ['Bearer svc-token', 'text/event-stream', undefined],
          ['Bearer svc-token', 'text/event-stream', undefined],
          ['Bearer svc-token', 'text/event-stream', '3'],
        ],
      );
      assert.equal(readFileSync(join(dir, 'stream', 'licence.jwt'), 'utf8').trim(), newer);
      // The open stream outlives the request timeout (300 ms): it is not a request that hangs.
      await sleep(600);
      assert.deepEqual([c.connected, seen.length], [true, 3]);
    } finally {
      await c.close();
    }
    assert.equal(c.connected, false);
  });
});
