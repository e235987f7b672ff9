/**
 * Server processes for the benchmark: entgate (`node src/cli/entgate-dev.js serve`), the bare
 * baseline and the fake CRM, each its own process on 127.0.0.1, found ready by polling an
 * HTTP path (entgate runs at LOG_LEVEL=warn, so it prints no "listening" line). Every process
 * started here is tracked, so that one call stops them all on the way out.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const GUARD = pathToFileURL(fileURLToPath(new URL('../parent-guard.mjs', import.meta.url))).href;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const OUTPUT_KEPT = 16_384;

export interface ServerProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  url: string;
  /** The last few KiB of what the process wrote (stdout and stderr). */
  output(): string;
  /** True once the process has exited. */
  exited(): boolean;
  /** SIGTERM, then SIGKILL if it has not exited within 15 s. */
  stop(): Promise<void>;
}

const running = new Set<ServerProcess>();

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface StartOptions {
  /** How often `readyPath` is polled (default 100 ms). */
  pollMs?: number;
  /** How long the start may take (default a minute). */
  timeoutMs?: number;
}

/**
 * Starts `node <args>` with a minimal environment plus `env` and PORT, and waits until
 * GET `readyPath` answers 200 (polled every 100 ms, for at most a minute, unless `options` say otherwise).
 */
export async function startServer(name: string, args: string[], env: Record<string, string>, readyPath: string, options: StartOptions = {}): Promise<ServerProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(name, args, env, readyPath, await freePort(), options);
    } catch (err) {
      // Another process may have taken the port between the probe and the bind: one retry.
      if (attempt >= 2 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(name: string, args: string[], env: Record<string, string>, readyPath: string, port: number, options: StartOptions): Promise<ServerProcess> {
  const timeoutMs = options.timeoutMs ?? START_TIMEOUT_MS;
  const child = spawn(process.execPath, ['--import', GUARD, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > OUTPUT_KEPT * 2) out = out.slice(-OUTPUT_KEPT);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let hasExited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      hasExited = true;
      resolve();
    });
    child.once('error', (err) => {
      out += `\nspawn error: ${err.message}`;
      hasExited = true;
      resolve();
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const proc: ServerProcess = {
    name,
    child,
    pid: child.pid ?? -1,
    url,
    output: () => out.slice(-OUTPUT_KEPT),
    exited: () => hasExited,
    stop: async () => {
      if (!hasExited) child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!hasExited) child.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exit;
      clearTimeout(timer);
      running.delete(proc);
    },
  };
  running.add(proc);

  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (hasExited) {
      running.delete(proc);
      throw new Error(`${name} exited before it was ready:\n${out.slice(-4000)}`);
    }
    try {
      const res = await fetch(`${url}${readyPath}`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return proc;
    } catch {
      // not listening yet
    }
    await sleep(options.pollMs ?? 100);
  }
  await proc.stop();
  throw new Error(`${name} was not ready within ${timeoutMs / 1000} s:\n${out.slice(-4000)}`);
}

/** Stops every process started here that is still running (all at once, each by its pid). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}

/** Kills every tracked process at once, synchronously (the last resort on exit). */
export function killAllNow(): void {
  for (const p of running) if (!p.exited()) p.child.kill('SIGKILL');
}

/** CPU seconds (user + system, all threads) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number | 'self', children = false): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15, cutime 16, cstime 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const ticks = children ? f[13]! + f[14]! : f[11]! + f[12]!;
  return ticks / CLOCK_TICKS;
}

/** USER_HZ: the unit of /proc/<pid>/stat times (100 on Linux everywhere that matters). */
const CLOCK_TICKS = 100;

/** Resident set size of a process, in MiB (VmRSS from /proc/<pid>/status). */
export function rssMiB(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) / 1024;
}
