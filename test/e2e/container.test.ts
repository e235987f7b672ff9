/**
 * The container image, built and run, when a Docker engine answers (`docker info`); skipped,
 * saying why, when none does. The files themselves are linted in test/unit/container.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/process.ts';
import { ADMIN_TOKEN } from '../helpers/service.ts';

const run = promisify(execFile);
const docker = (args: string[], timeout = 120_000) => run('docker', args, { cwd: REPO_ROOT, timeout, maxBuffer: 64 << 20 });

/** Why no image can be built here, or undefined when a Docker engine answers. */
function noEngine(): string | undefined {
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 30_000, encoding: 'utf8' });
  if (info.error) return `no Docker engine: docker info: ${info.error.message}`;
  if (info.status !== 0) return `no Docker engine: docker info exited ${info.status}: ${(info.stderr || info.stdout).trim().split('\n')[0]}`;
  return undefined;
}

describe('the container image', () => {
  it('builds, runs as a user that is not root, becomes healthy, and stops on SIGTERM with exit 0', { timeout: 1_200_000 }, async (t) => {
    const why = noEngine();
    if (why) return t.skip(why);
    const tag = `entgate:test-${process.pid}`;
    const name = `entgate-test-${process.pid}`;
    try {
      await docker(['build', '--pull=false', '-t', tag, '.'], 900_000);
      const { stdout: uid } = await docker(['run', '--rm', '--entrypoint', 'id', tag, '-u']);
      assert.notEqual(uid.trim(), '0', 'the service does not run as root');
      const { stdout: version } = await docker(['run', '--rm', tag, 'node', 'dist/src/cli/main.js', '--version']);
      assert.match(version.trim(), /^\d+\.\d+\.\d+/);

      await docker(['run', '-d', '--name', name, '-p', '127.0.0.1::8080', '-e', `ENTGATE_ADMIN_TOKEN=${ADMIN_TOKEN}`, tag]);
      // The image's HEALTHCHECK asks /readyz every 15 s (the first after 15 s).
      const deadline = Date.now() + 180_000;
      let health = '';
      while (Date.now() < deadline) {
        health = (await docker(['inspect', '--format', '{{.State.Health.Status}}', name])).stdout.trim();
        if (health === 'healthy' || health === 'unhealthy') break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (health !== 'healthy') {
        const logs = await docker(['logs', name]);
        assert.fail(`the container is ${health || 'without a health status'}:\n${logs.stdout}${logs.stderr}`);
      }
      const port = (await docker(['port', name, '8080/tcp'])).stdout.trim().split('\n')[0]!.split(':').at(-1);
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200);
      const list = await fetch(`http://127.0.0.1:${port}/admin/v1/entitlements`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(list.status, 200, 'the admin API answers the token given in the environment');

      await docker(['stop', '-t', '15', name], 60_000);
      const { stdout: exit } = await docker(['inspect', '--format', '{{.State.ExitCode}}', name]);
      assert.equal(exit.trim(), '0', 'SIGTERM: a graceful stop');
    } finally {
      await docker(['rm', '-f', '-v', name]).catch(() => undefined);
      await docker(['rmi', '-f', tag]).catch(() => undefined);
    }
  });
});
