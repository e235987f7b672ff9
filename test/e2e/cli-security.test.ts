import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cliServerFixture, runCli } from '../helpers/process.ts';

/** The CLI's credential (and deprecated admin-token), audit admin and blocks commands against `entgate serve` as a real process. */
describe('entgate CLI: admin tokens and guessing blocks', () => {
  const fx = cliServerFixture();
  const { cli, check } = fx;

  it('creates scoped admin tokens, uses them, turns the bootstrap token off and back on, and shows the admin audit', async () => {
    const made = await cli('admin-token', 'create', 'cli-reader', '--scope', 'read', '--expires', '30d');
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /^egt_[A-Za-z0-9_-]{43}\n$/);
    assert.match(made.stderr, /'cli-reader' \(read, expires 20\d\d-/);
    const reader = { ...fx.env, ENTGATE_ADMIN_TOKEN: made.stdout.trim() };
    const who = await runCli(['admin-token', 'whoami'], reader);
    assert.deepEqual([who.code, who.stdout], [0, 'cli-reader: read\n'], who.stderr);
    assert.equal((await runCli(['entitlement', 'list'], reader)).code, 0);
    const refused = await runCli(['entitlement', 'add', '--server', 'x.example.com', '--key', 'k'], reader);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^entgate: this credential may not do that: it needs one of the scopes write \(insufficient_scope\)\n$/);

    const admin = (await cli('admin-token', 'create', 'cli-admin', '--scope', 'admin')).stdout.trim();
    const asAdmin = { ...fx.env, ENTGATE_ADMIN_TOKEN: admin };
    assert.deepEqual((await runCli(['admin-token', 'bootstrap', '--disable'], asAdmin)).stdout, 'bootstrap token: disabled\n');
    const off = await cli('entitlement', 'list');
    assert.equal(off.code, 1);
    assert.match(off.stderr, /bootstrap_token_disabled/);
    assert.deepEqual((await runCli(['admin-token', 'bootstrap', '--enable'], asAdmin)).stdout, 'bootstrap token: enabled\n');

    const listed = await cli('admin-token', 'list', '--json');
    const names = (JSON.parse(listed.stdout) as { name: string; token?: string }[]).map((t) => [t.name, t.token]);
    assert.deepEqual(names, [['cli-reader', undefined], ['cli-admin', undefined]]);
    assert.equal((await cli('admin-token', 'revoke', 'cli-reader')).code, 0);
    assert.equal((await runCli(['entitlement', 'list'], reader)).code, 1);
    const bad = await cli('admin-token', 'create', 'x', '--scope', 'read', '--expires', 'tomorrow');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^entgate: --expires takes a date/);

    const events = await cli('audit', 'admin', '--actor', 'cli-admin', '--json');
    assert.equal(events.code, 0, events.stderr);
    assert.deepEqual(
      (JSON.parse(events.stdout) as { method: string; route: string; status: number }[]).map((e) => [e.method, e.route, e.status]),
      [
        ['PUT', '/admin/v1/bootstrap-token', 200],
        ['PUT', '/admin/v1/bootstrap-token', 200],
      ],
    );
  });

  it('manages API credentials as `entgate credential`, and keeps `entgate admin-token` working with a deprecation line', async () => {
    const DEPRECATED = "entgate: 'admin-token' is deprecated; use 'entgate credential'\n";
    const help = await cli('--help');
    assert.match(help.stdout, /^  credential /m);
    assert.doesNotMatch(help.stdout, /admin-token/, 'the deprecated spelling is hidden from the help');

    const made = await cli('credential', 'create', 'cred-reader', '--scope', 'read', 'leases');
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /^egt_[A-Za-z0-9_-]{43}\n$/);
    assert.match(made.stderr, /^credential \d+ 'cred-reader' \(read, leases\): shown once, store it now\n$/);
    const reader = { ...fx.env, ENTGATE_ADMIN_TOKEN: made.stdout.trim() };
    const who = await runCli(['credential', 'whoami'], reader);
    assert.deepEqual([who.code, who.stdout, who.stderr], [0, 'cred-reader: read, leases\n', '']);
    assert.equal((await runCli(['entitlement', 'list'], reader)).code, 0);

    const listed = await cli('credential', 'list');
    assert.deepEqual([listed.code, listed.stderr], [0, '']);
    assert.match(listed.stdout, /^id\s+name\s+scopes\s+hint\s+createdBy/);
    assert.match(listed.stdout, /\n\d+\s+cred-reader\s+read leases\s+egt_/);
    const json = await cli('credential', 'list', '--json');
    const row = (JSON.parse(json.stdout) as { name: string; token?: string }[]).find((c) => c.name === 'cred-reader');
    assert.ok(row);
    assert.equal(row.token, undefined, 'never the credential itself');
    assert.deepEqual((await cli('credential', 'bootstrap')).stdout, 'bootstrap credential: enabled\n');

    // The deprecated spelling: the same answer on stdout, the same exit code, one line more on stderr.
    const old = await cli('admin-token', 'list');
    assert.deepEqual([old.code, old.stdout, old.stderr], [0, listed.stdout, DEPRECATED]);
    const oldJson = await cli('admin-token', 'list', '--json');
    assert.deepEqual([oldJson.code, oldJson.stdout, oldJson.stderr], [0, json.stdout, DEPRECATED]);
    const oldWho = await runCli(['admin-token', 'whoami'], reader);
    assert.deepEqual([oldWho.code, oldWho.stdout, oldWho.stderr], [0, 'cred-reader: read, leases\n', DEPRECATED]);
    const oldBootstrap = await cli('admin-token', 'bootstrap');
    assert.deepEqual([oldBootstrap.code, oldBootstrap.stdout, oldBootstrap.stderr], [0, 'bootstrap token: enabled\n', DEPRECATED]);
    const usage = await cli('admin-token', 'create', 'no-scope');
    assert.equal(usage.code, 2, 'a usage error exits 2, as before');
    assert.equal(usage.stdout, '');
    assert.equal(usage.stderr, `error: required option '--scope <scope...>' not specified\n${DEPRECATED}`);

    const revoked = await cli('credential', 'revoke', 'cred-reader');
    assert.deepEqual([revoked.code, revoked.stdout, revoked.stderr], [0, '', '']);
    const refused = await runCli(['entitlement', 'list'], reader);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^entgate: a valid API credential is required \(unauthorized\)\n$/);
    const again = await cli('credential', 'revoke', 'cred-reader');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^entgate: live credential cred-reader not found \(not_found\)\n$/);
    const all = JSON.parse((await cli('credential', 'list', '--all', '--json')).stdout) as { name: string; revokedAt: string | null }[];
    assert.ok(all.some((c) => c.name === 'cred-reader' && c.revokedAt !== null));
  });

  it('lists and clears a guessing block', async () => {
    const ent = (await cli('entitlement', 'add', '--server', 'blocks.example.com', '--key', 'real-blocks')).stdout.trim();
    assert.equal((await cli('vkey', 'add', '--entitlement', ent, '--key', 'blocks-good-key')).code, 0);
    for (let i = 0; i < 30; i++) assert.equal((await check(`server=blocks.example.com;key=guess-${i};remote_ip=198.51.100.66`)).status, 404);
    assert.equal((await check('server=blocks.example.com;key=blocks-good-key;remote_ip=198.51.100.66')).status, 404);
    let listed: { subject: string; failures: number }[] = [];
    for (let i = 0; i < 50 && !listed.some((b) => b.subject === '198.51.100.66'); i++) {
      const out = await cli('blocks', 'list', '--json');
      assert.equal(out.code, 0, out.stderr);
      listed = JSON.parse(out.stdout);
      if (!listed.some((b) => b.subject === '198.51.100.66')) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(listed.find((b) => b.subject === '198.51.100.66')?.failures, 30);
    const cleared = await cli('blocks', 'clear', '198.51.100.66');
    assert.deepEqual([cleared.code, cleared.stdout], [0, 'cleared 198.51.100.66\n'], cleared.stderr);
    assert.equal((await check('server=blocks.example.com;key=blocks-good-key;remote_ip=198.51.100.66')).status, 200);
    const again = await cli('blocks', 'clear', '198.51.100.66');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^entgate: guessing budget of 198\.51\.100\.66 not found \(not_found\)\n$/);
  });
});
