import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import type { RequestHandler } from 'express';
import { AppError, ConflictError, NotFoundError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { SCOPES, type Principal, type Scope } from './scopes.ts';

/** Stored credentials look like `egt_` + 43 base64url characters (256 random bits). */
const CREDENTIAL_FORMAT = /^egt_[A-Za-z0-9_-]{43}$/;
/** The scheme is case-insensitive (RFC 7235 section 2.1), and one or more spaces may follow it. */
const BEARER = /^bearer +([\x21-\x7e]+)$/i;
const BOOTSTRAP_DISABLED = 'bootstrap_token_disabled';
/** A credential's last_used_at is rewritten at most this often. */
const LAST_USED_EVERY_MS = 60_000;

const sha256 = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export interface ApiCredential {
  id: number;
  name: string;
  /** The first characters, to recognise a credential without holding it. */
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

const toCredential = (r: Row): ApiCredential => ({
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

export interface ApiCredentialInput {
  name: string;
  scopes: Scope[];
  expiresAt?: Date | undefined;
}

/**
 * API credentials: the bearer credentials of the admin API and of lease clients (not the
 * software entitlement tokens of src/ses). Created with a name, scopes and an optional expiry,
 * shown once, stored as SHA-256 digests in the table admin_tokens (the credentials are 256
 * random bits, so a fast digest is enough: nothing to guess offline), revoked for good. The
 * bootstrap credential (ENTGATE_ADMIN_TOKEN) holds every scope until an admin turns it off,
 * which needs a live admin-scoped stored credential first. Every request is authenticated
 * against the database, so a revocation is seen by every instance at the next request.
 */
export class ApiCredentials {
  private readonly bootstrapDigest: Buffer | undefined;
  private readonly lastUsedWritten = new Map<number, number>();

  constructor(
    private readonly knex: Knex,
    bootstrapCredential: string | undefined,
    private readonly logger: Logger,
    private readonly onFailure: (reason: string) => void = () => {},
  ) {
    this.bootstrapDigest = bootstrapCredential === undefined ? undefined : sha256(bootstrapCredential);
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
    if (presented !== undefined && CREDENTIAL_FORMAT.test(presented)) {
      const row = (await this.knex('admin_tokens')
        .where({ token_hash: sha256(presented).toString('hex') })
        .first(...COLUMNS)) as Row | undefined;
      const credential = row && toCredential(row);
      if (credential && credential.revokedAt === null && (credential.expiresAt === null || credential.expiresAt.getTime() > Date.now())) {
        this.touch(credential.id);
        return { name: credential.name, credentialId: credential.id, scopes: credential.scopes };
      }
      throw this.refuse(credential ? (credential.revokedAt ? 'revoked' : 'expired') : 'unknown_token');
    }
    if (presented !== undefined && this.bootstrapDigest !== undefined && timingSafeEqual(sha256(presented), this.bootstrapDigest)) {
      if (await this.bootstrapDisabled()) {
        throw this.refuse('bootstrap_disabled', 'bootstrap_token_disabled', 'the bootstrap credential (ENTGATE_ADMIN_TOKEN) was turned off: use a stored admin credential');
      }
      return { name: 'bootstrap', credentialId: null, scopes: ['admin'] };
    }
    if (this.bootstrapDigest === undefined && !(await this.anyLiveCredential())) {
      throw this.refuse('disabled', 'admin_api_disabled', 'the admin API is closed: set ENTGATE_ADMIN_TOKEN on the server to create the first admin credential');
    }
    throw this.refuse(presented === undefined ? 'missing' : 'unknown_token');
  }

  async create(input: ApiCredentialInput, createdBy: string): Promise<ApiCredential & { token: string }> {
    if (input.name === 'bootstrap') throw new AppError(400, 'invalid_request', 'the name bootstrap is reserved for ENTGATE_ADMIN_TOKEN');
    if (input.expiresAt && input.expiresAt.getTime() <= Date.now()) throw new AppError(400, 'invalid_request', 'expiresAt must be in the future');
    // `token` is the wire name of the secret in the answer (the JSON field stays as it was).
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
      return { ...toCredential(row!), token };
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new ConflictError('admin_token_exists', `a live credential is already named ${input.name}`);
      throw err;
    }
  }

  async list(includeRevoked: boolean): Promise<ApiCredential[]> {
    let q = this.knex('admin_tokens').select(...COLUMNS).orderBy('id');
    if (!includeRevoked) q = q.whereNull('revoked_at');
    return ((await q) as Row[]).map(toCredential);
  }

  /** Revokes a live credential, by id or name; revocation is final. */
  async revoke(idOrName: string): Promise<ApiCredential> {
    const where = /^\d{1,15}$/.test(idOrName) ? { id: Number(idOrName) } : { name: idOrName };
    const [row] = (await this.knex('admin_tokens')
      .where(where)
      .whereNull('revoked_at')
      .update({ revoked_at: this.knex.fn.now() })
      .returning(COLUMNS)) as Row[];
    if (!row) throw new NotFoundError(`live credential ${idOrName}`);
    return toCredential(row);
  }

  async bootstrapState(): Promise<{ configured: boolean; enabled: boolean }> {
    return { configured: this.bootstrapDigest !== undefined, enabled: !(await this.bootstrapDisabled()) };
  }

  /**
   * Turns the bootstrap credential off (or on again). Off needs a live, unexpired stored
   * credential with the admin scope, so that nobody locks every admin out.
   */
  async setBootstrapEnabled(enabled: boolean): Promise<{ configured: boolean; enabled: boolean }> {
    if (enabled) {
      await enableBootstrapCredential(this.knex);
    } else {
      const admins = await this.liveCredentials()
        .whereRaw("'admin' = any(scopes)")
        .count<{ n: string }[]>({ n: '*' });
      if (Number(admins[0]!.n) === 0) {
        throw new ConflictError('no_admin_token', 'create a live credential with the admin scope before turning the bootstrap credential off');
      }
      await this.knex('entgate_settings').insert({ name: BOOTSTRAP_DISABLED, value: new Date().toISOString() }).onConflict('name').ignore();
    }
    return this.bootstrapState();
  }

  private async bootstrapDisabled(): Promise<boolean> {
    return (await this.knex('entgate_settings').where({ name: BOOTSTRAP_DISABLED }).first('name')) !== undefined;
  }

  private async anyLiveCredential(): Promise<boolean> {
    return (await this.liveCredentials().first('id')) !== undefined;
  }

  /** Stored credentials neither revoked nor expired. */
  private liveCredentials() {
    return this.knex('admin_tokens')
      .whereNull('revoked_at')
      .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', this.knex.fn.now()));
  }

  private refuse(reason: string, code = 'unauthorized', message = 'a valid API credential is required'): AppError {
    this.onFailure(reason);
    return new AppError(401, code, message);
  }

  /** Records a credential's use, at most once a minute per credential and process; never delays the request. */
  private touch(id: number): void {
    const now = Date.now();
    if (now - (this.lastUsedWritten.get(id) ?? 0) < LAST_USED_EVERY_MS) return;
    this.lastUsedWritten.set(id, now);
    this.knex('admin_tokens')
      .where({ id })
      .update({ last_used_at: this.knex.fn.now() })
      .catch((err: Error) => this.logger.warn({ err: err.message }, 'could not record a credential use'));
  }
}

/**
 * Turns the bootstrap credential back on, on the database directly: the way back in when every
 * admin credential is lost. `entgate credential enable-bootstrap` runs it.
 */
export async function enableBootstrapCredential(knex: Knex): Promise<boolean> {
  return (await knex('entgate_settings').where({ name: BOOTSTRAP_DISABLED }).delete().returning('name')).length > 0;
}
