import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, recordingLogger, AUTH } from '../helpers/service.ts';
import { rawToken, readV1Approval, writeKeys } from '../helpers/ses.ts';
import type { RunningService } from '../../src/service.ts';
import { nameBasedUuid, VMID_NAMESPACE } from '../../src/ses/service.ts';
import { createDevCertificates } from '../../src/ses/certs.ts';

const V1 = '2017-05-01.5.0';
const V2 = '2018-08-01.7.0';
const LATEST = '9999-09-09.99.99';
const JSON_ODATA = 'application/json; odata=minimalmetadata';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PLAIN_HTTP_WARNING = /^TLS_CERT_FILE is not set: software entitlement tokens are accepted on plain HTTP/;

for (const target of databaseTargets) {
  describe(`software entitlement service on ${target.name}`, () => {
    let db: TestDatabase;
    let svc: RunningService;
    let keys: ReturnType<typeof writeKeys>;
    const api = () => request(svc.server);
    const post = (path: string, body: unknown, contentType = JSON_ODATA) =>
      api().post(path).set('Content-Type', contentType).send(typeof body === 'string' ? body : JSON.stringify(body));
    const good = (extra: Parameters<typeof rawToken>[0] = {}) =>
      rawToken({ sign: { key: keys.rsaSign.privateKey, alg: 'RS512' }, encrypt: { key: keys.rsaEnc.publicKey }, ...extra });
    const denied = (res: request.Response, app = 'contosoapp') => {
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.deepEqual(res.body, { code: 'EntitlementDenied', message: { lang: 'en-us', value: `Entitlement for ${app} was denied.` } });
    };
    const events = async () => (await svc.db.knex('token_events').select('*').orderBy('id')) as Record<string, unknown>[];
    let logs: ReturnType<typeof recordingLogger>['lines'];

    before(async () => {
      const dir = tempDir();
      keys = writeKeys(dir);
      db = await target.create();
      const recording = recordingLogger();
      logs = recording.lines;
      svc = await startTestService(
        db,
        {
          ENTGATE_SES_SIGNING_KEYS: keys.signingFiles.join(','),
          ENTGATE_SES_DECRYPTION_KEYS: keys.decryptionFiles.join(','),
          ENTGATE_SES_REQUIRE_ENCRYPTED: 'false',
          ENTGATE_TRUSTED_PROXIES: '10.9.0.0/16',
        },
        recording.logger,
      );
    });
    after(async () => {
      await svc?.close();
      await db?.drop();
    });

    it('approves with v1 (id, vmid) and v2 (id, expiry), with and without a slash before the query', async () => {
      const exp = Math.floor(Date.now() / 1000) + 7200;
      const token = await good({ claims: { vmid: 'vm-42' }, exp });
      for (const path of ['/softwareEntitlements', '/softwareEntitlements/']) {
        const v1 = readV1Approval(await post(`${path}?api-version=${V1}`, { applicationId: 'ContosoApp', token }));
        assert.match(v1.id, /^entitlement-[0-9a-f-]{36}$/);
        assert.equal(v1.vmid, 'vm-42');
        const v2 = await post(`${path}?api-version=${V2}`, { token, applicationId: 'contosoapp' });
        assert.deepEqual(Object.keys(v2.body).sort(), ['expiry', 'id']);
        assert.equal(v2.body.expiry, new Date(exp * 1000).toISOString());
      }
    });

    it('answers every approval (v1) with a vmid: the token\'s, else one derived from its id, the same for every request with that token', async () => {
      const approve = async (token: string, version = V1) => readV1Approval(await post(`/softwareEntitlements?api-version=${version}`, { applicationId: 'contosoapp', token }));
      const id = `token-${randomUUID()}`;
      const token = await good({ claims: { id } });
      const first = await approve(token);
      const second = await approve(token, '2017-06-01.5.1');
      assert.match(first.vmid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a name-based UUID');
      assert.equal(second.vmid, first.vmid, 'the same token, the same vmid');
      assert.notEqual(second.id, first.id, 'a fresh entitlement id each time');
      assert.equal(first.vmid, nameBasedUuid(VMID_NAMESPACE, id), 'derived from the token id as documented');
      // Another token with the same id (reissued, another lifetime) gets the same vmid; another id, another.
      assert.equal((await approve(await good({ claims: { id }, exp: Math.floor(Date.now() / 1000) + 600 }))).vmid, first.vmid);
      const other = await approve(await good());
      assert.notEqual(other.vmid, first.vmid);
      assert.equal((await approve(await good({ claims: { id, vmid: 'vm-7' } }))).vmid, 'vm-7', "the token's own vmid wins");
    });

    it('serves SES on plain HTTP when no TLS is configured, and warns of it at start', () => {
      // Every test of this suite asks over plain HTTP (svc.server); here the warning.
      const warnings = logs().filter((l) => l.level === 40 && PLAIN_HTTP_WARNING.test(l.msg));
      assert.equal(warnings.length, 1, JSON.stringify(logs()));
    });

    it('accepts every signature and encryption algorithm pair, from keys in PEM and in a JWKS', async () => {
      const signers = [
        { key: keys.rsaSign.privateKey, alg: 'RS512' },
        { key: keys.rsaSign.privateKey, alg: 'PS256' },
        { key: keys.ec.privateKey, alg: 'ES256' },
        { key: keys.ed.privateKey, alg: 'EdDSA', kid: 'ed-1' },
      ];
      const encryptions = [undefined, { key: keys.rsaEnc.publicKey }, { key: keys.rsaEnc.publicKey, alg: 'RSA-OAEP-256', enc: 'A256GCM' }, { key: keys.rsaEnc.publicKey, alg: 'RSA-OAEP', enc: 'A256GCM' }];
      for (const sign of signers) {
        for (const encrypt of encryptions) {
          const token = await rawToken({ sign, ...(encrypt && { encrypt }) });
          const res = await post(`/softwareEntitlements?api-version=${V2}`, { token, applicationId: 'contosoapp' });
          assert.equal(res.status, 200, `${sign.alg} ${encrypt?.alg ?? 'plain'}/${encrypt?.enc ?? ''}: ${JSON.stringify(res.body)}`);
        }
      }
    });

    it('denies with 403, never saying why, every token that is not valid here', async () => {
      const now = Math.floor(Date.now() / 1000);
      const cases: [string, Promise<string>, string?][] = [
        ['expired (beyond the 60 s skew)', good({ exp: now - 120, nbf: now - 600, iat: now - 600 })],
        ['not yet valid', good({ nbf: now + 600 })],
        ['wrong audience', good({ aud: 'https://elsewhere' })],
        ['two audiences', good({ aud: ['https://batch.azure.test/software-entitlement', 'https://x'] })],
        ['wrong issuer', good({ iss: 'https://evil.example' })],
        ['another application', good({ app: ['otherapp'] })],
        ['another address', good({ ip: ['192.0.2.1', '2001:db8::1'] })],
        ['no id', good({ claims: { id: undefined } })],
        ['no iat', good({ claims: { iat: undefined } })],
        ['unsigned', rawToken({ sign: 'none' })],
        ['unsigned, encrypted', rawToken({ sign: 'none', encrypt: { key: keys.rsaEnc.publicKey } })],
        ['signed by a key not configured', rawToken({ sign: { key: keys.other.privateKey, alg: 'RS512' } })],
        ['encrypted to a key not configured', good({ encrypt: { key: keys.other.publicKey } })],
        ['HS256 with a public key as secret', rawToken({ sign: { key: keys.rsaSign.publicKey.export({ format: 'der', type: 'spki' }) as never, alg: 'HS256' } })],
      ];
      for (const [what, tokenPromise] of cases) {
        let token: string;
        try {
          token = await tokenPromise;
        } catch {
          continue; // jose refuses to build it at all: nothing to send
        }
        denied(await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'contosoapp' }), undefined);
        void what;
      }
      const tampered = (await good()).split('.');
      tampered[3] = tampered[3]!.slice(0, -4) + (tampered[3]!.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      denied(await post(`/softwareEntitlements?api-version=${V1}`, { token: tampered.join('.'), applicationId: 'contosoapp' }));
      // Events are written off the request path: wait for them.
      let reasons: string[] = [];
      const recorded = () => reasons.some((r) => /expired/.test(r)) && reasons.some((r) => /address/.test(r)) && reasons.some((r) => /not signed/.test(r));
      for (let i = 0; i < 100 && !recorded(); i++) {
        await sleep(50);
        reasons = (await events()).filter((e) => e.outcome === 'denied').map((e) => e.reason as string);
      }
      assert.ok(recorded(), reasons.join('\n'));
    });

    it('answers 400 in the protocol shape for a malformed request, version or body', async () => {
      const token = await good();
      const bad: [string, unknown, number, string][] = [
        ['/softwareEntitlements', { token, applicationId: 'a' }, 400, 'MissingApiVersion'],
        ['/softwareEntitlements?api-version=2016-01-01', { token, applicationId: 'a' }, 400, 'UnsupportedApiVersion'],
        [`/softwareEntitlements?api-version=${V1}`, { applicationId: 'a' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${V1}`, { token: '', applicationId: 'a' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${V1}`, { token }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${V1}`, '{"token":', 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${V1}`, '', 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'a' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'a', duration: '5 minutes' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'a', duration: 'P1M' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'a', duration: 'P30D' }, 400, 'EntitlementDenied'],
        [`/softwareEntitlements?api-version=${V1}`, { token: 'x'.repeat(70_000), applicationId: 'a' }, 413, 'EntitlementDenied'],
        [`/softwareEntitlements/?api-version=${V1}&api-version=${V2}`, { token, applicationId: 'a' }, 400, 'MissingApiVersion'],
      ];
      for (const [path, body, status, code] of bad) {
        const res = await post(path, body as object);
        assert.equal(res.status, status, `${path} ${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.code, code, path);
        assert.equal(res.body.message.lang, 'en-us');
      }
      for (const path of [
        `//softwareEntitlements?api-version=${V1}`,
        `/softwareEntitlements//?api-version=${V1}`,
        `/softwareEntitlements/a/b?api-version=${LATEST}`,
        `/softwareEntitlements/%E0%A4%A?api-version=${LATEST}`,
        `/v1/softwareEntitlements?api-version=${V1}`,
      ]) {
        const res = await post(path, { token, applicationId: 'contosoapp' });
        assert.deepEqual([res.status, res.body.code], [404, 'NotFound'], path);
      }
      assert.equal((await api().get(`/softwareEntitlements?api-version=${V1}`)).status, 404);
      assert.equal((await api().delete(`/softwareEntitlements?api-version=${LATEST}`)).status, 404);
    });

    it('denies a malformed token with 403 and the denial body, as the reference does, and audits why', async () => {
      const signed = await rawToken({ sign: { key: keys.rsaSign.privateKey, alg: 'RS512' } });
      const cases: [string, string, string][] = [
        ['garbage', 'abc', 'the token is not a compact JWS or JWE'],
        ['two parts', 'eyJhbGciOiJSUzUxMiJ9.eyJpZCI6InRva2VuLTEifQ', 'the token is not a compact JWS or JWE'],
        ['a JWT cut short', signed.slice(0, signed.lastIndexOf('.') - 10), 'the token is not a compact JWS or JWE'],
        ['three parts, none of them JSON', 'not.a.jwt', 'the token header is not readable'],
        ['a JWE cut to three parts', (await good()).split('.').slice(0, 3).join('.'), 'a JWE header on a token of three parts (truncated?)'],
        ['over 32 KiB', `${'x'.repeat(40_000)}.a.b`, 'the token is longer than 32768 characters'],
      ];
      const run = randomUUID().slice(0, 8);
      for (const [what, token] of cases) {
        for (const [version, extra] of [[V1, {}], [LATEST, { duration: 'PT1M' }]] as const) {
          const app = `malformed-${run}-${what.replaceAll(' ', '-')}`;
          denied(await post(`/softwareEntitlements?api-version=${version}`, { token, applicationId: app, ...extra }), app);
        }
      }
      const expected = cases.flatMap(([what, , reason]) => [
        [`malformed-${run}-${what.replaceAll(' ', '-')}`, 'acquire', 'invalid', reason],
        [`malformed-${run}-${what.replaceAll(' ', '-')}`, 'approve', 'invalid', reason],
      ]);
      const sorted = (rows: unknown[][]) => rows.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
      let got: unknown[][] = [];
      for (let i = 0; i < 100 && got.length < expected.length; i++) {
        if (i > 0) await sleep(50);
        got = (await events())
          .filter((r) => String(r.application_id).startsWith(`malformed-${run}-`))
          .map((r) => [r.application_id, r.operation, r.outcome, r.reason]);
      }
      assert.deepEqual(sorted(got), sorted(expected));
    });

    it('matches the api-version name in any case; an empty one is unsupported, a missing or repeated one missing', async () => {
      const token = await good();
      for (const name of ['API-VERSION', 'Api-Version', 'api-Version']) {
        const v1 = readV1Approval(await post(`/softwareEntitlements?${name}=${V1}`, { token, applicationId: 'contosoapp' }));
        assert.match(v1.id, /^entitlement-/, name);
      }
      const acquired = await post(`/softwareEntitlements/?API-Version=${LATEST}`, { token, applicationId: 'contosoapp', duration: 'PT5M' });
      assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
      const one = `/softwareEntitlements/${acquired.body.entitlementId}`;
      assert.equal((await post(`${one}?API-VERSION=${LATEST}`, { duration: 'PT10M' })).status, 200);
      assert.equal((await api().delete(`${one}?Api-Version=${LATEST}`)).status, 204);

      const refused: [string, string, string][] = [
        ['/softwareEntitlements?api-version=', 'UnsupportedApiVersion', 'An empty api-version is not supported.'],
        ['/softwareEntitlements?API-VERSION=', 'UnsupportedApiVersion', 'An empty api-version is not supported.'],
        [`${one}?api-version=`, 'UnsupportedApiVersion', 'An empty api-version is not supported.'],
        ['/softwareEntitlements', 'MissingApiVersion', 'The api-version query parameter is required, once.'],
        ['/softwareEntitlements?apiversion=2017-05-01.5.0', 'MissingApiVersion', 'The api-version query parameter is required, once.'],
        [`/softwareEntitlements?api-version=${V1}&API-VERSION=${V1}`, 'MissingApiVersion', 'The api-version query parameter is required, once.'],
        [`/softwareEntitlements?Api-Version=${V1}&api-version=`, 'MissingApiVersion', 'The api-version query parameter is required, once.'],
        // Names of Object.prototype are not versions (they were taken for one and the token verified).
        ...['constructor', '__proto__', 'toString', 'hasOwnProperty'].map((v): [string, string, string] => [
          `/softwareEntitlements?api-version=${v}`,
          'UnsupportedApiVersion',
          `The api-version ${v} is not supported.`,
        ]),
      ];
      for (const [path, code, value] of refused) {
        const res = await post(path, { token, applicationId: 'contosoapp' });
        assert.equal(res.status, 400, path);
        assert.deepEqual(res.body, { code, message: { lang: 'en-us', value } }, path);
      }
    });

    it('acquires a durable entitlement, renews it, releases it; renew after release is 409, unknown ids 404', async () => {
      const token = await good();
      const acquired = await post(`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'contosoapp', duration: 'PT5M' });
      assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
      const { entitlementId, initialExpiryTime } = acquired.body;
      const inFive = Date.parse(initialExpiryTime) - Date.now();
      assert.ok(inFive > 290_000 && inFive <= 301_000, String(inFive));
      const pool = await api().get('/v1/pools/ses-contosoapp').set(AUTH);
      assert.ok(pool.body.leases.some((l: { leaseId: string }) => l.leaseId === entitlementId), 'visible to admins as a lease');

      const renewed = await post(`/softwareEntitlements/${entitlementId}?api-version=${LATEST}`, { duration: 'PT1H30M' });
      assert.equal(renewed.status, 200);
      assert.ok(Math.abs(Date.parse(renewed.body.expiryTime) - Date.now() - 5_400_000) < 5_000);
      const oldVersion = await post(`/softwareEntitlements/${entitlementId}?api-version=${V2}`, { duration: 'PT1M' });
      assert.equal(oldVersion.status, 400);

      assert.equal((await api().delete(`/softwareEntitlements/${entitlementId}?api-version=${LATEST}`)).status, 204);
      const again = await post(`/softwareEntitlements/${entitlementId}?api-version=${LATEST}`, { duration: 'PT1M' });
      assert.deepEqual([again.status, again.body.code], [409, 'AlreadyReleased']);
      const unknown = '5b2b6c8e-6f3e-4a59-9a43-0e6f4f1d2c3b';
      assert.deepEqual((await post(`/softwareEntitlements/${unknown}?api-version=${LATEST}`, { duration: 'PT1M' })).body.code, 'NotFound');
      assert.equal((await api().delete(`/softwareEntitlements/${unknown}?api-version=${LATEST}`)).status, 404);
      assert.equal((await api().delete(`/softwareEntitlements/not-an-id?api-version=${LATEST}`)).status, 404);
    });

    it('renews and releases with and without a slash before the query; a doubled slash or an extra segment is not found', async () => {
      const acquired = await post(`/softwareEntitlements/?api-version=${LATEST}`, { token: await good(), applicationId: 'contosoapp', duration: 'PT5M' });
      assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
      const id = acquired.body.entitlementId as string;
      for (const path of [`/softwareEntitlements/${id}//`, `//softwareEntitlements/${id}/`, `/softwareEntitlements//${id}/`, `/softwareEntitlements/${id}/x/`, `/softwareEntitlements/${id}/x`]) {
        const renew = await post(`${path}?api-version=${LATEST}`, { duration: 'PT1M' });
        assert.deepEqual([renew.status, renew.body.code], [404, 'NotFound'], `renew ${path}`);
        const release = await api().delete(`${path}?api-version=${LATEST}`);
        assert.deepEqual([release.status, release.body.code], [404, 'NotFound'], `release ${path}`);
      }
      const renewed = await post(`/softwareEntitlements/${id}/?api-version=${LATEST}`, { duration: 'PT1H' });
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      assert.ok(Math.abs(Date.parse(renewed.body.expiryTime) - Date.now() - 3_600_000) < 5_000);
      assert.equal((await api().delete(`/softwareEntitlements/${id.toUpperCase()}/?api-version=${LATEST}`)).status, 204);
      const again = await post(`/softwareEntitlements/${id}/?api-version=${LATEST}`, { duration: 'PT1M' });
      assert.deepEqual([again.status, again.body.code], [409, 'AlreadyReleased']);
      const unknown = await api().delete(`/softwareEntitlements/${randomUUID()}/?api-version=${LATEST}`);
      assert.deepEqual([unknown.status, unknown.body.code], [404, 'NotFound']);
    });

    it('answers 404 to renew of an id that is not a UUID before reading its body, as release does', async () => {
      for (const [body, why] of [
        [{ duration: 'PT1M' }, 'a good body'],
        ['{"duration":', 'a body that is not JSON'],
        [{ duration: 'PT1M', pad: 'x'.repeat(70_000) }, 'a body over 64 KiB'],
        ['', 'no body'],
      ] as const) {
        for (const id of ['not-an-id', `entitlement-${randomUUID()}`]) {
          const res = await post(`/softwareEntitlements/${id}?api-version=${LATEST}`, body);
          assert.deepEqual([res.status, res.body.code], [404, 'NotFound'], `${id} with ${why}: ${JSON.stringify(res.body)}`);
        }
      }
      // A UUID's body is still read first: a bad one is refused before the entitlement is looked up.
      const unknown = await post(`/softwareEntitlements/${randomUUID()}?api-version=${LATEST}`, '{"duration":');
      assert.deepEqual([unknown.status, unknown.body.code], [400, 'EntitlementDenied']);
    });

    it('audits every renew and release, also those refused for their body or for an id that is not a UUID', async () => {
      const acquired = await post(`/softwareEntitlements?api-version=${LATEST}`, { token: await good(), applicationId: 'contosoapp', duration: 'PT5M' });
      assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
      const id = acquired.body.entitlementId as string;
      const renew = `/softwareEntitlements/${id}?api-version=${LATEST}`;
      const tooLarge = await post(renew, { duration: 'PT1M', pad: 'x'.repeat(70_000) });
      assert.deepEqual([tooLarge.status, tooLarge.body.code], [413, 'EntitlementDenied']);
      const notJson = await post(renew, '{"duration":');
      assert.deepEqual([notJson.status, notJson.body.code], [400, 'EntitlementDenied']);
      const badRenew = `not-a-uuid-${randomUUID()}`;
      const badRelease = `entitlement-${randomUUID()}`;
      assert.equal((await post(`/softwareEntitlements/${badRenew}?api-version=${LATEST}`, { duration: 'PT1M' })).status, 404);
      assert.equal((await api().delete(`/softwareEntitlements/${badRelease}?api-version=${LATEST}`)).status, 404);

      const summary = (rows: Record<string, unknown>[]) =>
        rows
          .filter((r) => r.entitlement_id === id || r.entitlement_id === badRenew || r.entitlement_id === badRelease)
          .map((r) => [r.operation, r.entitlement_id === id ? 'acquired' : r.entitlement_id === badRenew ? 'badRenew' : 'badRelease', r.outcome, r.reason, r.api_version])
          .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
      const expected = [
        ['acquire', 'acquired', 'approved', null, LATEST],
        ['release', 'badRelease', 'not_found', 'entitlement id is not a UUID', LATEST],
        ['renew', 'acquired', 'invalid', 'unreadable body', LATEST],
        ['renew', 'acquired', 'invalid', 'unreadable body', LATEST],
        ['renew', 'badRenew', 'not_found', 'entitlement id is not a UUID', LATEST],
      ];
      let got: unknown[] = [];
      for (let i = 0; i < 100; i++) {
        got = summary(await events());
        if (got.length >= expected.length) break;
        await sleep(50);
      }
      assert.deepEqual(got, expected);
    });

    it('refuses an applicationId over 256 characters as too long, not as missing, and audits why', async () => {
      const token = await good();
      const long = `long-${randomUUID()}`.padEnd(257, 'x');
      for (const [version, extra] of [[V1, {}], [V2, {}], [LATEST, { duration: 'PT1M' }]] as const) {
        const res = await post(`/softwareEntitlements?api-version=${version}`, { token, applicationId: long, ...extra });
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.deepEqual(res.body, { code: 'EntitlementDenied', message: { lang: 'en-us', value: 'The applicationId is longer than 256 characters.' } });
      }
      // 256 characters is not too long: this token does not entitle it, so it is denied.
      denied(await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: long.slice(0, 256) }), long.slice(0, 256));
      const missing = await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: '' });
      assert.equal(missing.body.message.value, 'The applicationId is missing.');

      let rows: Record<string, unknown>[] = [];
      for (let i = 0; i < 100 && rows.length < 3; i++) {
        rows = (await events()).filter((r) => r.reason === 'applicationId longer than 256 characters' && r.application_id === long.slice(0, 256));
        if (rows.length < 3) await sleep(50);
      }
      assert.deepEqual(rows.map((r) => [r.operation, r.outcome, r.api_version]), [
        ['approve', 'invalid', V1],
        ['approve', 'invalid', V2],
        ['acquire', 'invalid', LATEST],
      ]);
    });

    it('lets an unrenewed entitlement expire, and holds an application to the seats an admin set', async () => {
      const short = await post(`/softwareEntitlements?api-version=${LATEST}`, { token: await good(), applicationId: 'contosoapp', duration: 'PT1S' });
      assert.equal(short.status, 200);
      await sleep(Math.max(0, Date.parse(short.body.initialExpiryTime) - Date.now()) + 50);
      const late = await post(`/softwareEntitlements/${short.body.entitlementId}?api-version=${LATEST}`, { duration: 'PT1M' });
      assert.deepEqual([late.status, late.body.code], [409, 'EntitlementExpired']);

      await api().post('/admin/v1/pools').set(AUTH).send({ name: 'ses-limitedapp', seats: 1 }).expect(201);
      const token = await good({ app: 'LimitedApp' });
      const first = await post(`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'LimitedApp', duration: 'PT10M' });
      assert.equal(first.status, 200);
      denied(await post(`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'LimitedApp', duration: 'PT10M' }), 'LimitedApp');
      await api().delete(`/softwareEntitlements/${first.body.entitlementId}?api-version=${LATEST}`).expect(204);
      assert.equal((await post(`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'LimitedApp', duration: 'PT10M' })).status, 200);
    });

    it('takes the caller address from X-Forwarded-For only behind a trusted proxy', async () => {
      const token = await good({ ip: '203.0.113.7' });
      const direct = await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'contosoapp' }).set('X-Forwarded-For', '203.0.113.7');
      denied(direct); // the peer (loopback) is not a trusted proxy: the header is ignored
    });

    it('audits every decision without the token, and remembers verified tokens', async () => {
      const token = await good();
      await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'contosoapp' }).expect(200);
      await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'contosoapp' }).expect(200);
      await sleep(600); // past ENTGATE_AUDIT_FLUSH_MS
      const rows = await events();
      assert.ok(rows.length > 10);
      const text = JSON.stringify(rows);
      assert.ok(!text.includes(token.slice(0, 40)), 'no token in the audit');
      assert.ok(rows.some((r) => r.outcome === 'approved' && r.operation === 'approve' && r.api_version === V1 && typeof r.token_id === 'string'));
      assert.ok(rows.some((r) => r.outcome === 'invalid'));
      const health = await api().get('/healthz');
      assert.ok(health.body.tokenCache.entries > 0);
    });
  });
}

for (const target of databaseTargets) {
  describe(`software entitlements on HTTPS only, when TLS is configured, on ${target.name}`, () => {
    const NOT_FOUND = { code: 'NotFound', message: { lang: 'en-us', value: 'No such resource.' } };
    let dir: string;
    let keys: ReturnType<typeof writeKeys>;
    let root: Buffer;
    const started: { svc: RunningService; db: TestDatabase }[] = [];
    /** A service with TLS (dev certificates) and SES keys, its logs recorded. */
    async function start(env: Record<string, string> = {}) {
      const db = await target.create();
      const recording = recordingLogger();
      const certs = createDevCertificates(join(dir, 'tls'));
      root = readFileSync(certs.rootFile);
      const svc = await startTestService(
        db,
        {
          TLS_CERT_FILE: certs.chainFile,
          TLS_KEY_FILE: certs.keyFile,
          HTTPS_PORT: '0',
          ENTGATE_SES_SIGNING_KEYS: keys.signingFiles.join(','),
          ENTGATE_SES_DECRYPTION_KEYS: keys.decryptionFiles.join(','),
          ...env,
        },
        recording.logger,
      );
      started.push({ svc, db });
      const send = (t: request.Test, body: unknown) => t.set('Content-Type', JSON_ODATA).send(JSON.stringify(body));
      return {
        svc,
        logs: recording.lines,
        http: { post: (path: string, body: unknown) => send(request(svc.server).post(path), body), delete: (path: string) => request(svc.server).delete(path) },
        https: {
          post: (path: string, body: unknown) => send(request(svc.httpsServer!).post(path).ca(root), body),
          delete: (path: string) => request(svc.httpsServer!).delete(path).ca(root),
        },
      };
    }
    const token = () => rawToken({ sign: { key: keys.rsaSign.privateKey, alg: 'RS512' }, encrypt: { key: keys.rsaEnc.publicKey } });

    before(() => {
      dir = tempDir();
      keys = writeKeys(dir);
    });
    after(async () => {
      for (const { svc, db } of started) {
        await svc.close();
        await db.drop();
      }
      rmSync(dir, { recursive: true, force: true });
    });

    it('answers every SES request on plain HTTP 404 NotFound and records it; HTTPS serves them; the rUS check and admin API stay on HTTP', async () => {
      const { svc, logs, http, https } = await start();
      const t = await token();
      const acquired = await https.post(`/softwareEntitlements?api-version=${LATEST}`, { token: t, applicationId: 'contosoapp', duration: 'PT5M' });
      assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
      const id = acquired.body.entitlementId as string;

      const onHttp: [string, request.Response][] = [
        ['approve v1', await http.post(`/softwareEntitlements?api-version=${V1}`, { token: t, applicationId: 'contosoapp' })],
        ['approve v2', await http.post(`/softwareEntitlements/?api-version=${V2}`, { token: t, applicationId: 'contosoapp' })],
        ['acquire', await http.post(`/softwareEntitlements?api-version=${LATEST}`, { token: t, applicationId: 'contosoapp', duration: 'PT5M' })],
        ['renew', await http.post(`/softwareEntitlements/${id}?api-version=${LATEST}`, { duration: 'PT1H' })],
        ['release', await http.delete(`/softwareEntitlements/${id}/?api-version=${LATEST}`)],
        ['no api-version', await http.post('/softwareEntitlements', { token: t, applicationId: 'contosoapp' })],
        ['an unsupported api-version', await http.post('/softwareEntitlements?api-version=2016-01-01', { token: t, applicationId: 'contosoapp' })],
        ['another path', await http.post(`/softwareEntitlements/a/b?api-version=${LATEST}`, {})],
      ];
      for (const [what, res] of onHttp) {
        assert.equal(res.status, 404, what);
        assert.deepEqual(res.body, NOT_FOUND, what);
      }
      // Nothing was done on HTTP: the entitlement still expires in 5 minutes, and renews and releases on HTTPS.
      const renewed = await https.post(`/softwareEntitlements/${id}/?api-version=${LATEST}`, { duration: 'PT10M' });
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      assert.ok(Math.abs(Date.parse(renewed.body.expiryTime) - Date.now() - 600_000) < 5_000);
      assert.equal((await https.delete(`/softwareEntitlements/${id}?api-version=${LATEST}`)).status, 204);
      const v1 = readV1Approval(await https.post(`/softwareEntitlements?api-version=${V1}`, { token: t, applicationId: 'contosoapp' }));
      assert.match(v1.id, /^entitlement-/);

      // The rUS check and the admin API answer on plain HTTP.
      const api = () => request(svc.server);
      const entitlement = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: '03d59e663c1af9ac33a9949d1193505a8460731e' });
      assert.equal(entitlement.status, 201, JSON.stringify(entitlement.body));
      const vkey = await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: entitlement.body.id, key: 'https-only-vk-0001' });
      assert.equal(vkey.status, 201, JSON.stringify(vkey.body));
      const check = await api().get('/rus/check?server=rm.example.com;key=https-only-vk-0001;remote_ip=10.1.2.3');
      assert.equal(check.status, 200, check.text);
      assert.match(check.text, /<key>03d59e663c1af9ac33a9949d1193505a8460731e<\/key>/);

      // Requests that name an operation are recorded (without the token); the others name none.
      const expected = [
        ['acquire', LATEST, null],
        ['approve', V1, null],
        ['approve', V2, null],
        ['release', LATEST, id],
        ['renew', LATEST, id],
      ];
      let got: unknown[] = [];
      for (let i = 0; i < 100 && got.length < expected.length; i++) {
        if (i > 0) await sleep(50);
        got = ((await svc.db.knex('token_events').where({ reason: 'plain HTTP: served on HTTPS only' })) as Record<string, unknown>[])
          .map((r) => [r.operation, r.api_version, r.entitlement_id, r.outcome, r.token_id])
          .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
      }
      assert.deepEqual(got, expected.map(([op, version, entitlementId]) => [op, version, entitlementId, 'not_found', null]));
      assert.deepEqual(logs().filter((l) => PLAIN_HTTP_WARNING.test(l.msg)), [], 'no warning: SES is on HTTPS only');
    });

    it('serves SES on both listeners with ENTGATE_SES_ALLOW_HTTP=true', async () => {
      const { logs, http, https } = await start({ ENTGATE_SES_ALLOW_HTTP: 'true' });
      const t = await token();
      for (const [listener, post] of [['http', http.post], ['https', https.post]] as const) {
        const v1 = readV1Approval(await post(`/softwareEntitlements?api-version=${V1}`, { token: t, applicationId: 'contosoapp' }));
        assert.match(v1.id, /^entitlement-/, listener);
        const missing = await post('/softwareEntitlements', { token: t, applicationId: 'contosoapp' });
        assert.deepEqual([missing.status, missing.body.code], [400, 'MissingApiVersion'], listener);
      }
      assert.deepEqual(logs().filter((l) => PLAIN_HTTP_WARNING.test(l.msg)), [], 'the operator said so: no warning');
    });
  });
}

describe('software entitlement configuration', () => {
  it('stops start-up with a message naming the setting when a key file is missing, wrong or TLS is half set', async () => {
    const dir = tempDir();
    const keys = writeKeys(dir);
    const cases: [Record<string, string>, RegExp][] = [
      [{ ENTGATE_SES_SIGNING_KEYS: `${dir}/missing.pem` }, /ENTGATE_SES_SIGNING_KEYS: cannot read .*missing\.pem: ENOENT/],
      [{ ENTGATE_SES_DECRYPTION_KEYS: keys.signingFiles[0]! }, /ENTGATE_SES_DECRYPTION_KEYS: .* holds no private key/],
      [{ TLS_CERT_FILE: keys.signingFiles[0]! }, /TLS_CERT_FILE and TLS_KEY_FILE go together/],
      [{ TLS_CERT_FILE: keys.signingFiles[0]!, TLS_KEY_FILE: keys.decryptionFiles[0]! }, /TLS_CERT_FILE \/ TLS_KEY_FILE: /],
      [{ ENTGATE_TRUSTED_PROXIES: '10.0.0.0/8,nonsense' }, /ENTGATE_TRUSTED_PROXIES=.*is not an IP address or CIDR range/],
    ];
    for (const [env, message] of cases) {
      const db = await databaseTargets[0]!.create();
      try {
        await assert.rejects(startTestService(db, env), (err: Error) => {
          assert.match(err.message, message);
          return true;
        });
      } finally {
        await db.drop();
      }
    }
  });
});
