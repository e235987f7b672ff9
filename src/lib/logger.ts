import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. Paths that could carry a credential are redacted as a second line
 * of defence; the first is never putting them in a log call.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
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
