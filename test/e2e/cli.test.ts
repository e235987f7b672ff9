import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { runCli, startServerProcess, type ServerProcess } from '../helpers/process.ts';

/** The `entgate` CLI as an admin uses it, against `entgate serve` running as a real process. */
describe('entgate CLI against a running server', () => {
  let dir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  const cli = async (...args: string[]) => runCli(args, env);
  const check = async (query: string) => fetch(`${server.url}/?${query}`);

  before(async () => {
    dir = tempDir();
    server = await startServerProcess({ DATA_DIR: join(dir, 'data'), ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    env = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('maps keys end to end: entitlement add, vkey add, check, revoke', async () => {
    const ent = await cli('entitlement', 'add', '--server', 'rm.example.com', '--key', 'realkey-1', '--class', 'myProduct');
    assert.equal(ent.code, 0, ent.stderr);
    assert.match(ent.stdout, /^\d+\n$/);
    const entId = ent.stdout.trim();

    const vk = await cli('vkey', 'add', '--entitlement', entId, '--key', 'cust-0001', '--cache-timeout', '600', '--no-retry', '--allow-ip', '10.0.0.0/8', '--allow-ip', '192.168.1.0/24', '--customer', 'ACME');
    assert.equal(vk.code, 0, vk.stderr);
    assert.match(vk.stdout, /^\d+\n$/);

    const granted = await check('server=rm.example.com;class=myProduct;key=cust-0001;remote_ip=192.168.1.20');
    assert.equal(granted.status, 200);
    assert.match(await granted.text(), /<key>realkey-1<\/key><timeout val="600" retry="False"\/>/);
    assert.equal((await check('server=rm.example.com;key=cust-0001;remote_ip=172.16.0.1')).status, 404);

    const revoke = await cli('vkey', 'revoke', 'cust-0001');
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /revoked virtual key \d+ \(cu…\)/);
    assert.equal((await check('server=rm.example.com;key=cust-0001;remote_ip=192.168.1.20')).status, 404);
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
    const good = join(dir, 'good.csv');
    const bad = join(dir, 'bad.csv');
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

    const missing = await cli('vkey', 'import', join(dir, 'nope.csv'));
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /^entgate: cannot read .*nope\.csv: ENOENT\n$/);
  });

  it('fails with a non-zero exit and one line on stderr for bad input', async () => {
    for (const args of [
      ['entitlement', 'add', '--server', 'rm.example.com', '--key', 'bad&key'],
      ['entitlement', 'add', '--server', 'not a host', '--key', 'k'],
      ['vkey', 'add', '--entitlement', 'abc'],
      ['vkey', 'add', '--entitlement', '999999', '--key', 'x'],
      ['vkey', 'add', '--entitlement', '1', '--key', 'x', '--expires', 'soon'],
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

  it('reports a wrong token or an unreachable server clearly', async () => {
    const wrong = await runCli(['entitlement', 'list'], { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: 'not-the-right-token' });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /^entgate: a valid admin bearer token is required \(unauthorized\)\n$/);
    const down = await runCli(['entitlement', 'list'], { ENTGATE_URL: 'http://127.0.0.1:9', ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /^entgate: cannot reach entgate at http:\/\/127\.0\.0\.1:9: ECONNREFUSED\n$/);
  });
});
