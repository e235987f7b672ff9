import { Option, type Command } from 'commander';
import { SCOPES } from '../auth/scopes.ts';
import { onDatabase } from './database.ts';
import type { AdminClient } from './api-client.ts';
import { CliError, printJson, printTable } from './output.ts';

interface TokenRecord extends Record<string, unknown> {
  id: number;
  name: string;
  scopes: string[];
  expiresAt: string | null;
  token?: string;
}

/** `--expires 2027-01-31`, `--expires 2027-01-31T12:00:00Z`, or a span from now: `--expires 90d`, `12h`. */
function expiry(value: string): string {
  const span = /^(\d{1,5})([dh])$/.exec(value);
  if (span) return new Date(Date.now() + Number(span[1]) * (span[2] === 'd' ? 86_400_000 : 3_600_000)).toISOString();
  if (/^\d{4}-\d{2}-\d{2}(T.+)?$/.test(value) && !Number.isNaN(Date.parse(value))) return value;
  throw new CliError(`--expires takes a date (2027-01-31), a time with a zone, or a span like 90d or 12h, not '${value}'`);
}

const COLUMNS = ['id', 'name', 'scopes', 'hint', 'createdBy', 'createdAt', 'expiresAt', 'lastUsedAt', 'revokedAt'];
const EVENT_COLUMNS = ['id', 'occurredAt', 'actor', 'method', 'route', 'target', 'status', 'callerIp'];

/** `entgate admin-token …` and `entgate audit admin`. */
export function addAdminTokenCommands(program: Command, client: () => AdminClient, positiveInt: (flag: string) => (v: string) => number): void {
  const token = program.command('admin-token').description(`admin API tokens with scopes (${SCOPES.join(', ')})`);

  token
    .command('create <name>')
    .description('create a token; it is printed once and never again (stored as a digest)')
    .addOption(new Option('--scope <scope...>', 'scopes it holds (repeat or list)').choices(SCOPES).makeOptionMandatory())
    .option('--expires <when>', 'a date, a time with a zone, or a span from now such as 90d or 12h', expiry)
    .option('--json', 'print the record (with the token) as JSON')
    .action(async (name: string, o: { scope: string[]; expires?: string; json?: boolean }) => {
      const made = await client().request<TokenRecord>('POST', '/admin-tokens', {
        name,
        scopes: o.scope,
        ...(o.expires !== undefined && { expiresAt: o.expires }),
      });
      if (o.json) return printJson(made);
      process.stdout.write(`${made.token}\n`);
      process.stderr.write(`admin token ${made.id} '${made.name}' (${made.scopes.join(', ')}${made.expiresAt ? `, expires ${made.expiresAt}` : ''}): shown once, store it now\n`);
    });

  token
    .command('list')
    .description('list admin tokens (never the tokens themselves)')
    .option('--all', 'revoked tokens too')
    .option('--json', 'print JSON')
    .action(async (o: { all?: boolean; json?: boolean }) => {
      const { items } = await client().request<{ items: TokenRecord[] }>('GET', `/admin-tokens${o.all ? '?all=true' : ''}`);
      if (o.json) printJson(items);
      else printTable(items, COLUMNS);
    });

  token
    .command('revoke <id-or-name>')
    .description('revoke a live token at once, on every instance (final)')
    .action(async (ref: string) => {
      await client().request('DELETE', `/admin-tokens/${encodeURIComponent(ref)}`);
    });

  token
    .command('whoami')
    .description('the name and scopes of the token in ENTGATE_ADMIN_TOKEN')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const me = await client().request<{ name: string; scopes: string[] }>('GET', '/whoami');
      if (o.json) printJson(me);
      else process.stdout.write(`${me.name}: ${me.scopes.join(', ')}\n`);
    });

  token
    .command('bootstrap')
    .description("show, or turn off or on, the server's bootstrap token (ENTGATE_ADMIN_TOKEN); off needs a live admin-scoped token")
    .addOption(new Option('--disable', 'turn it off on every instance').conflicts('enable'))
    .option('--enable', 'turn it on again')
    .action(async (o: { disable?: boolean; enable?: boolean }) => {
      const api = client();
      const state =
        o.disable || o.enable
          ? await api.request<{ configured: boolean; enabled: boolean }>('PUT', '/bootstrap-token', { enabled: Boolean(o.enable) })
          : await api.request<{ configured: boolean; enabled: boolean }>('GET', '/bootstrap-token');
      process.stdout.write(`bootstrap token: ${state.enabled ? 'enabled' : 'disabled'}${state.configured ? '' : ' (ENTGATE_ADMIN_TOKEN is not set on the server)'}\n`);
    });

  token
    .command('enable-bootstrap')
    .description('turn the bootstrap token on again on the database directly, when every admin token is lost (the embedded database only while the server is stopped)')
    .action(async () => {
      const { enableBootstrapCredential } = await import('../auth/credentials.ts');
      const changed = await onDatabase((db) => enableBootstrapCredential(db.knex));
      process.stdout.write(changed ? 'bootstrap token enabled\n' : 'bootstrap token was already enabled\n');
    });

  const audit = program.commands.find((c) => c.name() === 'audit');
  if (!audit) throw new Error('add the audit commands first');
  audit
    .command('admin')
    .description('the admin writes, newest first: who (the token name), what (method, route, target), the status')
    .option('--actor <name>', 'only this token name (bootstrap for ENTGATE_ADMIN_TOKEN)')
    .option('--since <time>', 'ISO-8601 time or date: only events at or after it')
    .option('--limit <n>', 'how many (1 to 1000)', positiveInt('--limit'), 50)
    .option('--json', 'print JSON')
    .action(async (o: { actor?: string; since?: string; limit: number; json?: boolean }) => {
      if (o.limit > 1000) throw new CliError('--limit must be at most 1000');
      const p = new URLSearchParams({ limit: String(o.limit) });
      if (o.actor !== undefined) p.set('actor', o.actor);
      if (o.since !== undefined) p.set('since', o.since);
      const { items } = await client().request<{ items: Record<string, unknown>[] }>('GET', `/admin-events?${p}`);
      if (o.json) printJson(items);
      else printTable(items, EVENT_COLUMNS);
    });
}
