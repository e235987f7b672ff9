import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { databaseTargets } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';
import { runCli } from '../helpers/process.ts';
import { openDatabase } from '../../src/store/db.ts';

const SECRET_A = 'a'.repeat(32);
const SECRET_B = 'b'.repeat(32);

for (const target of databaseTargets) {
  describe(`the key secret on ${target.name}`, () => {
    it('refuses to start with another secret once keys are stored, until the new one is accepted', async () => {
      const db = await target.create();
      try {
        // No keys yet: another secret is simply recorded.
        await (await startTestService(db, { ENTGATE_KEY_SECRET: SECRET_B })).close();
        let svc = await startTestService(db, { ENTGATE_KEY_SECRET: SECRET_A });
        const ent = await request(svc.server).post('/admin/v1/entitlements').set(AUTH).send({ server: '*', key: 'real' }).expect(201);
        await request(svc.server).post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'made-under-a' }).expect(201);
        await svc.close();

        // The setting forgotten: a secret would be generated and stored; refused instead.
        await assert.rejects(startTestService(db, {}), /ENTGATE_KEY_SECRET is not set, and the secret stored in the database is not the secret this database's virtual keys were hashed with/);
        const direct = await openDatabase({ databaseUrl: db.env.DATABASE_URL, dataDir: db.env.DATA_DIR, poolMax: 1 });
        try {
          assert.equal(await direct.knex('entgate_settings').where({ name: 'key_secret' }).first('name'), undefined, 'no secret was left behind');
        } finally {
          await direct.close();
        }

        const accepted = await runCli(['key-secret', 'accept'], db.env.DATABASE_URL ? { DATABASE_URL: db.env.DATABASE_URL } : { DATA_DIR: db.env.DATA_DIR });
        assert.deepEqual([accepted.code, accepted.stdout], [0, 'the next start accepts its key secret\n'], accepted.stderr);
        svc = await startTestService(db, { ENTGATE_KEY_SECRET: SECRET_B });
        await request(svc.server).get('/?server=h;key=made-under-a').expect(404);
        await svc.close();
        await assert.rejects(startTestService(db, { ENTGATE_KEY_SECRET: SECRET_A }), /ENTGATE_KEY_SECRET is not the secret this database's virtual keys were hashed with/);
      } finally {
        await db.drop();
      }
    });
  });
}
