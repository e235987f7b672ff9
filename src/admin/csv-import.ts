import { Readable } from 'node:stream';
import { setImmediate } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { parse as parseStream } from 'csv-parse';
import { parse as parseSync } from 'csv-parse/sync';
import { virtualKeyCreate, type VirtualKeyCreate } from './schemas.ts';
import { describeIssues } from '../lib/zod-issues.ts';

/**
 * The virtual-key import format: CSV with a header line naming its columns, in any order.
 * `key` and `entitlement_id` are required; the others may be left out or left empty.
 *
 *   key,entitlement_id,not_before,expires_at,allowed_cidrs,cache_timeout,retry,customer_ref
 *   w45tv-23xda-e4dd2-11zgv,1,,2027-12-31,10.0.0.0/8 192.168.1.0/24,3600,true,ACME Corp
 *
 * `allowed_cidrs` holds CIDRs separated by spaces; `retry` is true or false.
 */
export const IMPORT_COLUMNS = [
  'key',
  'entitlement_id',
  'not_before',
  'expires_at',
  'allowed_cidrs',
  'cache_timeout',
  'retry',
  'customer_ref',
] as const;

export interface ImportRow {
  line: number;
  input: VirtualKeyCreate & { key: string };
}

export interface ImportProblem {
  line: number;
  message: string;
}

/** One data line of an import: the row it holds, or what is wrong with it. */
export type ImportItem = ImportRow | ImportProblem;

/**
 * Reads an import in one piece (for small inputs and tests): every row, or every problem
 * (including a key given twice). The server streams instead, through `readImportCsv`.
 */
export function parseImportCsv(text: string): { rows: ImportRow[] } | { problems: ImportProblem[] } {
  let records: { record: Record<string, string>; info: { lines: number } }[];
  try {
    records = parseSync(text, CSV_OPTIONS);
  } catch (err) {
    return { problems: [csvProblem(err)] };
  }
  if (records.length === 0) return { problems: [NO_ROWS] };
  const headerProblem = checkHeader(Object.keys(records[0]!.record));
  if (headerProblem) return { problems: [headerProblem] };

  const rows: ImportRow[] = [];
  const problems: ImportProblem[] = [];
  const seen = new Map<string, number>();
  for (const { record, info } of records) {
    const item = checkRecord(record, info.lines);
    if ('message' in item) {
      problems.push(item);
      continue;
    }
    const earlier = seen.get(item.input.key);
    if (earlier !== undefined) {
      problems.push({ line: item.line, message: `key: the same key is on line ${earlier}` });
      continue;
    }
    seen.set(item.input.key, item.line);
    rows.push(item);
  }
  return problems.length > 0 ? { problems } : { rows };
}

/** How often the reader lets the event loop run (the rUS check shares the thread). */
const SLICE_MS = 5;
const INPUT_CHUNK = 64 * 1024;

/**
 * Reads an import as a stream, in bounded memory: each data line as it is parsed and checked,
 * in order. A header problem or malformed CSV ends the stream with that problem. Duplicate
 * keys are left to the writer (it sees the store, where earlier rows of the file already are).
 * Parsing and checking cost CPU (zod per row); every few milliseconds the reader waits for the
 * event loop's next turn, so that requests on the same thread keep being answered.
 */
export async function* readImportCsv(body: Buffer): AsyncGenerator<ImportItem> {
  const parser = parseStream(CSV_OPTIONS);
  // The body is already in memory (bounded by the route's limit); the parser takes it in
  // slices, so that its output (objects) never holds more than a slice's rows.
  Readable.from(sliced(body)).pipe(parser);
  let header = true;
  let sliceStarted = performance.now();
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number } }>) {
      if (header) {
        header = false;
        const problem = checkHeader(Object.keys(record));
        if (problem) {
          yield problem;
          return;
        }
      }
      yield checkRecord(record, info.lines);
      if (performance.now() - sliceStarted >= SLICE_MS) {
        await setImmediate();
        sliceStarted = performance.now();
      }
    }
  } catch (err) {
    yield csvProblem(err);
    return;
  } finally {
    parser.destroy();
  }
  if (header) yield NO_ROWS;
}

function* sliced(body: Buffer): Generator<Buffer> {
  for (let i = 0; i < body.length; i += INPUT_CHUNK) yield body.subarray(i, i + INPUT_CHUNK);
}

const CSV_OPTIONS = { columns: true, info: true, skip_empty_lines: true, bom: true } as const;

const NO_ROWS: ImportProblem = { line: 1, message: 'no rows: the file needs a header line and at least one row' };

function csvProblem(err: unknown): ImportProblem {
  const e = err as Error & { lines?: number };
  return { line: e.lines ?? 1, message: `not valid CSV: ${e.message}` };
}

function checkHeader(header: string[]): ImportProblem | undefined {
  const unknown = header.filter((c) => !(IMPORT_COLUMNS as readonly string[]).includes(c));
  if (unknown.length > 0) {
    return { line: 1, message: `unknown column ${unknown.join(', ')}; known: ${IMPORT_COLUMNS.join(', ')}` };
  }
  for (const required of ['key', 'entitlement_id']) {
    if (!header.includes(required)) return { line: 1, message: `missing column ${required}` };
  }
  return undefined;
}

/** One data line checked on its own (format and rules; not the store, not other lines). */
function checkRecord(record: Record<string, string>, line: number): ImportItem {
  const cell = (c: string) => (record[c] === undefined || record[c] === '' ? undefined : record[c]);
  const retry = cell('retry');
  if (retry !== undefined && retry !== 'true' && retry !== 'false') return { line, message: 'retry: must be true or false' };
  const timeout = cell('cache_timeout');
  const candidate = {
    key: record.key ?? '',
    entitlementId: cell('entitlement_id'),
    notBefore: cell('not_before'),
    expiresAt: cell('expires_at'),
    allowedCidrs: cell('allowed_cidrs')?.split(/\s+/).filter(Boolean),
    cacheTimeout: timeout === undefined ? undefined : /^\d+$/.test(timeout) ? Number(timeout) : timeout,
    retry: retry === undefined ? undefined : retry === 'true',
    customerRef: cell('customer_ref'),
  };
  const parsed = virtualKeyCreate.safeParse(candidate);
  if (!parsed.success) return { line, message: describeIssues(parsed.error).map(toColumnNames).join('; ') };
  return { line, input: { ...parsed.data, key: parsed.data.key! } };
}

const COLUMN_OF: Record<string, string> = {
  entitlementId: 'entitlement_id',
  notBefore: 'not_before',
  expiresAt: 'expires_at',
  allowedCidrs: 'allowed_cidrs',
  cacheTimeout: 'cache_timeout',
  customerRef: 'customer_ref',
};

function toColumnNames(message: string): string {
  return message.replace(/^(\w+)(\.\d+)?:/, (_, field: string) => `${COLUMN_OF[field] ?? field}:`);
}
