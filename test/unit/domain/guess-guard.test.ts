import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { GuessGuard } from '../../../src/domain/guess-guard.ts';
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

const options = { budget: 5, windowSeconds: 60, cooldownSeconds: 10, syncMs: 60_000, maxSubjects: 100 };
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
