import type { Command } from 'commander';

/**
 * A command group kept under its old name, for the scripts that use it: hidden from
 * `entgate --help`, it works as it did (same stdout, same exit codes), and says on stderr which
 * spelling replaces it. The line comes last, when the process exits (after an error or a
 * usage message too), so that what the command wrote to stderr before still begins it, for the
 * scripts that read its first line.
 */
export function deprecatedGroup(program: Command, old: string, current: string): Command {
  const group = program.command(old, { hidden: true }).description(`deprecated: use 'entgate ${current}'`);
  program.hook('preSubcommand', (_program, subcommand) => {
    if (subcommand !== group) return;
    // stderr is synchronous for files, pipes and terminals on Linux, so the line is not lost at exit.
    process.once('exit', () => process.stderr.write(`entgate: '${old}' is deprecated; use 'entgate ${current}'\n`));
  });
  return group;
}
