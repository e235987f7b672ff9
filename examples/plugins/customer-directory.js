// An example entgate resolver plugin: customers kept in a JSON file.
//
//   ENTGATE_RESOLVERS=postgres,./examples/plugins/customer-directory.js
//   ENTGATE_RESOLVER_OPTIONS_FILE=./resolvers.json
//   resolvers.json: { "./examples/plugins/customer-directory.js": { "file": "./customers.json" } }
//
// customers.json maps a customer id (the virtual key) to what it is entitled to:
//   { "CUST-1": { "status": "active", "servers": ["rm.example.com"], "class": "gold", "key": "REAL-KEY" } }
//
// docs/plugins.md walks through writing one like it.
import { readFile } from 'node:fs/promises';
import { z } from 'zod';

/** entgate validates the plugin's options with this at start (any object with safeParse works). */
export const optionsSchema = z.strictObject({
  file: z.string().min(1),
  /** Re-read the file at most this often (seconds). */
  reloadSeconds: z.number().int().min(1).default(30),
});

const customerSchema = z.record(
  z.string(),
  z.strictObject({
    status: z.string(),
    servers: z.array(z.string()).min(1),
    class: z.string().nullable().default(null),
    key: z.string(),
  }),
);

/** The factory: entgate calls it once at start with the validated options. */
export default async function createCustomerDirectory(options, { logger }) {
  let customers = {};
  let loadedAt = 0;
  async function load() {
    customers = customerSchema.parse(JSON.parse(await readFile(options.file, 'utf8')));
    loadedAt = Date.now();
  }
  await load(); // a broken file stops start-up, with the factory's error message
  logger.info({ customers: Object.keys(customers).length }, 'customer directory loaded');

  return {
    name: 'customer-directory',
    async resolve(request, { signal }) {
      if (signal.aborted) throw signal.reason;
      if (Date.now() - loadedAt > options.reloadSeconds * 1000) await load();
      const customer = Object.hasOwn(customers, request.key) ? customers[request.key] : undefined;
      if (customer === undefined) return { outcome: 'pass' }; // not ours: the next resolver decides
      if (customer.status !== 'active') return { outcome: 'denied', reason: 'customer_inactive' };
      if (!customer.servers.includes('*') && !customer.servers.includes(request.server.toLowerCase())) {
        return { outcome: 'denied', reason: 'server_not_covered' };
      }
      return { outcome: 'entitled', class: customer.class, key: customer.key };
    },
  };
}
