import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../src/config/load.ts';
import { ConfigError } from '../../../src/errors.ts';

describe('loadConfig', () => {
  it('applies defaults for an empty environment and freezes the result', () => {
    const c = loadConfig({});
    assert.equal(c.port, 8080);
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.dataDir, './data');
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.requireClassMatch, false);
    assert.equal(c.cacheMaxEntries, 100_000);
    assert.ok(Object.isFrozen(c));
  });

  it('converts numbers and booleans; empty means default', () => {
    const c = loadConfig({ PORT: '0', ENTGATE_REQUIRE_CLASS_MATCH: 'yes', ENTGATE_CACHE_MAX_ENTRIES: '0', HOST: '' });
    assert.deepEqual([c.port, c.requireClassMatch, c.cacheMaxEntries, c.host], [0, true, 0, '0.0.0.0']);
  });

  it('reports every bad value by variable, without echoing secrets', () => {
    assert.throws(
      () =>
        loadConfig({
          PORT: '70000',
          ENTGATE_REQUIRE_CLASS_MATCH: 'maybe',
          DATABASE_URL: 'mysql://root:hunter2@db/x',
          ENTGATE_KEY_SECRET: 'tooshort-secret',
          LOG_LEVEL: 'loud',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const m = err.message;
        assert.match(m, /^invalid configuration: /);
        assert.match(m, /PORT="70000": must be a whole number from 0 to 65535/);
        assert.match(m, /ENTGATE_REQUIRE_CLASS_MATCH="maybe"/);
        assert.match(m, /DATABASE_URL=\(hidden\): must be a postgres/);
        assert.match(m, /ENTGATE_KEY_SECRET=\(hidden\): must be at least 32 characters/);
        assert.match(m, /LOG_LEVEL="loud"/);
        assert.ok(!m.includes('hunter2') && !m.includes('tooshort-secret'));
        assert.ok(!m.includes('\n'));
        return true;
      },
    );
  });
});
