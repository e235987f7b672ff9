#!/usr/bin/env node
import { createReadStream, statSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import type { Entitlement, VirtualKey } from '../domain/types.ts';
import { AdminClient } from './api-client.ts';
import { addLeaseCommands } from './lease-commands.ts';
import { addSesTokenCommands } from './ses-token-commands.ts';
import { addAuditCommands } from './audit-commands.ts';
import { addCredentialCommands } from './credential-commands.ts';
import { addGuessCommands } from './guess-commands.ts';
import { addLicenceCommands } from './licence-commands.ts';
import { onDatabase } from './database.ts';
import { CliError, EXIT_USAGE, printJson, printTable } from './output.ts';
import { packageVersion } from '../lib/package-files.ts';

const program = new Command('entgate')
  .description('entitlement gateway: the rUS external entitlement check, with keys managed through the admin API')
  .version(packageVersion())
  .showSuggestionAfterError()
  .enablePositionalOptions()
  .exitOverride();

// The settings table (and zod, which validates it) is loaded before a command's action runs:
// --help, --version and a mistyped command print without loading it.
let settings: (typeof import('../../config/settings.ts'))['settings'];
program.hook('preAction', async () => {
  ({ settings } = await import('../../config/settings.ts'));
});

const baseUrl = () => process.env[settings.url.env] || settings.url.default;
const client = () => new AdminClient(baseUrl(), process.env[settings.adminToken.env] || undefined);

function positiveInt(flag: string) {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 2_147_483_647) {
      throw new CliError(`${flag} must be a positive integer, not '${value}'`);
    }
    return Number(value);
  };
}

function nonNegativeInt(flag: string) {
  return (value: string) => {
    if (!/^\d+$/.test(value)) throw new CliError(`${flag} must be a whole number of seconds, not '${value}'`);
    return Number(value);
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

program
  .command('serve')
  .description('run the server (what npm start runs); configured by environment variables, see .env.example')
  .action(async () => {
    const { loadConfig } = await import('../../config/load.ts');
    const config = loadConfig();
    // The server's modules are loaded by the commands that run it: the admin commands start fast.
    const [{ createLogger, logOutputOf }, { startService }] = await Promise.all([import('../lib/logger.ts'), import('../service.ts')]);
    const logger = createLogger(config.logLevel);
    // Lines a slow log reader has not taken yet: waited for, but never for long (nothing is
    // flushed on exit, so a reader that is gone or stalled cannot hold the process).
    const exit = (code: number) => {
      void (logOutputOf(logger)?.flushed(LOG_FLUSH_MS) ?? Promise.resolve()).then(() => process.exit(code));
    };
    const service = await startService(config, logger);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      // Whatever happens, the process is gone within ENTGATE_SHUTDOWN_TIMEOUT_MS (the drain's
      // bound) plus the audit writers' 5 s to flush what is queued, and 2 s to spare.
      setTimeout(() => {
        logger.error('shutdown took too long; exiting');
        process.exit(1);
      }, config.shutdownTimeoutMs + 7000).unref();
      service.close().then(
        () => exit(0),
        (err: Error) => {
          logger.error({ err: err.message }, 'shutdown failed');
          exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

/** How long a stopping server waits for its last log lines to be taken by a slow reader. */
const LOG_FLUSH_MS = 1000;

program
  .command('migrate')
  .description('apply pending database migrations (the embedded database only while the server is stopped)')
  .action(async () => {
    const { migrate } = await import('../store/db.ts');
    const applied = await onDatabase((db) => migrate(db));
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'already current\n');
  });

program
  .command('key-secret')
  .description('the key secret (ENTGATE_KEY_SECRET) that virtual keys are hashed with')
  .command('accept')
  .description(
    "accept a new key secret: the server refuses to start with a secret other than the one its stored virtual keys were hashed with; after this, the next start records the secret it has (every stored key becomes unknown: issue them again)",
  )
  .action(async () => {
    const { forgetKeySecret } = await import('../store/instance-secret.ts');
    const forgot = await onDatabase((db) => forgetKeySecret(db.knex));
    process.stdout.write(forgot ? 'the next start accepts its key secret\n' : 'no key secret was recorded: the next start accepts its key secret\n');
  });

const entitlement = program.command('entitlement').description('real entitlements (server pattern, class, key)');

entitlement
  .command('add')
  .description('create an entitlement; prints its id')
  .requiredOption('--server <pattern>', "repository host name, '*.domain' or '*'")
  .requiredOption('--key <real key>', 'the real entitlement key, as in the repository')
  .option('--class <class>', 'entitlement class (informational for Conary)')
  .option('--description <text>', 'free text for people')
  .option('--json', 'print the record as JSON')
  .action(async (o: { server: string; key: string; class?: string; description?: string; json?: boolean }) => {
    const created = await client().request<Entitlement>('POST', '/entitlements', {
      server: o.server,
      key: o.key,
      ...(o.class !== undefined && { class: o.class }),
      ...(o.description !== undefined && { description: o.description }),
    });
    if (o.json) printJson(created);
    else process.stdout.write(`${created.id}\n`);
  });

entitlement
  .command('list')
  .description('list entitlements')
  .option('--json', 'print JSON')
  .action(async (o: { json?: boolean }) => {
    const { items } = await client().request<{ items: Entitlement[] }>('GET', '/entitlements');
    if (o.json) printJson(items);
    else printTable(items as unknown as Record<string, unknown>[], ['id', 'server', 'class', 'key', 'description']);
  });

entitlement
  .command('delete <id>')
  .description('delete an entitlement that no virtual key uses')
  .action(async (id: string) => {
    await client().request('DELETE', `/entitlements/${positiveInt('<id>')(id)}`);
  });

const vkey = program.command('vkey').description('virtual keys: the keys clients present, mapped to an entitlement');

vkey
  .command('add')
  .description('map a virtual key to an entitlement; prints its id (and a generated key, once)')
  .requiredOption('--entitlement <id>', 'entitlement id', positiveInt('--entitlement'))
  .option('--key <key>', 'the virtual key (a CRM customer id, say); generated when left out')
  .option('--expires <time>', 'ISO-8601 time or date after which the key is refused')
  .option('--not-before <time>', 'ISO-8601 time or date before which the key is refused')
  .option('--allow-ip <cidr>', 'allow only clients in this range (repeatable)', collect)
  .option('--cache-timeout <seconds>', 'seconds Conary may cache a grant', nonNegativeInt('--cache-timeout'))
  .option('--no-retry', 'when the cached grant expires, Conary reports a timeout instead of asking again (needs --cache-timeout of 1 or more)')
  .option('--customer <ref>', 'customer reference, for people')
  .option('--max-leases <n>', 'seats of the floating-lease pool this key defines (none: the key holds no leases)', positiveInt('--max-leases'))
  .option('--json', 'print the record as JSON')
  .action(
    async (o: {
      entitlement: number;
      key?: string;
      expires?: string;
      notBefore?: string;
      allowIp?: string[];
      cacheTimeout?: number;
      retry: boolean;
      customer?: string;
      maxLeases?: number;
      json?: boolean;
    }) => {
      if (!o.retry && (o.cacheTimeout === undefined || o.cacheTimeout < 1)) {
        throw new CliError('--no-retry needs --cache-timeout of 1 or more: without a cached grant to expire, Conary would fail every second request of the client');
      }
      const created = await client().request<VirtualKey & { key: string; warnings?: string[] }>('POST', '/virtual-keys', {
        entitlementId: o.entitlement,
        ...(o.key !== undefined && { key: o.key }),
        ...(o.expires !== undefined && { expiresAt: o.expires }),
        ...(o.notBefore !== undefined && { notBefore: o.notBefore }),
        ...(o.allowIp !== undefined && { allowedCidrs: o.allowIp }),
        ...(o.cacheTimeout !== undefined && { cacheTimeout: o.cacheTimeout }),
        ...(o.retry === false && { retry: false }),
        ...(o.customer !== undefined && { customerRef: o.customer }),
        ...(o.maxLeases !== undefined && { maxConcurrentLeases: o.maxLeases }),
      });
      for (const warning of created.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
      if (o.json) {
        printJson(created);
      } else {
        process.stdout.write(`${created.id}\n`);
        if (o.key === undefined) process.stdout.write(`virtual key (shown once): ${created.key}\n`);
      }
    },
  );

vkey
  .command('list')
  .description('list virtual keys (hints only: keys are never stored)')
  .option('--entitlement <id>', 'only keys of this entitlement', positiveInt('--entitlement'))
  .addOption(new Option('--status <status>', 'only keys in this status').choices(['active', 'suspended', 'revoked']))
  .option('--json', 'print JSON')
  .action(async (o: { entitlement?: number; status?: string; json?: boolean }) => {
    const items: VirtualKey[] = [];
    let cursor: number | null = null;
    do {
      const params = new URLSearchParams({ limit: '1000' });
      if (o.entitlement !== undefined) params.set('entitlementId', String(o.entitlement));
      if (o.status !== undefined) params.set('status', o.status);
      if (cursor !== null) params.set('cursor', String(cursor));
      const page: { items: VirtualKey[]; nextCursor: number | null } = await client().request('GET', `/virtual-keys?${params}`);
      items.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);
    if (o.json) printJson(items);
    else {
      printTable(items as unknown as Record<string, unknown>[], [
        'id',
        'entitlementId',
        'hint',
        'status',
        'notBefore',
        'expiresAt',
        'allowedCidrs',
        'cacheTimeout',
        'customerRef',
        'maxConcurrentLeases',
        'lastUsedAt',
      ]);
    }
  });

for (const [action, status, past] of [
  ['revoke', 'revoked', 'revoked'],
  ['suspend', 'suspended', 'suspended'],
  ['resume', 'active', 'resumed'],
] as const) {
  vkey
    .command(`${action} [key]`)
    .description(`${action} a virtual key, given the key itself or --id${action === 'revoke' ? ' (final)' : ''}`)
    .option('--id <id>', 'the virtual key id instead of the key', positiveInt('--id'))
    .action(async (key: string | undefined, o: { id?: number }) => {
      const api = client();
      if ((key === undefined) === (o.id === undefined)) throw new CliError('give either the virtual key or --id <id>');
      const id = o.id ?? (await api.request<VirtualKey>('POST', '/virtual-keys/lookup', { key })).id;
      const updated = await api.request<VirtualKey>('PATCH', `/virtual-keys/${id}`, { status });
      process.stdout.write(`${past} virtual key ${updated.id} (${updated.hint})\n`);
    });
}

vkey
  .command('leases [key]')
  .description("set or clear the seats of the floating-lease pool a virtual key defines, given the key itself or --id")
  .option('--id <id>', 'the virtual key id instead of the key', positiveInt('--id'))
  .option('--max <n>', 'seats: how many leases the key may hold at once', positiveInt('--max'))
  .option('--none', 'the key holds no leases (its live leases end at their next heartbeat)')
  .action(async (key: string | undefined, o: { id?: number; max?: number; none?: boolean }) => {
    const api = client();
    if ((key === undefined) === (o.id === undefined)) throw new CliError('give either the virtual key or --id <id>');
    if ((o.max === undefined) === (o.none === undefined)) throw new CliError('give either --max <n> or --none');
    const id = o.id ?? (await api.request<VirtualKey>('POST', '/virtual-keys/lookup', { key })).id;
    const updated = await api.request<VirtualKey>('PATCH', `/virtual-keys/${id}`, { maxConcurrentLeases: o.max ?? null });
    process.stdout.write(
      `virtual key ${updated.id} (${updated.hint}): ${updated.maxConcurrentLeases === null ? 'no leases' : `${updated.maxConcurrentLeases} concurrent leases`}\n`,
    );
  });

vkey
  .command('import <file>')
  .description(
    'import virtual keys from CSV, all or nothing. Header: key,entitlement_id[,not_before,expires_at,allowed_cidrs,cache_timeout,retry,customer_ref] ' +
      '(allowed_cidrs separated by spaces; retry true|false)',
  )
  .option('--json', 'print the result as JSON')
  .action(async (file: string, o: { json?: boolean }) => {
    // Sent as a stream, and answered as one: progress on stderr (one line redrawn on a
    // terminal, a line each otherwise: the server tells every 10,000 rows and at the end).
    let size: number;
    try {
      const stat = statSync(file);
      if (stat.isDirectory()) throw Object.assign(new Error('a directory'), { code: 'EISDIR' });
      size = stat.size;
    } catch (err) {
      throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const progress = { validated: 0, written: 0 };
    const printed = { validated: 0, written: 0 };
    const tty = process.stderr.isTTY;
    const result = await client().requestLines<{ imported: number; ids?: number[]; idRanges: [number, number][]; warnings?: { line: number; message: string }[] }>(
      'POST',
      '/virtual-keys/import',
      createReadStream(file),
      'text/csv',
      (line) => {
        for (const k of ['validated', 'written'] as const) {
          if (typeof line[k] !== 'number') continue;
          progress[k] = line[k];
          // Not a terminal (a log): a line per 10,000 rows, so that a small file's refusal
          // stays the one line on stderr.
          if (!tty && progress[k] - printed[k] >= PROGRESS_LINE_ROWS) {
            printed[k] = progress[k];
            process.stderr.write(`${k} ${progress[k]} rows\n`);
          }
        }
        if (tty) process.stderr.write(`\rvalidated ${progress.validated} rows, written ${progress.written}`);
      },
      size,
    );
    if (tty && progress.validated > 0) process.stderr.write('\n');
    for (const w of result.warnings ?? []) process.stderr.write(`warning: line ${w.line}: ${w.message}\n`);
    if (o.json) printJson(result);
    else process.stdout.write(`imported ${result.imported} virtual keys\n`);
  });

const PROGRESS_LINE_ROWS = 10_000;

const product = program.command('product').description('CRM product codes mapped to entitlements (for the crm resolver)');

product
  .command('map <code>')
  .description('map a CRM product code to an entitlement (or re-map it)')
  .requiredOption('--entitlement <id>', 'entitlement id', positiveInt('--entitlement'))
  .option('--json', 'print the record as JSON')
  .action(async (code: string, o: { entitlement: number; json?: boolean }) => {
    const mapped = await client().request<{ code: string; entitlementId: number }>('PUT', `/products/${encodeURIComponent(code)}`, {
      entitlementId: o.entitlement,
    });
    if (o.json) printJson(mapped);
    else process.stdout.write(`${mapped.code} -> entitlement ${mapped.entitlementId}\n`);
  });

product
  .command('list')
  .description('list product mappings')
  .option('--json', 'print JSON')
  .action(async (o: { json?: boolean }) => {
    const { items } = await client().request<{ items: Record<string, unknown>[] }>('GET', '/products');
    if (o.json) printJson(items);
    else printTable(items, ['code', 'entitlementId', 'updatedAt']);
  });

product
  .command('unmap <code>')
  .description('remove a product mapping')
  .action(async (code: string) => {
    await client().request('DELETE', `/products/${encodeURIComponent(code)}`);
  });

addLeaseCommands(program, client, baseUrl, { positiveInt });
addSesTokenCommands(program);
addAuditCommands(program, client, positiveInt);
addCredentialCommands(program, client, positiveInt);
addGuessCommands(program, client);
addLicenceCommands(program, client);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // commander has printed its own one-line message
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  const message = (err as Error).message.replace(/\s*\n\s*/g, '; ');
  process.stderr.write(`entgate: ${message}\n`);
  process.exit(err instanceof CliError ? err.exitCode : 1);
}
