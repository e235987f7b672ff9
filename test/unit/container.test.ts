/**
 * The container files, linted: `Dockerfile` and `.dockerignore` by a small rule set written
 * here (hadolint is a Haskell binary, not an npm package), `compose.yaml` parsed with `yaml`
 * and checked for its structure and for secrets written into it. Each rule is also shown to
 * catch what it is about, on a broken copy. Building and running the image is
 * test/e2e/container.test.ts (skipped without a Docker engine).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../helpers/process.ts';

const DOCKERFILE = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const DOCKERIGNORE = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8');
const COMPOSE = readFileSync(join(REPO_ROOT, 'compose.yaml'), 'utf8');

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** Instructions, with continuation lines joined and comments dropped, as Docker reads them. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const continued = line.endsWith('\\');
    const body = continued ? line.slice(0, -1).trim() : line;
    pending = pending ? { text: `${pending.text} ${body}`, line: pending.line } : { text: body, line: i + 1 };
    if (!continued) {
      const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(pending.text) ?? [];
      out.push({ keyword: keyword.toUpperCase(), args, line: pending.line });
      pending = undefined;
    }
  });
  return out;
}

/** `KEY=value` pairs of ENV instructions (quoted values unquoted). */
function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of stage.filter((s) => s.keyword === 'ENV')) {
    for (const m of i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
  }
  return env;
}

/** Is `path` left out of the build context by these .dockerignore rules (the last match wins)? */
function ignored(rules: string, path: string): boolean {
  let out = false;
  for (const raw of rules.split('\n')) {
    const rule = raw.trim();
    if (rule === '' || rule.startsWith('#')) continue;
    const negated = rule.startsWith('!');
    const pattern = (negated ? rule.slice(1) : rule).replace(/^\/+|\/+$/g, '');
    const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\u0000').replace(/\*/g, '[^/]*').replace(/\u0000/g, '.*')}(/.*)?$`);
    if (re.test(path)) out = !negated;
  }
  return out;
}

/** The problems the rule set finds in a Dockerfile and its .dockerignore; [] when none. */
function lintDockerfile(text: string, dockerignore: string): string[] {
  const problems: string[] = [];
  const all = instructions(text);
  const stages: { from: Instruction; name?: string; body: Instruction[] }[] = [];
  for (const i of all) {
    if (i.keyword === 'FROM') stages.push({ from: i, ...(/\sAS\s+(\S+)/i.test(i.args) && { name: /\sAS\s+(\S+)/i.exec(i.args)![1]! }), body: [] });
    else if (stages.length === 0) problems.push(`line ${i.line}: ${i.keyword} before the first FROM`);
    else stages.at(-1)!.body.push(i);
  }
  if (stages.length < 2) problems.push('not multi-stage: a build stage and a runtime stage are expected');
  const names = new Set(stages.map((s) => s.name).filter(Boolean));
  for (const s of stages) {
    const image = s.from.args.split(/\s+/).find((w) => !w.startsWith('--'))!;
    if (names.has(image)) continue;
    const tag = /^[^@]+@sha256:/.test(image) ? 'digest' : /:([^/:]+)$/.exec(image)?.[1];
    if (tag === undefined) problems.push(`line ${s.from.line}: FROM ${image} has no tag (pin one)`);
    else if (tag === 'latest') problems.push(`line ${s.from.line}: FROM ${image}: the latest tag is not a version`);
  }
  for (const i of all) {
    if (i.keyword === 'RUN' && /\bnpm\s+(install|i)\b/.test(i.args)) problems.push(`line ${i.line}: npm install: use npm ci (the lockfile, exactly)`);
    if (i.keyword === 'ADD' && /(https?|ftp):\/\/|git@/.test(i.args)) problems.push(`line ${i.line}: ADD of a remote URL`);
    if (i.keyword === 'RUN' && /\b(curl|wget)\b[^|]*\|\s*(ba)?sh\b/.test(i.args)) problems.push(`line ${i.line}: a script piped from the network into a shell`);
  }
  const final = stages.at(-1);
  if (final === undefined) return problems;
  const body = final.body;
  const at = (keyword: string) => body.findIndex((i) => i.keyword === keyword);
  const ci = body.filter((i) => i.keyword === 'RUN' && /\bnpm\s+ci\b/.test(i.args));
  if (ci.length === 0) problems.push('runtime stage: no npm ci');
  for (const i of ci) {
    if (!/--omit=dev\b/.test(i.args)) problems.push(`line ${i.line}: the runtime's npm ci without --omit=dev`);
    if (!/--ignore-scripts\b/.test(i.args)) problems.push(`line ${i.line}: the runtime's npm ci without --ignore-scripts (prepare needs the dev dependencies)`);
  }
  if (!body.some((i) => i.keyword === 'COPY' && /--from=\S+/.test(i.args) && /\bdist\b/.test(i.args))) problems.push('runtime stage: dist/ is not copied from the build stage');
  for (const i of body.filter((i) => i.keyword === 'COPY' && !/--from=/.test(i.args))) {
    const sources = i.args.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1);
    if (sources.some((s) => s === '.' || s === './' || /^(\.\/)?(src|test|bench|examples)\b/.test(s))) problems.push(`line ${i.line}: the runtime stage copies sources (${sources.join(' ')}), not the build`);
  }
  const users = body.filter((i) => i.keyword === 'USER');
  const user = users.at(-1)?.args.split(':')[0];
  if (user === undefined) problems.push('runtime stage: no USER (it would run as root)');
  else if (user === 'root' || user === '0') problems.push('runtime stage: USER is root');
  const cmd = body.findIndex((i) => i.keyword === 'CMD' || i.keyword === 'ENTRYPOINT');
  if (cmd === -1) problems.push('runtime stage: no CMD');
  else {
    if (users.length > 0 && body.indexOf(users.at(-1)!) > cmd) problems.push('runtime stage: USER comes after CMD');
    if (!body[cmd]!.args.startsWith('[')) problems.push(`line ${body[cmd]!.line}: CMD in shell form (node would not be PID 1, nor get SIGTERM)`);
    if (!/dist\/src\/cli\/main\.js|"entgate"/.test(body[cmd]!.args) || !/"serve"/.test(body[cmd]!.args)) problems.push(`line ${body[cmd]!.line}: CMD does not run the built entgate serve`);
  }
  const health = body.find((i) => i.keyword === 'HEALTHCHECK');
  if (health === undefined) problems.push('runtime stage: no HEALTHCHECK');
  else {
    if (!/\/readyz/.test(health.args)) problems.push(`line ${health.line}: HEALTHCHECK does not ask /readyz`);
    if (/\b(curl|wget)\b/.test(health.args)) problems.push(`line ${health.line}: HEALTHCHECK uses curl or wget, which the slim image does not have`);
    if (!/"node"/.test(health.args)) problems.push(`line ${health.line}: HEALTHCHECK does not run node in exec form`);
  }
  if (at('EXPOSE') === -1 || !body.some((i) => i.keyword === 'EXPOSE' && /\b8080\b/.test(i.args))) problems.push('runtime stage: no EXPOSE 8080');
  const env = envOf(body);
  if (env.HOST !== '0.0.0.0') problems.push(`runtime stage: HOST is ${env.HOST ?? 'unset'}, not 0.0.0.0 (the port would not be reachable from outside the container)`);
  const dataDir = env.DATA_DIR;
  if (dataDir === undefined || !dataDir.startsWith('/')) problems.push('runtime stage: DATA_DIR is not set to an absolute path');
  else {
    if (!body.some((i) => i.keyword === 'VOLUME' && i.args.includes(dataDir))) problems.push(`runtime stage: no VOLUME for ${dataDir}`);
    const owned = body.some(
      (i) => (i.keyword === 'RUN' && new RegExp(`chown\\s+(-\\S+\\s+)*${user ?? '\\S+'}(:\\S+)?\\s+[^&;]*${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`).test(i.args)) || (i.keyword === 'COPY' && /--chown=/.test(i.args) && i.args.includes(dataDir)),
    );
    if (!owned) problems.push(`runtime stage: ${dataDir} is not given to ${user ?? 'the service user'} (chown or COPY --chown)`);
  }
  for (const path of ['node_modules', '.git', '.env', 'data', 'dist', 'test', 'bench']) {
    if (!ignored(dockerignore, path)) problems.push(`.dockerignore lets ${path} into the build context`);
  }
  for (const s of stages) {
    for (const i of s.body.filter((i) => i.keyword === 'COPY' && !/--from=/.test(i.args))) {
      for (const source of i.args.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1)) {
        if (ignored(dockerignore, source.replace(/^\.\//, '').replace(/\/$/, ''))) problems.push(`line ${i.line}: COPY ${source}, which .dockerignore leaves out`);
      }
    }
  }
  return problems;
}

type Env = Record<string, string>;
const envMap = (env: unknown): Env =>
  Array.isArray(env)
    ? Object.fromEntries(env.map((e: string) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]))
    : Object.fromEntries(Object.entries((env ?? {}) as Record<string, unknown>).map(([k, v]) => [k, v === null ? '' : String(v)]));
/** A value made of interpolations only (`${NAME}`, `${NAME:?message}`, `${NAME:-}`), none with a default of its own. */
const onlyInterpolated = (value: string) =>
  value === '' || (value.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*|:?-)?\}/g, '') === '' && !/\$\{[A-Za-z_][A-Za-z0-9_]*:?-[^}]+\}/.test(value));
const SECRET_NAME = /PASSWORD|SECRET|TOKEN|_KEY$|PRIVATE/;
const seconds = (d: unknown) => {
  const m = /^(\d+)(s|m)$/.exec(String(d));
  return m ? Number(m[1]) * (m[2] === 'm' ? 60 : 1) : NaN;
};

/** The problems found in a compose file; [] when none. */
function lintCompose(text: string): string[] {
  const problems: string[] = [];
  const doc = parse(text, { uniqueKeys: true }) as { services?: Record<string, Record<string, unknown>>; volumes?: Record<string, unknown> };
  const services = doc?.services ?? {};
  const pg = services.postgres;
  const eg = services.entgate;
  if (!pg) problems.push('no postgres service');
  if (!eg) problems.push('no entgate service');
  for (const [name, s] of Object.entries(services)) {
    const image = s.image as string | undefined;
    if (image === undefined && s.build === undefined) problems.push(`${name}: neither image nor build`);
    if (image !== undefined && s.build === undefined) {
      const tag = /:([^/:]+)$/.exec(image)?.[1];
      if (tag === undefined || tag === 'latest') problems.push(`${name}: image ${image} is not pinned to a version`);
    }
    const env = envMap(s.environment);
    for (const [key, value] of Object.entries(env)) {
      if (SECRET_NAME.test(key) && !onlyInterpolated(value)) problems.push(`${name}: ${key} is written into the file (take it from the environment, with no default)`);
      const credentials = /^[a-z][a-z0-9+.-]*:\/\/[^:/@]+:([^@]*)@/i.exec(value)?.[1];
      if (credentials !== undefined && !onlyInterpolated(credentials)) problems.push(`${name}: ${key} holds a password written into the file`);
    }
  }
  if (pg) {
    const test = JSON.stringify((pg.healthcheck as { test?: unknown } | undefined)?.test ?? '');
    if (!/pg_isready/.test(test)) problems.push('postgres: no healthcheck with pg_isready');
    if (!(pg.volumes as unknown[] | undefined)?.some((v) => /:\/var\/lib\/postgresql/.test(String(v)))) problems.push('postgres: its data is not on a volume');
  }
  if (eg) {
    if (eg.build === undefined) problems.push('entgate: not built from this repository (build: .)');
    const dep = (eg.depends_on as Record<string, { condition?: string }> | undefined)?.postgres;
    if (dep?.condition !== 'service_healthy') problems.push('entgate: does not wait for postgres to be healthy (depends_on condition: service_healthy)');
    const env = envMap(eg.environment);
    if (!/^postgres(ql)?:\/\/[^@]+@postgres(:5432)?\//.test(env.DATABASE_URL ?? '')) problems.push(`entgate: DATABASE_URL does not point at the postgres service (${env.DATABASE_URL ?? 'unset'})`);
    if (!/^\$\{ENTGATE_ADMIN_TOKEN(:?\?[^}]*)?\}$/.test(env.ENTGATE_ADMIN_TOKEN ?? '')) problems.push('entgate: ENTGATE_ADMIN_TOKEN is not taken from the environment without a default');
    if ((env.HOST ?? '0.0.0.0') !== '0.0.0.0') problems.push('entgate: HOST is not 0.0.0.0');
    if (!(eg.ports as unknown[] | undefined)?.some((p) => /:8080$/.test(String(p)))) problems.push('entgate: port 8080 is not published');
    if (!(seconds(eg.stop_grace_period) >= 10)) problems.push('entgate: stop_grace_period below the drain (ENTGATE_SHUTDOWN_TIMEOUT_MS 8 s, and 2 s more)');
  }
  return problems;
}

describe('Dockerfile and .dockerignore', () => {
  it('pass the rule set', () => {
    assert.deepEqual(lintDockerfile(DOCKERFILE, DOCKERIGNORE), []);
  });

  it('the rules catch what they are about', () => {
    const broken: [string, (text: string) => string, RegExp][] = [
      ['one stage', (t) => t.slice(t.indexOf('FROM node:20-bookworm-slim AS runtime')), /not multi-stage/],
      ['latest', (t) => t.replace('FROM node:20-bookworm-slim AS runtime', 'FROM node:latest AS runtime'), /latest tag/],
      ['untagged', (t) => t.replace('FROM node:20-bookworm-slim AS runtime', 'FROM node AS runtime'), /has no tag/],
      ['npm install', (t) => t.replace('npm ci --omit=dev', 'npm install --omit=dev'), /npm install: use npm ci/],
      ['dev dependencies', (t) => t.replace('--omit=dev ', ''), /without --omit=dev/],
      ['remote ADD', (t) => t.replace('EXPOSE 8080', 'ADD https://example.com/x.tgz /tmp/\nEXPOSE 8080'), /ADD of a remote URL/],
      ['root', (t) => t.replace('USER node', 'USER root'), /USER is root/],
      ['no user', (t) => t.replace('USER node\n', ''), /no USER/],
      ['user after cmd', (t) => t.replace('USER node\n', '') + 'USER node\n', /USER comes after CMD/],
      ['no healthcheck', (t) => t.replace(/HEALTHCHECK[^\n]*\\\n[^\n]*\n/, ''), /no HEALTHCHECK/],
      ['curl', (t) => t.replace(/CMD \["node", "-e".*\n/, 'CMD curl -f http://127.0.0.1:8080/readyz\n'), /curl or wget/],
      ['shell form', (t) => t.replace('CMD ["node", "dist/src/cli/main.js", "serve"]', 'CMD node dist/src/cli/main.js serve'), /shell form/],
      ['host', (t) => t.replace('HOST=0.0.0.0', 'HOST=127.0.0.1'), /HOST is 127\.0\.0\.1/],
      ['data dir owner', (t) => t.replace('&& chown node:node /var/lib/entgate', ''), /is not given to node/],
      ['sources', (t) => t.replace('COPY docs/openapi.yaml', 'COPY . .\nCOPY docs/openapi.yaml'), /copies sources/],
    ];
    for (const [what, mutate, problem] of broken) {
      const mutated = mutate(DOCKERFILE);
      assert.notEqual(mutated, DOCKERFILE, `${what}: the mutation applies`);
      assert.match(lintDockerfile(mutated, DOCKERIGNORE).join('\n'), problem, what);
    }
    assert.match(lintDockerfile(DOCKERFILE, 'node_modules\n').join('\n'), /lets \.env into the build context/);
    assert.match(lintDockerfile(DOCKERFILE, DOCKERIGNORE.replace('!docs/openapi.yaml\n', '')).join('\n'), /COPY docs\/openapi\.yaml, which \.dockerignore leaves out/);
  });
});

describe('compose.yaml', () => {
  it('passes: postgres with pg_isready, entgate built here and waiting for it, no secret in the file', () => {
    assert.deepEqual(lintCompose(COMPOSE), []);
  });

  it('the rules catch what they are about', () => {
    const broken: [string, (text: string) => string, RegExp][] = [
      ['plaintext password', (t) => t.replace(/POSTGRES_PASSWORD: \$\{[^\n]*/, 'POSTGRES_PASSWORD: hunter2'), /POSTGRES_PASSWORD is written into the file/],
      ['default token', (t) => t.replace(/ENTGATE_ADMIN_TOKEN: \$\{[^\n]*/, 'ENTGATE_ADMIN_TOKEN: ${ENTGATE_ADMIN_TOKEN:-change-me-please-0000}'), /ENTGATE_ADMIN_TOKEN is written into the file/],
      ['password in a URL', (t) => t.replace(/entgate:\$\{POSTGRES_PASSWORD[^}]*\}@/, 'entgate:hunter2@'), /DATABASE_URL holds a password/],
      ['started, not healthy', (t) => t.replace('condition: service_healthy', 'condition: service_started'), /service_healthy/],
      ['no pg_isready', (t) => t.replace(/test: \["CMD", "pg_isready"[^\n]*/, 'test: ["CMD", "true"]'), /pg_isready/],
      ['latest', (t) => t.replace('image: postgres:17-bookworm', 'image: postgres:latest'), /not pinned/],
      ['host', (t) => t.replace('HOST: 0.0.0.0', 'HOST: 127.0.0.1'), /HOST is not 0\.0\.0\.0/],
      ['duplicate key', (t) => t.replace('HOST: 0.0.0.0', 'HOST: 0.0.0.0\n      HOST: 0.0.0.0'), /./],
    ];
    for (const [what, mutate, problem] of broken) {
      const mutated = mutate(COMPOSE);
      assert.notEqual(mutated, COMPOSE, `${what}: the mutation applies`);
      let found: string;
      try {
        found = lintCompose(mutated).join('\n');
      } catch (err) {
        found = (err as Error).message;
      }
      assert.match(found, problem, what);
    }
  });
});
