/**
 * The LicenceClient and the user-service example against `entgate serve` as a real process:
 * the seed's per-user rule end to end, then the client restarted offline from its file once
 * the server is killed.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { tempDir } from '../helpers/databases.ts';
import { REPO_ROOT, startServerProcess, type ServerProcess } from '../helpers/process.ts';
import { ADMIN_TOKEN, AUTH } from '../helpers/service.ts';
import { testVendor, tampered } from '../helpers/vendor.ts';
import { LicenceClient, type LicenceClientOptions } from '../../src/index.ts';

describe('LicenceClient against entgate as a process', () => {
  const dir = tempDir('entgate-licence-e2e-');
  const vendor = testVendor(dir);
  let server: ServerProcess;
  let credential = '';
  let token = '';
  const file = join(dir, 'service', 'licence.jwt');
  const client = (options: Partial<LicenceClientOptions> = {}) =>
    new LicenceClient({ baseUrl: server.url, token: credential, publicKeys: [vendor.publicKeyPem], file, reconnect: { minDelayMs: 60_000 }, ...options });

  before(async () => {
    server = await startServerProcess({ DATA_DIR: join(dir, 'data'), ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN, ...vendor.env });
    token = await vendor.issue({ id: 'lic-e2e', features: ['reports'], capacities: { 'assigned:users': 2 } });
    const installed = await fetch(`${server.url}/admin/v1/licence`, { method: 'PUT', headers: { ...AUTH, 'Content-Type': 'application/jwt' }, body: token });
    assert.equal(installed.status, 201, await installed.text());
    const minted = await fetch(`${server.url}/admin/v1/admin-tokens`, {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'user-service', scopes: ['capacities'] }),
    });
    credential = ((await minted.json()) as { token: string }).token;
  });
  after(async () => {
    await server?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('the user-service example: 3 users against a limit of 2 are 2 active and 1 disabled; a deactivation frees a seat', async () => {
    const example = spawn(process.execPath, ['--import', 'tsx', 'examples/licence-user-service.ts'], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        ENTGATE_URL: server.url,
        ENTGATE_CLIENT_TOKEN: credential,
        ENTGATE_LICENCE_PUBLIC_KEY: vendor.publicKeyFile,
        LICENCE_FILE: join(dir, 'example', 'licence.jwt'),
        PORT: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    example.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => example.once('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the example did not listen in 120 s:\n${stderr}`)), 120_000);
        createInterface({ input: example.stdout! }).on('line', (line) => {
          const m = /listening on (http:\S+)/.exec(line);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        void exited.then((code) => reject(new Error(`the example exited with ${code}:\n${stderr}`)));
      });
      const post = async (path: string, body?: object) => {
        const res = await fetch(`${url}${path}`, { method: 'POST', ...(body && { body: JSON.stringify(body) }) });
        assert.ok(res.status < 300, `${path}: ${res.status}`);
        return (await res.json()) as { id: string; state: string; reason: string | null };
      };
      const created = [];
      for (const id of ['alice', 'bob', 'carol']) created.push(await post('/users', { id, name: id }));
      assert.deepEqual(
        created.map((u) => [u.id, u.state, u.reason]),
        [
          ['alice', 'active', null],
          ['bob', 'active', null],
          ['carol', 'disabled', 'capacity_exceeded'],
        ],
      );
      assert.deepEqual(await (await fetch(`${url}/reports`)).json(), { active: 2, limit: 2 });
      assert.deepEqual((await post('/users/alice/deactivate')).state, 'disabled');
      assert.deepEqual((await post('/users/carol/activate')).state, 'active');
      assert.deepEqual(((await post('/users/alice/activate')) as { reason: string | null }).reason, 'capacity_exceeded');
      // entgate counts what the service holds: bob and carol.
      const claims = await fetch(`${server.url}/admin/v1/licence/capacities/assigned:users/claims`, { headers: AUTH });
      assert.deepEqual(((await claims.json()) as { items: { id: string }[] }).items.map((c) => c.id).sort(), ['bob', 'carol']);
      assert.equal(readFileSync(join(dir, 'example', 'licence.jwt'), 'utf8').trim(), token);
    } finally {
      example.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
  });

  it('restarts offline from its file once the server is gone, and refuses a tampered or foreign file', async () => {
    const online = client();
    assert.equal(await online.start(), 'valid');
    await online.close();
    assert.equal(readFileSync(file, 'utf8').trim(), token);

    await server.stop('SIGKILL');
    const errors: string[] = [];
    const offline = client({ onError: (e) => errors.push(`${(e as { status?: number }).status}:${e.message}`) });
    try {
      assert.equal(await offline.start(), 'valid');
      assert.deepEqual([offline.licence?.id, offline.connected, offline.hasFeature('reports'), offline.hasFeature('export'), offline.limit('assigned:users')], [
        'lic-e2e',
        false,
        true,
        false,
        2,
      ]);
      assert.match(errors[0] ?? '', /^0:cannot reach entgate/);
    } finally {
      await offline.close();
    }

    const other = testVendor(dir, 'someone-else');
    const expired = await vendor.issue({ id: 'old', features: ['reports'], issuedAt: new Date(Date.now() - 7200_000), expiresAt: new Date(Date.now() - 3600_000) });
    for (const [what, content, status, refusal] of [
      ['tampered', tampered(token, (c) => ((c.capacities as Record<string, number>)['assigned:users'] = 500)), 'none', 'licence_signature_invalid'],
      ['signed by another vendor', await other.issue({ id: 'foreign', features: ['reports'] }), 'none', 'licence_signature_invalid'],
      ['garbage', 'not a licence at all', 'none', 'licence_malformed'],
      ['expired, but genuine', expired, 'expired', undefined],
    ] as const) {
      writeFileSync(file, content);
      const invalid: string[] = [];
      const restarted = client();
      restarted.on('invalid', (e) => invalid.push(e.code));
      try {
        assert.equal(await restarted.start(), status, what);
        assert.deepEqual(invalid, refusal ? [refusal] : [], what);
        assert.equal(restarted.hasFeature('reports'), false, what);
      } finally {
        await restarted.close();
      }
    }
  });
});
