import { Option, type Command } from 'commander';
import type { AdminClient } from './api-client.ts';
import { CliError, printJson, printTable } from './output.ts';

type Row = Record<string, unknown> & { id: number };
interface Page {
  items: Row[];
  nextCursor: number | null;
}

interface Filters {
  keyHint?: string;
  server?: string;
  decision?: string;
  since?: string;
  until?: string;
}

const COLUMNS = ['id', 'occurredAt', 'decision', 'reason', 'server', 'keyHint', 'remoteIp', 'callerIp', 'resolver'];

function filterParams(o: Filters, extra: Record<string, string>): URLSearchParams {
  const p = new URLSearchParams(extra);
  for (const [name, value] of Object.entries({ keyHint: o.keyHint, server: o.server, decision: o.decision, since: o.since, until: o.until })) {
    if (value !== undefined) p.set(name, value);
  }
  return p;
}

const withFilters = (c: Command) =>
  c
    .option('--key-hint <hint>', 'only this key hint (the first characters of a virtual key, as shown by vkey list)')
    .option('--server <host>', 'only checks for this server')
    .addOption(new Option('--decision <decision>', 'only this decision').choices(['granted', 'denied', 'invalid']))
    .option('--since <time>', 'ISO-8601 time or date: only events at or after it')
    .option('--until <time>', 'ISO-8601 time or date: only events before it');

/** `entgate audit` (newest first, or --follow) and `entgate audit export` (NDJSON, oldest first). */
export function addAuditCommands(program: Command, client: () => AdminClient, positiveInt: (flag: string) => (v: string) => number): void {
  const audit = withFilters(
    program
      .command('audit')
      .description('the check decisions, newest first (a table, or --json); --follow keeps printing new ones')
      .option('--limit <n>', 'how many (1 to 1000)', positiveInt('--limit'), 50)
      .option('--follow', 'then print new events as they are recorded, until interrupted')
      .option('--json', 'print JSON (one object per line with --follow)'),
  ).action(async (o: Filters & { limit: number; follow?: boolean; json?: boolean }) => {
    const api = client();
    if (o.limit > 1000) throw new CliError('--limit must be at most 1000');
    const page = await api.request<Page>('GET', `/audit?${filterParams(o, { limit: String(o.limit) })}`);
    const newestFirst = page.items;
    if (!o.follow) {
      if (o.json) printJson(newestFirst);
      else printTable(newestFirst, COLUMNS);
      return;
    }
    const show = (rows: Row[]) => {
      if (o.json) for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
      else if (rows.length > 0) printTable(rows, COLUMNS);
    };
    const oldestFirst = [...newestFirst].reverse();
    show(oldestFirst);
    let last = oldestFirst.length > 0 ? oldestFirst[oldestFirst.length - 1]!.id : 0;
    let stop = false;
    const end = () => (stop = true);
    process.once('SIGINT', end);
    process.once('SIGTERM', end);
    while (!stop) {
      await new Promise((r) => setTimeout(r, 1000));
      if (stop) break;
      const next = await api.request<Page>('GET', `/audit?${filterParams(o, { after: String(last), limit: '1000' })}`);
      show(next.items);
      if (next.items.length > 0) last = next.items[next.items.length - 1]!.id;
    }
  });

  withFilters(
    audit.command('export').description('every matching event as NDJSON on stdout, oldest first (entgate audit export --since 2026-11-01 > nov.ndjson)'),
  ).action(async (o: Filters) => {
    const api = client();
    let after = 0;
    for (;;) {
      const page = await api.request<Page>('GET', `/audit?${filterParams(o, { after: String(after), limit: '1000' })}`);
      for (const r of page.items) process.stdout.write(`${JSON.stringify(r)}\n`);
      if (page.items.length < 1000) break;
      after = page.items[page.items.length - 1]!.id;
    }
  });
}
