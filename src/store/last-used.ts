import type { VirtualKeysRepo } from './virtual-keys-repo.ts';

/**
 * Records when virtual keys were last granted, at most once a minute per key from this
 * process (the database statement also skips rows written in the last minute, for keys used
 * through several processes). A busy key then costs nothing per batch of check events.
 */
export class LastUsedRecorder {
  private readonly written = new Map<number, number>();

  constructor(
    private readonly repo: VirtualKeysRepo,
    private readonly intervalMs = 60_000,
    private readonly maxTracked = 200_000,
  ) {}

  async record(uses: Map<number, Date>): Promise<void> {
    const due = new Map<number, Date>();
    for (const [id, at] of uses) {
      const last = this.written.get(id);
      if (last === undefined || at.getTime() - last >= this.intervalMs) due.set(id, at);
    }
    if (due.size === 0) return;
    if (this.written.size + due.size > this.maxTracked) this.written.clear();
    await this.repo.touchLastUsed(due);
    for (const [id, at] of due) this.written.set(id, at.getTime());
  }
}
