import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../helpers/databases.ts';
import { postgresBinDir, startCluster, type PgCluster } from '../helpers/pg-cluster.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { rawToken, writeKeys } from '../helpers/ses.ts';
import type { RunningService } from '../../src/service.ts';

const LATEST = '9999-09-09.99.99';
const bin = postgresBinDir();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  retryAfter: string | null;
  body: unknown;
}

/**
 * The database on a cluster of the test's own, frozen with SIGSTOP (every connection stays open
 * and nothing answers) and stopped at once (every connection cut): each front door answers
 * within a bound, the rUS check from its caches, and everything recovers without a restart.
 */
describe('when the database freezes or stops', { skip: bin ? false : 'initdb is not installed (/usr/lib/postgresql/*/bin/initdb): no cluster to freeze' }, () => {
  let cluster: PgCluster;
  let svc: RunningService;
  let sesToken: string;
  let leases = 0;

  /** Every request is cut after 30 s: a hang fails the test with its name rather than hanging it. */
  async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
    let res: Response;
    try {
      res = await fetch(svc.url + path, {
        method,
        headers: { ...(body !== undefined && { 'Content-Type': 'application/json' }), ...headers },
        ...(body !== undefined && { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      throw new Error(`${method} ${path} did not answer: ${(err as Error).message}`);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // text
    }
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: parsed };
  }

  const doors = {
    leaseAcquire: () => call('POST', '/v1/leases', { pool: 'seats', clientId: `client-${++leases}`, ttlSeconds: 60 }),
    adminRead: () => call('GET', '/admin/v1/entitlements', undefined, AUTH),
    adminWrite: () => call('POST', '/admin/v1/entitlements', { server: `s${++leases}.example.com`, key: 'real-key' }, AUTH),
    sesAcquire: () => call('POST', `/softwareEntitlements?api-version=${LATEST}`, { token: sesToken, applicationId: 'contosoapp', duration: 'PT5M' }),
  };
  const check = (key: string) => call('GET', `/?server=rm.example.com;key=${key};remote_ip=127.0.0.1`);

  async function expectAnswersDuringFault(): Promise<void> {
    const [lease, read, write, ses, cached, uncached, ready] = await Promise.all([
      doors.leaseAcquire(),
      doors.adminRead(),
      doors.adminWrite(),
      doors.sesAcquire(),
      check('cached-key'),
      check('never-seen-key'),
      call('GET', '/readyz'),
    ]);
    for (const [name, answer] of Object.entries({ lease, read, write })) {
      assert.equal(answer.status, 503, `${name}: ${JSON.stringify(answer)}`);
      assert.equal((answer.body as { code?: string }).code, 'database_unavailable', name);
      assert.match(answer.retryAfter ?? '', /^\d+$/, `${name} carries Retry-After`);
    }
    assert.equal(ses.status, 503, `ses: ${JSON.stringify(ses)}`);
    assert.equal((ses.body as { code?: string }).code, 'ServiceUnavailable');
    assert.match(ses.retryAfter ?? '', /^\d+$/, 'ses carries Retry-After');
    assert.equal(cached.status, 200, 'a cached check is answered from the cache');
    assert.equal(uncached.status, 404, 'an uncached check is denied, not left hanging');
    assert.equal(ready.status, 503, JSON.stringify(ready));
  }

  /** After the fault ends, every door succeeds again (polled: connections come back in their own time). */
  async function expectRecovery(): Promise<void> {
    const want: Record<string, [() => Promise<Answer>, number]> = {
      leaseAcquire: [doors.leaseAcquire, 201],
      adminRead: [doors.adminRead, 200],
      adminWrite: [doors.adminWrite, 201],
      sesAcquire: [doors.sesAcquire, 200],
      uncachedCheck: [() => check('another-unseen-key'), 404],
      readyz: [() => call('GET', '/readyz'), 200],
    };
    for (const [name, [door, status]] of Object.entries(want)) {
      const deadline = Date.now() + 90_000;
      let last: Answer | undefined;
      while (Date.now() < deadline) {
        last = await door();
        if (last.status === status) break;
        await sleep(250);
      }
      assert.equal(last?.status, status, `${name} after recovery: ${JSON.stringify(last)}`);
    }
    assert.equal((await check('cached-key')).status, 200);
  }

  before(async () => {
    cluster = await startCluster(bin!);
    const keys = writeKeys(tempDir());
    svc = await startTestService(
      { env: { DATA_DIR: join(tempDir(), 'unused'), DATABASE_URL: cluster.url }, drop: async () => {} },
      {
        DATABASE_QUERY_TIMEOUT_MS: '1000',
        DATABASE_CONNECT_TIMEOUT_MS: '1000',
        ENTGATE_CHECK_TIMEOUT_MS: '1000',
        ENTGATE_CACHE_TTL_SECONDS: '3600',
        ENTGATE_SES_SIGNING_KEYS: keys.signingFiles.join(','),
        ENTGATE_SES_REQUIRE_ENCRYPTED: 'false',
      },
    );
    sesToken = await rawToken({ sign: { key: keys.rsaSign.privateKey, alg: 'RS512' } });
    const ent = await call('POST', '/admin/v1/entitlements', { server: 'rm.example.com', key: 'real-key' }, AUTH);
    assert.equal(ent.status, 201, JSON.stringify(ent));
    const vk = await call('POST', '/admin/v1/virtual-keys', { entitlementId: (ent.body as { id: number }).id, key: 'cached-key' }, AUTH);
    assert.equal(vk.status, 201, JSON.stringify(vk));
    assert.equal((await call('POST', '/admin/v1/pools', { name: 'seats', seats: 1000, anonymous: true }, AUTH)).status, 201);
    assert.equal((await check('cached-key')).status, 200);
    assert.equal((await doors.leaseAcquire()).status, 201);
    assert.equal((await doors.sesAcquire()).status, 200);
  });

  after(async () => {
    cluster?.thaw();
    await svc?.close();
    cluster?.destroy();
  });

  it('frozen with SIGSTOP: leases, admin and SES answer 503 with Retry-After, the rUS check answers from its cache; after SIGCONT all succeed', { timeout: 300_000 }, async () => {
    cluster.freeze();
    try {
      await expectAnswersDuringFault();
      // Again, with the pool's connections now known to be stuck: still answered, not queued for ever.
      await expectAnswersDuringFault();
    } finally {
      cluster.thaw();
    }
    await expectRecovery();
  });

  it('stopped at once (pg_ctl stop -m immediate) and started again: the same answers, then recovery without a restart', { timeout: 300_000 }, async () => {
    cluster.stopImmediate();
    try {
      await expectAnswersDuringFault();
    } finally {
      cluster.start();
    }
    await expectRecovery();
  });
});
