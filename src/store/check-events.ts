import type { Knex } from 'knex';
import type { Logger } from '../lib/logger.ts';
import type { CheckEvent } from '../domain/ports.ts';

export type { CheckEvent };

export interface EventWriterOptions<E> {
  maxQueue: number;
  batchSize: number;
  flushMs: number;
  /** Longest `close()` keeps retrying a database that is away before it drops (and counts) what is left; default 5 s. */
  closeTimeoutMs?: number;
  /** Called after each written batch (failures are logged, never retried). */
  onWritten?: (batch: E[]) => Promise<void>;
}

/** Which table a writer fills, and how an event becomes a row of it. */
export interface EventTable<E> {
  table: string;
  columns: readonly string[];
  toRow: (event: E) => Record<string, unknown>;
  /**
   * The statement that writes a batch, its one parameter the rows as a JSON array (default:
   * an insert of `columns` from json_populate_recordset).
   */
  sql?: string;
}

export interface CheckEventWriterOptions {
  maxQueue: number;
  batchSize: number;
  flushMs: number;
  closeTimeoutMs?: number;
  /** Called after each written batch with the granted uses, to record last-used times. */
  onWritten?: (uses: Map<number, Date>) => Promise<void>;
}

export interface CheckEventStats {
  queued: number;
  written: number;
  /** Events lost: recorded while the queue was full (or after close), or still queued when close gave up. */
  dropped: number;
  /** Rows the database refused on their own (a value it cannot store), set aside so that their neighbours are written. */
  isolated: number;
  /** Write attempts that failed for the database's sake (unreachable, missing table, …); each is retried. */
  failedBatches: number;
}

const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;
const REPORT_EVERY_MS = 10_000;

/**
 * Text that PostgreSQL cannot hold, as JSON.stringify writes it: U+0000 and unpaired UTF-16
 * surrogates (the only characters it escapes as \u0000 and \udXXX). Tested on the serialised
 * batch, so that the usual batch pays one scan and no replacer.
 */
const UNSTORABLE_JSON = /\\u0000|\\ud[89a-f]/i;
// eslint-disable-next-line no-control-regex
const UNSTORABLE_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const storable = (_key: string, value: unknown) => (typeof value === 'string' ? value.replace(UNSTORABLE_TEXT, '\ufffd') : value);

/**
 * Rows as the one JSON parameter of a batch statement, with text PostgreSQL cannot store
 * written as U+FFFD: serialised natively by V8 and parsed natively by PostgreSQL, much cheaper
 * on both sides than a parameter per column and row.
 */
export function rowsJson(rows: readonly Record<string, unknown>[]): string {
  const json = JSON.stringify(rows);
  return UNSTORABLE_JSON.test(json) ? JSON.stringify(rows, storable) : json;
}

/**
 * A failure that belongs to the rows, not to the database: a data exception (class 22), an
 * integrity violation (23) or a program limit (54). Retrying the same rows cannot help; writing
 * them in smaller parts finds the row at fault. Anything else (no connection, a missing table,
 * a shutdown, a timeout) is the database's, and the same rows are retried later.
 */
function isRowFault(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^(22|23|54)[0-9A-Z]{3}$/.test(code);
}

/**
 * Writes events (check, token and admin events) off the request path. `record()` only appends
 * to a bounded in-memory queue, so a slow or absent database never delays a request and never
 * grows memory without limit: past `maxQueue` new events are dropped and counted. A single
 * writer drains the queue in batches (one INSERT ... SELECT FROM json_populate_recordset(...)
 * each) every `flushMs`, or sooner once a batch is full. Events leave the queue only once
 * written:
 * - text PostgreSQL cannot store (U+0000, unpaired surrogates) is written as U+FFFD;
 * - a batch the database refuses for a row's sake is written in halves until the row at
 *   fault stands alone; that row is set aside and counted (`isolated`), its neighbours kept;
 * - a batch that fails for the database's sake is retried with backoff (100 ms doubling to
 *   5 s) for as long as it takes, while new events fill the queue up to `maxQueue`.
 * Drops and isolated rows are logged at most once per 10 s, with their running totals.
 */
export class EventWriter<E> {
  private queue: E[] = [];
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private stopped = false;
  /** Set by close(): past it, a database that is still away costs what is queued. */
  private giveUpAt = Infinity;
  private readonly stats = { written: 0, dropped: 0, isolated: 0, failedBatches: 0 };
  /** Rows to write per statement: below batchSize while a refused batch is being split. */
  private limit: number;
  /** How many rows at the head of the queue are still under suspicion after a refused batch. */
  private suspect = 0;
  private retryMs = 0;
  private readonly lastReport = { dropped: 0, isolated: 0, failed: 0 };

  private readonly insertSql: string;

  constructor(
    private readonly knex: Knex,
    private readonly logger: Logger,
    private readonly spec: EventTable<E>,
    private readonly options: EventWriterOptions<E>,
  ) {
    const columns = spec.columns.join(', ');
    this.insertSql =
      spec.sql ?? `insert into ${spec.table} (${columns}) select ${columns} from json_populate_recordset(null::${spec.table}, ?::json)`;
    this.limit = options.batchSize;
  }

  record(event: E): void {
    if (this.stopped || this.queue.length >= this.options.maxQueue) {
      this.stats.dropped++;
      this.report('dropped');
      return;
    }
    this.queue.push(event);
    if (this.queue.length >= this.options.batchSize) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.options.flushMs).unref();
  }

  getStats(): CheckEventStats {
    return { queued: this.queue.length, ...this.stats };
  }

  /** Writes everything queued so far; resolves when it is written (after close's deadline: or dropped). */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.draining) {
      this.kick();
      await this.draining;
    }
  }

  /** Stops accepting events and writes what is queued, retrying until `closeTimeoutMs` has passed. */
  async close(): Promise<void> {
    this.giveUpAt = Date.now() + (this.options.closeTimeoutMs ?? 5_000);
    await this.flush();
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.draining || this.queue.length === 0) return;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.length > 0) this.timer ??= setTimeout(() => this.kick(), 0).unref();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      // Only this loop takes events off the queue, and only once they are written or given up:
      // record() may append meanwhile, never reorder.
      const n = Math.min(this.limit, this.queue.length);
      const batch = this.queue.slice(0, n);
      const err = await this.writeBatch(batch);
      if (err === undefined) {
        this.queue.splice(0, n);
        this.retryMs = 0;
        this.settle(n);
      } else if (isRowFault(err)) {
        if (n > 1) {
          // Halve until the row at fault stands alone; the rows before it are written on the way.
          this.suspect = Math.max(this.suspect, n);
          this.limit = Math.ceil(n / 2);
        } else {
          this.queue.splice(0, 1);
          this.stats.isolated++;
          this.report('isolated', err);
          this.settle(1);
        }
      } else {
        this.stats.failedBatches++;
        this.report('failed', err);
        if (Date.now() >= this.giveUpAt) {
          this.stats.dropped += this.queue.length;
          this.queue.length = 0;
          this.report('dropped');
          return;
        }
        this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_FIRST_MS, this.retryMs * 2));
        const wait = Math.min(this.retryMs * (0.75 + Math.random() / 2), this.giveUpAt - Date.now());
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** `n` rows of a suspect range are done with; once it is, back to full batches. */
  private settle(n: number): void {
    if (this.suspect === 0) return;
    this.suspect = Math.max(0, this.suspect - n);
    if (this.suspect === 0) this.limit = this.options.batchSize;
  }

  /** Writes one batch; returns the error instead of throwing. */
  private async writeBatch(batch: E[]): Promise<unknown> {
    try {
      await this.knex.raw(this.insertSql, [rowsJson(batch.map(this.spec.toRow))]);
    } catch (err) {
      return err;
    }
    this.stats.written += batch.length;
    await this.options.onWritten?.(batch).catch((err: Error) => this.logger.warn({ err: err.message }, 'after-write step failed'));
    return undefined;
  }

  /** Logs a kind of loss or failure at most once per interval, with running totals (never the events). */
  private report(kind: 'dropped' | 'isolated' | 'failed', err?: unknown): void {
    const now = Date.now();
    if (now - this.lastReport[kind] < REPORT_EVERY_MS) return;
    this.lastReport[kind] = now;
    const fields = {
      table: this.spec.table,
      queued: this.queue.length,
      ...this.stats,
      ...(err !== undefined && { err: String((err as Error).message ?? err).slice(0, 200), code: (err as { code?: unknown }).code }),
    };
    const message = {
      dropped: 'events dropped: the queue is full (ENTGATE_AUDIT_QUEUE_MAX) or the writer was closed',
      isolated: 'events set aside: the database refused these rows (the rest of their batch is written)',
      failed: 'events not written yet: the database failed, retrying with backoff',
    }[kind];
    this.logger.warn(fields, message);
  }
}

const CHECK_EVENTS: EventTable<CheckEvent> = {
  table: 'check_events',
  columns: ['occurred_at', 'server', 'class', 'key_hint', 'virtual_key_id', 'remote_ip', 'caller_ip', 'decision', 'reason', 'resolver', 'latency_us'],
  toRow,
};

/** Check events, with last-used times of the virtual keys granted in each batch. */
export class CheckEventWriter extends EventWriter<CheckEvent> {
  constructor(knex: Knex, logger: Logger, options: CheckEventWriterOptions) {
    const { onWritten, ...rest } = options;
    super(knex, logger, CHECK_EVENTS, {
      ...rest,
      ...(onWritten && {
        onWritten: (batch: CheckEvent[]) => {
          const uses = new Map<number, Date>();
          for (const e of batch) {
            if (e.decision === 'granted' && e.virtualKeyId !== null) uses.set(e.virtualKeyId, e.occurredAt);
          }
          return onWritten(uses);
        },
      }),
    });
  }
}

function toRow(e: CheckEvent) {
  return {
    occurred_at: e.occurredAt,
    server: e.server,
    class: e.class,
    key_hint: e.keyHint,
    virtual_key_id: e.virtualKeyId,
    remote_ip: e.remoteIp,
    caller_ip: e.callerIp,
    decision: e.decision,
    reason: e.reason,
    resolver: e.resolver,
    latency_us: e.latencyUs,
  };
}
