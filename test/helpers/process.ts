import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { before, after } from 'node:test';
import { tempDir } from './databases.ts';
import { ADMIN_TOKEN } from './service.ts';

/**
 * The `entgate` the tests run: the TypeScript sources through tsx, never dist/, so that a stale
 * build cannot hide a change (test/e2e/package.test.ts tests the build, as a package).
 */
export const ENTGATE_BIN = fileURLToPath(new URL('../../src/cli/entgate-dev.js', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** Set when the server serves HTTPS too. */
  httpsUrl?: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Sends a signal and resolves with the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs `entgate serve` as a real process (in `cwd`, relative paths resolve there) and waits for
 * its "listening" log line. The deadline is generous: on a loaded two-core machine (CI runs two
 * test files at once) a start has taken over 30 s; a quiet one takes a few seconds, and the
 * wait ends as soon as the line comes.
 */
export async function startServerProcess(env: Record<string, string>, timeoutMs = 120_000, cwd = REPO_ROOT): Promise<ServerProcess> {
  const child = spawn(process.execPath, [ENTGATE_BIN, 'serve'], {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let httpsUrl: string | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      out += `${line}\n`;
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string; httpsUrl?: string };
        if (entry.msg === 'entgate listening' && entry.url) {
          httpsUrl = entry.httpsUrl;
          clearTimeout(timer);
          resolve(entry.url);
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });
  return {
    child,
    url,
    ...(httpsUrl !== undefined && { httpsUrl }),
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the `entgate` CLI as a real process (in `cwd`, relative paths resolve there). */
export function runCli(args: string[], env: Record<string, string>, input?: string, cwd = REPO_ROOT): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ENTGATE_BIN, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/**
 * `entgate serve` as a real process (embedded database, the test admin token) for the
 * surrounding `describe`, with the CLI pointed at it: `const fx = cliServerFixture()`, then
 * `fx.cli(...)`, `fx.check(query)`, `fx.server`, `fx.dir` (a temporary directory), `fx.env`.
 */
export function cliServerFixture() {
  let dir = '';
  let server: ServerProcess | undefined;
  let env: Record<string, string> = {};
  before(async () => {
    dir = tempDir();
    server = await startServerProcess({ DATA_DIR: join(dir, 'data'), ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    env = { ENTGATE_URL: server.url, ENTGATE_ADMIN_TOKEN: ADMIN_TOKEN };
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    get server() {
      return server!;
    },
    get env() {
      return env;
    },
    cli: (...args: string[]) => runCli(args, env),
    check: (query: string) => fetch(`${server!.url}/?${query}`),
  };
}
