import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Knex } from 'knex';
import type { CheckEventStats } from '../store/check-events.ts';
import type { CheckEvent, TokenEvent } from '../domain/events.ts';
import type { ChainResolver, ChainStats } from '../resolvers/chain.ts';

/** What the metrics read at scrape time. */
export interface MetricSources {
  keyCache: { hits: number; misses: number; size: number };
  chain: { getStats(): ChainStats; resolvers: readonly ChainResolver[] };
  checkEvents: () => CheckEventStats;
  /** The software entitlement token events' writer (metric names keep `token`). */
  sesTokenEvents: () => CheckEventStats;
  adminEvents: () => CheckEventStats;
  guard: { stats: { blocksStarted: number; answersDelayed: number }; blockedCount: number };
  knex: Knex;
  /** Log lines lost because the log output was full or gone (src/logger.ts). */
  logLinesDropped?: () => number;
  /** The installed licence: its capacities with their use, its expiry, the stream's subscribers. */
  licence?: {
    capacities(): Promise<{ name: string; limit: number | null; inUse: number }[]>;
    expiresAt(): Promise<Date | undefined>;
    subscribers(): number;
  };
}

const MAX_REASONS = 100;
const BREAKER = { closed: 0, 'half-open': 1, open: 2 } as const;

/**
 * Prometheus metrics (prom-client), on a registry of this service's own so that several
 * services in one process (tests) do not mix. Counters of decisions are incremented as they
 * happen; everything else (caches, resolvers, queues, the database pool, leases in use) is
 * read when scraped.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly checks: Counter<'decision' | 'reason'>;
  private readonly checkSeconds: Histogram<'decision'>;
  private readonly sesTokens: Counter<'operation' | 'outcome'>;
  private readonly adminAuthFailures: Counter<'reason'>;
  private readonly capacityClaims: Counter<'kind' | 'outcome'>;
  private readonly reasons = new Set<string>();
  private readonly checkChildren = new Map<string, { count: { inc(): void }; seconds: { observe(v: number): void } }>();

  private readonly registers = [this.registry];

  /**
   * The counters fed as things happen exist from the start (any part may observe at once);
   * what is read at scrape time is added by `watch` once the parts it reads exist.
   */
  constructor() {
    const registers = this.registers;
    collectDefaultMetrics({ register: this.registry, prefix: 'entgate_' });
    this.checks = new Counter({
      name: 'entgate_checks_total',
      help: 'rUS checks by decision (granted, denied, invalid) and reason',
      labelNames: ['decision', 'reason'],
      registers,
    });
    this.checkSeconds = new Histogram({
      name: 'entgate_check_duration_seconds',
      help: 'Time from request to decision of an rUS check',
      labelNames: ['decision'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.sesTokens = new Counter({
      name: 'entgate_token_requests_total',
      help: 'Software entitlement (SES) requests by operation and outcome',
      labelNames: ['operation', 'outcome'],
      registers,
    });
    this.adminAuthFailures = new Counter({
      name: 'entgate_admin_auth_failures_total',
      help: 'Admin requests refused for their API credential (missing, unknown_token, expired, revoked, bootstrap_disabled, disabled)',
      labelNames: ['reason'],
      registers,
    });
    this.capacityClaims = new Counter({
      name: 'entgate_capacity_claims_total',
      help: 'Licence capacity claims by capacity kind (concurrent, assigned, feature) and outcome (created, existing, or the refusal code)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
  }

  /** A capacity claim's outcome (the outcomes are a closed set: see LicenceService.claim). */
  observeCapacityClaim(kind: string, outcome: string): void {
    this.capacityClaims.labels(kind, outcome).inc();
  }

  /** Adds the metrics read when scraped: caches, resolvers, guessing blocks, audit queues, the pool, leases. Once. */
  watch(sources: MetricSources): void {
    const registers = this.registers;
    const fromSource = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    fromSource('entgate_log_lines_dropped_total', 'Log lines lost: the log output (stdout) did not keep up, or failed (its reader went away) and stderr too', () =>
      sources.logLinesDropped?.() ?? 0,
    );
    fromSource('entgate_key_cache_hits_total', 'Key cache hits', () => sources.keyCache.hits);
    fromSource('entgate_key_cache_misses_total', 'Key cache misses', () => sources.keyCache.misses);
    fromSource('entgate_resolver_calls_total', 'Calls to resolvers (decision cache misses)', () => sources.chain.getStats().resolverCalls);
    fromSource('entgate_resolver_failures_total', 'Resolver failures (timeouts, errors, invalid answers, open circuits)', () => sources.chain.getStats().failures);
    fromSource('entgate_resolver_stale_served_total', 'Grants served stale because a resolver failed (stale-if-error)', () => sources.chain.getStats().staleServed);
    fromSource('entgate_guess_blocks_total', 'Addresses blocked for a cool-down after too many unknown keys (by this process, or learnt from another)', () => sources.guard.stats.blocksStarted);
    fromSource(
      'entgate_guess_delayed_answers_total',
      'Answers to unknown keys held ENTGATE_GUESS_DELAY_MS for a rUS host past its budget that sends no remote_ip',
      () => sources.guard.stats.answersDelayed,
    );
    new Gauge({
      name: 'entgate_guess_blocked_addresses',
      help: 'Addresses (or IPv6 /64s, or rUS hosts) cooling down after too many unknown keys, as this process knows them',
      registers,
      collect() {
        this.set(sources.guard.blockedCount);
      },
    });
    new Gauge({
      name: 'entgate_key_cache_entries',
      help: 'Entries in the key cache',
      registers,
      collect() {
        this.set(sources.keyCache.size);
      },
    });
    new Gauge({
      name: 'entgate_resolver_breaker_state',
      help: 'Circuit breaker of each HTTP resolver: 0 closed, 1 half-open, 2 open',
      labelNames: ['resolver'],
      registers,
      collect() {
        this.reset();
        for (const r of sources.chain.resolvers) {
          const state = (r as { breaker?: keyof typeof BREAKER }).breaker;
          if (state !== undefined) this.set({ resolver: r.name }, BREAKER[state]);
        }
      },
    });
    for (const [which, read] of [
      ['check', sources.checkEvents],
      ['token', sources.sesTokenEvents],
      ['admin', sources.adminEvents],
    ] as const) {
      const title = { check: 'Check', token: 'Token', admin: 'Admin' }[which];
      new Gauge({
        name: `entgate_${which}_events_queued`,
        help: `${title} events waiting to be written`,
        registers,
        collect() {
          this.set(read().queued);
        },
      });
      fromSource(`entgate_${which}_events_dropped_total`, `${title} events lost (queue full, or still queued when a close gave up)`, () => read().dropped);
      fromSource(`entgate_${which}_events_isolated_total`, `${title} events the database refused on their own (their batch was written without them)`, () => read().isolated);
      fromSource(`entgate_${which}_events_write_failures_total`, `${title} event writes that failed for the database's sake (retried with backoff)`, () => read().failedBatches);
    }
    new Gauge({
      name: 'entgate_db_pool_connections',
      help: 'Database connections of this process by state (used, free, pending acquires)',
      labelNames: ['state'],
      registers,
      collect() {
        const pool = (sources.knex.client as { pool?: { numUsed(): number; numFree(): number; numPendingAcquires(): number } }).pool;
        if (!pool) return;
        this.set({ state: 'used' }, pool.numUsed());
        this.set({ state: 'free' }, pool.numFree());
        this.set({ state: 'pending' }, pool.numPendingAcquires());
      },
    });
    // One query per scrape serves both pool gauges: a scrape collects its metrics together,
    // so the second gauge finds the first one's query still running and shares it.
    let pending: Promise<{ pool: string; seats: number; in_use: number }[]> | undefined;
    const pools = () =>
      (pending ??= sources.knex
        .raw(
          `select pool, sum(seats)::int as seats, sum(in_use)::int as in_use from (
             select case when p.kind = 'virtual_key' then 'virtual-keys' else p.name end as pool, p.seats,
                    (select count(*) from leases l
                      where l.pool_id = p.id and l.released_at is null and l.expires_at > clock_timestamp()) as in_use
               from lease_pools p) per_pool
            group by pool order by pool limit 1000`,
        )
        .then((r: { rows: { pool: string; seats: number; in_use: number }[] }) => r.rows)
        .finally(() => {
          pending = undefined;
        }));
    for (const [name, help, field] of [
      ['entgate_leases_in_use', 'Live leases per pool (the pools of virtual keys summed as pool="virtual-keys")', 'in_use'],
      ['entgate_lease_pool_seats', 'Seats per pool (the pools of virtual keys summed as pool="virtual-keys")', 'seats'],
    ] as const) {
      new Gauge({
        name,
        help,
        labelNames: ['pool'],
        registers,
        async collect() {
          const rows = await pools();
          this.reset();
          for (const r of rows) this.set({ pool: r.pool }, r[field]);
        },
      });
    }
    const licence = sources.licence;
    if (licence) {
      let capacities: Promise<{ name: string; limit: number | null; inUse: number }[]> | undefined;
      const read = () =>
        (capacities ??= licence.capacities().finally(() => {
          capacities = undefined;
        }));
      for (const [name, help, field] of [
        ['entgate_licence_capacity_limit', "Each capacity's limit in the installed licence (-1: no limit, a feature granted without one)", 'limit'],
        ['entgate_licence_capacity_in_use', 'How many hold each capacity of the installed licence now', 'inUse'],
      ] as const) {
        new Gauge({
          name,
          help,
          labelNames: ['capacity'],
          registers,
          async collect() {
            const rows = await read();
            this.reset();
            for (const r of rows.slice(0, 1000)) this.set({ capacity: r.name }, r[field] ?? -1);
          },
        });
      }
      new Gauge({
        name: 'entgate_licence_expires_at_seconds',
        help: 'When the installed licence expires (Unix seconds; 0: no licence installed)',
        registers,
        async collect() {
          this.set(((await licence.expiresAt())?.getTime() ?? 0) / 1000);
        },
      });
      new Gauge({
        name: 'entgate_licence_stream_subscribers',
        help: 'Open GET /v1/licence/events streams on this process',
        registers,
        collect() {
          this.set(licence.subscribers());
        },
      });
    }
  }

  /** One rUS check decided (called with each check event, on the hot path: children are cached). */
  observeCheck(e: CheckEvent): void {
    const key = `${e.decision}\n${e.reason ?? 'none'}`;
    let child = this.checkChildren.get(key);
    if (!child) {
      let reason = e.reason ?? 'none';
      // Plugin resolvers choose their reasons: bound the label's values.
      if (!this.reasons.has(reason)) {
        if (this.reasons.size >= MAX_REASONS) reason = 'other';
        else this.reasons.add(reason);
      }
      child = { count: this.checks.labels(e.decision, reason), seconds: this.checkSeconds.labels(e.decision) };
      if (this.checkChildren.size < MAX_REASONS * 3) this.checkChildren.set(key, child);
    }
    child.count.inc();
    child.seconds.observe(e.latencyUs / 1e6);
  }

  /** A software entitlement (SES) request's outcome. */
  observeSesToken(e: TokenEvent): void {
    this.sesTokens.inc({ operation: e.operation, outcome: e.outcome });
  }

  /** An admin request refused for its API credential (not for its scope). */
  observeAdminAuthFailure(reason: string): void {
    this.adminAuthFailures.inc({ reason });
  }

  /** The exposition: Prometheus text format. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
