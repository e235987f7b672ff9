import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ENTGATE_BIN, REPO_ROOT, cliServerFixture, runCli } from '../helpers/process.ts';

/** The `entgate` CLI as an admin uses it, against `entgate serve` running as a real process. */
describe('entgate CLI against a running server', () => {
  const fx = cliServerFixture();
  const { cli, check } = fx;

  it('maps keys end to end: entitlement add, vkey add, check, revoke', async () => {
    const ent = await cli('entitlement', 'add', '--server', 'rm.example.com', '--key', 'realkey-1', '--class', 'myProduct');
    assert.equal(ent.code, 0, ent.stderr);
    assert.match(ent.stdout, /^\d+\n$/);
    const entId = ent.stdout.trim();

    const vk = await cli('vkey', 'add', '--entitlement', entId, '--key', 'cust-0001', '--cache-timeout', '600', '--no-retry', '--allow-ip', '10.0.0.0/8', '--allow-ip', '192.168.1.0/24', '--customer', 'ACME');
    assert.equal(vk.code, 0, vk.stderr);
    assert.match(vk.stdout, /^\d+\n$/);
    // Locked to networks: Conary must not cache it, whatever its cache timeout (and the admin is told).
    assert.match(vk.stderr, /^warning: cacheTimeout is not sent for this key: it is locked to allowedCidrs/);

    const granted = await check('server=rm.example.com;class=myProduct;key=cust-0001;remote_ip=192.168.1.20');
    assert.equal(granted.status, 200);
    assert.match(await granted.text(), /<key>realkey-1<\/key><timeout val="0" retry="True"\/>/);
    assert.equal((await check('server=rm.example.com;key=cust-0001;remote_ip=172.16.0.1')).status, 404);

    const timed = await cli('vkey', 'add', '--entitlement', entId, '--key', 'cust-0002', '--cache-timeout', '600', '--no-retry');
    assert.deepEqual([timed.code, timed.stderr], [0, '']);
    assert.match(await (await check('server=rm.example.com;key=cust-0002')).text(), /<class>myProduct<\/class><key>realkey-1<\/key><timeout val="600" retry="False"\/>/);

    const revoke = await cli('vkey', 'revoke', 'cust-0001');
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /revoked virtual key \d+ \(cu…\)/);
    assert.equal((await check('server=rm.example.com;key=cust-0001;remote_ip=192.168.1.20')).status, 404);
  });

  it('manages pools, leases, client keys and a virtual key\'s seats', async () => {
    const created = await cli('pool', 'create', 'cli-pool', '--seats', '2', '--ttl', '30', '--heartbeat', '5', '--anonymous');
    assert.deepEqual([created.code, created.stdout], [0, 'created pool cli-pool (2 seats)\n'], created.stderr);
    const lease = await fetch(`${fx.server.url}/v1/leases`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ pool: 'cli-pool', clientId: 'ws-1' }) });
    const { leaseId } = (await lease.json()) as { leaseId: string };
    const listed = await cli('pool', 'list');
    assert.match(listed.stdout, /^name\s+seats\s+inUse.*\ncli-pool\s+2\s+1\s+30\s+3600\s+5\s+false\s+true\n/);
    const leases = await cli('lease', 'list', 'cli-pool', '--json');
    assert.equal((JSON.parse(leases.stdout) as { leaseId: string }[])[0]!.leaseId, leaseId);
    assert.equal((await cli('pool', 'delete', 'cli-pool')).code, 1, 'refused while a lease is live');
    assert.equal((await cli('lease', 'release', leaseId)).code, 0);
    const events = await cli('lease', 'events', '--lease', leaseId, '--json');
    assert.deepEqual((JSON.parse(events.stdout) as { type: string }[]).map((e) => e.type), ['released', 'acquired']);
    const updated = await cli('pool', 'update', 'cli-pool', '--seats', '3', '--signed', '--no-anonymous');
    assert.equal(updated.code, 0, updated.stderr);
    assert.match((await cli('pool', 'show', 'cli-pool', '--json')).stdout, /"seats": 3,[\s\S]*"requireSignedRequests": true/);
    const nothing = await cli('pool', 'update', 'cli-pool');
    assert.deepEqual([nothing.code, nothing.stderr.split('\n').length], [1, 2]);
    assert.equal((await cli('pool', 'delete', 'cli-pool')).code, 0);

    const keyFile = join(fx.dir, 'client.asc');
    const { generateKey } = await import('openpgp');
    writeFileSync(keyFile, (await generateKey({ userIDs: [{ name: 'cli' }], format: 'armored' })).publicKey);
    const added = await cli('client-key', 'add', 'ws-1', keyFile);
    assert.match(added.stdout, /^[0-9a-f]{40,64}\n$/, added.stderr);
    assert.match((await cli('client-key', 'list', '--client-id', 'ws-1')).stdout, /ws-1\s+[0-9a-f]{40}/);
    assert.equal((await cli('client-key', 'delete', added.stdout.trim())).code, 0);
    assert.match((await cli('client-key', 'add', 'ws-1', join(fx.dir, 'missing.asc'))).stderr, /^entgate: cannot read .*missing\.asc: ENOENT\n$/);

    const ent = await cli('entitlement', 'add', '--server', 'rm.example.com', '--key', 'realkey-leases');
    const vk = await cli('vkey', 'add', '--entitlement', ent.stdout.trim(), '--key', 'cust-seats', '--max-leases', '2', '--json');
    assert.equal(JSON.parse(vk.stdout).maxConcurrentLeases, 2);
    assert.match((await cli('vkey', 'leases', 'cust-seats', '--max', '5')).stdout, /: 5 concurrent leases\n$/);
    assert.match((await cli('vkey', 'leases', 'cust-seats', '--none')).stdout, /: no leases\n$/);
    assert.equal((await cli('vkey', 'leases', 'cust-seats')).code, 1);
  });

  it('shows the audit trail, exports it as NDJSON, and follows new events', async () => {
    const ent = await cli('entitlement', 'add', '--server', 'audit.example.com', '--key', 'realkey-audit');
    await cli('vkey', 'add', '--entitlement', ent.stdout.trim(), '--key', 'cust-audit-0001');
    await check('server=audit.example.com;key=cust-audit-0001');
    await check('server=audit.example.com;key=nobody-at-all');
    let table = '';
    for (let i = 0; i < 50 && !table.includes('unknown_key'); i++) {
      await new Promise((r) => setTimeout(r, 50));
      table = (await cli('audit', '--server', 'audit.example.com')).stdout;
    }
    assert.match(table, /^id\s+occurredAt\s+decision\s+reason\s+server\s+keyHint/);
    assert.match(table, /denied\s+unknown_key\s+audit\.example\.com\s+nobo…/);
    assert.match(table, /granted\s+-\s+audit\.example\.com\s+cust…/);
    const exported = await cli('audit', 'export', '--server', 'audit.example.com');
    const lines = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: number; decision: string });
    assert.deepEqual(lines.map((l) => l.decision), ['granted', 'denied'], 'oldest first');

    const follow = spawn(process.execPath, [ENTGATE_BIN, 'audit', '--follow', '--json', '--server', 'audit.example.com', '--limit', '1'], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '', ...fx.env },
    });
    let out = '';
    let err = '';
    follow.stdout.on('data', (d: Buffer) => (out += d.toString()));
    follow.stderr.on('data', (d: Buffer) => (err += d.toString()));
    for (let i = 0; i < 200 && !out.includes('"keyHint":"nobo'); i++) await new Promise((r) => setTimeout(r, 50)); // it has started
    await check('server=audit.example.com;key=late-arrival-0001');
    for (let i = 0; i < 100 && !out.includes('"keyHint":"late'); i++) await new Promise((r) => setTimeout(r, 50));
    follow.kill('SIGINT');
    const code = await new Promise<number | null>((r) => follow.once('exit', (c) => r(c)));
    assert.equal(code, 0);
    const followed = out.trim().split('\n').map((l) => JSON.parse(l) as { keyHint: string });
    assert.deepEqual(followed.map((e) => e.keyHint), ['nobo…', 'late…'], err);
  });

  it('prints JSON records with --json and shows a generated key once', async () => {
    const ent = await cli('entitlement', 'add', '--server', '*', '--key', 'realkey-2', '--json');
    assert.equal(ent.code, 0, ent.stderr);
    const entitlement = JSON.parse(ent.stdout);
    assert.equal(entitlement.key, 'realkey-2');
    assert.equal(typeof entitlement.id, 'number');

    const plain = await cli('vkey', 'add', '--entitlement', String(entitlement.id));
    assert.equal(plain.code, 0, plain.stderr);
    const [idLine, keyLine] = plain.stdout.trim().split('\n');
    assert.match(idLine!, /^\d+$/);
    const key = /^virtual key \(shown once\): ([A-Za-z0-9_-]+)$/.exec(keyLine!)?.[1];
    assert.ok(key);
    assert.equal((await check(`server=any.host;key=${key}`)).status, 200);

    const listed = await cli('vkey', 'list', '--entitlement', String(entitlement.id), '--json');
    const keys = JSON.parse(listed.stdout) as { id: number; hint: string; key?: string }[];
    assert.equal(keys.length, 1);
    assert.equal(keys[0]!.key, undefined);
    assert.ok(!listed.stdout.includes(key!));

    const table = await cli('entitlement', 'list');
    assert.match(table.stdout, /^id\s+server\s+class\s+key\s+description\n/);
    assert.match(table.stdout, /realkey-2/);
  });

  it('suspends and resumes by id', async () => {
    const ent = JSON.parse((await cli('entitlement', 'add', '--server', '*', '--key', 'realkey-3', '--json')).stdout);
    const vk = JSON.parse((await cli('vkey', 'add', '--entitlement', String(ent.id), '--key', 'susp-1', '--json')).stdout);
    assert.equal((await cli('vkey', 'suspend', '--id', String(vk.id))).code, 0);
    assert.equal((await check('server=h;key=susp-1')).status, 404);
    assert.equal((await cli('vkey', 'resume', 'susp-1')).code, 0);
    assert.equal((await check('server=h;key=susp-1')).status, 200);
  });

  it('imports a CSV file all or nothing, naming the bad line', async () => {
    const ent = JSON.parse((await cli('entitlement', 'add', '--server', '*', '--key', 'realkey-4', '--json')).stdout);
    const good = join(fx.dir, 'good.csv');
    const bad = join(fx.dir, 'bad.csv');
    writeFileSync(good, `key,entitlement_id,customer_ref\ncsv-1,${ent.id},A\ncsv-2,${ent.id},B\n`);
    writeFileSync(bad, `key,entitlement_id\ncsv-3,${ent.id}\ncsv-4,${ent.id}\ncsv-3,${ent.id}\n`);

    const failed = await cli('vkey', 'import', bad);
    assert.notEqual(failed.code, 0);
    assert.equal(failed.stderr.trim().split('\n').length, 1);
    assert.match(failed.stderr, /^entgate: line 4: key: the same key is on line 2/);
    assert.equal((await check('server=h;key=csv-3')).status, 404);

    const done = await cli('vkey', 'import', good);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(done.stdout, 'imported 2 virtual keys\n');
    assert.equal((await check('server=h;key=csv-2')).status, 200);

    const missing = await cli('vkey', 'import', join(fx.dir, 'nope.csv'));
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /^entgate: cannot read .*nope\.csv: ENOENT\n$/);
  });

  it('imports a large CSV file with progress on stderr, and refuses one with a bad last row writing nothing', async () => {
    const ent = JSON.parse((await cli('entitlement', 'add', '--server', '*', '--key', 'realkey-5', '--json')).stdout);
    const rows = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i},${ent.id}`);
    const bad = join(fx.dir, 'large-bad.csv');
    writeFileSync(bad, ['key,entitlement_id', ...rows(20_500, 'lb'), `lb-last,${ent.id},extra`].join('\n'));
    const failed = await cli('vkey', 'import', bad);
    assert.notEqual(failed.code, 0);
    const failedLines = failed.stderr.trim().split('\n');
    // Both counts go up together (rows are written in batches as they are read).
    assert.deepEqual(failedLines.slice(0, -1).sort(), ['validated 10000 rows', 'validated 20000 rows', 'written 10000 rows', 'written 20000 rows']);
    assert.match(failedLines.at(-1)!, /^entgate: line 20502: not valid CSV: /);
    assert.equal((await check('server=h;key=lb-0')).status, 404);

    const good = join(fx.dir, 'large-good.csv');
    writeFileSync(good, ['key,entitlement_id', ...rows(20_500, 'lg')].join('\n'));
    const done = await cli('vkey', 'import', good, '--json');
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(done.stderr.trim().split('\n').sort(), ['validated 10000 rows', 'validated 20000 rows', 'written 10000 rows', 'written 20000 rows']);
    const result = JSON.parse(done.stdout);
    assert.equal(result.imported, 20_500);
    assert.equal(result.ids, undefined, 'more than 10,000 ids are given as ranges only');
    assert.equal(result.idRanges.reduce((n: number, [a, b]: [number, number]) => n + b - a + 1, 0), 20_500);
    assert.equal((await check('server=h;key=lg-20499')).status, 200);
  });

  it('fails with a non-zero exit and one line on stderr for bad input', async () => {
    for (const args of [
      ['entitlement', 'add', '--server', 'rm.example.com', '--key', 'bad&key'],
      ['entitlement', 'add', '--server', 'not a host', '--key', 'k'],
      ['vkey', 'add', '--entitlement', 'abc'],
      ['vkey', 'add', '--entitlement', '999999', '--key', 'x'],
      ['vkey', 'add', '--entitlement', '1', '--key', 'x', '--expires', 'soon'],
      ['vkey', 'add', '--entitlement', '1', '--key', 'x', '--no-retry'],
      ['vkey', 'add', '--entitlement', '1', '--key', 'x', '--no-retry', '--cache-timeout', '0'],
      ['vkey', 'revoke', 'no-such-key'],
      ['vkey', 'revoke'],
      ['entitlement', 'frobnicate'],
    ]) {
      const res = await cli(...args);
      assert.notEqual(res.code, 0, args.join(' '));
      assert.equal(res.stderr.trim().split('\n').length, 1, `${args.join(' ')}: ${res.stderr}`);
      assert.equal(res.stdout, '', args.join(' '));
    }
  });

  it('mints and verifies software entitlement tokens as `entgate ses-token`, and keeps `entgate token` working with a deprecation line', async () => {
    const DEPRECATED = "entgate: 'token' is deprecated; use 'entgate ses-token'\n";
    const help = await cli('--help');
    assert.match(help.stdout, /^  ses-token /m);
    assert.doesNotMatch(help.stdout, /^  token /m, 'the deprecated spelling is hidden from the help');
    const keys = join(fx.dir, 'ses-keys');
    const generated = await runCli(['keys', 'generate', keys], {});
    assert.equal(generated.code, 0, generated.stderr);
    assert.match(generated.stdout, /\(ses-token mint --sign\)/);
    const mintArgs = ['--application-id', 'contosoapp,fabrikam', '--address', '127.0.0.1', '--sign', join(keys, 'signing-key.pem'), '--encrypt', join(keys, 'encryption-cert.pem')];
    const verifyArgs = ['--address', '127.0.0.1', '--signing-key', join(keys, 'signing-cert.pem'), '--decryption-key', join(keys, 'encryption-key.pem')];

    const minted = await runCli(['ses-token', 'mint', ...mintArgs], {});
    assert.deepEqual([minted.code, minted.stderr], [0, '']);
    assert.match(minted.stdout, /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}\n$/, 'one encrypted JWT (JWE compact: five parts)');
    const sesToken = minted.stdout.trim();
    const verified = await runCli(['ses-token', 'verify', sesToken, '--application-id', 'fabrikam', ...verifyArgs], {});
    assert.deepEqual([verified.code, verified.stderr], [0, '']);
    assert.match(verified.stdout, /^entitled: token token-[0-9a-f-]{36} grants fabrikam from 127\.0\.0\.1 until /);
    const denied = await runCli(['ses-token', 'verify', sesToken, '--application-id', 'other', ...verifyArgs], {});
    assert.deepEqual([denied.code, denied.stdout, denied.stderr], [3, 'denied: the token does not name application other\n', '']);
    const file = join(fx.dir, 'ses-token.jwt');
    assert.deepEqual((await runCli(['ses-token', 'mint', ...mintArgs, '--token-file', file], {})).stdout, '');
    assert.equal((await runCli(['ses-token', 'verify', '--token-file', file, '--application-id', 'contosoapp', ...verifyArgs], {})).code, 0);
    assert.equal((await runCli(['ses-token', 'generate', ...mintArgs], {})).code, 2, '`generate` is the deprecated group\'s name only');

    // The deprecated spelling: the same answers on stdout, the same exit codes, one line more on stderr.
    const old = await runCli(['token', 'generate', ...mintArgs], {});
    assert.deepEqual([old.code, old.stderr], [0, DEPRECATED]);
    assert.match(old.stdout, /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}\n$/);
    const oldVerified = await runCli(['token', 'verify', old.stdout.trim(), '--application-id', 'fabrikam', ...verifyArgs], {});
    assert.deepEqual([oldVerified.code, oldVerified.stderr], [0, DEPRECATED]);
    assert.match(oldVerified.stdout, /^entitled: token token-[0-9a-f-]{36} grants fabrikam from 127\.0\.0\.1 until /);
    const oldDenied = await runCli(['token', 'verify', sesToken, '--application-id', 'other', ...verifyArgs], {});
    assert.deepEqual([oldDenied.code, oldDenied.stdout, oldDenied.stderr], [3, denied.stdout, DEPRECATED]);
  });

  it('reports a wrong token or an unreachable server clearly', async () => {
    const wrong = await runCli(['entitlement', 'list'], { ENTGATE_URL: fx.server.url, ENTGATE_ADMIN_TOKEN: 'not-the-right-token' });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /^entgate: a valid API credential is required \(unauthorized\)\n$/);
    const down = await runCli(['entitlement', 'list'], { ...fx.env, ENTGATE_URL: 'http://127.0.0.1:9' });
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /^entgate: cannot reach entgate at http:\/\/127\.0\.0\.1:9: ECONNREFUSED\n$/);
  });
});
