import { after, before } from 'node:test';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { resolverContractTests } from '../../src/testing/resolver-contract.ts';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { FakeCrm } from '../helpers/fake-crm.ts';
import { openDatabase, migrate, type Database } from '../../src/store/db.ts';
import { VirtualKeysRepo } from '../../src/store/virtual-keys-repo.ts';
import { ProductsRepo } from '../../src/store/products-repo.ts';
import { KeyCache } from '../../src/resolvers/key-cache.ts';
import { PostgresResolver } from '../../src/resolvers/postgres.ts';
import { CrmResolver, ProductCatalog, crmOptionsSchema } from '../../src/resolvers/crm.ts';
import { loadResolvers } from '../../src/resolvers/loader.ts';
import { createKeyHasher, keyHint } from '../../src/domain/virtual-key.ts';
import { loadConfig } from '../../config/load.ts';
import { REPO_ROOT } from '../helpers/process.ts';

// The contract suite hashes keys with this secret (see src/testing/resolver-contract.ts).
const hash = createKeyHasher('contract-tests');
let tdb: TestDatabase;
let db: Database;
let entitlementId: number;
const crm = new FakeCrm();
const dir = tempDir();

before(async () => {
  tdb = await databaseTargets[0]!.create();
  db = await openDatabase({ dataDir: tdb.env.DATA_DIR });
  await migrate(db);
  const [ent] = await db.knex('entitlements').insert({ server_pattern: 'rm.example.com', class: 'gold', real_key: 'REAL-KEY' }).returning('id');
  entitlementId = (ent as { id: number }).id;
  await db.knex('virtual_keys').insert({ entitlement_id: entitlementId, key_hash: hash('KNOWN-KEY'), key_hint: keyHint('KNOWN-KEY') });
  await db.knex('products').insert({ code: 'GOLD', entitlement_id: entitlementId });
  await crm.start();
  crm.scripts.set('CUST-1', { kind: 'json', products: ['GOLD'] });
});
after(async () => {
  await crm.stop();
  await db.close();
  await tdb.drop();
  rmSync(dir, { recursive: true, force: true });
});

resolverContractTests({
  name: 'postgres',
  create: () => new PostgresResolver(new VirtualKeysRepo(db), new KeyCache({ maxEntries: 100, ttlMs: 1000, negativeTtlMs: 1000 }), { requireClassMatch: false }),
  entitled: { server: 'rm.example.com', key: 'KNOWN-KEY' },
  unknown: { server: 'rm.example.com', key: 'UNKNOWN-KEY' },
});

resolverContractTests({
  name: 'crm',
  create: () =>
    new CrmResolver(
      crmOptionsSchema.parse({ url: `${crm.url}/customers/{key}`, statusPath: 'customer.status', productsPath: 'customer.products' }),
      new ProductCatalog(new ProductsRepo(db.knex)),
    ),
  entitled: { server: 'rm.example.com', key: 'CUST-1' },
  unknown: { server: 'rm.example.com', key: 'NO-SUCH-CUSTOMER' },
});

resolverContractTests({
  name: 'examples/plugins/customer-directory.js, through the plugin loader',
  create: async () => {
    const name = './examples/plugins/customer-directory.js';
    const optionsFile = join(dir, 'options.json');
    writeFileSync(optionsFile, JSON.stringify({ [name]: { file: join(REPO_ROOT, 'examples/plugins/customers.json') } }));
    const config = loadConfig({ ENTGATE_RESOLVERS: name, ENTGATE_RESOLVER_OPTIONS_FILE: optionsFile });
    const [resolver] = await loadResolvers(config, pino({ level: 'silent' }), {}, REPO_ROOT);
    return resolver!;
  },
  entitled: { server: 'rm.example.com', key: 'CUST-1' },
  unknown: { server: 'rm.example.com', key: 'CUST-404' },
});
