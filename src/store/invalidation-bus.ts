import type { Logger } from '../lib/logger.ts';
import type { Database } from './db.ts';

/**
 * What changed: keys (by hash), everything, or subjects whose guessing block an admin lifted
 * (`guessSubjects`, for the guessing budgets rather than the caches).
 */
export type Invalidation = { keyHashes: string[] } | { all: true } | { guessSubjects: string[] };

const CHANNEL = 'entgate_invalidate';
/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; beyond this, say "everything". */
const MAX_PAYLOAD = 7500;

/**
 * Carries cache invalidations to every entgate process sharing the database, through
 * PostgreSQL LISTEN/NOTIFY (in-process on PGlite). The process making a change applies it
 * locally at once and publishes it; every process (itself included) applies what it hears.
 * After the listening connection is lost and comes back, everything is invalidated, because
 * what was published meanwhile is lost.
 */
export class InvalidationBus {
  private unsubscribe: (() => Promise<void>) | undefined;
  received = 0;

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly apply: (change: Invalidation) => void,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.db.listen(
      CHANNEL,
      (payload) => {
        this.received++;
        const change = parse(payload);
        if (change) this.apply(change);
        else this.logger.warn('ignored a malformed invalidation message');
      },
      () => {
        this.logger.warn('invalidation channel reconnected; every cache is cleared');
        this.apply({ all: true });
      },
    );
  }

  /** Applies the change here, then tells the other processes. Never throws. */
  publish(change: Invalidation): void {
    this.apply(change);
    let payload = JSON.stringify('all' in change ? { all: true } : 'keyHashes' in change ? { k: change.keyHashes } : { g: change.guessSubjects });
    if (payload.length > MAX_PAYLOAD) payload = JSON.stringify({ all: true });
    this.db.knex.raw('select pg_notify(?, ?)', [CHANNEL, payload]).catch((err: Error) => {
      this.logger.error({ err: err.message }, 'could not publish an invalidation; other processes see the change when their cache entries expire');
    });
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
  }
}

function parse(payload: string): Invalidation | undefined {
  try {
    const m = JSON.parse(payload) as { all?: unknown; k?: unknown; g?: unknown };
    if (m.all === true) return { all: true };
    if (Array.isArray(m.k) && m.k.every((h) => typeof h === 'string')) return { keyHashes: m.k as string[] };
    if (Array.isArray(m.g) && m.g.every((h) => typeof h === 'string')) return { guessSubjects: m.g as string[] };
  } catch {
    // fall through
  }
  return undefined;
}
