import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { databaseTargets, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import * as openpgp from 'openpgp';
import { ENTGATE_BIN, REPO_ROOT, runCli, startServerProcess, type ServerProcess } from '../helpers/process.ts';
import { signRequest } from '../../src/lib/signed-request.ts';

const pgTarget = databaseTargets.find((t) => t.name === 'postgres');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(url: string, method: string, path: string, body?: unknown, admin = false) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...(admin && { Authorization: `Bearer ${ADMIN_TOKEN}` }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

const inUse = async (url: string, pool: string) => (await call(url, 'GET', `/v1/pools/${pool}`, undefined, true)).body.inUse as number;

/** The client token `entgate lease run` gets in ENTGATE_CLIENT_TOKEN, when a test made one. */
let clientToken: Record<string, string> = {};

/** `entgate lease run` as a real process; resolves with its exit code and stderr. */
function leaseRun(url: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [ENTGATE_BIN, 'lease', 'run', ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ENTGATE_URL: url, ...clientToken, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done, stdout: () => stdout };
}

async function waitFor(what: string, condition: () => Promise<boolean>, limitMs = 15_000): Promise<void> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > limitMs) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('floating leases across three entgate processes on one PostgreSQL', { skip: pgTarget ? false : 'TEST_DATABASE_URL is not set' }, () => {
  let db: TestDatabase;
  let servers: ServerProcess[] = [];

  before(async () => {
    db = await pgTarget!.create();
    const env = { ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN, ENTGATE_LEASE_TIDY_SECONDS: '1' };
    servers = [await startServerProcess(env)];
    servers.push(...(await Promise.all([startServerProcess(env), startServerProcess(env)])));
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await db?.drop();
  });

  it('grants exactly 5 of 60 concurrent acquires on a 5-seat pool, refusing 55 with 409', async () => {
    const [a] = servers;
    assert.equal((await call(a!.url, 'POST', '/admin/v1/pools', { name: 'five', seats: 5, defaultTtlSeconds: 60, anonymous: true }, true)).status, 201);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => call(servers[i % 3]!.url, 'POST', '/v1/leases', { pool: 'five', clientId: `client-${i}` })),
    );
    const statuses = results.map((r) => r.status);
    assert.deepEqual([statuses.filter((s) => s === 201).length, statuses.filter((s) => s === 409).length], [5, 55]);
    assert.ok(results.filter((r) => r.status === 409).every((r) => r.body.code === 'no_seat_available' && r.body.seats === 5));
    for (const s of servers) assert.equal(await inUse(s.url, 'five'), 5);

    // A release frees its seat at once, for any process.
    const granted = results.filter((r) => r.status === 201).map((r) => r.body.leaseId as string);
    assert.equal((await call(servers[1]!.url, 'DELETE', `/v1/leases/${granted[0]}`)).status, 204);
    assert.equal((await call(servers[2]!.url, 'POST', '/v1/leases', { pool: 'five', clientId: 'late' })).status, 201);
    assert.equal((await call(servers[0]!.url, 'POST', '/v1/leases', { pool: 'five', clientId: 'later' })).status, 409);
  });

  it('refuses a signed request replayed to another process', async () => {
    const [a, b] = servers;
    const { privateKey, publicKey } = await openpgp.generateKey({ userIDs: [{ name: 'replayed' }], format: 'armored' });
    assert.equal((await call(a!.url, 'POST', '/admin/v1/pools', { name: 'signed3', seats: 3, requireSignedRequests: true }, true)).status, 201);
    assert.equal((await call(a!.url, 'POST', '/admin/v1/client-keys', { clientId: 'signer', publicKey }, true)).status, 201);
    const text = await signRequest({ pool: 'signed3', clientId: 'signer' }, await openpgp.readPrivateKey({ armoredKey: privateKey }));
    const send = (url: string) => fetch(`${url}/v1/leases`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: text });
    assert.equal((await send(a!.url)).status, 201);
    const replay = await send(b!.url);
    assert.equal(replay.status, 401);
    assert.equal(((await replay.json()) as { code: string }).code, 'request_replayed');
  });

  it("frees a SIGKILLed client's seat right after its lease's TTL, and not before", async () => {
    const url = servers[0]!.url;
    await call(url, 'POST', '/admin/v1/pools', { name: 'one', seats: 1, defaultTtlSeconds: 3, heartbeatIntervalSeconds: 1, anonymous: true }, true);
    // The command outlives its SIGKILLed runner (orphaned) for a few seconds only.
    const runner = leaseRun(url, ['--pool', 'one', '--client-id', 'doomed', '--', 'sleep', '8']);
    await waitFor('the runner to hold the seat', async () => (await inUse(url, 'one')) === 1);
    await sleep(2500); // a few heartbeats: the lease outlives its first TTL
    assert.equal((await call(url, 'POST', '/v1/leases', { pool: 'one', clientId: 'waiting' })).status, 409);
    const lease = (await call(url, 'GET', '/v1/pools/one', undefined, true)).body.leases[0];
    runner.child.kill('SIGKILL');
    await runner.done;
    const expiresAt = Date.parse(lease.expiresAt);
    // Heartbeats stopped with the process: the seat stays taken until the last expiry, then is free.
    if (Date.now() < expiresAt - 300) {
      assert.equal((await call(url, 'POST', '/v1/leases', { pool: 'one', clientId: 'waiting' })).status, 409);
    }
    let granted: number | undefined;
    while (granted === undefined) {
      const r = await call(servers[1]!.url, 'POST', '/v1/leases', { pool: 'one', clientId: 'waiting' });
      if (r.status === 201) granted = Date.now();
      else {
        assert.equal(r.status, 409);
        assert.ok(Date.now() < expiresAt + 2000, 'the seat must be free within moments of the expiry');
        await sleep(25);
      }
    }
    assert.ok(granted >= expiresAt - 50, `granted ${expiresAt - granted} ms before the dead lease expired`);
    assert.ok(granted - expiresAt < 1000, `granted ${granted - expiresAt} ms after the expiry`);
    await waitFor('the expired event', async () => {
      const events = (await call(url, 'GET', `/admin/v1/lease-events?leaseId=${lease.leaseId}`, undefined, true)).body.items;
      return events.some((e: { type: string }) => e.type === 'expired');
    });
  });
});

describe('entgate lease run', () => {
  let db: TestDatabase;
  let server: ServerProcess;
  const children: ChildProcess[] = [];

  before(async () => {
    db = await databaseTargets[0]!.create();
    server = await startServerProcess({ ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    // Made with the CLI: a pool that needs a credential, and the client token the runs carry.
    const admin = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
    const pool = await runCli(['pool', 'create', 'run', '--seats', '1', '--ttl', '3', '--heartbeat', '1'], admin);
    assert.equal(pool.code, 0, pool.stderr);
    const token = await runCli(['admin-token', 'create', 'runner', '--scope', 'leases:client', '--json'], admin);
    assert.equal(token.code, 0, token.stderr);
    clientToken = { ENTGATE_CLIENT_TOKEN: (JSON.parse(token.stdout) as { token: string }).token };
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await server?.stop();
    await db?.drop();
  });

  it("holds the seat while the command runs, releases it at exit, and exits with the command's code", async () => {
    const run = leaseRun(server.url, ['--pool', 'run', '--', 'sh', '-c', 'sleep 4; exit 7']);
    children.push(run.child);
    await waitFor('the seat', async () => (await inUse(server.url, 'run')) === 1);
    const busy = await runCli(['lease', 'run', '--pool', 'run', '--', 'true'], { ENTGATE_URL: server.url, ...clientToken });
    assert.equal(busy.code, 75, busy.stderr);
    assert.match(busy.stderr, /^entgate lease run: no seat available \(1 of 1 in use; retry in \d+ s\)\n$/);
    const result = await run.done;
    assert.equal(result.code, 7, result.stderr);
    assert.equal(await inUse(server.url, 'run'), 0, 'released at exit, beyond the TTL of its first lease (heartbeats kept it)');
  });

  it('waits for a seat with --wait, and forwards SIGTERM to the command (exit 128 + 15), releasing the seat', async () => {
    const holder = leaseRun(server.url, ['--pool', 'run', '--', 'sleep', '1']);
    children.push(holder.child);
    await waitFor('the seat', async () => (await inUse(server.url, 'run')) === 1);
    const waiter = leaseRun(server.url, ['--pool', 'run', '--wait', '10', '--', process.execPath, '-e', 'setInterval(() => {}, 1000)']);
    children.push(waiter.child);
    assert.equal((await holder.done).code, 0);
    await waitFor('the waiter to get the seat', async () => {
      const pool = (await call(server.url, 'GET', '/v1/pools/run', undefined, true)).body;
      return pool.inUse === 1 && pool.leases[0].metadata.command === process.execPath;
    });
    waiter.child.kill('SIGTERM');
    const result = await waiter.done;
    assert.equal(result.code, 143, result.stderr);
    assert.equal(await inUse(server.url, 'run'), 0);
  });

  it('stops the command and exits 76 when an admin ends its lease, without taking the seat back', async () => {
    await waitFor('a free seat', async () => (await inUse(server.url, 'run')) === 0);
    const run = leaseRun(server.url, ['--pool', 'run', '--client-id', 'victim', '--', process.execPath, '-e', 'setInterval(() => {}, 1000)']);
    children.push(run.child);
    await waitFor('the seat', async () => (await inUse(server.url, 'run')) === 1);
    const { leaseId } = (await call(server.url, 'GET', '/v1/pools/run', undefined, true)).body.leases[0];
    assert.equal((await call(server.url, 'DELETE', `/admin/v1/leases/${leaseId}`, undefined, true)).status, 204);
    const thief = await call(server.url, 'POST', '/v1/leases', { pool: 'run', clientId: 'thief' }, true);
    assert.equal(thief.status, 201);
    const result = await run.done;
    assert.equal(result.code, 76, result.stderr);
    assert.match(result.stderr, /lease ended \(lease_released\); stopping the command/);
    await call(server.url, 'DELETE', `/v1/leases/${thief.body.leaseId}`, undefined, true);
  });

  it('after a pause longer than its TTL, re-acquires a free seat and lets the command finish', async () => {
    await waitFor('a free seat', async () => (await inUse(server.url, 'run')) === 0);
    const run = leaseRun(server.url, ['--pool', 'run', '--client-id', 'sleeper', '--', 'sh', '-c', 'sleep 7; exit 3']);
    children.push(run.child);
    await waitFor('the seat', async () => (await inUse(server.url, 'run')) === 1);
    const first = (await call(server.url, 'GET', '/v1/pools/run', undefined, true)).body.leases[0].leaseId as string;
    run.child.kill('SIGSTOP'); // the runner freezes (the command does not): its lease expires
    await sleep(4000);
    run.child.kill('SIGCONT');
    await waitFor('a new lease', async () => {
      const leases = (await call(server.url, 'GET', '/v1/pools/run', undefined, true)).body.leases as { leaseId: string }[];
      return leases.length === 1 && leases[0]!.leaseId !== first;
    });
    const result = await run.done;
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /lease lost \(lease_expired\); re-acquired /);
    assert.equal(await inUse(server.url, 'run'), 0);
  });

  it('needs a client credential unless the pool was made --anonymous, and reads the token from --token-env', async () => {
    await waitFor('a free seat', async () => (await inUse(server.url, 'run')) === 0);
    const none = await runCli(['lease', 'run', '--pool', 'run', '--', 'true'], { ENTGATE_URL: server.url });
    assert.equal(none.code, 1, none.stderr);
    assert.match(none.stderr, /pool run needs a client credential/);
    assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
    const named = await runCli(['lease', 'run', '--pool', 'run', '--token-env', 'MY_TOKEN', '--', 'true'], { ENTGATE_URL: server.url, MY_TOKEN: clientToken.ENTGATE_CLIENT_TOKEN! });
    assert.equal(named.code, 0, named.stderr);
    const missing = await runCli(['lease', 'run', '--pool', 'run', '--token-env', 'NOT_SET_EITHER', '--', 'true'], { ENTGATE_URL: server.url });
    assert.match(missing.stderr, /NOT_SET_EITHER \(the client token\) is not set/);

    const admin = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
    assert.equal((await runCli(['pool', 'create', 'open-run', '--seats', '1', '--anonymous'], admin)).code, 0);
    const open = await runCli(['lease', 'run', '--pool', 'open-run', '--', 'true'], { ENTGATE_URL: server.url });
    assert.equal(open.code, 0, open.stderr);
    assert.equal((await runCli(['pool', 'update', 'open-run', '--no-anonymous'], admin)).code, 0);
    const closed = await runCli(['lease', 'run', '--pool', 'open-run', '--', 'true'], { ENTGATE_URL: server.url });
    assert.match(closed.stderr, /needs a client credential/);
  });

  it('refuses bad use with one line on stderr and a non-zero exit', async () => {
    const cases: [string[], RegExp][] = [
      [['lease', 'run', '--', 'true'], /give either --pool or --virtual-key-env/],
      [['lease', 'run', '--pool', 'run', '--virtual-key-env', 'X', '--', 'true'], /give either --pool or --virtual-key-env/],
      [['lease', 'run', '--virtual-key-env', 'NOT_SET_ANYWHERE', '--', 'true'], /NOT_SET_ANYWHERE .* is not set/],
      [['lease', 'run', '--pool', 'nope', '--', 'true'], /pool nope not found/],
      [['lease', 'run', '--pool', 'run', '--', 'no-such-command-entgate'], /cannot run no-such-command-entgate: ENOENT/],
      [['lease', 'run', '--pool', 'run', '--ttl', 'abc', '--', 'true'], /--ttl must be a positive integer/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args, { ENTGATE_URL: server.url, ...clientToken });
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.equal(await inUse(server.url, 'run'), 0);
  });
});
