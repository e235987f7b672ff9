import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { issueLicence } from '../../src/domain/licence.ts';
import { runCli, startServerProcess, type CliResult, type ServerProcess } from '../helpers/process.ts';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN, AUTH } from '../helpers/service.ts';

/** The one line a refusal writes on stderr (and nothing on stdout unless asked for JSON). */
function refusedWith(res: CliResult, code: number, line: RegExp): void {
  assert.equal(res.code, code, res.stderr);
  assert.equal(res.stderr.split('\n').length, 2, `one line: ${res.stderr}`);
  assert.match(res.stderr, line);
}

const DAY = 86_400_000;

/** The vendor's side, offline: keys, issue, verify. */
describe('entgate licence, offline', () => {
  let dir = '';
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const cli = (...args: string[]) => runCli(args, {}, undefined, dir);

  it('keys generate --licensing writes an Ed25519 or a P-256 pair, private 0600, says what each is for, and never overwrites', async () => {
    const made = await cli('keys', 'generate', '--licensing', 'vendor');
    assert.deepEqual([made.code, made.stderr], [0, '']);
    assert.match(made.stdout, /^licence signing key \(secret\): vendor\/licensing-private\.pem \(licence issue --signing-key\)\n/);
    assert.match(made.stdout, /licensing-public\.pem \(ENTGATE_LICENCE_PUBLIC_KEYS .*licence verify --public-key\)\n/);
    assert.match(made.stdout, /key id \(kid\): +[A-Za-z0-9_-]{43} \(Ed25519, EdDSA\)\n$/);
    const [priv, pub] = [join(dir, 'vendor/licensing-private.pem'), join(dir, 'vendor/licensing-public.pem')];
    assert.equal(statSync(priv).mode & 0o777, 0o600);
    assert.match(readFileSync(priv, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    assert.match(readFileSync(pub, 'utf8'), /^-----BEGIN PUBLIC KEY-----\n/);
    assert.equal(createPrivateKey(readFileSync(priv)).asymmetricKeyType, 'ed25519');
    const before = readFileSync(priv, 'utf8');

    refusedWith(await cli('keys', 'generate', '--licensing', 'vendor'), 1, /^entgate: vendor\/licensing-private\.pem and vendor\/licensing-public\.pem exist already: not overwritten/);
    assert.equal(readFileSync(priv, 'utf8'), before);
    refusedWith(await cli('keys', 'generate', 'ses', '--licensing', 'vendor2'), 2, /^entgate: give either <dir> .* or --licensing <dir>/);

    const p256 = await cli('keys', 'generate', '--licensing', 'vendor-ec', '--algorithm', 'ES256');
    assert.equal(p256.code, 0, p256.stderr);
    assert.match(p256.stdout, /\(P-256, ES256\)\n$/);
    assert.equal(createPrivateKey(readFileSync(join(dir, 'vendor-ec/licensing-private.pem'))).asymmetricKeyDetails?.namedCurve, 'prime256v1');
  });

  it('issue signs a licence that verify accepts (text, JSON, from standard input, with several keys), and verify refuses a tampered, expired or foreign one with exit 3 and one line', async () => {
    const issued = await cli(
      'licence', 'issue', '--tenant', 'acme', '--feature', 'reports', '--feature', 'export',
      '--capacity', 'assigned:users=50', '--capacity', 'feature:reports=5', '--capacity', 'concurrent:calls=10',
      '--not-before', '2026-01-01', '--expires', '2099-12-31', '--id', 'lic-e2e-1', '--installation', 'inst-1',
      '--signing-key', 'vendor/licensing-private.pem',
    );
    assert.deepEqual([issued.code, issued.stderr], [0, '']);
    assert.match(issued.stdout, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/);
    writeFileSync(join(dir, 'lic.jwt'), issued.stdout);

    const verified = await cli('licence', 'verify', 'lic.jwt', '--public-key', 'vendor/licensing-public.pem');
    assert.deepEqual([verified.code, verified.stderr], [0, '']);
    assert.match(
      verified.stdout,
      new RegExp(
        '^valid licence lic-e2e-1, signed by key [A-Za-z0-9_-]{43}\\n' +
          'tenant +acme\\nfeatures +reports, export\\ncapacities +assigned:users=50, feature:reports=5, concurrent:calls=10\\n' +
          'valid +from 2026-01-01T00:00:00.000Z until 2099-12-31T23:59:59.000Z\\nbound to +inst-1\\nissued +\\S+Z\\n$',
      ),
    );

    // The US spelling, a P-256 key issuing to a file, and verify trusting both vendor keys.
    const ec = await cli('license', 'issue', '--tenant', 'globex', '--expires', '2099-01-01T12:00:00+02:00', '--signing-key', 'vendor-ec/licensing-private.pem', '--out', 'ec.jwt');
    assert.deepEqual([ec.code, ec.stderr], [0, '']);
    assert.match(ec.stdout, /^licence [0-9a-f-]{36} for tenant globex, valid from \S+ until 2099-01-01T10:00:00\.000Z: ec\.jwt\n$/);
    const both = await runCli(['licence', 'verify', '-', '--json', '--public-key', 'vendor/licensing-public.pem', '--public-key', 'vendor-ec/licensing-public.pem'], {}, readFileSync(join(dir, 'ec.jwt'), 'utf8'), dir);
    assert.deepEqual([both.code, both.stderr], [0, '']);
    const json = JSON.parse(both.stdout) as Record<string, unknown>;
    assert.deepEqual({ ...json, licenceId: '', issuedAt: '', notBefore: '', keyId: '' }, {
      valid: true,
      licenceId: '',
      tenant: 'globex',
      features: [],
      capacities: {},
      issuedAt: '',
      notBefore: '',
      expiresAt: '2099-01-01T10:00:00.000Z',
      installation: null,
      keyId: '',
    });
    assert.match(String(json.keyId), /^[A-Za-z0-9_-]{43}$/);

    // Tampered: one claim changed, the signature kept.
    const [h, p, s] = issued.stdout.trim().split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as { capacities: Record<string, number> };
    claims.capacities['assigned:users'] = 5000;
    writeFileSync(join(dir, 'tampered.jwt'), `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`);
    const tampered = await cli('licence', 'verify', 'tampered.jwt', '--public-key', 'vendor/licensing-public.pem');
    refusedWith(tampered, 3, /^entgate: licence invalid: its signature does not verify with any trusted vendor key \(licence_signature_invalid\)\n$/);
    assert.equal(tampered.stdout, '');

    const vendor = createPrivateKey(readFileSync(join(dir, 'vendor/licensing-private.pem')));
    writeFileSync(join(dir, 'old.jwt'), await issueLicence({ tenant: 'acme', notBefore: new Date(Date.now() - 30 * DAY), expiresAt: new Date(Date.now() - DAY) }, vendor));
    const expired = await cli('licence', 'verify', 'old.jwt', '--json', '--public-key', 'vendor/licensing-public.pem');
    refusedWith(expired, 3, /^entgate: licence invalid: it expired at \S+Z \(licence_expired\)\n$/);
    assert.deepEqual(Object.keys(JSON.parse(expired.stdout) as object), ['valid', 'code', 'reason']);
    assert.equal((JSON.parse(expired.stdout) as { code: string }).code, 'licence_expired');

  });

  // Each option's parsing is tested in-process (test/unit/cli/licence-options.test.ts); here, that a refusal is one line and an exit.
  it('issue refuses a wrong capacity, a limit on a feature not granted, or a key of another type, with one line', async () => {
    const issue = (...args: string[]) => cli('licence', 'issue', '--tenant', 'acme', '--signing-key', 'vendor/licensing-private.pem', ...args);
    refusedWith(await issue('--expires', '2099-01-01', '--capacity', 'seats:5'), 2, /^entgate: --capacity 'seats:5': give <name>=<limit>/);
    refusedWith(await issue('--expires', '2099-01-01', '--capacity', 'feature:x=3'), 2, /^entgate: capacity 'feature:x' limits feature 'x', which the licence does not grant\n$/);
    writeFileSync(join(dir, 'rsa.pem'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    refusedWith(await cli('licence', 'issue', '--tenant', 'acme', '--expires', '2099-01-01', '--signing-key', 'rsa.pem'), 1, /^entgate: --signing-key: rsa\.pem: a licence is signed with an Ed25519 or a P-256 key/);
  });
});

/** The installation's side: install and show through the admin API of a running server. */
describe('entgate licence against a running server', () => {
  // PostgreSQL when the suite has it (what installations run), else the embedded database.
  const target = databaseTargets.at(-1)!;
  let dir = '';
  let db: TestDatabase | undefined;
  let server: ServerProcess | undefined;
  let vendor: ReturnType<typeof generateKeyPairSync>['privateKey'];
  let env: Record<string, string> = {};
  before(async () => {
    dir = tempDir();
    const pair = generateKeyPairSync('ed25519');
    vendor = pair.privateKey;
    writeFileSync(join(dir, 'vendor-public.pem'), pair.publicKey.export({ type: 'spki', format: 'pem' }));
    db = await target.create();
    server = await startServerProcess({ ...db.env, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN, ENTGATE_LICENCE_PUBLIC_KEYS: join(dir, 'vendor-public.pem') });
    env = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
  });
  after(async () => {
    await server?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });
  const cli = (...args: string[]) => runCli(args, env, undefined, dir);
  const claims = (method: 'POST' | 'DELETE', id: string) =>
    fetch(`${server!.url}/v1/capacities/assigned:users/claims${method === 'DELETE' ? `/${id}` : ''}`, {
      method,
      headers: { ...AUTH, 'Content-Type': 'application/json' },
      ...(method === 'POST' && { body: JSON.stringify({ id }) }),
    });

  it(`installs a licence bound to the installation, shows it with its use and history, and refuses one below what is in use (${target.name})`, async () => {
    const empty = await cli('licence', 'show');
    assert.equal(empty.code, 0, empty.stderr);
    const installation = /^installation +([0-9a-f-]{36})\nno licence is installed\n$/.exec(empty.stdout)?.[1];
    assert.ok(installation, empty.stdout);

    const big = { id: 'lic-big', tenant: 'acme', features: ['reports'], capacities: { 'assigned:users': 5 }, expiresAt: new Date(Date.now() + 30 * DAY), installation };
    writeFileSync(join(dir, 'big.jwt'), `${await issueLicence(big, vendor)}\n`);
    const installed = await cli('licence', 'install', 'big.jwt');
    assert.deepEqual([installed.code, installed.stdout, installed.stderr], [0, 'installed licence lic-big for tenant acme (seq 1)\n', '']);
    const again = await runCli(['licence', 'install', '-', '--json'], env, readFileSync(join(dir, 'big.jwt'), 'utf8'), dir);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as { installed: boolean; current: { seq: number } }).installed, false);

    for (const user of ['u1', 'u2']) assert.equal((await claims('POST', user)).status, 201);
    const shown = await cli('licence', 'show');
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`^installation +${installation}\\nlicence +lic-big \\(seq 1\\): valid\\ntenant +acme\\n`));
    assert.match(shown.stdout, new RegExp(`\\nbound to +${installation}\\n`));
    assert.match(shown.stdout, /\ninstalled +\S+Z by bootstrap\n/);
    assert.match(shown.stdout, /\ncapacity +kind +inUse\/limit\nassigned:users +assigned +2\/5\nfeature:reports +feature +0\/unlimited\n/);
    assert.match(shown.stdout, /\nhistory, newest first\nseq +licenceId +tenant +status .*\n1 +lic-big +acme +valid /);

    // Fewer users than are active: refused, naming the capacity, its use and its new limit.
    writeFileSync(join(dir, 'small.jwt'), await issueLicence({ id: 'lic-small', tenant: 'acme', capacities: { 'assigned:users': 1 }, expiresAt: new Date(Date.now() + 30 * DAY) }, vendor));
    const below = await cli('licence', 'install', 'small.jwt');
    refusedWith(below, 1, /^entgate: licence refused: more is in use than it allows \(assigned:users: 2 in use, new limit 1\); release some first \(licence_below_usage\)\n$/);
    assert.equal(below.stdout, '');

    assert.equal((await claims('DELETE', 'u2')).status, 204);
    assert.equal((await cli('licence', 'install', 'small.jwt')).stdout, 'installed licence lic-small for tenant acme (seq 2)\n');
    const json = await cli('licence', 'show', '--json');
    assert.equal(json.code, 0, json.stderr);
    const state = JSON.parse(json.stdout) as {
      installation: { id: string };
      current: { licenceId: string; seq: number; status: string; token: string };
      capacities: { name: string; limit: number | null; inUse: number }[];
      history: { licenceId: string; seq: number }[];
    };
    assert.equal(state.installation.id, installation);
    assert.deepEqual([state.current.licenceId, state.current.seq, state.current.status], ['lic-small', 2, 'valid']);
    assert.equal(state.current.token, readFileSync(join(dir, 'small.jwt'), 'utf8').trim());
    assert.deepEqual(state.capacities.map((c) => [c.name, c.inUse, c.limit]), [['assigned:users', 1, 1]]);
    assert.deepEqual(state.history.map((h) => [h.seq, h.licenceId]), [[2, 'lic-small'], [1, 'lic-big']]);
  });
});
