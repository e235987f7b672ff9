import type { Request, RequestHandler } from 'express';
import { AppError } from '../errors.ts';

/**
 * Refuses a body whose declared Content-Length is over its cap at once (413
 * `payload_too_large`): express's body parsers would read it all before answering. Node then
 * reads and drops what the client still sends (bounded by the request timeout) rather than
 * closing with unread data, which would reset the connection and could lose the answer.
 */
export function declaredBodyLimit(maxBytes: (req: Request) => number): RequestHandler {
  return (req, res, next) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBytes(req)) {
      throw new AppError(413, 'payload_too_large', 'request body is too large');
    }
    next();
  };
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
