/**
 * One load run: autocannon with keep-alive connections, a path chosen per request, and every
 * answer checked. autocannon's own latency histogram has whole-millisecond resolution (and
 * by default leaves non-2xx answers out), so each answer's time (measured by autocannon with
 * process.hrtime) is recorded here in 10 µs buckets instead.
 */
import autocannon from 'autocannon';

const BUCKET_MS = 0.01;
const BUCKETS = 200_000; // 0 .. 2 s; slower answers land in the last bucket

export class LatencyHistogram {
  private readonly buckets = new Uint32Array(BUCKETS);
  count = 0;
  maxMs = 0;
  sumMs = 0;

  record(ms: number): void {
    const i = Math.min(BUCKETS - 1, Math.max(0, Math.floor(ms / BUCKET_MS)));
    this.buckets[i]!++;
    this.count++;
    this.sumMs += ms;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  merge(other: LatencyHistogram): void {
    for (let i = 0; i < BUCKETS; i++) this.buckets[i]! += other.buckets[i]!;
    this.count += other.count;
    this.sumMs += other.sumMs;
    this.maxMs = Math.max(this.maxMs, other.maxMs);
  }

  /** The p-th percentile (0 < p < 100) in ms, to the bucket's middle (±5 µs); NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return (i + 0.5) * BUCKET_MS;
    }
    return this.maxMs;
  }

  get meanMs(): number {
    return this.count === 0 ? Number.NaN : this.sumMs / this.count;
  }
}

export interface LoadSpec {
  name: string;
  url: string;
  /** The path (with query) of the next request. */
  path: () => string;
  /** The one status every answer must have. */
  expect: number;
  connections: number;
  /** Seconds to run; or `amount` requests in all (then bounded by `maxSeconds`). */
  duration?: number;
  amount?: number;
  maxSeconds?: number;
}

export interface LoadResult {
  name: string;
  seconds: number;
  responses: number;
  rps: number;
  p50: number;
  p99: number;
  meanMs: number;
  maxMs: number;
  histogram: LatencyHistogram;
  statuses: Record<string, number>;
  /** Answers with a status other than the expected one. */
  wrong: number;
  /** Connection errors and request timeouts. */
  errors: number;
  errorSamples: string[];
  /** Stopped by maxSeconds before `amount` was reached. */
  cut: boolean;
  valid: boolean;
}

export function drive(spec: LoadSpec): Promise<LoadResult> {
  const histogram = new LatencyHistogram();
  const statuses: Record<string, number> = {};
  const errorSamples: string[] = [];
  let responses = 0;
  let wrong = 0;
  let cut = false;
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    let cap: NodeJS.Timeout | undefined;
    const instance = autocannon(
      {
        url: spec.url,
        connections: spec.connections,
        ...(spec.amount !== undefined ? { amount: spec.amount } : { duration: spec.duration ?? 10 }),
        timeout: 10,
        requests: [{ method: 'GET', setupRequest: (req: autocannon.Request) => ({ ...req, path: spec.path() }) }],
      },
      (err, result) => {
        if (cap) clearTimeout(cap);
        if (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const errors = result.errors + result.timeouts;
        const counts = { seconds, responses, wrong, errors, cut };
        resolve(loadResult(spec.name, counts, histogram, statuses, errorSamples, wrong === 0 && errors === 0 && responses > 0 && !cut));
      },
    );
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      responses++;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status !== spec.expect) wrong++;
      histogram.record(ms);
    });
    instance.on('reqError', (err: unknown) => {
      if (errorSamples.length < 5) errorSamples.push(String((err as Error)?.message ?? err));
    });
    if (spec.maxSeconds !== undefined) {
      cap = setTimeout(() => {
        cut = true;
        instance.stop();
      }, spec.maxSeconds * 1000);
    }
  });
}

/** One line for the console. */
export function describe(r: LoadResult): string {
  const statuses = Object.entries(r.statuses)
    .map(([s, n]) => `${s}×${n}`)
    .join(' ');
  const problems = r.valid
    ? ''
    : `  INVALID: ${r.wrong} wrong statuses, ${r.errors} errors${r.cut ? ', cut short' : ''}${r.errorSamples.length ? ` (${r.errorSamples.join('; ')})` : ''}`;
  return (
    `${r.name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.maxMs.toFixed(1)} ms ` +
    `[${statuses || 'no answers'}]${problems}`
  );
}

/** Several runs of one scenario as one result (their answers and times pooled). */
export function combine(name: string, runs: LoadResult[]): LoadResult {
  const histogram = new LatencyHistogram();
  const statuses: Record<string, number> = {};
  let seconds = 0;
  let responses = 0;
  let wrong = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  for (const r of runs) {
    histogram.merge(r.histogram);
    for (const [s, n] of Object.entries(r.statuses)) statuses[s] = (statuses[s] ?? 0) + n;
    seconds += r.seconds;
    responses += r.responses;
    wrong += r.wrong;
    errors += r.errors;
    errorSamples.push(...r.errorSamples.slice(0, 5 - errorSamples.length));
  }
  const cut = runs.some((r) => r.cut);
  const counts = { seconds, responses, wrong, errors, cut };
  return loadResult(name, counts, histogram, statuses, errorSamples, runs.length > 0 && runs.every((r) => r.valid));
}

function loadResult(
  name: string,
  counts: Pick<LoadResult, 'seconds' | 'responses' | 'wrong' | 'errors' | 'cut'>,
  histogram: LatencyHistogram,
  statuses: Record<string, number>,
  errorSamples: string[],
  valid: boolean,
): LoadResult {
  return {
    name,
    ...counts,
    rps: counts.responses / counts.seconds,
    p50: histogram.percentile(50),
    p99: histogram.percentile(99),
    meanMs: histogram.meanMs,
    maxMs: histogram.maxMs,
    histogram,
    statuses,
    errorSamples,
    valid,
  };
}
