/**
 * The package as an integrator gets it. A copy of the working tree (what git would commit, no
 * dist/, as a fresh clone) is packed with `npm pack`, whose `prepare` builds it; the tarball
 * is installed into a scratch project; then the installed package is used: its `entgate` bin,
 * `import('entgate')` and its types, `entgate/testing`, and the server it starts. Every other
 * test runs the TypeScript sources (test/helpers/process.ts): this file is the one that
 * proves the build.
 *
 * The install uses `--prefer-offline`: the npm cache first, the registry only for what the
 * cache lacks (once the cache holds the dependencies' metadata, it works offline). With
 * neither, the tests skip and say so.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from '../helpers/databases.ts';
import { REPO_ROOT } from '../helpers/process.ts';

const run = promisify(execFile);
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const TSX_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', 'tsx', 'package.json'), 'utf8')) as { version: string }).version;
/** A slow step's bound: a loaded two-core machine builds, packs and installs in well under this. */
const STEP_MS = 180_000;
const READY_MS = 120_000;
/** What an install failure looks like when there is neither a registry nor a cached copy. */
const NO_REGISTRY = /ENOTCACHED|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH/;

/** Node modules a process loaded (an ESM loader hook logs each URL to ENTGATE_LOADED_LOG). */
const LOAD_HOOKS = `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(process.env.ENTGATE_LOADED_LOG, url + '\\n');
  return next(url, context);
}
`;

const TS_PLUGIN = `import type { ResolverFactory } from 'entgate';

interface Options { realKey?: string }

const create: ResolverFactory<Options> = (options) => ({
  name: 'scratch-ts',
  async resolve(request) {
    if (!request.key.startsWith('scratch-')) return { outcome: 'pass' };
    return { outcome: 'entitled', class: null, key: options.realKey ?? 'SCRATCH-REAL-KEY', ttlSeconds: 0 };
  },
});
export default create;
`;

const TYPES_CHECK = `import { startService, LeaseClient, LicenceClient, CapacityExceededError, type Licence, type Resolver, type ResolverFactory, type RunningService } from 'entgate';
import { resolverContractTests, type ContractSubject } from 'entgate/testing';

interface Options { realKey: string }

export const create: ResolverFactory<Options> = (options, { logger }) => {
  const resolver: Resolver = {
    name: 'typed',
    async resolve(request) {
      logger.debug('asked');
      return request.key === 'k' ? { outcome: 'entitled', class: null, key: options.realKey } : { outcome: 'pass' };
    },
  };
  return resolver;
};

export const subject: ContractSubject = {
  name: 'typed',
  create: () => create({ realKey: 'REAL' }, { config: {} as never, logger: {} as never }),
  entitled: { server: 'rm.example.com', key: 'k' },
  unknown: { server: 'rm.example.com', key: 'nobody' },
};
export const api: [typeof startService, typeof LeaseClient, typeof resolverContractTests] = [startService, LeaseClient, resolverContractTests];
export type Running = RunningService;
export const licences = new LicenceClient({ baseUrl: 'http://127.0.0.1:8080', token: 't', publicKeys: ['pem'], file: 'licence.jwt' });
licences.on('licence', (licence: Licence, info) => void [licence.expiresAt.getTime(), info.seq, licences.hasFeature('reports')]);
export const refusal = (err: unknown) => (err instanceof CapacityExceededError ? err.limit - err.inUse : undefined);

// The declarations are real types, not any: each of these must be an error.
// @ts-expect-error a resolution needs an outcome
export const bad: Awaited<ReturnType<Resolver['resolve']>> = { class: null };
// @ts-expect-error startService takes a config and a logger
void startService();
// @ts-expect-error the lease client wants its options
new LeaseClient(42);
// @ts-expect-error a licence client needs the vendor's keys and its file
new LicenceClient({ baseUrl: 'http://127.0.0.1:8080', token: 't' });
// @ts-expect-error its events are typed
licences.on('licence', (licence: string) => licence);
`;

describe('the packed package, installed into a scratch project', { timeout: 600_000 }, () => {
  let dir = '';
  let stage = '';
  let scratch = '';
  let packed: { filename: string; files: { path: string; mode: number }[] } | undefined;
  let unavailable: string | undefined;
  const bin = () => join(scratch, 'node_modules', '.bin', 'entgate');
  const loadHooks = () => join(dir, 'log-loads.mjs');

  before(async () => {
    dir = tempDir('entgate-package-');
    // The working tree as git sees it (tracked and new files, nothing ignored: no dist/, no data/).
    stage = join(dir, 'stage');
    const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO_ROOT, maxBuffer: 64 << 20 })
      .toString()
      .split('\0')
      .filter((f) => f !== '' && f !== 'node_modules' && !f.startsWith('node_modules/') && existsSync(join(REPO_ROOT, f)));
    for (const file of listed) {
      mkdirSync(dirname(join(stage, file)), { recursive: true });
      copyFileSync(join(REPO_ROOT, file), join(stage, file));
    }
    symlinkSync(realpathSync(join(REPO_ROOT, 'node_modules')), join(stage, 'node_modules'), 'dir');

    // npm pack runs prepare: the build, from nothing.
    const pack = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: stage, timeout: STEP_MS, maxBuffer: 64 << 20 });
    const json = pack.stdout.slice(pack.stdout.search(/^\[/m));
    packed = (JSON.parse(json) as (typeof packed)[])[0];

    scratch = join(dir, 'scratch');
    mkdirSync(scratch);
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'entgate-scratch', private: true, type: 'module' }));
    try {
      // tsx beside entgate: what loads a plugin written in TypeScript (docs/plugins.md).
      await run(
        'npm',
        ['install', join(dir, packed!.filename), `tsx@${TSX_VERSION}`, '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'],
        { cwd: scratch, timeout: STEP_MS, maxBuffer: 64 << 20 },
      );
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? '');
      if (!NO_REGISTRY.test(stderr)) throw err;
      unavailable = `cannot install the tarball's dependencies: no npm registry answers and the npm cache does not hold them (${stderr.match(NO_REGISTRY)![0]})`;
    }
    writeFileSync(loadHooks(), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
    writeFileSync(join(dir, 'hooks.mjs'), LOAD_HOOKS);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ships the build only: no tests, benchmarks or TypeScript sources', () => {
    const paths = packed!.files.map((f) => f.path);
    const strays = paths.filter(
      (p) => !(p.startsWith('dist/') || ['package.json', 'README.md', 'CHANGELOG.md', 'docs/openapi.yaml'].includes(p) || /^LICEN[CS]E/.test(p)),
    );
    assert.deepEqual(strays, [], 'files outside the runtime');
    assert.deepEqual(paths.filter((p) => /\.[cm]?tsx?$/.test(p) && !/\.d\.[cm]?ts$/.test(p)), [], '.ts sources');
    assert.deepEqual(paths.filter((p) => /(^|\/)(test|bench|examples)\//.test(p)), [], 'tests, benchmarks, examples');
    for (const needed of [
      'dist/src/cli/main.js',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/testing/resolver-contract.js',
      'dist/src/testing/resolver-contract.d.ts',
      'dist/migrations/index.js',
      'docs/openapi.yaml',
    ]) {
      assert.ok(paths.includes(needed), `${needed} is packed`);
    }
  });

  it('entgate --version prints the package version', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const { stdout } = await run('npx', ['--no-install', 'entgate', '--version'], { cwd: scratch, timeout: STEP_MS });
    assert.equal(stdout.trim(), VERSION);
  });

  it('the CLI prints its help and version without loading the server, axios, zod or node-forge', async (t) => {
    if (unavailable) return t.skip(unavailable);
    for (const args of [['--version'], ['vkey', 'list', '--help']]) {
      const log = join(dir, `loaded-${args.join('-')}.log`);
      await run(bin(), args, { cwd: scratch, timeout: STEP_MS, env: { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(loadHooks()).href}`, ENTGATE_LOADED_LOG: log } });
      const loaded = readFileSync(log, 'utf8').split('\n');
      assert.ok(loaded.some((u) => u.endsWith('/node_modules/entgate/dist/src/cli/main.js')), `the log holds the installed CLI (${args.join(' ')})`);
      const heavy = loaded.filter((u) => /\/node_modules\/(express|knex|@electric-sql\/pglite|pg|axios|zod|node-forge|jose|openpgp)\//.test(u));
      assert.deepEqual(heavy, [], `entgate ${args.join(' ')} loads none of these`);
    }
  });

  it("import('entgate') and import('entgate/testing') work from the scratch project", async (t) => {
    if (unavailable) return t.skip(unavailable);
    const script = `
      const api = await import('entgate');
      const testing = await import('entgate/testing');
      console.log(JSON.stringify({ startService: typeof api.startService, LeaseClient: typeof api.LeaseClient, LicenceClient: typeof api.LicenceClient, loadConfig: typeof api.loadConfig, resolverContractTests: typeof testing.resolverContractTests }));
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: scratch, timeout: STEP_MS });
    assert.deepEqual(JSON.parse(stdout), { startService: 'function', LeaseClient: 'function', LicenceClient: 'function', loadConfig: 'function', resolverContractTests: 'function' });
  });

  it('its declarations type a plugin (Resolver, ResolverFactory) and the public API', async (t) => {
    if (unavailable) return t.skip(unavailable);
    writeFileSync(join(scratch, 'check.ts'), TYPES_CHECK);
    writeFileSync(
      join(scratch, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          // The integrator's usual setting: entgate's declarations name express's types, which
          // a project that does not use express has no declarations for.
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(REPO_ROOT, 'node_modules', '@types')],
        },
        files: ['check.ts'],
      }),
    );
    const tsc = join(REPO_ROOT, 'node_modules', '.bin', 'tsc');
    const result = await run(tsc, ['-p', scratch], { cwd: scratch, timeout: STEP_MS }).catch((err: { stdout?: string; stderr?: string }) => err);
    assert.equal(`${result.stdout ?? ''}${result.stderr ?? ''}`.trim(), '', 'tsc reports nothing');
  });

  it('the installed bin serves (with a TypeScript plugin, through tsx) until SIGTERM, without loading node-forge', async (t) => {
    if (unavailable) return t.skip(unavailable);
    writeFileSync(join(scratch, 'plugin.ts'), TS_PLUGIN);
    const log = join(dir, 'loaded-serve.log');
    const child: ChildProcess = spawn(bin(), ['serve'], {
      cwd: scratch,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        PORT: '0',
        HOST: '127.0.0.1',
        DATA_DIR: join(dir, 'data'),
        ENTGATE_RESOLVERS: 'postgres,./plugin.ts',
        LOG_LEVEL: 'info',
        NODE_OPTIONS: `--import=${pathToFileURL(loadHooks()).href}`,
        ENTGATE_LOADED_LOG: log,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + READY_MS;
      // The bound port (PORT=0) comes in the "listening" line; then /readyz answers 200.
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "listening" line in ${READY_MS} ms:\n${output}`)), READY_MS);
        createInterface({ input: child.stdout! }).on('line', (line) => {
          output += `${line}\n`;
          try {
            const entry = JSON.parse(line) as { msg?: string; url?: string };
            if (entry.msg === 'entgate listening' && entry.url) {
              clearTimeout(timer);
              resolve(entry.url);
            }
          } catch {
            // not a log line
          }
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`the server exited with ${code} before listening:\n${output}`));
        });
      });
      let ready = 0;
      while (Date.now() < deadline) {
        ready = await fetch(`${url}/readyz`).then((r) => r.status, () => 0);
        if (ready === 200) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(ready, 200, `/readyz within ${READY_MS} ms:\n${output}`);

      const check = await fetch(`${url}/?server=rm.example.com;key=scratch-1`);
      assert.equal(check.status, 200, 'the TypeScript plugin grants its key');
      assert.match(await check.text(), /<key>SCRATCH-REAL-KEY<\/key>/);
      const openapi = await fetch(`${url}/openapi.json`);
      assert.equal(openapi.status, 200, 'docs/openapi.yaml is found from dist/');
      assert.match(((await openapi.json()) as { openapi: string }).openapi, /^3\.1\./);

      child.kill('SIGTERM');
      assert.equal(await exited, 0, `exit code after SIGTERM:\n${output}`);
      const loaded = readFileSync(log, 'utf8').split('\n');
      assert.ok(loaded.some((u) => u.endsWith('/node_modules/entgate/dist/src/service.js')), 'the log holds the installed server');
      assert.deepEqual(loaded.filter((u) => u.includes('/node_modules/node-forge/')), [], 'serve does not load node-forge (dev-certs does)');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
