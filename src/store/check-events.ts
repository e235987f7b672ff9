import type { Knex } from 'knex';
import type { Logger } from '../logger.ts';

export interface CheckEvent {
  occurredAt: Date;
  server: string | null;
  class: string | null;
  keyHint: string | null;
  virtualKeyId: number | null;
  remoteIp: string | null;
  callerIp: string | null;
  decision: 'granted' | 'denied' | 'invalid';
  reason: string | null;
  resolver: string | null;
  latencyUs: number;
}

export interface EventWriterOptions<E> {
  maxQueue: number;
  batchSize: number;
  flushMs: number;
  /** Called after each written batch (failures are logged, never retried). */
  onWritten?: (batch: E[]) => Promise<void>;
}

/** Which table a writer fills, and how an event becomes a row of it. */
export interface EventTable<E> {
  table: string;
  columns: readonly string[];
  toRow: (event: E) => Record<string, unknown>;
}

export interface CheckEventWriterOptions {
  maxQueue: number;
  batchSize: number;
  flushMs: number;
  /** Called after each written batch with the granted uses, to record last-used times. */
  onWritten?: (uses: Map<number, Date>) => Promise<void>;
}

export interface CheckEventStats {
  queued: number;
  written: number;
  dropped: number;
  failedBatches: number;
}

/**
 * Writes events (check events, token events) off the request path. `record()` only appends to a bounded in-memory
 * queue, so a slow or absent database never delays a check and never grows memory without
 * limit: past `maxQueue` new events are dropped and counted. A single writer drains the queue
 * in batches (one INSERT ... SELECT FROM json_populate_recordset(...) each) every `flushMs`, or sooner
 * once a batch is full. A batch that fails is retried once, then dropped and counted.
 */
export class EventWriter<E> {
  private queue: E[] = [];
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private stopped = false;
  private readonly stats = { written: 0, dropped: 0, failedBatches: 0 };
  private lastDropReport = 0;

  private readonly insertSql: string;

  constructor(
    private readonly knex: Knex,
    private readonly logger: Logger,
    private readonly spec: EventTable<E>,
    private readonly options: EventWriterOptions<E>,
  ) {
    const columns = spec.columns.join(', ');
    this.insertSql = `insert into ${spec.table} (${columns}) select ${columns} from json_populate_recordset(null::${spec.table}, ?::json)`;
  }

  record(event: E): void {
    if (this.stopped || this.queue.length >= this.options.maxQueue) {
      this.stats.dropped++;
      this.reportDrops();
      return;
    }
    this.queue.push(event);
    if (this.queue.length >= this.options.batchSize) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.options.flushMs).unref();
  }

  getStats(): CheckEventStats {
    return { queued: this.queue.length, ...this.stats };
  }

  /** Writes everything queued so far; resolves when it is written (or dropped). */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.draining) {
      this.kick();
      await this.draining;
    }
  }

  /** Stops accepting events and writes what is queued. */
  async close(): Promise<void> {
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
      const batch = this.queue.splice(0, this.options.batchSize);
      if (!(await this.writeBatch(batch)) && !(await this.writeBatch(batch))) {
        this.stats.failedBatches++;
        this.stats.dropped += batch.length;
        this.reportDrops();
      }
    }
  }

  private async writeBatch(batch: E[]): Promise<boolean> {
    try {
      // One JSON parameter per batch: serialised natively by V8 and parsed natively by
      // PostgreSQL, much cheaper on both sides than a parameter per column and row.
      await this.knex.raw(this.insertSql, [JSON.stringify(batch.map(this.spec.toRow))]);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message, events: batch.length, table: this.spec.table }, 'events not written');
      return false;
    }
    this.stats.written += batch.length;
    await this.options.onWritten?.(batch).catch((err: Error) => this.logger.warn({ err: err.message }, 'after-write step failed'));
    return true;
  }

  private reportDrops(): void {
    const now = Date.now();
    if (now - this.lastDropReport < 10_000) return;
    this.lastDropReport = now;
    this.logger.warn({ dropped: this.stats.dropped, queued: this.queue.length, table: this.spec.table }, 'events dropped');
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
