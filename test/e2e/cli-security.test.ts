import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cliServerFixture, runCli } from '../helpers/process.ts';

/** The CLI's admin-token, audit admin and blocks commands against `entgate serve` as a real process. */
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
