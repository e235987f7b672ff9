import { AppError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/**
 * What a failed request answers: an AppError as `{code, message, details?}` with its status,
 * a body parser's refusal as 413 or 400, anything else a logged 500 whose message is not sent.
 * Shared by the error handler and by answers that report their outcome inside a stream.
 */
export function errorAnswer(err: unknown, log: Logger, requestId: unknown): { status: number; body: Record<string, unknown> } {
  let error: AppError;
  if (err instanceof AppError) {
    error = err;
  } else if (isBodyParserError(err)) {
    error =
      err.type === 'entity.too.large'
        ? new AppError(413, 'payload_too_large', 'request body is too large')
        : new AppError(400, 'invalid_json', 'request body is not valid JSON');
  } else {
    log.error({ err }, 'unhandled error');
    error = new AppError(500, 'internal_error', 'internal error');
  }
  return {
    status: error.status,
    body: {
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
