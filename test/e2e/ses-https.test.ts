import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';
import { REPO_ROOT, runCli, startServerProcess, type ServerProcess } from '../helpers/process.ts';
import { readV1Approval } from '../helpers/ses.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pin {
  thumbprint: string;
  commonName: string;
}

/**
 * A client that behaves like the SES SDK's native client: https only, no query and at most one
 * path segment in the base URL, `/` appended when there is no path, then
 * `softwareEntitlements?api-version=...`; `application/json; odata=minimalmetadata`; TLS 1.2+,
 * the peer verified against the trust store (here: the dev root), and one certificate of the
 * chain other than the root matching a pinned (SHA-1 thumbprint, common name).
 */
async function sdkClient(baseUrl: string, trustedRoot: string, pins: Pin[], apiVersion: string, body: object, method = 'POST', pathSuffix = '') {
  const url = new URL(baseUrl);
  if (url.protocol !== 'https:') throw new Error('the SDK client only speaks https');
  if (url.search !== '' || url.pathname.split('/').filter(Boolean).length > 1) throw new Error('the SDK client refuses this URL');
  const base = url.pathname.endsWith('/') ? url.pathname : `${url.pathname}/`;
  const path = `${base}softwareEntitlements${pathSuffix}?api-version=${apiVersion}`;
  const payload = JSON.stringify(body);
  return new Promise<{ status: number; body: unknown; pinned: boolean; chain: string[] }>((resolve, reject) => {
    const req = httpsRequest(
      {
        host: url.hostname,
        port: url.port,
        path,
        method,
        ca: trustedRoot,
        minVersion: 'TLSv1.2',
        agent: false, // a connection of its own: the pin is checked at every handshake
        headers:
          method === 'DELETE'
            ? {}
            : { 'Content-Type': 'application/json; odata=minimalmetadata', 'Content-Length': Buffer.byteLength(payload) },
      },
      (res) => {
        const notRoot = chain.filter((c) => c.subject.CN !== c.issuer.CN);
        const pinned = notRoot.some((c) => pins.some((p) => c.fingerprint.replaceAll(':', '') === p.thumbprint && c.subject.CN === p.commonName));
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined, pinned, chain: chain.map((c) => String(c.subject.CN)) }));
      },
    );
    // The chain is read at the handshake, as the SDK does: by the time the answer is read the
    // server may have closed the connection (Connection: close), and a closed TLS socket has
    // no peer certificate any more.
    const chain: PeerCertificate[] = [];
    req.on('socket', (s) =>
      (s as TLSSocket).once('secureConnect', () => {
        for (let c: PeerCertificate | undefined = (s as TLSSocket).getPeerCertificate(true); c?.subject && !chain.includes(c); c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate) {
          chain.push(c);
        }
      }),
    );
    req.on('error', reject);
    req.end(method === 'DELETE' ? undefined : payload);
  });
}

describe('the SES protocol over HTTPS against the real process, with the vendor tooling', () => {
  let dir: string;
  let db: TestDatabase;
  let server: ServerProcess;
  let env: Record<string, string>;
  let pin: Pin;
  let root: string;
  const cli = (args: string[]) => runCli(args, {});

  before(async () => {
    dir = tempDir('entgate-ses-');
    const certs = await cli(['dev-certs', join(dir, 'tls')]);
    assert.equal(certs.code, 0, certs.stderr);
    const thumb = /thumbprint ([0-9A-F]{40}), common name "([^"]+)"/.exec(certs.stdout)!;
    pin = { thumbprint: thumb[1]!, commonName: thumb[2]! };
    root = readFileSync(join(dir, 'tls', 'root-ca.pem'), 'utf8');
    assert.equal((await cli(['keys', 'generate', join(dir, 'keys')])).code, 0);
    db = await databaseTargets[0]!.create();
    env = {
      ...db.env,
      ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
      TLS_CERT_FILE: join(dir, 'tls', 'server-chain.pem'),
      TLS_KEY_FILE: join(dir, 'tls', 'server.key'),
      HTTPS_PORT: '0',
      ENTGATE_SES_SIGNING_KEYS: join(dir, 'keys', 'signing-cert.pem'),
      ENTGATE_SES_DECRYPTION_KEYS: join(dir, 'keys', 'encryption-key.pem'),
      ENTGATE_SES_MINT_SIGNING_KEY: join(dir, 'keys', 'signing-key.pem'),
      ENTGATE_SES_MINT_ENCRYPTION_KEY: join(dir, 'keys', 'encryption-cert.pem'),
    };
    server = await startServerProcess(env);
    assert.match(server.httpsUrl ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);
  });
  after(async () => {
    await server?.stop();
    await db?.drop();
  });

  const generate = async (extra: string[] = []) => {
    const file = join(dir, `token-${Math.random()}`);
    const r = await cli([
      'token', 'generate', '--application-id', 'contosoapp,fabrikam', '--address', '127.0.0.1', '--vmid', 'vm-7',
      '--sign', join(dir, 'keys', 'signing-key.pem'), '--encrypt', join(dir, 'keys', 'encryption-cert.pem'), '--token-file', file, ...extra,
    ]);
    assert.equal(r.code, 0, r.stderr);
    return readFileSync(file, 'utf8').trim();
  };

  it('approves a token minted by `entgate token generate` for an SDK-like client pinning the intermediate, on every approve version', async () => {
    const token = await generate();
    const base = server.httpsUrl!.replace('127.0.0.1', 'localhost');
    for (const version of ['2017-05-01.5.0', '2017-06-01.5.1', '2017-09-01.6.0', '2018-03-01.6.1', '2018-08-01.7.0']) {
      const res = await sdkClient(base, root, [pin], version, { applicationId: 'contosoapp', token });
      assert.equal(res.status, 200, `${version}: ${JSON.stringify(res.body)}`);
      assert.ok(res.pinned, `the chain ${res.chain.join(' <- ')} must carry the pinned intermediate`);
      assert.match((res.body as { id: string }).id, /^entitlement-/);
      if (version.startsWith('2017-0') && version !== '2017-09-01.6.0') assert.equal(readV1Approval(res).vmid, 'vm-7');
    }
    const wrongPin = await sdkClient(base, root, [{ thumbprint: '00'.repeat(20), commonName: pin.commonName }], '2017-05-01.5.0', { applicationId: 'contosoapp', token });
    assert.equal(wrongPin.pinned, false, 'a client pinning another intermediate would refuse this server');
    const verified = await cli(['token', 'verify', token, '--application-id', 'Fabrikam', '--address', '127.0.0.1',
      '--signing-key', join(dir, 'keys', 'signing-cert.pem'), '--decryption-key', join(dir, 'keys', 'encryption-key.pem')]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /^entitled: token token-[0-9a-f-]{36} grants Fabrikam from 127\.0\.0\.1/);
    const refused = await cli(['token', 'verify', token, '--application-id', 'other', '--address', '127.0.0.1',
      '--signing-key', join(dir, 'keys', 'signing-cert.pem'), '--decryption-key', join(dir, 'keys', 'encryption-key.pem')]);
    assert.deepEqual([refused.code, refused.stdout], [3, 'denied: the token does not name application other\n']);
  });

  it('mints tokens through the admin API for other schedulers', async () => {
    const minted = await fetch(`${server.url}/admin/v1/tokens`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ applicationIds: ['contosoapp'], addresses: ['127.0.0.1'] }),
    });
    assert.equal(minted.status, 201);
    const { token, id } = (await minted.json()) as { token: string; id: string };
    assert.equal(token.split('.').length, 5, 'encrypted');
    const res = await sdkClient(server.httpsUrl!, root, [pin], '2018-08-01.7.0', { applicationId: 'contosoapp', token });
    assert.equal(res.status, 200);
    const unauth = await fetch(`${server.url}/admin/v1/tokens`, { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' } });
    assert.equal(unauth.status, 401);
    assert.match(id, /^token-/);
  });

  it('keeps acquired entitlements across a restart; an unrenewed one expires', async () => {
    const token = await generate();
    const latest = '9999-09-09.99.99';
    const kept = await sdkClient(server.httpsUrl!, root, [pin], latest, { applicationId: 'contosoapp', token, duration: 'PT10M' });
    const lapsing = await sdkClient(server.httpsUrl!, root, [pin], latest, { applicationId: 'contosoapp', token, duration: 'PT2S' });
    assert.deepEqual([kept.status, lapsing.status], [200, 200]);
    const keptId = (kept.body as { entitlementId: string }).entitlementId;
    const lapsingBody = lapsing.body as { entitlementId: string; initialExpiryTime: string };

    await server.stop();
    server = await startServerProcess(env);
    await sleep(Math.max(0, Date.parse(lapsingBody.initialExpiryTime) - Date.now()) + 100);

    const renewed = await sdkClient(server.httpsUrl!, root, [pin], latest, { duration: 'PT5M' }, 'POST', `/${keptId}`);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    const expired = await sdkClient(server.httpsUrl!, root, [pin], latest, { duration: 'PT5M' }, 'POST', `/${lapsingBody.entitlementId}`);
    assert.deepEqual([expired.status, (expired.body as { code?: string } | undefined)?.code], [409, 'EntitlementExpired'], JSON.stringify(expired));
    const released = await sdkClient(server.httpsUrl!, root, [pin], latest, {}, 'DELETE', `/${keptId}`);
    assert.equal(released.status, 204);
    const afterRelease = await sdkClient(server.httpsUrl!, root, [pin], latest, { duration: 'PT5M' }, 'POST', `/${keptId}`);
    assert.deepEqual([afterRelease.status, (afterRelease.body as { code: string }).code], [409, 'AlreadyReleased']);
  });

  it('still answers plain HTTP beside HTTPS, but not SES; and refuses TLS older than 1.2', async () => {
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    const ses = await fetch(`${server.url}/softwareEntitlements?api-version=2017-05-01.5.0`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json; odata=minimalmetadata' },
      body: JSON.stringify({ applicationId: 'contosoapp', token: await generate() }),
    });
    assert.deepEqual([ses.status, await ses.json()], [404, { code: 'NotFound', message: { lang: 'en-us', value: 'No such resource.' } }]);
    const old = await new Promise<string>((resolve) => {
      const req = httpsRequest(`${server.httpsUrl}/healthz`, { ca: root, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' }, () => resolve('connected'));
      req.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
      req.end();
    });
    assert.notEqual(old, 'connected');
  });
});

/** The lines of the shell block under docs/tokens.md's "First five minutes": continuations joined, comments dropped. */
function quickStartLines(): string[] {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'tokens.md'), 'utf8');
  const block = /## First five minutes\n+```sh\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block, 'docs/tokens.md has a "First five minutes" shell block');
  return block
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((line) => line.replace(/\s+#\s.*$/, '').trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** A line split into words as sh would: quotes, `\"` in double quotes, `$(cat <file>)` read from `dir` now. */
function shellWords(line: string, dir: string): string[] {
  const cat = (command: string) => {
    const file = /^cat (\S+)$/.exec(command)?.[1];
    assert.ok(file, `the quick start substitutes $(${command}), which this test cannot run`);
    return readFileSync(join(dir, file), 'utf8').replace(/\n+$/, '');
  };
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      word ??= '';
      for (i++; line[i] !== '"'; i++) {
        if (line[i] === '\\') word += line[++i];
        else if (line.startsWith('$(', i)) {
          const end = line.indexOf(')', i);
          word += cat(line.slice(i + 2, end));
          i = end;
        } else word += line[i];
      }
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else word = (word ?? '') + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}

describe('the quick start of docs/tokens.md, as written', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  before(() => {
    dir = tempDir('entgate-quick-start-');
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs: keys, dev certificates, the server, a token without --vmid, an approval (v1) over HTTPS read as the native client reads it', async () => {
    const env: Record<string, string> = {};
    let pin: Pin | undefined;
    let approved: { id: string; vmid: string } | undefined;
    // Run from the quick start's own directory (a fresh one), the step's words as written.
    for (const step of quickStartLines()) {
      const [command, ...args] = shellWords(step, dir);
      if (command === 'entgate') {
        if (args[0] === 'token' && args[1] === 'generate') assert.ok(!args.includes('--vmid'), `the quick start makes a token without --vmid: ${step}`);
        const r = await runCli(args, {}, undefined, dir);
        assert.equal(r.code, 0, `${step}: ${r.stderr}`);
        const thumb = /thumbprint ([0-9A-F]{40}), common name "([^"]+)"/.exec(r.stdout);
        if (thumb) pin = { thumbprint: thumb[1]!, commonName: thumb[2]! };
      } else if (command === 'export') {
        for (const pair of args) {
          const eq = pair.indexOf('=');
          env[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
      } else if (command === 'npm' && args.join(' ') === 'start') {
        // `npm start` is `entgate serve`; on free ports rather than 8080 and 8443, ready when it says it listens.
        server = await startServerProcess({ ...env, HTTPS_PORT: '0' }, undefined, dir);
        assert.ok(server.httpsUrl, `HTTPS is served:\n${server.output()}`);
      } else if (command === 'curl') {
        assert.ok(server?.httpsUrl, 'the server was started before curl');
        const option = (name: string) => args[args.indexOf(name) + 1]!;
        const url = new URL(args.find((a) => a.startsWith('https://'))!);
        url.port = new URL(server.httpsUrl).port;
        const header = option('-H');
        const colon = header.indexOf(':');
        const res = await new Promise<{ status: number; body: unknown }>((resolve, reject) => {
          const req = httpsRequest(url, { method: 'POST', ca: readFileSync(join(dir, option('--cacert'))), headers: { [header.slice(0, colon)]: header.slice(colon + 1).trim() } }, (r) => {
            let text = '';
            r.on('data', (d: Buffer) => (text += d.toString()));
            r.on('end', () => resolve({ status: r.statusCode!, body: text ? JSON.parse(text) : undefined }));
          });
          req.on('error', reject);
          req.end(option('-d'));
        });
        approved = readV1Approval(res);
      } else {
        assert.fail(`a step of the quick start this test does not know: ${step}`);
      }
    }
    assert.ok(approved, 'the quick start approves');
    assert.match(approved.id, /^entitlement-[0-9a-f-]{36}$/);
    assert.match(approved.vmid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a vmid derived from the token id');

    // The application, as the quick start sets it up: AZ_BATCH_ACCOUNT_URL and the token, the intermediate pinned.
    assert.ok(pin, 'dev-certs printed the pin');
    const base = server!.httpsUrl!.replace('127.0.0.1', 'localhost');
    const token = readFileSync(join(dir, 'job.token'), 'utf8').trim();
    const res = await sdkClient(base, readFileSync(join(dir, 'tls', 'root-ca.pem'), 'utf8'), [pin], '2017-05-01.5.0', { applicationId: 'contosoapp', token });
    assert.ok(res.pinned, `the chain ${res.chain.join(' <- ')} carries the pinned intermediate`);
    assert.equal(readV1Approval(res).vmid, approved.vmid, 'the same token, the same vmid');
  });
});
