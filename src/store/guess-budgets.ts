import type { Knex } from 'knex';
import type { BudgetState, GuessBudgetStore, GuessLimits } from '../domain/ports.ts';

export type { BudgetState, GuessLimits };

export interface GuessBlock {
  subject: string;
  failures: number;
  blockedUntil: Date;
}

interface StateRow {
  subject: string;
  failures: number;
  window_left_ms: number | string;
  blocked_left_ms: number | string | null;
}

const toState = (r: StateRow): BudgetState => ({
  subject: r.subject,
  failures: r.failures,
  windowLeftMs: Number(r.window_left_ms),
  blockedLeftMs: r.blocked_left_ms === null ? null : Number(r.blocked_left_ms),
});

const STATE = `subject, failures,
  (extract(epoch from window_started_at + make_interval(secs => :window) - now()) * 1000)::float8 as window_left_ms,
  (extract(epoch from blocked_until - now()) * 1000)::float8 as blocked_left_ms`;

/**
 * The shared failed-lookup budgets (table guess_budgets). Every statement uses the database's
 * clock, so instances with skewed clocks agree; callers get durations, not instants.
 */
export class GuessBudgetsRepo implements GuessBudgetStore {
  constructor(
    private readonly knex: Knex,
    private readonly limits: GuessLimits,
  ) {}

  /**
   * Adds failures per subject in one statement: a window that has ended starts again; a
   * subject whose failures in the window reach the budget, and that is not already cooling
   * down, is blocked until now + cool-down. Returns every touched subject's state.
   */
  async addFailures(failures: ReadonlyMap<string, number>): Promise<BudgetState[]> {
    if (failures.size === 0) return [];
    const input = JSON.stringify([...failures].map(([subject, n]) => ({ subject, n })));
    const fresh = 'g.window_started_at <= now() - make_interval(secs => :window)';
    const total = `(case when ${fresh} then excluded.failures else g.failures + excluded.failures end)`;
    const { rows } = (await this.knex.raw(
      `insert into guess_budgets as g (subject, window_started_at, failures, blocked_until, updated_at)
         select s.subject, now(), s.n, case when s.n >= :budget then now() + make_interval(secs => :cooldown) end, now()
           from json_to_recordset(:input::json) as s(subject text, n int)
       on conflict (subject) do update set
         window_started_at = case when ${fresh} then now() else g.window_started_at end,
         failures = ${total},
         blocked_until = case when ${total} >= :budget and (g.blocked_until is null or g.blocked_until <= now())
                              then now() + make_interval(secs => :cooldown) else g.blocked_until end,
         updated_at = now()
       returning ${STATE}`,
      { input, ...this.params() },
    )) as { rows: StateRow[] };
    return rows.map(toState);
  }

  /** Subjects cooling down whose row changed in the last `sinceMs` (all of them when undefined). */
  async blockedSince(sinceMs: number | undefined): Promise<BudgetState[]> {
    const { rows } = (await this.knex.raw(
      `select ${STATE} from guess_budgets
        where blocked_until > now() ${sinceMs === undefined ? '' : 'and updated_at > now() - make_interval(secs => :since)'}
        limit 100000`,
      { ...this.params(), since: (sinceMs ?? 0) / 1000 },
    )) as { rows: StateRow[] };
    return rows.map(toState);
  }

  async listBlocks(): Promise<GuessBlock[]> {
    const rows = (await this.knex('guess_budgets')
      .where('blocked_until', '>', this.knex.fn.now())
      .orderBy('blocked_until', 'desc')
      .limit(1000)
      .select('subject', 'failures', 'blocked_until')) as { subject: string; failures: number; blocked_until: Date }[];
    return rows.map((r) => ({ subject: r.subject, failures: r.failures, blockedUntil: r.blocked_until }));
  }

  /** Forgets a subject's failures and cool-down; false when there was nothing to forget. */
  async clear(subject: string): Promise<boolean> {
    return (await this.knex('guess_budgets').where({ subject }).delete().returning('subject')).length > 0;
  }

  /** Deletes rows whose window and cool-down have both ended, in small batches. */
  async tidy(batch = 5000): Promise<number> {
    const { rows } = (await this.knex.raw(
      `with gone as (
         delete from guess_budgets where subject in (
           select subject from guess_budgets
            where window_started_at <= now() - make_interval(secs => :window)
              and (blocked_until is null or blocked_until <= now())
            limit :batch)
         returning 1)
       select count(*)::int as n from gone`,
      { ...this.params(), batch },
    )) as { rows: { n: number }[] };
    return rows[0]!.n;
  }

  private params() {
    return { budget: this.limits.budget, window: this.limits.windowSeconds, cooldown: this.limits.cooldownSeconds };
  }
}
