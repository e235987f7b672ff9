/**
 * The benchmark's verdicts and its markdown: the console gets the same tables that are
 * written between the results markers of docs/benchmarks.md (the text around them, the
 * method, is kept as written by hand).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { LoadResult } from './load.ts';

export const P99_TARGET_MS = 10;
export const SCALE_TARGET = 1.5;
export const RSS_GROWTH_BOUND = 2;

export interface ScenarioRow {
  load: LoadResult;
  /** Minimum ratio of req/s to the baseline; absent for rows without a target. */
  minRatio?: number;
  /** Whether the p99 ≤ 10 ms target applies. */
  p99Target?: boolean;
  /** A second comparison, against another scenario of the same run. */
  vs?: { name: string; rps: number; minRatio: number };
  /** The row's concurrency, when it is not the run's default. */
  connections?: number;
}

export interface ScaleResult {
  small: { keys: number; load: LoadResult; lookupP50Us: number; lookupP99Us: number };
  large: { keys: number; load: LoadResult; lookupP50Us: number; lookupP99Us: number };
  connections: number;
  rounds: number;
}

export interface RssSample {
  keys: number;
  mib: number;
}

export interface RssResult {
  load: LoadResult;
  start: RssSample;
  at200k: RssSample | undefined;
  mid: RssSample | undefined;
  end: RssSample;
  peak: RssSample;
  target: number;
  health: Record<string, unknown> | undefined;
}

export interface Machine {
  date: Date;
  seconds: number;
  cpus: number;
  model: string;
  memGiB: number;
  node: string;
  postgres: string;
  loadavg: number[];
  connections: number;
  duration: number;
}

const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '–');
const int = (v: number) => Math.round(v).toLocaleString('en');

export function scenarioVerdict(r: ScenarioRow, baselineRps: number, baselineValid: boolean): string {
  if (!r.load.valid) {
    return `INVALID (${r.load.wrong} wrong statuses, ${r.load.errors} errors${r.load.responses === 0 ? ', no answers' : ''})`;
  }
  if (r.minRatio === undefined && !r.p99Target && !r.vs) return '';
  if (!baselineValid) return 'INVALID (baseline invalid)';
  const failed: string[] = [];
  if (r.minRatio !== undefined && r.load.rps / baselineRps < r.minRatio) failed.push('ratio');
  if (r.p99Target && r.load.p99 > P99_TARGET_MS) failed.push('p99');
  if (r.vs && r.load.rps / r.vs.rps < r.vs.minRatio) failed.push(`vs ${r.vs.name}`);
  return failed.length === 0 ? 'PASS' : `FAIL (${failed.join(', ')})`;
}

function targetText(r: ScenarioRow): string {
  const parts: string[] = [];
  if (r.minRatio !== undefined) parts.push(`≥ ${r.minRatio.toFixed(2)}`);
  if (r.p99Target) parts.push(`p99 ≤ ${P99_TARGET_MS} ms`);
  if (r.vs) parts.push(`≥ ${r.vs.minRatio.toFixed(2)} of ${r.vs.name}`);
  return parts.join(', ');
}

export function scaleVerdict(s: ScaleResult): { ratio: number; verdict: string } {
  const ratio = s.large.load.p50 / s.small.load.p50;
  const valid = s.small.load.valid && s.large.load.valid;
  return { ratio, verdict: !valid ? 'INVALID' : ratio <= SCALE_TARGET ? 'PASS' : 'FAIL' };
}

export function rssVerdict(r: RssResult): { bound: number; verdict: string } {
  const reference = r.at200k ?? r.mid ?? r.start;
  const bound = reference.mib * RSS_GROWTH_BOUND;
  const valid = r.load.valid && r.end.keys >= r.target;
  return { bound, verdict: !valid ? 'INVALID' : r.end.mib <= bound ? 'PASS' : 'FAIL' };
}

export function renderResults(
  m: Machine,
  baseline: LoadResult,
  rows: ScenarioRow[],
  extra: ScenarioRow[],
  scale: ScaleResult | undefined,
  rss: RssResult | undefined,
  notes: string[],
): string {
  const L: string[] = [];
  L.push(
    `Run of ${m.date.toISOString().slice(0, 16).replace('T', ' ')} UTC (${Math.round(m.seconds)} s in all). ` +
      `Machine: ${m.cpus} × ${m.model}, ${m.memGiB.toFixed(0)} GiB, load average at start ${m.loadavg.map((l) => l.toFixed(2)).join(' / ')}; ` +
      `Node ${m.node}; PostgreSQL ${m.postgres}. ${m.connections} connections, ${m.duration} s per scenario after a 2 s warm-up.`,
    '',
    '| Scenario | req/s | p50 ms | p99 ms | ratio to baseline | target | result |',
    '|---|---:|---:|---:|---:|---|---|',
  );
  const baselineRps = baseline.rps;
  const line = (r: ScenarioRow) => {
    const name = r.connections !== undefined && r.connections !== m.connections ? `${r.load.name} (${r.connections} connections)` : r.load.name;
    return `| ${name} | ${int(r.load.rps)} | ${ms(r.load.p50)} | ${ms(r.load.p99)} | ${(r.load.rps / baselineRps).toFixed(3)} | ${targetText(r)} | ${scenarioVerdict(r, baselineRps, baseline.valid)} |`;
  };
  L.push(
    `| bare node:http (baseline) | ${int(baseline.rps)} | ${ms(baseline.p50)} | ${ms(baseline.p99)} | 1.000 |  | ${baseline.valid ? '' : scenarioVerdict({ load: baseline }, baselineRps, false)} |`,
  );
  for (const r of rows) L.push(line(r));
  if (extra.length > 0) {
    L.push('', 'The crm resolver (a CRM in its own process), beyond the targets above:', '');
    L.push('| Scenario | req/s | p50 ms | p99 ms | ratio to baseline | target | result |', '|---|---:|---:|---:|---:|---|---|');
    for (const r of extra) L.push(line(r));
  }
  const odd = [baseline, ...rows.map((r) => r.load), ...extra.map((r) => r.load)].filter((l) => !l.valid);
  for (const l of odd) {
    L.push('', `- ${l.name}: statuses ${JSON.stringify(l.statuses)}, ${l.errors} errors${l.errorSamples.length ? ` (${l.errorSamples.join('; ')})` : ''}.`);
  }

  if (scale) {
    const { ratio, verdict } = scaleVerdict(scale);
    const row = (s: ScaleResult['small']) =>
      `| ${int(s.keys)} | ${int(s.load.rps)} | ${ms(s.load.p50)} | ${ms(s.load.p99)} | ${s.load.valid ? 'ok' : `INVALID (${s.load.wrong} wrong, ${s.load.errors} errors)`} | ${Math.round(s.lookupP50Us)} | ${Math.round(s.lookupP99Us)} |`;
    L.push(
      '',
      `Lookup latency against the number of stored keys: uncached servers (\`ENTGATE_CACHE_MAX_ENTRIES=0\`), random keys of the set, ` +
        `${scale.connections} connections, ${scale.rounds} alternating rounds per database (ABBA). The last two columns time the lookup query alone, one at a time, from this process:`,
      '',
      '| keys stored | req/s | p50 ms | p99 ms | statuses | query alone p50 µs | query alone p99 µs |',
      '|---:|---:|---:|---:|---|---:|---:|',
      row(scale.small),
      row(scale.large),
      '',
      `Check p50 with ${int(scale.large.keys)} keys / with ${int(scale.small.keys)} keys: **${ratio.toFixed(3)}** (target ≤ ${SCALE_TARGET}): **${verdict}**.`,
    );
  }

  if (rss) {
    const { bound, verdict } = rssVerdict(rss);
    const sample = (label: string, s: RssSample | undefined) => (s ? [`| ${label} | ${int(s.keys)} | ${s.mib.toFixed(0)} |`] : []);
    L.push(
      '',
      `Memory: ${int(rss.end.keys)} distinct unknown keys (of ${int(rss.target)} planned) through a server with the default cache (100,000 entries), ` +
        `${int(rss.load.rps)} req/s, statuses ${JSON.stringify(rss.load.statuses)}${rss.load.errors ? `, ${rss.load.errors} errors` : ''}:`,
      '',
      '| when | keys sent | RSS MiB |',
      '|---|---:|---:|',
      ...sample('start', rss.start),
      ...sample('after 200k keys', rss.at200k),
      ...sample('mid-way', rss.mid),
      ...sample('peak (sampled each second)', rss.peak),
      ...sample('end', rss.end),
      '',
      `Final RSS ${rss.end.mib.toFixed(0)} MiB, bound ${bound.toFixed(0)} MiB (${RSS_GROWTH_BOUND}× the RSS after 200k keys, when both caches are long full): **${verdict}**.` +
        (rss.mid && rss.end.keys > rss.mid.keys
          ? ` Growth from mid-way to the end: ${(((rss.end.mib - rss.mid.mib) * 100_000) / (rss.end.keys - rss.mid.keys)).toFixed(1)} MiB per 100,000 keys.`
          : ''),
    );
    if (rss.health) L.push(`At the end, \`/healthz\` said: \`${JSON.stringify(rss.health)}\`.`);
  }

  if (notes.length > 0) L.push('', ...notes.map((n) => `- ${n}`));
  return L.join('\n');
}

/** The blocks of docs/benchmarks.md the benchmark writes: the run's results, the start-up figures (bench/startup.ts) and the capacities figures (bench/capacities.ts). */
export const RESULTS_BLOCK = { name: 'results', heading: 'Latest results' } as const;
export const STARTUP_BLOCK = { name: 'startup', heading: 'Start-up and CLI: latest figures' } as const;
export const CAPACITIES_BLOCK = { name: 'capacities', heading: 'Capacities: latest figures' } as const;

/** Replaces a block between its markers (appending it, under its heading, when the markers are missing). */
export function writeResults(docPath: string, results: string, block: { name: string; heading: string } = RESULTS_BLOCK): void {
  const BEGIN = `<!-- bench:${block.name}:begin (written by npm run bench; edits between these markers are overwritten) -->`;
  const END = `<!-- bench:${block.name}:end -->`;
  const doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const begin = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  const section = `${BEGIN}\n\n${results}\n\n${END}`;
  const next =
    begin >= 0 && end > begin ? `${doc.slice(0, begin)}${section}${doc.slice(end + END.length)}` : `${doc.trimEnd()}\n\n## ${block.heading}\n\n${section}\n`;
  writeFileSync(docPath, next);
}
