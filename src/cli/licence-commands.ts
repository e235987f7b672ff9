import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { licenceJson } from '../domain/licence.ts';
import type { AdminClient } from './api-client.ts';
import { loadKeys, readInput } from './files.ts';
import { CliError, EXIT_USAGE, printJson, printTable } from './output.ts';

// The licence format (domain/licence.ts, and jose with it) is loaded by the commands that use
// it, inside their actions, so that `entgate --help` and the other commands start fast.

/** `entgate licence verify` exits with this when the licence is not valid (0 when it is). */
export const EXIT_INVALID = 3;

export const LICENSING_ALGORITHMS = ['Ed25519', 'ES256'] as const;
export type LicensingAlgorithm = (typeof LICENSING_ALGORITHMS)[number];

const CLAIM_FLAGS: Record<string, string> = { jti: '--id', tenant: '--tenant', installation: '--installation' };
const usage = (message: string) => new CliError(message, EXIT_USAGE);
const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * `entgate keys generate --licensing <dir>`: the vendor's licence signing pair, written to
 * `licensing-private.pem` (PKCS#8, 0600) and `licensing-public.pem` (SPKI). Neither file is
 * overwritten: an existing one stops it before anything is written.
 */
export async function writeLicensingKeys(dir: string, algorithm: LicensingAlgorithm): Promise<void> {
  const files = { private: join(dir, 'licensing-private.pem'), public: join(dir, 'licensing-public.pem') };
  const existing = [files.private, files.public].filter((f) => existsSync(f));
  if (existing.length > 0) {
    throw new CliError(`${existing.join(' and ')} ${existing.length === 1 ? 'exists' : 'exist'} already: not overwritten (move ${existing.length === 1 ? 'it' : 'them'} away, or give another directory)`);
  }
  const pair = algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new CliError(`cannot create ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  writeNew(files.private, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  try {
    writeNew(files.public, pair.publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  } catch (err) {
    rmSync(files.private, { force: true });
    throw err;
  }
  const { keyIdOf } = await import('../domain/licence.ts');
  process.stdout.write(
    `licence signing key (secret): ${files.private} (licence issue --signing-key)\n` +
      `licence public key:           ${files.public} (ENTGATE_LICENCE_PUBLIC_KEYS of each installation; licence verify --public-key)\n` +
      `key id (kid):                 ${await keyIdOf(pair.publicKey)} (${algorithm === 'ES256' ? 'P-256, ES256' : 'Ed25519, EdDSA'})\n`,
  );
}

/** Creates a file that must not exist yet. */
function writeNew(file: string, text: string, mode: number): void {
  try {
    writeFileSync(file, text, { mode, flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(code === 'EEXIST' ? `${file} exists already: not overwritten` : `cannot write ${file}: ${code ?? (err as Error).message}`);
  }
}

const DAY = /^(\d{4})-(\d{2})-(\d{2})/;
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * An ISO-8601 time with its zone (`2027-12-31T12:00:00Z`, `...+01:00`), or a bare day in UTC:
 * its first second for `start`, its last for `end` (a licence valid to 2027-12-31 is valid all
 * that day).
 */
export function parseInstant(flag: string, edge: 'start' | 'end') {
  return (value: string): Date => {
    const day = DAY.exec(value);
    const bare = day !== null && value.length === 10;
    const ms = bare ? Date.UTC(Number(day[1]), Number(day[2]) - 1, Number(day[3])) : Date.parse(value);
    // The day as written: Date.parse takes 2027-02-30 for 2 March.
    const real = day !== null && new Date(Date.UTC(Number(day[1]), Number(day[2]) - 1, Number(day[3]))).toISOString().startsWith(value.slice(0, 10));
    if (!real || (!bare && !TIME.test(value)) || Number.isNaN(ms)) {
      throw usage(`${flag} takes a day (2027-12-31, in UTC) or a time with its zone (2027-12-31T12:00:00Z), not '${value}'`);
    }
    return new Date(bare && edge === 'end' ? ms + 86_399_000 : ms);
  };
}

/**
 * `--capacity <name>=<n>`, each checked: the kind and name (parseCapacityName of
 * domain/licence.ts, given by the caller, which has loaded it), the limit, given once.
 */
export function parseCapacities(given: readonly string[], parseCapacityName: (name: string) => unknown, max: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const text of given) {
    const eq = text.lastIndexOf('=');
    if (eq < 0) throw usage(`--capacity '${text}': give <name>=<limit>, as in assigned:users=50`);
    const [name, limit] = [text.slice(0, eq), text.slice(eq + 1)];
    if (!parseCapacityName(name)) {
      throw usage(`--capacity '${text}': '${name}' is not concurrent:<name>, assigned:<name> or feature:<feature> (a name: 1 to 64 of A-Z a-z 0-9 . _ -)`);
    }
    if (!/^\d{1,10}$/.test(limit) || Number(limit) > max) throw usage(`--capacity '${text}': the limit must be a whole number from 0 to ${max}`);
    if (name in out) throw usage(`--capacity ${name} is given twice`);
    out[name] = Number(limit);
  }
  return out;
}

/** A licence as JSON, as verify and the admin API give it. */
type LicenceJson = ReturnType<typeof licenceJson>;

/** An installed licence, as GET /admin/v1/licence answers it. */
interface InstalledJson extends LicenceJson {
  seq: number;
  status: 'valid' | 'expired' | 'not_yet_valid';
  installedAt: string;
  installedBy: string | null;
}

interface LicenceState {
  installation: { id: string; createdAt: string };
  current: InstalledJson | null;
  capacities: { name: string; kind: string; limit: number | null; inUse: number }[];
  history: InstalledJson[];
}

const none = (items: readonly string[]) => (items.length > 0 ? items.join(', ') : 'none');

/** What a licence says, a line a field. */
function licenceLines(l: LicenceJson): string {
  const capacities = Object.entries(l.capacities).map(([name, limit]) => `${name}=${limit}`);
  return (
    `tenant        ${l.tenant}\n` +
    `features      ${none(l.features)}\n` +
    `capacities    ${none(capacities)}\n` +
    `valid         from ${l.notBefore} until ${l.expiresAt}\n` +
    `bound to      ${l.installation ?? 'any installation'}\n` +
    `issued        ${l.issuedAt}\n`
  );
}

/** The signing key in a file: one private key, Ed25519 or P-256. */
async function signingKey(file: string, algorithmOf: (key: KeyObject) => string): Promise<KeyObject> {
  const keys = await loadKeys([file], 'private', '--signing-key');
  if (keys.length > 1) throw new CliError(`--signing-key: ${file} holds ${keys.length} private keys; give a file with one`);
  const key = keys[0]!.key;
  try {
    algorithmOf(key);
  } catch (err) {
    throw new CliError(`--signing-key: ${file}: ${(err as Error).message}`);
  }
  return key;
}

/** `entgate licence issue|verify|install|show` (also spelt `license`). */
export function addLicenceCommands(program: Command, client: () => AdminClient): void {
  const licence = program
    .command('licence')
    .alias('license')
    .description('signed licences: issue and verify them offline (the vendor), install and show them (an installation)');

  licence
    .command('issue')
    .summary('sign a licence with the vendor key (offline)')
    .description(
      'sign a licence with the vendor key (offline); prints the token, or writes it to --out. ' +
        'Dates: ISO-8601 with a zone, or a bare day in UTC: --not-before 2027-01-01 is that day\'s first second, --expires 2027-12-31 its last',
    )
    .requiredOption('--tenant <id>', 'the tenant the licence is for')
    .option('--feature <name>', 'a feature it grants (repeatable)', collect)
    .option('--capacity <name>=<n>', 'a limit: concurrent:<name>, assigned:<name> or feature:<feature>, = a whole number (repeatable)', collect)
    .option('--not-before <time>', 'when it becomes valid (default: now)', parseInstant('--not-before', 'start'))
    .requiredOption('--expires <time>', 'when it expires', parseInstant('--expires', 'end'))
    .option('--installation <id>', 'bind it to one installation (its id: entgate licence show)')
    .option('--id <licence id>', 'the licence id (default: a random UUID)')
    .requiredOption('--signing-key <pem>', 'the vendor private key (keys generate --licensing: licensing-private.pem)')
    .option('--out <file>', 'write the token here instead of printing it')
    .action(
      async (o: {
        tenant: string;
        feature?: string[];
        capacity?: string[];
        notBefore?: Date;
        expires: Date;
        installation?: string;
        id?: string;
        signingKey: string;
        out?: string;
      }) => {
        const { algorithmOf, issueLicence, licenceProblems, parseCapacityName, MAX_CAPACITY } = await import('../domain/licence.ts');
        const issuedAt = new Date();
        const spec = {
          tenant: o.tenant,
          features: o.feature ?? [],
          capacities: parseCapacities(o.capacity ?? [], parseCapacityName, MAX_CAPACITY),
          issuedAt,
          notBefore: o.notBefore ?? issuedAt,
          expiresAt: o.expires,
          ...(o.installation !== undefined && { installation: o.installation }),
          id: o.id ?? randomUUID(),
        };
        if (spec.expiresAt.getTime() <= spec.notBefore.getTime()) {
          throw usage(`--expires (${spec.expiresAt.toISOString()}) must be later than --not-before (${spec.notBefore.toISOString()})`);
        }
        const problems = licenceProblems(spec);
        if (problems.length > 0) throw usage(problems.join('; '));
        const key = await signingKey(o.signingKey, algorithmOf);
        let token: string;
        try {
          token = await issueLicence(spec, key);
        } catch (err) {
          // The claims' names, as the options that set them.
          throw usage((err as Error).message.replace(/\b(jti|tenant|installation):/g, (_m, claim: string) => `${CLAIM_FLAGS[claim]}:`));
        }
        if (spec.expiresAt.getTime() <= Date.now()) process.stderr.write(`warning: the licence has expired already (at ${spec.expiresAt.toISOString()})\n`);
        if (o.out === undefined) {
          process.stdout.write(`${token}\n`);
          return;
        }
        try {
          writeFileSync(o.out, `${token}\n`, { mode: 0o644 });
        } catch (err) {
          throw new CliError(`cannot write ${o.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
        process.stdout.write(`licence ${spec.id} for tenant ${o.tenant}, valid from ${spec.notBefore.toISOString()} until ${spec.expiresAt.toISOString()}: ${o.out}\n`);
      },
    );

  licence
    .command('verify <file>')
    .summary(`check a licence offline (exit 0 valid, ${EXIT_INVALID} invalid)`)
    .description(`check a licence offline, as an installation would (exit 0 valid, ${EXIT_INVALID} invalid with the reason on stderr); <file> may be - for standard input`)
    .requiredOption('--public-key <file>', 'the vendor public key: PEM or JWKS (repeatable: any of them may have signed it)', collect)
    .option('--json', 'print the licence as JSON with valid and keyId (on failure: valid false, code, reason)')
    .action(async (file: string, o: { publicKey: string[]; json?: boolean }) => {
      const token = await readInput(file);
      const ring = await loadKeys(o.publicKey, 'public', '--public-key');
      const { algorithmOf, licenceJson, trustKeys, verifyLicence } = await import('../domain/licence.ts');
      for (const k of ring) {
        try {
          algorithmOf(k.key);
        } catch (err) {
          throw new CliError(`--public-key: ${k.source}: ${(err as Error).message}`);
        }
      }
      const verified = await verifyLicence(token, await trustKeys(ring.map((k) => k.key)));
      if (!verified.ok) {
        if (o.json) printJson({ valid: false, code: verified.code, reason: verified.reason });
        throw new CliError(`licence invalid: ${verified.reason} (${verified.code})`, EXIT_INVALID);
      }
      const json = licenceJson(verified.licence);
      if (o.json) printJson({ valid: true, ...json, keyId: verified.keyId ?? null });
      else process.stdout.write(`valid licence ${json.licenceId}, signed by key ${verified.keyId}\n${licenceLines(json)}`);
    });

  licence
    .command('install <file>')
    .summary('install a licence on the server')
    .description('install a licence on the server (ENTGATE_URL), which checks it against ENTGATE_LICENCE_PUBLIC_KEYS and what is in use; <file> may be -')
    .option('--json', 'print the answer as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const token = (await readInput(file)).trim();
      if (token === '') throw new CliError(`${file === '-' ? 'standard input' : file} holds no licence: it is empty`);
      const answer = await client().request<{ installed: boolean; current: InstalledJson }>('PUT', '/licence', token, 'application/jwt');
      const c = answer.current;
      if (o.json) printJson(answer);
      else if (answer.installed) process.stdout.write(`installed licence ${c.licenceId} for tenant ${c.tenant} (seq ${c.seq})\n`);
      else process.stdout.write(`licence ${c.licenceId} is already the current licence\n`);
    });

  licence
    .command('show')
    .summary("the installation's id, its licence, capacities and history")
    .description("the installation's id (to bind a licence to it), its current licence, each capacity's use and limit, and every licence installed")
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const state = await client().request<LicenceState>('GET', '/licence');
      if (o.json) {
        printJson(state);
        return;
      }
      process.stdout.write(`installation  ${state.installation.id}\n`);
      const c = state.current;
      if (!c) {
        process.stdout.write('no licence is installed\n');
        return;
      }
      process.stdout.write(
        `licence       ${c.licenceId} (seq ${c.seq}): ${c.status.replaceAll('_', ' ')}\n${licenceLines(c)}` +
          `installed     ${c.installedAt}${c.installedBy ? ` by ${c.installedBy}` : ''}\n\n`,
      );
      if (state.capacities.length > 0) {
        printTable(
          state.capacities.map((k) => ({ capacity: k.name, kind: k.kind, 'inUse/limit': `${k.inUse}/${k.limit ?? 'unlimited'}` })),
          ['capacity', 'kind', 'inUse/limit'],
        );
        process.stdout.write('\n');
      }
      process.stdout.write('history, newest first\n');
      printTable(state.history as unknown as Record<string, unknown>[], ['seq', 'licenceId', 'tenant', 'status', 'notBefore', 'expiresAt', 'installedAt', 'installedBy']);
    });
}
