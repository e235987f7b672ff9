import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './databases.ts';

/**
 * A throwaway PostgreSQL cluster that a fault test may stop, start or kill: initdb in a
 * temporary directory, run as the `postgres` user (`runuser` when the test runs as root, as
 * CI does), trust authentication, on a free loopback port.
 */
export interface PgCluster {
  url: string;
  start(): void;
  /** `pg_ctl stop -m immediate`: every connection is cut at once, like a crash. */
  stop(): void;
  destroy(): void;
}

const BIN = (() => {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  return versions.length > 0 ? join(root, versions[0]!, 'bin') : undefined;
})();

/** Why a throwaway cluster cannot be made here, or undefined when it can. */
export const pgClusterUnavailable = BIN === undefined ? 'no PostgreSQL server binaries under /usr/lib/postgresql' : undefined;

function asPostgres(cmd: string, args: string[]): void {
  const [file, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  execFileSync(file, argv, { stdio: 'pipe', timeout: 120_000 });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function createPgCluster(): Promise<PgCluster> {
  if (BIN === undefined) throw new Error(pgClusterUnavailable);
  const dir = tempDir('entgate-pg-');
  const data = join(dir, 'data');
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres', dir]);
  else chownSync(dir, process.getuid!(), process.getgid!());
  asPostgres(join(BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const cluster: PgCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () => asPostgres(join(BIN, 'pg_ctl'), ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', '-t', '120', 'start']),
    stop: () => asPostgres(join(BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']),
    destroy: () => {
      try {
        cluster.stop();
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cluster.start();
  return cluster;
}
