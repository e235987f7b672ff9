import type { Command } from 'commander';
import type { AdminClient } from './api-client.ts';
import { printJson, printTable } from './output.ts';

/** `entgate blocks list|clear`: clients cooling down after too many unknown keys. */
export function addGuessCommands(program: Command, client: () => AdminClient): void {
  const blocks = program.command('blocks').description('clients refused for a cool-down after too many unknown virtual keys (guessing budgets)');

  blocks
    .command('list')
    .description('who is cooling down, until when, after how many unknown keys')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const { items } = await client().request<{ items: Record<string, unknown>[] }>('GET', '/guess-blocks');
      if (o.json) printJson(items);
      else printTable(items, ['subject', 'failures', 'blockedUntil']);
    });

  blocks
    .command('clear <subject>')
    .description("lift a block and forget the count on every instance: an address, an IPv6 /64 ('2001:db8:1:2::/64') or 'caller <address>'")
    .action(async (subject: string) => {
      await client().request('DELETE', `/guess-blocks/${encodeURIComponent(subject)}`);
      process.stdout.write(`cleared ${subject}\n`);
    });
}
