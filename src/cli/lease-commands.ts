import type { Command } from 'commander';
import type { AdminClient } from './api-client.ts';
import { readText } from './files.ts';
import { CliError, printJson, printTable } from './output.ts';

type Row = Record<string, unknown>;

interface Parsers {
  positiveInt: (flag: string) => (value: string) => number;
}

interface PoolFlags {
  seats?: number;
  ttl?: number;
  maxTtl?: number;
  heartbeat?: number;
  signed?: boolean;
  anonymous?: boolean;
  json?: boolean;
}

const poolBody = (o: PoolFlags) => ({
  ...(o.seats !== undefined && { seats: o.seats }),
  ...(o.ttl !== undefined && { defaultTtlSeconds: o.ttl }),
  ...(o.maxTtl !== undefined && { maxTtlSeconds: o.maxTtl }),
  ...(o.heartbeat !== undefined && { heartbeatIntervalSeconds: o.heartbeat }),
  ...(o.signed !== undefined && { requireSignedRequests: o.signed }),
  ...(o.anonymous !== undefined && { anonymous: o.anonymous }),
});

const POOL_COLUMNS = ['name', 'seats', 'inUse', 'defaultTtlSeconds', 'maxTtlSeconds', 'heartbeatIntervalSeconds', 'requireSignedRequests', 'anonymous'];
const ANONYMOUS = 'let clients take seats without any credential (anyone who reaches /v1)';
const LEASE_COLUMNS = ['leaseId', 'clientId', 'clientAddress', 'acquiredAt', 'expiresAt', 'ttlSeconds'];

/** `entgate pool`, `entgate lease` and `entgate client-key`. */
export function addLeaseCommands(program: Command, client: () => AdminClient, baseUrl: () => string, { positiveInt }: Parsers): void {
  const pool = program.command('pool').description('floating-lease pools: seats held by concurrent clients');
  const limits = (c: Command) =>
    c
      .option('--ttl <seconds>', 'default lease TTL', positiveInt('--ttl'))
      .option('--max-ttl <seconds>', 'longest TTL a client may ask for', positiveInt('--max-ttl'))
      .option('--heartbeat <seconds>', 'heartbeat interval hint given to clients', positiveInt('--heartbeat'))
      .option('--json', 'print the record as JSON');

  limits(
    pool
      .command('create <name>')
      .description('create a pool')
      .requiredOption('--seats <n>', 'how many leases may be live at once', positiveInt('--seats'))
      .option('--signed', 'accept only OpenPGP clear-signed requests')
      .option('--anonymous', ANONYMOUS),
  ).action(async (name: string, o: PoolFlags) => {
    const created = await client().request<Row>('POST', '/pools', { name, ...poolBody(o) });
    if (o.json) printJson(created);
    else process.stdout.write(`created pool ${name} (${o.seats} seat${o.seats === 1 ? '' : 's'})\n`);
  });

  limits(
    pool
      .command('update <name>')
      .description('change a pool (live leases keep their seats; fewer seats only stop new acquires)')
      .option('--seats <n>', 'how many leases may be live at once', positiveInt('--seats'))
      .option('--signed', 'accept only OpenPGP clear-signed requests')
      .option('--unsigned', 'accept unsigned requests too')
      .option('--anonymous', ANONYMOUS)
      .option('--no-anonymous', 'require a client credential (an API credential with leases:client, a virtual key or a signed request)'),
  ).action(async (name: string, o: PoolFlags & { unsigned?: boolean }) => {
    if (o.signed && o.unsigned) throw new CliError('give --signed or --unsigned, not both');
    const body = poolBody({ ...o, ...(o.unsigned && { signed: false }) });
    if (Object.keys(body).length === 0) throw new CliError('nothing to change: give --seats, --ttl, --max-ttl, --heartbeat, --signed, --unsigned, --anonymous or --no-anonymous');
    const updated = await client().request<Row>('PATCH', `/pools/${encodeURIComponent(name)}`, body);
    if (o.json) printJson(updated);
    else process.stdout.write(`updated pool ${name}\n`);
  });

  pool
    .command('list')
    .description('list pools with their seats in use')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const { items } = await client().request<{ items: Row[] }>('GET', '/pools');
      if (o.json) printJson(items);
      else printTable(items, POOL_COLUMNS);
    });

  pool
    .command('show <name>')
    .description('a pool and its live leases')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const described = await client().request<Row & { leases: Row[] }>('GET', `/pools/${encodeURIComponent(name)}`);
      if (o.json) return printJson(described);
      printTable([described], POOL_COLUMNS);
      process.stdout.write('\n');
      printTable(described.leases, LEASE_COLUMNS);
    });

  pool
    .command('delete <name>')
    .description('delete a pool (refused while it has live leases, unless --force)')
    .option('--force', 'release its live leases with it')
    .action(async (name: string, o: { force?: boolean }) => {
      await client().request('DELETE', `/pools/${encodeURIComponent(name)}${o.force ? '?force=true' : ''}`);
      process.stdout.write(`deleted pool ${name}\n`);
    });

  const lease = program
    .command('lease')
    .description('floating leases: list, release, events, and run a command holding a seat')
    .enablePositionalOptions();

  lease
    .command('list <pool>')
    .description('live leases of a pool')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }) => {
      const { leases } = await client().request<{ leases: Row[] }>('GET', `/pools/${encodeURIComponent(name)}`);
      if (o.json) printJson(leases);
      else printTable(leases, LEASE_COLUMNS);
    });

  lease
    .command('release <leaseId>')
    .description("end a lease on an admin's word (recorded as released, reason forced)")
    .action(async (id: string) => {
      await client().request('DELETE', `/leases/${encodeURIComponent(id)}`);
      process.stdout.write(`released ${id}\n`);
    });

  lease
    .command('events')
    .description('lease events, newest first')
    .option('--pool <name>', 'only this pool')
    .option('--lease <id>', 'only this lease')
    .option('--limit <n>', 'at most this many (1 to 1000)', positiveInt('--limit'), 100)
    .option('--json', 'print JSON')
    .action(async (o: { pool?: string; lease?: string; limit: number; json?: boolean }) => {
      const params = new URLSearchParams({ limit: String(o.limit) });
      if (o.pool !== undefined) params.set('pool', o.pool);
      if (o.lease !== undefined) params.set('leaseId', o.lease);
      const { items } = await client().request<{ items: Row[] }>('GET', `/lease-events?${params}`);
      if (o.json) printJson(items);
      else printTable(items, ['occurredAt', 'type', 'pool', 'leaseId', 'clientId', 'reason', 'clientAddress']);
    });

  lease
    .command('run')
    .description(
      'hold a seat while a command runs: acquire, heartbeat, release on exit; exits with the command\'s code, ' +
        '75 when no seat is free, 76 when the lease was lost and the command stopped',
    )
    .usage('(--pool <name> | --virtual-key-env <VAR>) [options] -- <command> [args...]')
    .option('--pool <name>', 'the pool to take a seat from')
    .option('--virtual-key-env <VAR>', "take a seat from the virtual key's pool; the key is read from this environment variable")
    .option('--client-id <id>', 'this client (default: <hostname>-<pid>)')
    .option('--ttl <seconds>', 'lease TTL (default: the pool\'s)', positiveInt('--ttl'))
    .option('--wait <seconds>', 'wait up to this long for a free seat', positiveInt('--wait'))
    .option('--sign-key <file>', 'sign every request with this armored OpenPGP private key (pools that require signed requests)')
    .option('--token-env <VAR>', 'send the client credential (an API credential with scope leases:client) read from this environment variable', 'ENTGATE_CLIENT_TOKEN')
    .argument('<command...>', 'the command and its arguments, after --')
    .passThroughOptions()
    .action(async (command: string[], o: { pool?: string; virtualKeyEnv?: string; clientId?: string; ttl?: number; wait?: number; signKey?: string; tokenEnv: string }) => {
      const { leaseRun } = await import('./lease-run.ts'); // openpgp and the lease client, only for this command
      const code = await leaseRun({
        baseUrl: baseUrl(),
        command,
        ...(o.pool !== undefined && { pool: o.pool }),
        ...(o.virtualKeyEnv !== undefined && { virtualKeyEnv: o.virtualKeyEnv }),
        ...(o.clientId !== undefined && { clientId: o.clientId }),
        ...(o.ttl !== undefined && { ttl: o.ttl }),
        ...(o.wait !== undefined && { wait: o.wait }),
        ...(o.signKey !== undefined && { signKey: o.signKey }),
        tokenEnv: o.tokenEnv,
      });
      process.exitCode = code;
    });

  const clientKey = program.command('client-key').description('client public keys, for pools that require signed requests');

  clientKey
    .command('add <clientId> <publicKeyFile>')
    .description('register an armored OpenPGP public key for a client id; prints its fingerprint')
    .option('--json', 'print the record as JSON')
    .action(async (clientId: string, file: string, o: { json?: boolean }) => {
      const added = await client().request<Row & { fingerprint: string }>('POST', '/client-keys', { clientId, publicKey: readText(file) });
      if (o.json) printJson(added);
      else process.stdout.write(`${added.fingerprint}\n`);
    });

  clientKey
    .command('list')
    .description('registered client keys')
    .option('--client-id <id>', 'only this client')
    .option('--json', 'print JSON')
    .action(async (o: { clientId?: string; json?: boolean }) => {
      const q = o.clientId === undefined ? '' : `?${new URLSearchParams({ clientId: o.clientId })}`;
      const { items } = await client().request<{ items: Row[] }>('GET', `/client-keys${q}`);
      if (o.json) printJson(items);
      else printTable(items, ['clientId', 'fingerprint', 'createdAt']);
    });

  clientKey
    .command('delete <fingerprint>')
    .description('remove a client key')
    .action(async (fingerprint: string) => {
      await client().request('DELETE', `/client-keys/${encodeURIComponent(fingerprint)}`);
      process.stdout.write(`deleted ${fingerprint}\n`);
    });
}
