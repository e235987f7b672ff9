import { fileURLToPath } from 'node:url';
import { stopAll } from './processes.ts';

/**
 * Runs a scenario module on its own (`node --import tsx bench/<x>.ts`) when it is the entry
 * point: prints its markdown, exits 0 (valid), 2 (a scenario INVALID) or 1 (an error).
 */
export function runStandalone(moduleUrl: string, run: (seconds: number, adminUrl: string) => Promise<{ markdown: string; valid: boolean }>): void {
  if (process.argv[1] !== fileURLToPath(moduleUrl)) return;
  run(Number(process.env.BENCH_DURATION ?? 10), process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres')
    .then((r) => {
      process.stdout.write(`${r.markdown}\n`);
      process.exitCode = r.valid ? 0 : 2;
    })
    .catch(async (err: Error) => {
      await stopAll();
      process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
      process.exitCode = 1;
    });
}
