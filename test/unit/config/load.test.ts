import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../config/load.ts';
import { ConfigError } from '../../../src/lib/errors.ts';

function configError(env: Record<string, string>): string {
  let message: string | undefined;
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      message = err.message;
      return true;
    },
  );
  assert.ok(message);
  assert.match(message, /^invalid configuration: /);
  assert.doesNotMatch(message, /\n/, 'the message is one line');
  return message;
}

describe('loadConfig: the rUS check paths', () => {
  it('when ENTGATE_CHECK_PATHS is set, then each path is kept without its trailing slash, once', () => {
    assert.deepEqual(loadConfig({ ENTGATE_CHECK_PATHS: '/service, /rus/check/,/service/,/' }).checkPaths, ['/service', '/rus/check', '/']);
    assert.deepEqual(loadConfig({ ENTGATE_CHECK_PATHS: '/a.b/c~d_e-f' }).checkPaths, ['/a.b/c~d_e-f']);
  });

  it("when a path is not a plain absolute path, or is one of entgate's own, then start-up is refused naming it", () => {
    const bad = ['service', '/a?b', '/a b', '/a//b', '/a/../b', '/./a', '/%2e', '/admin', '/admin/v1/x', '/v1', '/HEALTHZ', '/readyz', '/metrics', '/openapi.json', '/softwareEntitlements', '/x/softwareentitlements', '/console', ' , '];
    for (const path of bad) assert.match(configError({ ENTGATE_CHECK_PATHS: path }), /ENTGATE_CHECK_PATHS/, path);
  });

  it('when ENTGATE_RUS_AUTH_CACHE_TIMEOUT is set, then it is a whole number of seconds from 1; unset, it is undefined', () => {
    assert.equal(loadConfig({}).repositoryCacheSeconds, undefined);
    assert.equal(loadConfig({ ENTGATE_RUS_AUTH_CACHE_TIMEOUT: '3600' }).repositoryCacheSeconds, 3600);
    for (const v of ['0', '-1', '1.5', 'abc']) assert.match(configError({ ENTGATE_RUS_AUTH_CACHE_TIMEOUT: v }), /ENTGATE_RUS_AUTH_CACHE_TIMEOUT/, v);
  });
});

describe('loadConfig', () => {
  it('when the environment is empty, then every documented default applies and the result is frozen', () => {
    const c = loadConfig({});
    assert.deepEqual(
      Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)),
      {
        port: 8080,
        host: '0.0.0.0',
        dataDir: './data',
        databasePoolMax: 10,
        databaseQueryTimeoutMs: 10_000,
        databaseConnectTimeoutMs: 5000,
        migrateOnStart: true,
        requireClassMatch: false,
        checkPaths: ['/', '/rus/check'],
        resolvers: ['postgres'],
        failurePolicy: 'deny',
        staleGraceSeconds: 300,
        cacheMaxEntries: 100_000,
        cacheTtlSeconds: 30,
        cacheNegativeTtlSeconds: 5,
        checkTimeoutMs: 2000,
        auditQueueMax: 50_000,
        auditBatchSize: 500,
        auditFlushMs: 250,
        shutdownTimeoutMs: 8000,
        leaseDefaultTtlSeconds: 60,
        leaseMaxTtlSeconds: 3600,
        leaseTidySeconds: 5,
        leaseRetentionHours: 24,
        signedRequestWindowSeconds: 30,
        auditRetentionDays: 90,
        guessBudget: 30,
        guessWindowSeconds: 600,
        guessCooldownSeconds: 900,
        guessDelayMs: 1000,
        guessSyncMs: 500,
        checkAllowedCallers: ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
        maxConcurrentRequests: 2000,
        bodyTimeoutMs: 5000,
        maxRequestsPerClient: 50,
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 30_000,
        keepAliveTimeoutMs: 5000,
        maxHeaderBytes: 16_384,
        maxConnections: 10_000,
        httpsPort: 8443,
        trustedProxies: [],
        sesIssuer: 'https://batch.azure.test/software-entitlement',
        sesAudience: 'https://batch.azure.test/software-entitlement',
        sesSigningKeys: [],
        licencePublicKeys: [],
        sesDecryptionKeys: [],
        sesRequireSigned: true,
        sesRequireEncrypted: 'auto',
        sesClockSkewSeconds: 60,
        sesAllowHttp: false,
        logLevel: 'info',
      },
    );
    for (const unset of ['databaseUrl', 'keySecret', 'adminToken', 'resolverOptionsFile'] as const) assert.equal(c[unset], undefined, unset);
    assert.ok(Object.isFrozen(c));
  });

  it('when a variable is empty, then its default applies', () => {
    const c = loadConfig({ PORT: '', HOST: '', ENTGATE_REQUIRE_CLASS_MATCH: '', LOG_LEVEL: '', DATABASE_URL: '' });
    assert.deepEqual([c.port, c.host, c.requireClassMatch, c.logLevel, c.databaseUrl], [8080, '0.0.0.0', false, 'info', undefined]);
  });

  it('when numbers, booleans, lists and secrets are given, then they are converted', () => {
    const c = loadConfig({
      PORT: '0',
      ENTGATE_CACHE_MAX_ENTRIES: '0',
      ENTGATE_REQUIRE_CLASS_MATCH: 'yes',
      ENTGATE_MIGRATE_ON_START: 'off',
      ENTGATE_RESOLVERS: ' postgres , crm ,',
      ENTGATE_FAILURE_POLICY: 'stale-if-error',
      DATABASE_URL: 'postgresql://u:p@db/x',
      ENTGATE_KEY_SECRET: 's'.repeat(32),
      ENTGATE_ADMIN_TOKEN: 't'.repeat(16),
    });
    assert.deepEqual(
      [c.port, c.cacheMaxEntries, c.requireClassMatch, c.migrateOnStart, c.resolvers, c.failurePolicy, c.databaseUrl, c.keySecret, c.adminToken],
      [0, 0, true, false, ['postgres', 'crm'], 'stale-if-error', 'postgresql://u:p@db/x', 's'.repeat(32), 't'.repeat(16)],
    );
  });

  it('when a boolean is one of true/1/yes/on or false/0/no/off, in any case, then it is read; anything else is refused', () => {
    for (const v of ['true', '1', 'yes', 'on', 'TRUE', 'On']) assert.equal(loadConfig({ ENTGATE_REQUIRE_CLASS_MATCH: v }).requireClassMatch, true, v);
    for (const v of ['false', '0', 'no', 'off', 'NO']) assert.equal(loadConfig({ ENTGATE_REQUIRE_CLASS_MATCH: v }).requireClassMatch, false, v);
    for (const v of ['maybe', 'y', ' true', '2']) assert.match(configError({ ENTGATE_REQUIRE_CLASS_MATCH: v }), /ENTGATE_REQUIRE_CLASS_MATCH=/, v);
  });

  it('when a number is out of range or not whole, then it is refused with the range', () => {
    for (const v of ['65536', '-1', '1.5', 'abc']) {
      assert.equal(configError({ PORT: v }), `invalid configuration: PORT=${JSON.stringify(v)}: must be a whole number from 0 to 65535`, v);
    }
    assert.match(configError({ ENTGATE_CACHE_TTL_SECONDS: '0' }), /ENTGATE_CACHE_TTL_SECONDS="0": must be a whole number from 1 to 86400/);
  });

  it(
    'when a number is not written in plain decimal digits, then it is refused',
    () => {
      for (const v of ['0x50', '8e1', ' 80']) assert.match(configError({ PORT: v }), /PORT=/, v);
    },
  );

  it('when several variables are bad, then each is reported, naming its variable, in one message', () => {
    const m = configError({ PORT: '70000', ENTGATE_REQUIRE_CLASS_MATCH: 'maybe', LOG_LEVEL: 'loud', ENTGATE_RESOLVERS: 'crm,crm', ENTGATE_FAILURE_POLICY: 'retry' });
    assert.match(m, /PORT="70000": must be a whole number from 0 to 65535/);
    assert.match(m, /ENTGATE_REQUIRE_CLASS_MATCH="maybe": /);
    assert.match(m, /LOG_LEVEL="loud": /);
    assert.match(m, /ENTGATE_RESOLVERS="crm,crm": must not name a resolver twice/);
    assert.match(m, /ENTGATE_FAILURE_POLICY="retry": /);
    assert.equal(m.split('; ').filter((part) => /^(invalid configuration: )?[A-Z_]+=/.test(part)).length, 5);
  });

  it('when a secret is bad, then its variable and reason are reported but its value is not', () => {
    const secrets = { DATABASE_URL: 'mysql://root:hunter2@db/x', ENTGATE_KEY_SECRET: 'tooshort-secret', ENTGATE_ADMIN_TOKEN: 'short-token' };
    const m = configError(secrets);
    assert.match(m, /DATABASE_URL=\(hidden\): must be a postgres:\/\/ or postgresql:\/\/ URL/);
    assert.match(m, /ENTGATE_KEY_SECRET=\(hidden\): must be at least 32 characters/);
    assert.match(m, /ENTGATE_ADMIN_TOKEN=\(hidden\): must be at least 16 characters/);
    for (const value of [...Object.values(secrets), 'hunter2']) assert.ok(!m.includes(value), `${value} echoed`);
  });

  it('when the resolver list is empty after trimming, then it is refused', () => {
    assert.match(configError({ ENTGATE_RESOLVERS: ' , ' }), /ENTGATE_RESOLVERS=" , ": must name at least one resolver/);
  });

  it('when variables entgate does not read, or the CLI-only ENTGATE_URL, are set to anything, then the server configuration ignores them', () => {
    const c = loadConfig({ ENTGATE_URL: 'not a url', SOMETHING_ELSE: '!!', PATH: '/bin' });
    assert.equal(c.port, 8080);
    assert.equal('url' in c, false);
  });
});
