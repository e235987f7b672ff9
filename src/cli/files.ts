import { readFileSync } from 'node:fs';
import type { RingKey } from '../lib/key-ring.ts';
import { ConfigError } from '../lib/errors.ts';
import { CliError } from './output.ts';

/** A file's text, or a CliError naming why it cannot be read. */
export function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** A file's text, or standard input's when the file is `-`. */
export async function readInput(file: string): Promise<string> {
  if (file !== '-') return readText(file);
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) text += chunk as string;
  return text;
}

/**
 * Keys from PEM or JWKS files (lib/key-ring.ts), loaded only when a command needs them; a file
 * that cannot be read or holds no key of the kind is a CliError naming the flag.
 */
export async function loadKeys(files: readonly string[], kind: 'public' | 'private', flag: string): Promise<RingKey[]> {
  const { loadKeyRing } = await import('../lib/key-ring.ts');
  try {
    return await loadKeyRing(files, kind, flag);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message);
    throw err;
  }
}
