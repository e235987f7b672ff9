import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. Paths that could carry a credential are redacted as a second line
 * of defence; the first is never putting them in a log call.
 */
export function createLogger(level: string, destination: pino.DestinationStream = stdioOutput()): Logger {
  return pino(
    {
      level,
      base: { service: 'entgate' },
      redact: {
        paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'token', 'key', 'secret'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** Bytes of log lines held for an output that does not keep up; past them lines are dropped (and counted). */
export const LOG_BUFFER_BYTES = 1024 * 1024;

export interface LogOutputStats {
  /** Where lines go now: stdout; stderr once stdout failed; none once both failed. */
  output: string;
  /** Lines lost: dropped while the output's buffer was full, lost with a failed output, or written after both failed. */
  dropped: number;
  /** Bytes handed to the output that it has not taken yet. */
  buffered: number;
  /** Why the outputs given up on failed (EPIPE: its reader went away), in order. */
  failures?: string[];
}

/**
 * The log destination of `entgate serve`: logging can neither block the service nor stop it.
 *
 * Lines go through Node's own process.stdout: on a pipe or a socket Node writes without
 * blocking (what a full pipe cannot take waits in memory, written when the reader reads), and
 * a failed write is an 'error' event. pino's default destination (sonic-boom) polls a full pipe
 * every 100 ms without bound of memory, and flushes synchronously when the process exits: on a
 * full pipe or a broken one (EPIPE) that flush retried `write(1)` every 100 ms for ever, and the
 * process no longer answered SIGTERM (issue 13).
 *
 * Here at most LOG_BUFFER_BYTES wait for a slow reader; past them a line is dropped and counted.
 * An output that fails (its reader went away: EPIPE) is given up for the next one (stdout for
 * stderr, with one line saying so; stderr for none); its waiting lines are counted as dropped.
 * Nothing is flushed on exit: `flushed()` waits, bounded in time, for what is waiting.
 */
export class LogOutput implements pino.DestinationStream {
  private current = 0;
  private dropped = 0;
  private readonly failures: string[] = [];
  private readonly lost = (err: Error | null | undefined) => {
    if (err) this.dropped++;
  };

  constructor(
    private readonly outputs: readonly { name: string; stream: NodeJS.WritableStream & { writableLength: number } }[],
    private readonly maxBuffered = LOG_BUFFER_BYTES,
  ) {
    outputs.forEach(({ name, stream }, i) => {
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (i !== this.current) return;
        this.failures.push(`${name}: ${err.code ?? err.message}`);
        this.current++;
        const next = this.outputs[this.current];
        if (next !== undefined) {
          this.write(
            `${JSON.stringify({ level: 40, time: new Date().toISOString(), service: 'entgate', output: next.name, failed: name, err: err.code ?? err.message, msg: `log output ${name} failed: logging to ${next.name}` })}\n`,
          );
        }
      });
    });
  }

  write(line: string): void {
    const out = this.outputs[this.current]?.stream;
    if (out === undefined || out.writableLength > this.maxBuffered) {
      this.dropped++;
      return;
    }
    // The callback gets an error for a line the output failed with, or was still holding when it failed.
    out.write(line, this.lost);
  }

  stats(): LogOutputStats {
    return {
      output: this.outputs[this.current]?.name ?? 'none',
      dropped: this.dropped,
      buffered: this.outputs[this.current]?.stream.writableLength ?? 0,
      ...(this.failures.length > 0 && { failures: [...this.failures] }),
    };
  }

  /** Resolves once the current output has taken every line, or after `timeoutMs`: never waits longer. */
  async flushed(timeoutMs: number): Promise<void> {
    for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
      const out = this.outputs[this.current]?.stream;
      if (out === undefined || out.writableLength === 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

let stdio: LogOutput | undefined;

/** The one LogOutput on this process's stdout (then stderr). */
export function stdioOutput(): LogOutput {
  return (stdio ??= new LogOutput([
    { name: 'stdout', stream: process.stdout },
    { name: 'stderr', stream: process.stderr },
  ]));
}

/** The LogOutput a logger (or its children) writes to, when it is one. */
export function logOutputOf(logger: Logger): LogOutput | undefined {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  return stream instanceof LogOutput ? stream : undefined;
}
