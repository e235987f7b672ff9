import { LRUCache } from 'lru-cache';
import type { Logger } from '../lib/logger.ts';
import { clientOfAddress, parseIp } from '../lib/ip.ts';
import type { BudgetState, GuessBudgetStore, GuessLimits } from './ports.ts';

/**
 * Denials that say "no such key": what a guesser gets. A known key refused for another reason
 * (revoked, expired, another network, an inactive CRM customer) is not a guess, and a grant
 * never counts. A plugin that does not know a key should pass (the chain then denies with
 * `unknown_key`) or deny with `unknown_key`.
 */
export const GUESS_REASONS: ReadonlySet<string> = new Set(['unknown_key', 'crm_unknown_customer']);
export const BLOCKED_REASON = 'guess_budget_exceeded';

export interface GuessGuardOptions extends GuessLimits {
  /** How often failures are written and other instances' blocks read. */
  syncMs: number;
  /** Most subjects tracked in memory (least recently used forgotten first). */
  maxSubjects: number;
  /**
   * How long an unknown key's answer is held for an unattributed subject (a rUS host that
   * sends no remote_ip) past its budget; 0: not held.
   */
  delayMs: number;
}

/** Most answers held at once for one unattributed subject; past it they are answered at once. */
export const MAX_HELD_PER_SUBJECT = 256;

const CALLER_PREFIX = 'caller ';

/**
 * True for a subject that names the client (its address or /64), false for the calling rUS
 * host of checks without remote_ip: every client behind that host shares it, so it may cost
 * its unknown keys time, but never refuse a key.
 */
export function isClientSubject(subject: string): boolean {
  return !subject.startsWith(CALLER_PREFIX);
}

/**
 * Whose failures count together: the client address Conary passes in `remote_ip` (an IPv6
 * address by its /64, which one client usually holds whole), else the calling rUS host.
 */
export function guessSubject(remoteIp: string | undefined, callerIp: string | null): string | undefined {
  const ip = remoteIp !== undefined ? parseIp(remoteIp) : undefined;
  if (ip) return clientOfAddress(ip);
  return callerIp === null ? undefined : `${CALLER_PREFIX}${callerIp}`;
}

/**
 * Failed-lookup budgets against key guessing. Past `budget` unknown keys from one subject
 * within `windowSeconds`, the subject cools down for `cooldownSeconds`: a client subject (an
 * address, an IPv6 /64) is denied without the resolvers being asked; an unattributed one (a
 * rUS host that sends no remote_ip, on behalf of every client behind it) is never refused a
 * key, but its unknown keys are answered only after `delayMs` (at most MAX_HELD_PER_SUBJECT
 * held at once), which slows a guesser and costs a customer with a valid key nothing.
 * Counting is shared through PostgreSQL: each process counts locally (and blocks
 * at once when its own count and the last shared count reach the budget), writes its failures
 * every `syncMs` in one statement, and reads the blocks other processes set. The check path
 * only reads a map; with no subject blocked it does not even compute the subject, and it
 * computes it at most once per check.
 */
export class GuessGuard {
  /** subject -> end of cool-down (local clock, ms). */
  private readonly blocked = new Map<string, number>();
  /** Failures not yet written, and those being written now (counted until the answer is learnt). */
  private pending = new Map<string, number>();
  private writing = new Map<string, number>();
  /** The shared count of the current window as last read, and when that window ends (local ms). */
  private readonly shared: LRUCache<string, { failures: number; windowEnds: number }>;
  private timer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private lastSync: number | undefined;
  private lastTidy = Date.now();
  private fullResync = true;
  private lastFailureLog = 0;
  /** Answers held now, per unattributed subject. */
  private readonly held = new Map<string, number>();
  readonly stats = { blocksStarted: 0, answersDelayed: 0, answersNotDelayed: 0 };

  constructor(
    private readonly repo: GuessBudgetStore,
    private readonly options: GuessGuardOptions,
    private readonly logger: Logger,
  ) {
    this.shared = new LRUCache({ max: Math.max(1, options.maxSubjects) });
  }

  get enabled(): boolean {
    return this.options.budget > 0;
  }

  /** Subjects cooling down, as this process knows them. */
  get blockedCount(): number {
    this.dropEnded(Date.now());
    return this.blocked.size;
  }

  start(): void {
    if (!this.enabled) return;
    this.timer = setInterval(() => void this.sync(), this.options.syncMs).unref();
    void this.sync();
  }

  /** True while any subject is cooling down (else the check need not work out its subject). */
  get anyBlocked(): boolean {
    return this.blocked.size > 0;
  }

  /** True when this client subject is cooling down: deny without asking the resolvers. */
  isRefused(subject: string | undefined): boolean {
    return subject !== undefined && isClientSubject(subject) && this.isBlocked(subject);
  }

  /**
   * Resolves when an unknown key's answer for this subject may go: at once, unless the subject
   * is unattributed and cooling down, then after `delayMs` (at once when MAX_HELD_PER_SUBJECT
   * answers are already held for it).
   */
  delay(subject: string | undefined): Promise<void> | undefined {
    if (subject === undefined || isClientSubject(subject) || this.options.delayMs <= 0 || !this.isBlocked(subject)) return undefined;
    const held = this.held.get(subject) ?? 0;
    if (held >= MAX_HELD_PER_SUBJECT) {
      this.stats.answersNotDelayed++;
      return undefined;
    }
    this.held.set(subject, held + 1);
    this.stats.answersDelayed++;
    return new Promise((resolve) => {
      setTimeout(() => {
        const left = (this.held.get(subject) ?? 1) - 1;
        if (left > 0) this.held.set(subject, left);
        else this.held.delete(subject);
        resolve();
      }, this.options.delayMs);
    });
  }

  /** True when this subject (guessSubject()) is cooling down. */
  isBlocked(subject: string | undefined): boolean {
    if (subject === undefined) return false;
    const until = this.blocked.get(subject);
    if (until === undefined) return false;
    if (until <= Date.now()) {
      this.blocked.delete(subject);
      return false;
    }
    return true;
  }

  /** Counts one unknown key against its subject (guessSubject()). */
  recordFailure(subject: string | undefined): void {
    if (!this.enabled || subject === undefined) return;
    const pending = (this.pending.get(subject) ?? 0) + 1;
    // A flood of distinct subjects: write early rather than grow without bound.
    if (!this.pending.has(subject) && this.pending.size >= this.options.maxSubjects) void this.sync();
    this.pending.set(subject, pending);
    const now = Date.now();
    const shared = this.shared.get(subject);
    const base = (shared && shared.windowEnds > now ? shared.failures : 0) + (this.writing.get(subject) ?? 0);
    if (base + pending >= this.options.budget && !this.blocked.has(subject)) {
      this.block(subject, now + this.options.cooldownSeconds * 1000, base + pending);
      void this.sync();
    }
  }

  /** Lifts a subject's block here and forgets its counts (the caller clears the shared row). */
  forget(subject: string): void {
    this.blocked.delete(subject);
    this.pending.delete(subject);
    this.shared.delete(subject);
  }

  /**
   * After a lost invalidation channel (a lifted block may have gone unheard): at the next sync,
   * read every block again and keep only those the database has.
   */
  resync(): void {
    this.fullResync = true;
  }

  /** Writes pending failures and reads blocks; one at a time; failures logged, never thrown. */
  sync(): Promise<void> {
    this.syncing ??= this.doSync()
      .catch((err: Error) => {
        // Every sync fails while the database is away: say so once a minute, not twice a second.
        const now = Date.now();
        if (now - this.lastFailureLog < 60_000) return;
        this.lastFailureLog = now;
        this.logger.warn({ err: err.message }, 'guessing budgets not synchronised; counting locally until the database answers');
      })
      .finally(() => {
        this.syncing = undefined;
      });
    return this.syncing;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.syncing;
    if (this.enabled && this.pending.size > 0) await this.sync();
  }

  private async doSync(): Promise<void> {
    const started = Date.now();
    const batch = this.pending;
    this.pending = new Map();
    this.writing = batch;
    try {
      this.learn(await this.repo.addFailures(batch), started);
    } catch (err) {
      // Keep the counts for the next try.
      for (const [s, n] of batch) this.pending.set(s, (this.pending.get(s) ?? 0) + n);
      throw err;
    } finally {
      this.writing = new Map();
    }
    // Blocks set by other processes since the last look (with a margin for slow statements).
    const full = this.fullResync || this.lastSync === undefined;
    const blocks = await this.repo.blockedSince(full ? undefined : started - this.lastSync! + 2 * this.options.syncMs + 1000);
    this.fullResync = false;
    if (full) {
      const current = new Set(blocks.map((b) => b.subject));
      for (const subject of this.blocked.keys()) if (!current.has(subject)) this.blocked.delete(subject);
    }
    this.learn(blocks, started);
    this.dropEnded(Date.now());
    this.lastSync = started;
    if (started - this.lastTidy > 60_000) {
      this.lastTidy = started;
      await this.repo.tidy();
    }
  }

  private dropEnded(now: number): void {
    for (const [subject, until] of this.blocked) if (until <= now) this.blocked.delete(subject);
  }

  private learn(states: BudgetState[], now: number): void {
    for (const s of states) {
      if (s.windowLeftMs > 0) this.shared.set(s.subject, { failures: s.failures, windowEnds: now + s.windowLeftMs });
      if (s.blockedLeftMs !== null && s.blockedLeftMs > 0) {
        const until = now + s.blockedLeftMs;
        if ((this.blocked.get(s.subject) ?? 0) < until) {
          if (!this.blocked.has(s.subject)) this.block(s.subject, until, s.failures);
          else this.blocked.set(s.subject, until);
        }
      }
    }
  }

  private block(subject: string, until: number, failures: number): void {
    this.blocked.set(subject, until);
    this.stats.blocksStarted++;
    const cooldownSeconds = Math.round((until - Date.now()) / 1000);
    if (isClientSubject(subject)) {
      this.logger.warn({ subject, failures, cooldownSeconds }, 'unknown virtual keys past the budget: this address is refused for its cool-down');
    } else {
      this.logger.warn(
        { subject, failures, cooldownSeconds, delayMs: this.options.delayMs },
        'unknown virtual keys past the budget through a rUS host that sends no remote_ip: its unknown keys are answered slowly for the cool-down, known keys as ever. Have it send remote_ip so that the guesser alone is refused.',
      );
    }
  }
}
