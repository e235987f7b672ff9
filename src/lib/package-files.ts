import { readFileSync } from 'node:fs';

/**
 * The package's root directory, found from this module's own place: `src/lib/package-files.ts` in
 * the sources (run through tsx), `dist/src/lib/package-files.js` once built. Files shipped beside
 * the code (package.json, docs/openapi.yaml) are read from there, so that the sources, the
 * build and an installed package find the same files.
 */
const ROOT = new URL(import.meta.url.endsWith('.js') ? '../../../' : '../../', import.meta.url);

/** A file shipped with the package, by its path from the package root (`docs/openapi.yaml`). */
export function packageFile(path: string): URL {
  return new URL(path, ROOT);
}

/** The `version` of entgate's package.json, read when asked. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(packageFile('package.json'), 'utf8')) as { version: string }).version;
}
