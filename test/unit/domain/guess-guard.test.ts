import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { GuessGuard, MAX_HELD_PER_SUBJECT } from '../../../src/domain/guess-guard.ts';
import type { BudgetState, GuessBudgetsRepo } from '../../../src/store/guess-budgets.ts';

/**
 * A stand-in for the shared table that holds each write until the test lets it finish, so that
 * what happens while a write is under way can be seen. (The SQL itself is tested against both
 * databases in test/integration/guess-budgets.test.ts.)
 */
class HeldRepo {
  counts = new Map<string, number>();
  private held: (() => void)[] = [];
  writes = 0;

  async addFailures(failures: ReadonlyMap<string, number>): Promise<BudgetState[]> {
    this.writes++;
    await new Promise<void>((r) => this.held.push(r));
    return [...failures].map(([subject, n]) => {
      const failures = (this.counts.get(subject) ?? 0) + n;
      this.counts.set(subject, failures);
      return { subject, failures, windowLeftMs: 60_000, blockedLeftMs: failures >= 5 ? 10_000 : null };
    });
  }
  async blockedSince(): Promise<BudgetState[]> {
    return [];
  }
  async tidy(): Promise<number> {
    return 0;
  }
  release(): void {
    for (const r of this.held.splice(0)) r();
  }
}

const options = { budget: 5, windowSeconds: 60, cooldownSeconds: 10, syncMs: 60_000, maxSubjects: 100, delayMs: 50 };
const tick = () => new Promise((r) => setImmediate(r));

describe('GuessGuard', () => {
  it('counts failures being written: the budget is exact in one process, whatever the timing of its writes', async () => {
    const repo = new HeldRepo();
    const guard = new GuessGuard(repo as unknown as GuessBudgetsRepo, options, pino({ level: 'silent' }));
    for (let i = 0; i < 3; i++) guard.recordFailure('203.0.113.1');
    const writing = guard.sync(); // three failures under way, not yet counted by the table
    await tick();
    assert.equal(repo.writes, 1);
    guard.recordFailure('203.0.113.1');
    assert.equal(guard.isBlocked('203.0.113.1'), false, 'four of five');
    guard.recordFailure('203.0.113.1');
    assert.equal(guard.isBlocked('203.0.113.1'), true, 'the fifth blocks at once, while the first three are still being written');
    assert.equal(guard.isBlocked('203.0.113.2'), false);
    repo.release();
    await writing;
    assert.equal(repo.counts.get('203.0.113.1'), 3);
    // Stopping writes the last two.
    const stopping = guard.stop();
    await tick();
    repo.release();
    await stopping;
    assert.equal(repo.counts.get('203.0.113.1'), 5);
  });

  it('keeps the counts of a failed write for the next one', async () => {
    let fail = true;
    const seen: number[] = [];
    const repo = {
      async addFailures(f: ReadonlyMap<string, number>) {
        if (fail) throw new Error('database away');
        seen.push(f.get('203.0.113.9') ?? 0);
        return [];
      },
      blockedSince: async () => [],
      tidy: async () => 0,
    };
    const guard = new GuessGuard(repo as unknown as GuessBudgetsRepo, options, pino({ level: 'silent' }));
    guard.recordFailure('203.0.113.9');
    guard.recordFailure('203.0.113.9');
    await guard.sync();
    fail = false;
    guard.recordFailure('203.0.113.9');
    await guard.sync();
    assert.deepEqual(seen, [3]);
  });

  it('refuses a client subject past its budget, but never a rUS host without remote_ip: it holds that host\'s unknown keys instead', async () => {
    const guard = new GuessGuard(new HeldRepo() as unknown as GuessBudgetsRepo, options, pino({ level: 'silent' }));
    for (let i = 0; i < 5; i++) guard.recordFailure('203.0.113.1');
    for (let i = 0; i < 5; i++) guard.recordFailure('caller 10.0.0.5');
    assert.deepEqual([guard.isBlocked('203.0.113.1'), guard.isRefused('203.0.113.1')], [true, true]);
    assert.deepEqual([guard.isBlocked('caller 10.0.0.5'), guard.isRefused('caller 10.0.0.5')], [true, false]);
    assert.equal(guard.delay('203.0.113.1'), undefined, 'a client subject is refused, not held');
    assert.equal(guard.delay('caller 10.0.0.9'), undefined, 'a host within its budget is not held');
    const held = guard.delay('caller 10.0.0.5');
    assert.ok(held instanceof Promise);
    await held;
    assert.equal(guard.stats.answersDelayed, 1);
  });

  it('holds at most MAX_HELD_PER_SUBJECT answers at once for one host; the rest go at once', async () => {
    const guard = new GuessGuard(new HeldRepo() as unknown as GuessBudgetsRepo, options, pino({ level: 'silent' }));
    for (let i = 0; i < 5; i++) guard.recordFailure('caller 10.0.0.5');
    const held = Array.from({ length: MAX_HELD_PER_SUBJECT + 10 }, () => guard.delay('caller 10.0.0.5'));
    assert.equal(held.filter((h) => h instanceof Promise).length, MAX_HELD_PER_SUBJECT);
    await Promise.all(held);
    assert.deepEqual([guard.stats.answersDelayed, guard.stats.answersNotDelayed], [MAX_HELD_PER_SUBJECT, 10]);
    assert.ok(guard.delay('caller 10.0.0.5') instanceof Promise, 'room again once the held answers went');
  });

  it('holds nothing with a delay of 0', () => {
    const guard = new GuessGuard(new HeldRepo() as unknown as GuessBudgetsRepo, { ...options, delayMs: 0 }, pino({ level: 'silent' }));
    for (let i = 0; i < 5; i++) guard.recordFailure('caller 10.0.0.5');
    assert.equal(guard.delay('caller 10.0.0.5'), undefined);
  });

  it('does nothing with a budget of 0', async () => {
    const repo = new HeldRepo();
    const guard = new GuessGuard(repo as unknown as GuessBudgetsRepo, { ...options, budget: 0 }, pino({ level: 'silent' }));
    for (let i = 0; i < 50; i++) guard.recordFailure('203.0.113.1');
    assert.equal(guard.isBlocked('203.0.113.1'), false);
    guard.start();
    await guard.stop();
    assert.equal(repo.writes, 0);
  });
});
