import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './databases.ts';

/**
 * A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl on a free loopback port), for
 * fault tests that stop, freeze or kill the database, which the shared server must never suffer.
 * Run as user postgres when the test runs as root (initdb refuses root), as `.ci/run` does.
 */
export interface PgCluster {
  url: string;
  /** SIGSTOP to the postmaster and every backend: sockets stay open, nothing answers. */
  freeze(): void;
  /** SIGCONT to every process frozen. */
  thaw(): void;
  /** `pg_ctl stop -m immediate`: every connection is cut at once. */
  stopImmediate(): void;
  start(): void;
  destroy(): void;
}

/** The newest PostgreSQL's bin directory with initdb, or undefined when none is installed. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(a) - Number(b));
  return versions.length > 0 ? join(root, versions.at(-1)!, 'bin') : undefined;
}

/** Why a throwaway cluster cannot be made here (no initdb), or undefined when it can. */
export const pgClusterUnavailable = postgresBinDir() === undefined ? 'no PostgreSQL server binaries (initdb) under /usr/lib/postgresql' : undefined;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function startCluster(bin: string): Promise<PgCluster> {
  const dir = tempDir('entgate-pg-');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  const run = (tool: string, args: string[]) => {
    const [cmd, full] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] : [join(bin, tool), args];
    execFileSync(cmd, full as string[], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  };
  const data = join(dir, 'data');
  const port = await freePort();
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync']);
  const start = () =>
    run('pg_ctl', ['-D', data, '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, '-l', join(dir, 'log'), '-w', '-t', '120', 'start']);
  start();

  let frozen: number[] = [];
  const postmaster = () => Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = (parent: number): number[] =>
    execFileSync('ps', ['-o', 'pid=', '--ppid', String(parent)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((pid) => pid > 0);
  const stop = (pid: number) => {
    process.kill(pid, 'SIGSTOP');
    frozen.push(pid);
  };
  const thaw = () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    frozen = [];
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    freeze() {
      // The postmaster first, so that it forks no backend that would escape the freeze.
      const main = postmaster();
      stop(main);
      for (const pid of children(main)) stop(pid);
    },
    thaw,
    stopImmediate: () => run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']),
    start,
    destroy() {
      thaw();
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // not running
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
