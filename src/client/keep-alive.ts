export interface KeepAliveRules<T, E extends Error> {
  /** Renews the hold (a heartbeat), resolving with it as renewed. */
  renew(current: T): Promise<T>;
  /** How long to wait before the next renewal. */
  intervalSeconds(current: T): number;
  /** When the hold lapses unless renewed (epoch ms). */
  expiresAt(current: T): number;
  /** A failure that says the hold is gone (released, lapsed, revoked), rather than a transport failure. */
  isLoss(err: unknown): err is E;
  /** The loss to report when no renewal succeeded before the hold lapsed. */
  lapsed(lastFailure: Error): E;
  onLost?: ((error: E) => void) | undefined;
}

export interface KeptAlive<T> {
  /** The hold as last renewed. */
  readonly current: T;
  /** Stops renewing (waiting for a renewal under way). */
  stop(): Promise<void>;
}

/**
 * Renews a hold (a lease, a concurrent claim) every `intervalSeconds` in the background: the
 * seed's keep-alive daemon. A renewal that fails for a transport reason is retried at the next
 * tick (at most a second later) while the hold may still be live; a loss, or no renewal before
 * it lapses, calls `onLost` once and stops. The timers are unref'd: renewals alone do not keep
 * a program running, it ends when its own work does.
 */
export function keepAlive<T, E extends Error>(first: T, rules: KeepAliveRules<T, E>): KeptAlive<T> {
  let current = first;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inflight: Promise<unknown> = Promise.resolve();
  const lost = (error: E) => {
    if (stopped) return;
    stopped = true;
    rules.onLost?.(error);
  };
  const tick = () => {
    inflight = rules.renew(current).then(
      (renewed) => {
        current = renewed;
        schedule();
      },
      (err: unknown) => {
        if (rules.isLoss(err)) return lost(err);
        if (Date.now() >= rules.expiresAt(current)) return lost(rules.lapsed(err as Error));
        schedule(Math.min(1000, rules.intervalSeconds(current) * 1000));
      },
    );
  };
  const schedule = (ms = rules.intervalSeconds(current) * 1000) => {
    if (stopped) return;
    timer = setTimeout(tick, ms).unref();
  };
  schedule();
  return {
    get current() {
      return current;
    },
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inflight.catch(() => {});
    },
  };
}
