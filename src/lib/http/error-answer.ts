import { AppError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { DatabaseUnavailableError, databaseFault } from '../db-faults.ts';

/**
 * What a failed request answers: an AppError as `{code, message, details?}` with its status
 * and headers; a body parser's refusal as 413 or 400; a database that cannot answer
 * (timeouts, lost or refused connections) as 503 `database_unavailable` with Retry-After,
 * since the same request may well succeed shortly; anything else a logged 500 whose message
 * is not sent. Shared by the error handler and by answers that report their outcome inside a
 * stream.
 */
export function errorAnswer(
  err: unknown,
  log: Logger,
  requestId: unknown,
): { status: number; headers: Record<string, string>; body: Record<string, unknown> } {
  let error: AppError;
  const fault = err instanceof AppError ? undefined : databaseFault(err);
  if (err instanceof AppError) {
    error = err;
  } else if (isBodyParserError(err)) {
    error =
      err.type === 'entity.too.large'
        ? new AppError(413, 'payload_too_large', 'request body is too large')
        : new AppError(400, 'invalid_json', 'request body is not valid JSON');
  } else if (fault !== undefined) {
    log.warn({ fault }, 'database unavailable: answered 503');
    error = new DatabaseUnavailableError(err);
  } else {
    log.error({ err }, 'unhandled error');
    error = new AppError(500, 'internal_error', 'internal error');
  }
  return {
    status: error.status,
    headers: { ...error.headers },
    body: {
      ...(error.fields !== undefined && error.expose ? error.fields : {}),
      code: error.code,
      message: error.expose ? error.message : 'internal error',
      ...(error.details !== undefined && error.expose ? { details: error.details } : {}),
      requestId,
    },
  };
}

function isBodyParserError(err: unknown): err is { type: string; status: number } {
  return typeof err === 'object' && err !== null && typeof (err as { type?: unknown }).type === 'string' && 'status' in err;
}
