#!/usr/bin/env node
// `npm test [-- <dir or file>...]`: runs every *.test.ts below the given paths (default: test/)
// with node's test runner through tsx. Node 20's runner does not expand globs itself.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['test'];
const files = roots.flatMap((root) =>
  statSync(root).isDirectory()
    ? readdirSync(root, { recursive: true })
        .map(String)
        .filter((f) => f.endsWith('.test.ts'))
        .map((f) => join(root, f))
    : [root],
);
files.sort();
if (files.length === 0) {
  console.error(`no test files under ${roots.join(', ')}`);
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
// Tests that time behaviour across several server processes (revocation within 1 s, seats
// across three processes) run after the rest, one file at a time, so that the rest of the
// suite does not share the two cores with them.
const SOLO = /(multi-process|leases)\.test\.ts$/;
// A file may run 10 minutes before it is called hung: the CLI file (a Node process per call)
// took over 5 minutes on a machine loaded several times over.
const run = (list, n) =>
  list.length === 0
    ? 0
    : (spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${n}`, '--test-timeout=600000', ...list], { stdio: 'inherit' })
        .status ?? 1);
const shared = run(files.filter((f) => !(SOLO.test(f) && f.includes('e2e'))), concurrency);
const solo = run(files.filter((f) => SOLO.test(f) && f.includes('e2e')), '1');
process.exit(shared !== 0 ? shared : solo);
