import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import type { RequestHandler } from 'express';
import { AppError, ConflictError, NotFoundError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { SCOPES, type Principal, type Scope } from './scopes.ts';

/** Stored tokens look like `egt_` + 43 base64url characters (256 random bits). */
const TOKEN_FORMAT = /^egt_[A-Za-z0-9_-]{43}$/;
/** The scheme is case-insensitive (RFC 7235 section 2.1), and one or more spaces may follow it. */
const BEARER = /^bearer +([\x21-\x7e]+)$/i;
const BOOTSTRAP_DISABLED = 'bootstrap_token_disabled';
/** A token's last_used_at is rewritten at most this often. */
const LAST_USED_EVERY_MS = 60_000;

const sha256 = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export interface AdminToken {
  id: number;
  name: string;
  /** The first characters, to recognise a token without holding it. */
  hint: string;
  scopes: Scope[];
  createdAt: Date;
  createdBy: string;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

interface Row {
  id: number | string;
  name: string;
  hint: string;
  scopes: Scope[];
  created_at: Date;
  created_by: string;
  expires_at: Date | null;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

const toToken = (r: Row): AdminToken => ({
  id: Number(r.id),
  name: r.name,
  hint: r.hint,
  scopes: r.scopes.filter((s): s is Scope => (SCOPES as readonly string[]).includes(s)),
  createdAt: r.created_at,
  createdBy: r.created_by,
  expiresAt: r.expires_at,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});

const COLUMNS = ['id', 'name', 'hint', 'scopes', 'created_at', 'created_by', 'expires_at', 'last_used_at', 'revoked_at'];

export interface AdminTokenInput {
  name: string;
  scopes: Scope[];
  expiresAt?: Date | undefined;
}

/**
 * Admin tokens: created with a name, scopes and an optional expiry, shown once, stored as
 * SHA-256 digests (the tokens are 256 random bits, so a fast digest is enough: nothing to
 * guess offline), revoked for good. The bootstrap token (ENTGATE_ADMIN_TOKEN) holds every
 * scope until an admin turns it off, which needs a live admin-scoped stored token first.
 * Every request is authenticated against the database, so a revocation is seen by every
 * instance at the next request.
 */
export class AdminTokens {
  private readonly bootstrapDigest: Buffer | undefined;
  private readonly lastUsedWritten = new Map<number, number>();

  constructor(
    private readonly knex: Knex,
    bootstrapToken: string | undefined,
    private readonly logger: Logger,
    private readonly onFailure: (reason: string) => void = () => {},
  ) {
    this.bootstrapDigest = bootstrapToken === undefined ? undefined : sha256(bootstrapToken);
  }

  /** Express middleware: sets `res.locals.principal`, or answers 401. */
  authenticate(): RequestHandler {
    return async (req, res, next) => {
      res.locals.principal = await this.principalFor(req.headers.authorization);
      next();
    };
  }

  /** The principal a request's Authorization header names; 401 (with a stable code) otherwise. */
  async principalFor(header: string | undefined): Promise<Principal> {
    const match = BEARER.exec(header ?? '');
    const presented = match?.[1];
    if (presented !== undefined && TOKEN_FORMAT.test(presented)) {
      const row = (await this.knex('admin_tokens')
        .where({ token_hash: sha256(presented).toString('hex') })
        .first(...COLUMNS)) as Row | undefined;
      const token = row && toToken(row);
      if (token && token.revokedAt === null && (token.expiresAt === null || token.expiresAt.getTime() > Date.now())) {
        this.touch(token.id);
        return { name: token.name, tokenId: token.id, scopes: token.scopes };
      }
      throw this.refuse(token ? (token.revokedAt ? 'revoked' : 'expired') : 'unknown_token');
    }
    if (presented !== undefined && this.bootstrapDigest !== undefined && timingSafeEqual(sha256(presented), this.bootstrapDigest)) {
      if (await this.bootstrapDisabled()) {
        throw this.refuse('bootstrap_disabled', 'bootstrap_token_disabled', 'the bootstrap token (ENTGATE_ADMIN_TOKEN) was turned off: use an admin token');
      }
      return { name: 'bootstrap', tokenId: null, scopes: ['admin'] };
    }
    if (this.bootstrapDigest === undefined && !(await this.anyLiveToken())) {
      throw this.refuse('disabled', 'admin_api_disabled', 'the admin API is closed: set ENTGATE_ADMIN_TOKEN on the server to create the first admin token');
    }
    throw this.refuse(presented === undefined ? 'missing' : 'unknown_token');
  }

  async create(input: AdminTokenInput, createdBy: string): Promise<AdminToken & { token: string }> {
    if (input.name === 'bootstrap') throw new AppError(400, 'invalid_request', 'the name bootstrap is reserved for ENTGATE_ADMIN_TOKEN');
    if (input.expiresAt && input.expiresAt.getTime() <= Date.now()) throw new AppError(400, 'invalid_request', 'expiresAt must be in the future');
    const token = `egt_${randomBytes(32).toString('base64url')}`;
    try {
      const [row] = (await this.knex('admin_tokens')
        .insert({
          name: input.name,
          token_hash: sha256(token).toString('hex'),
          hint: `${token.slice(0, 8)}…`,
          scopes: [...new Set(input.scopes)],
          created_by: createdBy,
          expires_at: input.expiresAt ?? null,
        })
        .returning(COLUMNS)) as Row[];
      return { ...toToken(row!), token };
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new ConflictError('admin_token_exists', `a live admin token is already named ${input.name}`);
      throw err;
    }
  }

  async list(includeRevoked: boolean): Promise<AdminToken[]> {
    let q = this.knex('admin_tokens').select(...COLUMNS).orderBy('id');
    if (!includeRevoked) q = q.whereNull('revoked_at');
    return ((await q) as Row[]).map(toToken);
  }

  /** Revokes a live token, by id or name; revocation is final. */
  async revoke(idOrName: string): Promise<AdminToken> {
    const where = /^\d{1,15}$/.test(idOrName) ? { id: Number(idOrName) } : { name: idOrName };
    const [row] = (await this.knex('admin_tokens')
      .where(where)
      .whereNull('revoked_at')
      .update({ revoked_at: this.knex.fn.now() })
      .returning(COLUMNS)) as Row[];
    if (!row) throw new NotFoundError(`live admin token ${idOrName}`);
    return toToken(row);
  }

  async bootstrapState(): Promise<{ configured: boolean; enabled: boolean }> {
    return { configured: this.bootstrapDigest !== undefined, enabled: !(await this.bootstrapDisabled()) };
  }

  /**
   * Turns the bootstrap token off (or on again). Off needs a live, unexpired stored token with
   * the admin scope, so that nobody locks every admin out.
   */
  async setBootstrapEnabled(enabled: boolean): Promise<{ configured: boolean; enabled: boolean }> {
    if (enabled) {
      await enableBootstrapToken(this.knex);
    } else {
      const admins = await this.liveTokens()
        .whereRaw("'admin' = any(scopes)")
        .count<{ n: string }[]>({ n: '*' });
      if (Number(admins[0]!.n) === 0) {
        throw new ConflictError('no_admin_token', 'create a live admin token with the admin scope before turning the bootstrap token off');
      }
      await this.knex('entgate_settings').insert({ name: BOOTSTRAP_DISABLED, value: new Date().toISOString() }).onConflict('name').ignore();
    }
    return this.bootstrapState();
  }

  private async bootstrapDisabled(): Promise<boolean> {
    return (await this.knex('entgate_settings').where({ name: BOOTSTRAP_DISABLED }).first('name')) !== undefined;
  }

  private async anyLiveToken(): Promise<boolean> {
    return (await this.liveTokens().first('id')) !== undefined;
  }

  /** Tokens neither revoked nor expired. */
  private liveTokens() {
    return this.knex('admin_tokens')
      .whereNull('revoked_at')
      .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', this.knex.fn.now()));
  }

  private refuse(reason: string, code = 'unauthorized', message = 'a valid admin bearer token is required'): AppError {
    this.onFailure(reason);
    return new AppError(401, code, message);
  }

  /** Records a token's use, at most once a minute per token and process; never delays the request. */
  private touch(id: number): void {
    const now = Date.now();
    if (now - (this.lastUsedWritten.get(id) ?? 0) < LAST_USED_EVERY_MS) return;
    this.lastUsedWritten.set(id, now);
    this.knex('admin_tokens')
      .where({ id })
      .update({ last_used_at: this.knex.fn.now() })
      .catch((err: Error) => this.logger.warn({ err: err.message }, 'could not record an admin token use'));
  }
}

/**
 * Turns the bootstrap token back on, on the database directly: the way back in when every
 * admin token is lost. `entgate admin-token enable-bootstrap` runs it.
 */
export async function enableBootstrapToken(knex: Knex): Promise<boolean> {
  return (await knex('entgate_settings').where({ name: BOOTSTRAP_DISABLED }).delete().returning('name')).length > 0;
}
