import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { AppError } from '../errors.ts';

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/**
 * Bearer-token protection for the admin API. Tokens are compared as SHA-256 digests with a
 * constant-time comparison, so neither the token's content nor its length leaks through
 * timing. With no token configured, every admin request is refused.
 */
export function requireAdminToken(token: string | undefined): RequestHandler {
  const expected = token === undefined ? undefined : digest(token);
  return (req, res, next) => {
    if (expected === undefined) {
      throw new AppError(401, 'admin_api_disabled', 'the admin API is closed: ENTGATE_ADMIN_TOKEN is not set on the server');
    }
    const header = req.headers.authorization ?? '';
    const match = /^Bearer ([\x21-\x7e]+)$/.exec(header);
    if (!match || !timingSafeEqual(digest(match[1]!), expected)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="entgate-admin"');
      throw new AppError(401, 'unauthorized', 'a valid admin bearer token is required');
    }
    next();
  };
}
