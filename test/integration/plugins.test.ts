import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService } from '../helpers/service.ts';
import { runCli } from '../helpers/process.ts';
import { ConfigError } from '../../src/lib/errors.ts';

const GOOD = `
export const optionsSchema = { safeParse: (v) => (typeof v.realKey === 'string' ? { success: true, data: v } : { success: false, error: { issues: [{ path: ['realKey'], message: 'is required' }] } }) };
export default function create(options, { logger }) {
  return {
    name: 'tmp-plugin',
    async resolve(request) {
      if (request.key.startsWith('plug-')) return { outcome: 'entitled', class: null, key: options.realKey, ttlSeconds: 0 };
      if (request.key === 'evil') return { outcome: 'entitled', class: null, key: 'a&b' };
      if (request.key === 'weird') return { outcome: 'maybe' };
      if (request.key === 'thrower') throw new Error('backend exploded');
      return { outcome: 'pass' };
    },
  };
}`;

const MALFORMED: Record<string, [string, RegExp]> = {
  'no-default.mjs': ['export const x = 1;', /default export must be a factory function/],
  'not-function.mjs': ['export default 42;', /default export must be a factory function/],
  'throws.mjs': ['export default () => { throw new Error("no backend configured"); };', /its factory failed: no backend configured/],
  'bad-shape.mjs': ['export default () => ({ name: "x" });', /must return an object with a non-empty name and an async resolve/],
  'syntax.mjs': ['export default function ( {', /cannot load the module/],
  'bad-options.mjs': [GOOD, /invalid options: realKey: is required/],
};

describe('resolver plugins loaded by path', () => {
  let dir: string;
  let db: TestDatabase;
  before(async () => {
    dir = tempDir();
    writeFileSync(join(dir, 'good.mjs'), GOOD);
    for (const [file, [source]] of Object.entries(MALFORMED)) writeFileSync(join(dir, file), source);
    db = await databaseTargets[0]!.create();
  });
  after(async () => {
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  function optionsFile(name: string, options: unknown): string {
    const file = join(dir, `${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ [name]: options }));
    return file;
  }

  it('runs a plugin in the chain, and treats its contract breaches as failures', async () => {
    const plugin = join(dir, 'good.mjs');
    const svc = await startTestService(db, {
      ENTGATE_RESOLVERS: `postgres,${plugin}`,
      ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile(plugin, { realKey: 'PLUGIN-REAL' }),
    });
    try {
      const ok = await request(svc.server).get('/?server=any.host;key=plug-1');
      assert.equal(ok.status, 200);
      assert.match(ok.text, /<key>PLUGIN-REAL<\/key>/);
      for (const key of ['evil', 'weird', 'thrower', 'nobody']) assert.equal((await request(svc.server).get(`/?server=h;key=${key}`)).status, 404, key);
      await svc.events.flush();
      const reasons = (await svc.db.knex('check_events').orderBy('id').select('reason', 'resolver')).map((r) => `${r.resolver}:${r.reason}`);
      assert.deepEqual(reasons, [
        'tmp-plugin:null',
        'tmp-plugin:resolver_failed:invalid_answer',
        'tmp-plugin:resolver_failed:invalid_answer',
        'tmp-plugin:resolver_failed:error',
        'null:unknown_key',
      ]);
    } finally {
      await svc.close();
    }
  });

  for (const [file, [, message]] of Object.entries(MALFORMED)) {
    it(`refuses to start with ${file}`, async () => {
      const plugin = join(dir, file);
      await assert.rejects(
        startTestService(db, { ENTGATE_RESOLVERS: plugin, ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile(plugin, {}) }),
        (err: Error) => err instanceof ConfigError && err.message.startsWith(`resolver ${plugin}: `) && message.test(err.message),
      );
    });
  }

  it('refuses a missing module, an unknown name, and options for a resolver not in the chain', async () => {
    await assert.rejects(startTestService(db, { ENTGATE_RESOLVERS: join(dir, 'missing.mjs') }), /cannot load the module/);
    await assert.rejects(startTestService(db, { ENTGATE_RESOLVERS: 'postgres,not a name' }), /not a built-in/);
    await assert.rejects(
      startTestService(db, { ENTGATE_RESOLVERS: 'postgres', ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile('crm', {}) }),
      /options for 'crm', which ENTGATE_RESOLVERS does not name/,
    );
    await assert.rejects(startTestService(db, { ENTGATE_RESOLVERS: 'crm' }), /resolver crm: invalid options: url/);
  });

  it('stops `entgate serve` with one line on stderr', async () => {
    const res = await runCli(['serve'], { DATA_DIR: join(dir, 'serve-data'), PORT: '0', ENTGATE_RESOLVERS: join(dir, 'not-function.mjs') });
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /^entgate: resolver .*not-function\.mjs: the module's default export must be a factory function/);
    assert.equal(res.stderr.trim().split('\n').length, 1);
  });
});
