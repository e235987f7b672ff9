import type { Command } from 'commander';

/**
 * A command group kept under its old name, for the scripts that use it: hidden from
 * `entgate --help`, it works as it did (same output, same exit codes), and says once on stderr,
 * before anything else, which spelling replaces it.
 */
export function deprecatedGroup(program: Command, old: string, current: string): Command {
  const group = program.command(old, { hidden: true }).description(`deprecated: use 'entgate ${current}'`);
  program.hook('preSubcommand', (_program, subcommand) => {
    if (subcommand === group) process.stderr.write(`entgate: '${old}' is deprecated; use 'entgate ${current}'\n`);
  });
  return group;
}
