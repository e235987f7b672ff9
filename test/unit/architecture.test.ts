/**
 * The layers point one way (docs/architecture.md, "Layers"): every relative import in `src/`
 * and `config/` is checked against the table below, so that a change that reaches upwards
 * (the domain importing the database, a feature importing the HTTP shell) fails here first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Lowest first. A module may import its own layer and any lower one, unless `may` narrows it. */
const LAYERS: { name: string; paths: string[]; may?: string[] }[] = [
  { name: 'lib', paths: ['src/lib/'], may: ['lib'] },
  { name: 'config', paths: ['config/'], may: ['lib', 'config'] },
  { name: 'domain', paths: ['src/domain/'], may: ['lib', 'config', 'domain'] },
  { name: 'store', paths: ['src/store/', 'migrations/'] },
  { name: 'resolvers', paths: ['src/resolvers/'] },
  { name: 'auth', paths: ['src/auth/'] },
  { name: 'features', paths: ['src/admin/', 'src/leases/', 'src/ses/', 'src/licensing/'] },
  { name: 'ops', paths: ['src/ops/'] },
  { name: 'http', paths: ['src/http/'] },
  { name: 'wiring', paths: ['src/wiring/', 'src/service.ts', 'src/index.ts'] },
  { name: 'cli', paths: ['src/cli/'] },
];
/** Shipped to application vendors and plugin authors: they must not drag the server in. */
const LIBRARIES: Record<string, string[]> = {
  'src/client/': ['src/lib/', 'src/domain/types.ts', 'src/domain/licence.ts'],
  'src/testing/': ['src/lib/', 'src/domain/', 'src/resolvers/'],
};
/** Features stay apart; SES and licence capacities take their seats from the lease engine, never the other way. */
const FEATURE_EDGES = new Set(['src/ses/ -> src/leases/', 'src/licensing/ -> src/leases/']);

function layerOf(file: string): number {
  return LAYERS.findIndex((l) => l.paths.some((p) => file.startsWith(p)));
}

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f));
}

function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((s) => normalize(relative(ROOT, resolve(ROOT, dirname(file), s))));
}

const featureOf = (file: string) => ['src/admin/', 'src/leases/', 'src/ses/', 'src/licensing/'].find((p) => file.startsWith(p));

function violations(): string[] {
  const found: string[] = [];
  for (const file of [...sources('src'), ...sources('config'), ...sources('migrations')]) {
    const library = Object.keys(LIBRARIES).find((p) => file.startsWith(p));
    for (const target of importsOf(file)) {
      if (library) {
        if (!target.startsWith(library) && !LIBRARIES[library]!.some((p) => target.startsWith(p))) found.push(`${file} -> ${target} (a library for others)`);
        continue;
      }
      // The libraries are leaves: anything may use them.
      if (Object.keys(LIBRARIES).some((p) => target.startsWith(p))) continue;
      const from = layerOf(file);
      const to = layerOf(target);
      if (from < 0) {
        found.push(`${file}: in no layer`);
        continue;
      }
      if (to < 0) {
        found.push(`${file} -> ${target}: target in no layer`);
        continue;
      }
      const may = LAYERS[from]!.may;
      if (may ? !may.includes(LAYERS[to]!.name) : to > from) found.push(`${file} -> ${target} (${LAYERS[from]!.name} may not import ${LAYERS[to]!.name})`);
      const [a, b] = [featureOf(file), featureOf(target)];
      if (a && b && a !== b && !FEATURE_EDGES.has(`${a} -> ${b}`)) found.push(`${file} -> ${target} (features stay apart)`);
    }
  }
  return found;
}

test('every import points down the layers', () => {
  assert.deepEqual(violations(), []);
});

test('the check finds an import that points up', () => {
  // The rule itself can fail: a domain module importing the store is a violation.
  const from = layerOf('src/domain/check.ts');
  const to = layerOf('src/store/db.ts');
  assert.ok(!LAYERS[from]!.may!.includes(LAYERS[to]!.name));
  assert.ok(layerOf('src/admin/routes.ts') < layerOf('src/http/app.ts'));
});
