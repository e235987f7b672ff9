import { parse } from 'csv-parse/sync';
import { virtualKeyCreate, describeIssues, type VirtualKeyCreate } from './schemas.ts';

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

export function parseImportCsv(text: string): { rows: ImportRow[] } | { problems: ImportProblem[] } {
  let records: { record: Record<string, string>; info: { lines: number } }[];
  try {
    records = parse(text, { columns: true, info: true, skip_empty_lines: true, bom: true });
  } catch (err) {
    const e = err as Error & { lines?: number };
    return { problems: [{ line: e.lines ?? 1, message: `not valid CSV: ${e.message}` }] };
  }
  if (records.length === 0) return { problems: [{ line: 1, message: 'no rows: the file needs a header line and at least one row' }] };
  const header = Object.keys(records[0]!.record);
  const unknown = header.filter((c) => !(IMPORT_COLUMNS as readonly string[]).includes(c));
  if (unknown.length > 0) {
    return { problems: [{ line: 1, message: `unknown column ${unknown.join(', ')}; known: ${IMPORT_COLUMNS.join(', ')}` }] };
  }
  for (const required of ['key', 'entitlement_id']) {
    if (!header.includes(required)) return { problems: [{ line: 1, message: `missing column ${required}` }] };
  }

  const rows: ImportRow[] = [];
  const problems: ImportProblem[] = [];
  const seen = new Map<string, number>();
  for (const { record, info } of records) {
    const line = info.lines;
    const cell = (c: string) => (record[c] === undefined || record[c] === '' ? undefined : record[c]);
    const retry = cell('retry');
    if (retry !== undefined && retry !== 'true' && retry !== 'false') {
      problems.push({ line, message: 'retry: must be true or false' });
      continue;
    }
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
    if (!parsed.success) {
      problems.push({ line, message: describeIssues(parsed.error).map(toColumnNames).join('; ') });
      continue;
    }
    const key = parsed.data.key!;
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      problems.push({ line, message: `key: the same key is on line ${earlier}` });
      continue;
    }
    seen.set(key, line);
    rows.push({ line, input: { ...parsed.data, key } });
  }
  return problems.length > 0 ? { problems } : { rows };
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
