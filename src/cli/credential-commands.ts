import { Option, type Command } from 'commander';
import { SCOPES, SCOPE_DOCS } from '../auth/scopes.ts';
import { onDatabase } from './database.ts';
import type { AdminClient } from './api-client.ts';
import { deprecatedGroup } from './deprecated.ts';
import { CliError, printJson, printTable } from './output.ts';

/** A credential as the admin API answers it (the paths and fields keep their historical names). */
interface CredentialRecord extends Record<string, unknown> {
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
/** `credential create --help` ends with what each scope allows (src/auth/scopes.ts), wrapped to 80 columns. */
const SCOPE_HELP = `\nScopes:\n${SCOPES.map((s) => `  ${s.padEnd(14)} ${wrap(SCOPE_DOCS[s], 63).join(`\n${' '.repeat(17)}`)}`).join('\n')}\n`;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.at(-1);
    if (last !== undefined && last.length + 1 + word.length <= width) lines[lines.length - 1] = `${last} ${word}`;
    else lines.push(word);
  }
  return lines;
}

/** What a group's commands call a credential in what they print. */
interface Words {
  credential: string;
  bootstrap: string;
}
/** `entgate credential`. */
const CURRENT: Words = { credential: 'credential', bootstrap: 'bootstrap credential' };
/** `entgate admin-token`, deprecated: it prints what it always printed. */
const DEPRECATED: Words = { credential: 'admin token', bootstrap: 'bootstrap token' };

/**
 * `entgate credential …` (API credentials: the bearer credentials of the admin API and of lease
 * clients), the same under its deprecated name `entgate admin-token …`, and `entgate audit admin`.
 */
export function addCredentialCommands(program: Command, client: () => AdminClient, positiveInt: (flag: string) => (v: string) => number): void {
  addGroup(program.command('credential').description(`API credentials: bearer credentials of the admin API and of lease clients, with scopes (${SCOPES.join(', ')})`), client, CURRENT);
  addGroup(deprecatedGroup(program, 'admin-token', 'credential'), client, DEPRECATED);

  const audit = program.commands.find((c) => c.name() === 'audit');
  if (!audit) throw new Error('add the audit commands first');
  audit
    .command('admin')
    .description('the admin writes, newest first: who (the credential name), what (method, route, target), the status')
    .option('--actor <name>', 'only this credential name (bootstrap for ENTGATE_ADMIN_TOKEN)')
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

function addGroup(group: Command, client: () => AdminClient, words: Words): void {
  group
    .command('create <name>')
    .description('create a credential; it is printed once and never again (stored as a digest)')
    .addOption(new Option('--scope <scope...>', 'scopes it holds (repeat or list)').choices(SCOPES).makeOptionMandatory())
    .option('--expires <when>', 'a date, a time with a zone, or a span from now such as 90d or 12h', expiry)
    .option('--json', 'print the record (with the credential, as `token`) as JSON')
    .addHelpText('after', SCOPE_HELP)
    .action(async (name: string, o: { scope: string[]; expires?: string; json?: boolean }) => {
      const made = await client().request<CredentialRecord>('POST', '/admin-tokens', {
        name,
        scopes: o.scope,
        ...(o.expires !== undefined && { expiresAt: o.expires }),
      });
      if (o.json) return printJson(made);
      process.stdout.write(`${made.token}\n`);
      process.stderr.write(
        `${words.credential} ${made.id} '${made.name}' (${made.scopes.join(', ')}${made.expiresAt ? `, expires ${made.expiresAt}` : ''}): shown once, store it now\n`,
      );
    });

  group
    .command('list')
    .description('list credentials (never the credentials themselves)')
    .option('--all', 'revoked credentials too')
    .option('--json', 'print JSON')
    .action(async (o: { all?: boolean; json?: boolean }) => {
      const { items } = await client().request<{ items: CredentialRecord[] }>('GET', `/admin-tokens${o.all ? '?all=true' : ''}`);
      if (o.json) printJson(items);
      else printTable(items, COLUMNS);
    });

  group
    .command('revoke <id-or-name>')
    .description('revoke a live credential at once, on every instance (final)')
    .action(async (ref: string) => {
      await client().request('DELETE', `/admin-tokens/${encodeURIComponent(ref)}`);
    });

  group
    .command('whoami')
    .description('the name and scopes of the credential in ENTGATE_ADMIN_TOKEN')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const me = await client().request<{ name: string; scopes: string[] }>('GET', '/whoami');
      if (o.json) printJson(me);
      else process.stdout.write(`${me.name}: ${me.scopes.join(', ')}\n`);
    });

  group
    .command('bootstrap')
    .description("show, or turn off or on, the server's bootstrap credential (ENTGATE_ADMIN_TOKEN); off needs a live admin-scoped credential")
    .addOption(new Option('--disable', 'turn it off on every instance').conflicts('enable'))
    .option('--enable', 'turn it on again')
    .action(async (o: { disable?: boolean; enable?: boolean }) => {
      const api = client();
      const state =
        o.disable || o.enable
          ? await api.request<{ configured: boolean; enabled: boolean }>('PUT', '/bootstrap-token', { enabled: Boolean(o.enable) })
          : await api.request<{ configured: boolean; enabled: boolean }>('GET', '/bootstrap-token');
      process.stdout.write(`${words.bootstrap}: ${state.enabled ? 'enabled' : 'disabled'}${state.configured ? '' : ' (ENTGATE_ADMIN_TOKEN is not set on the server)'}\n`);
    });

  group
    .command('enable-bootstrap')
    .description('turn the bootstrap credential on again on the database directly, when every admin credential is lost (the embedded database only while the server is stopped)')
    .action(async () => {
      const { enableBootstrapCredential } = await import('../auth/credentials.ts');
      const changed = await onDatabase((db) => enableBootstrapCredential(db.knex));
      process.stdout.write(changed ? `${words.bootstrap} enabled\n` : `${words.bootstrap} was already enabled\n`);
    });
}
