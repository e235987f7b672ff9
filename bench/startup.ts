/**
 * Start-up and CLI figures of `npm run bench` (also runnable alone:
 * `node --import tsx bench/startup.ts`): for each entry point there is, the time from spawning
 * `entgate serve` to its first `GET /readyz` 200, with the CPU seconds the server used until
 * then and its RSS at that moment, on a new embedded data folder (first start), on an existing
 * one, on a new PostgreSQL database (migrations applied) and on a migrated one; then one CLI
 * call (`entgate --help`, and `entgate vkey list --json` against a running server), wall time
 * and CPU seconds. Each figure over BENCH_STARTUP_RUNS runs (default 5): median, min and max.
 *
 * Entry points: the TypeScript sources through tsx (`node src/cli/entgate-dev.js`, how every
 * shipped until now), and the compiled build (`node dist/src/cli/main.js`) when `dist/` holds
 * one, or BENCH_STARTUP_DIST names a directory holding `src/cli/main.js`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Databases } from './lib/database.ts';
import { cpuSeconds, ROOT, rssMiB, startServer, type ServerProcess } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';

const READY_TIMEOUT_MS = 120_000;
const POLL_MS = 20;
const CLI_TIMEOUT_MS = 120_000;
const ADMIN_TOKEN = randomBytes(16).toString('hex');
const KEY_SECRET = randomBytes(32).toString('hex');

interface Entry {
  /** For the tables. */
  name: string;
  /** The script node runs, relative to the repository or absolute. */
  script: string;
}

interface Sample {
  wall: number;
  cpu: number;
  rss?: number;
}

interface Row {
  what: string;
  entry: string;
  samples: Sample[];
}

export interface StartupBenchResult {
  rows: Row[];
  markdown: string;
  valid: boolean;
}

/** The entry points present: the tsx sources always, the compiled build when there is one. */
export function startupEntries(): { entries: Entry[]; notes: string[] } {
  const entries: Entry[] = [{ name: 'tsx sources', script: 'src/cli/entgate-dev.js' }];
  const notes: string[] = [];
  const dist = process.env.BENCH_STARTUP_DIST;
  const compiled = dist ? join(dist, 'src/cli/main.js') : join(ROOT, 'dist/src/cli/main.js');
  if (existsSync(compiled)) {
    const shown = relative(ROOT, compiled);
    entries.push({ name: 'compiled', script: shown.startsWith('..') || isAbsolute(shown) ? compiled : shown });
  } else {
    notes.push(`No compiled build (${dist ? compiled : 'dist/src/cli/main.js'} is missing): only the tsx sources were measured.`);
  }
  return { entries, notes };
}

const serverEnv = (env: Record<string, string>) => ({
  HOST: '127.0.0.1',
  ENTGATE_KEY_SECRET: KEY_SECRET,
  ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN,
  LOG_LEVEL: 'warn',
  ...env,
});

/** Starts `entgate serve`; the sample is taken at its first `/readyz` 200. */
async function timedStart(entry: Entry, env: Record<string, string>, label: string): Promise<{ server: ServerProcess; sample: Sample }> {
  const started = performance.now();
  const server = await startServer(`entgate (${entry.name}, ${label})`, [entry.script, 'serve'], serverEnv(env), '/readyz', {
    pollMs: POLL_MS,
    timeoutMs: READY_TIMEOUT_MS,
  });
  const wall = (performance.now() - started) / 1000;
  return { server, sample: { wall, cpu: cpuSeconds(server.pid), rss: rssMiB(server.pid) } };
}

async function startAndStop(entry: Entry, env: Record<string, string>, label: string): Promise<Sample> {
  const { server, sample } = await timedStart(entry, env, label);
  await server.stop();
  return sample;
}

/**
 * One command run to its end: wall time, and its CPU seconds read as the growth of this
 * process's "children" times (/proc/self/stat cutime + cstime: a child's times are added when
 * it has been waited for, which is before its 'exit' event). Commands run one at a time.
 */
function timedCommand(args: string[], env: Record<string, string>): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const cpuBefore = cpuSeconds('self', true);
    const started = performance.now();
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const wall = (performance.now() - started) / 1000;
      if (code !== 0) reject(new Error(`node ${args.join(' ')} exited with ${code ?? signal}:\n${out.slice(-2000)}`));
      else resolve({ wall, cpu: cpuSeconds('self', true) - cpuBefore });
    });
  });
}

async function repeat(runs: number, one: (i: number) => Promise<Sample>): Promise<Sample[]> {
  const samples: Sample[] = [];
  for (let i = 0; i < runs; i++) samples.push(await one(i));
  return samples;
}

const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function spread(values: number[], digits: number): string {
  const f = (v: number) => v.toFixed(digits);
  return values.length === 1 ? f(values[0]!) : `${f(median(values))} (${f(Math.min(...values))}–${f(Math.max(...values))})`;
}

function describeRow(r: Row): string {
  return `${r.what}, ${r.entry}: wall ${spread(
    r.samples.map((s) => s.wall),
    2,
  )} s, CPU ${spread(
    r.samples.map((s) => s.cpu),
    2,
  )} s${r.samples[0]?.rss !== undefined ? `, RSS ${median(r.samples.map((s) => s.rss!)).toFixed(0)} MiB` : ''}`;
}

export async function startupScenarios(adminUrl: string, runs = Number(process.env.BENCH_STARTUP_RUNS ?? 5)): Promise<StartupBenchResult> {
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) throw new Error('BENCH_STARTUP_RUNS must be a whole number from 1 to 50');
  const { entries, notes } = startupEntries();
  const dbs = new Databases(adminUrl);
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-startup-'));
    dirs.push(dir);
    return dir;
  };
  const rows: Row[] = [];
  const load0 = loadavg();
  const add = (row: Row) => {
    rows.push(row);
    log(`  ${describeRow(row)}`);
  };
  try {
    log(`start-up and CLI: ${entries.map((e) => e.name).join(', ')}; ${runs} runs each`);
    add({ what: 'node -e 0', entry: 'Node alone', samples: await repeat(runs, () => timedCommand(['-e', '0'], {})) });
    for (const entry of entries) {
      // First starts: each on a folder of its own; the last folder is then the existing one.
      let folder = '';
      add({
        what: 'new embedded data folder',
        entry: entry.name,
        samples: await repeat(runs, () => {
          folder = join(tempDir(), 'data');
          return startAndStop(entry, { DATA_DIR: folder }, 'new data folder');
        }),
      });
      add({
        what: 'existing embedded data folder',
        entry: entry.name,
        samples: await repeat(runs, () => startAndStop(entry, { DATA_DIR: folder }, 'existing data folder')),
      });
      let database = '';
      add({
        what: 'new PostgreSQL database',
        entry: entry.name,
        samples: await repeat(runs, async () => {
          database = await dbs.create();
          return startAndStop(entry, { DATABASE_URL: database }, 'new PostgreSQL database');
        }),
      });
      add({
        what: 'migrated PostgreSQL database',
        entry: entry.name,
        samples: await repeat(runs, () => startAndStop(entry, { DATABASE_URL: database }, 'migrated PostgreSQL database')),
      });

      add({ what: 'entgate --help', entry: entry.name, samples: await repeat(runs, () => timedCommand([entry.script, '--help'], {})) });
      const { server } = await timedStart(entry, { DATABASE_URL: database }, 'for the CLI');
      try {
        const env = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
        add({ what: 'entgate vkey list --json', entry: entry.name, samples: await repeat(runs, () => timedCommand([entry.script, 'vkey', 'list', '--json'], env)) });
      } finally {
        await server.stop();
      }
    }
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    const left = await dbs.dropAll();
    if (left.length > 0) console.error(`could not drop ${left.join(', ')}: drop them by hand`);
  }
  const load1 = loadavg();
  return { rows, markdown: render(rows, runs, entries, notes, load0, load1), valid: true };
}

function render(rows: Row[], runs: number, entries: Entry[], notes: string[], load0: number[], load1: number[]): string {
  const starts = rows.filter((r) => r.samples[0]?.rss !== undefined);
  const calls = rows.filter((r) => r.samples[0]?.rss === undefined);
  const cell = (r: Row, k: 'wall' | 'cpu') => spread(
    r.samples.map((s) => s[k]),
    2,
  );
  const L = [
    `Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} CPUs. ${runs} runs each, median (min–max). Entry points: ${entries.map((e) => `${e.name} (\`node ${e.script}\`)`).join(', ')}. ` +
      `Load average ${load0.map((v) => v.toFixed(2)).join(' / ')} before, ${load1.map((v) => v.toFixed(2)).join(' / ')} after.`,
    '',
    'Start to ready: spawn to the first `GET /readyz` 200 (polled every 20 ms); CPU is the server\'s user + system seconds until then (all its threads), RSS at that moment. `LOG_LEVEL=warn`, `ENTGATE_KEY_SECRET` set.',
    '',
    '| start to ready on | entry point | wall s | CPU s | RSS MiB |',
    '|---|---|---:|---:|---:|',
    ...starts.map((r) => `| ${r.what} | ${r.entry} | ${cell(r, 'wall')} | ${cell(r, 'cpu')} | ${median(r.samples.map((s) => s.rss!)).toFixed(0)} |`),
    '',
    'One CLI call, spawn to exit (CPU: user + system seconds of the process):',
    '',
    '| command | entry point | wall s | CPU s |',
    '|---|---|---:|---:|',
    ...calls.map((r) => `| \`${r.what}\`${r.what.includes('vkey') ? ' (a running server, PostgreSQL, no keys)' : ''} | ${r.entry} | ${cell(r, 'wall')} | ${cell(r, 'cpu')} |`),
  ];
  if (notes.length > 0) L.push('', ...notes.map((n) => `- ${n}`));
  return L.join('\n');
}

runStandalone(import.meta.url, (_seconds, adminUrl) => startupScenarios(adminUrl));
