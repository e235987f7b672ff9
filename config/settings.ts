/**
 * Every setting entgate reads, in one place: its environment variable, its default, its
 * validation and its documentation. `config/load.ts` validates the environment against
 * this table once at start; `npm run docs:settings` writes `.env.example` and the README's
 * settings table from it (a unit test fails when they drift).
 */
import { z } from 'zod';
import { normalizeCidr } from '../src/lib/ip.ts';

export interface Setting {
  /** Environment variable. */
  env: string;
  /** Default as it would be written in the environment; undefined = unset. */
  default?: string;
  /** Validates and converts the raw string. */
  schema: z.ZodType;
  /** One or two sentences for the README table and `.env.example`. */
  doc: string;
  /** Never printed, never logged. */
  secret?: boolean;
  /** Read by the CLI, not by the server. */
  cliOnly?: boolean;
}

/** Plain decimal digits only: `0x50`, `8e1` and ` 80` are refused, not read as 80. */
const integer = (min: number, max: number) => {
  const error = `must be a whole number from ${min} to ${max}`;
  return z
    .union([z.number(), z.string().regex(/^\d{1,16}$/, { error }).transform(Number)], { error })
    .pipe(z.number().int({ error }).min(min, { error }).max(max, { error }));
};
const port = integer(0, 65535);
const list = (text: string) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const pathList = z.string().transform(list);
/** entgate's own paths: a check path may not shadow them. */
const RESERVED_PATHS = ['/admin', '/v1', '/healthz', '/readyz', '/metrics', '/openapi.json', '/console'];
/** The rUS check's paths, each kept without a trailing slash ('/' stays '/'). */
const checkPathList = z.string().transform((text, ctx) => {
  const out: string[] = [];
  for (const item of list(text)) {
    const path = item.length > 1 ? item.replace(/\/+$/, '') : item;
    const problem = !/^\/[A-Za-z0-9._~/-]*$/.test(item)
      ? 'must start with / and hold only letters, digits and -._~/'
      : /\/\/|(^|\/)\.\.?(\/|$)/.test(item)
        ? 'must not hold an empty, . or .. segment'
        : RESERVED_PATHS.some((r) => path.toLowerCase() === r || path.toLowerCase().startsWith(`${r}/`)) || /softwareentitlements/i.test(path)
          ? "is one of entgate's own paths"
          : undefined;
    if (problem) {
      ctx.addIssue({ code: 'custom', message: `'${item}' ${problem}` });
      return z.NEVER;
    }
    if (!out.includes(path)) out.push(path);
  }
  if (out.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must name at least one path' });
    return z.NEVER;
  }
  return out;
});
/** Addresses or CIDRs, each normalised; one that is neither is refused, naming it. */
const cidrList = z.string().transform((text, ctx) => {
  const out: string[] = [];
  for (const item of list(text)) {
    const r = normalizeCidr(item);
    if ('problem' in r) {
      ctx.addIssue({ code: 'custom', message: r.problem });
      return z.NEVER;
    }
    out.push(r.cidr);
  }
  return out;
});

const positiveInt = (max: number) => integer(1, max);
const nonNegativeInt = (max: number) => integer(0, max);
const bool = z.stringbool({ truthy: ['true', '1', 'yes', 'on'], falsy: ['false', '0', 'no', 'off'] });

export const settings = {
  port: {
    env: 'PORT',
    default: '8080',
    schema: port,
    doc: 'TCP port of the HTTP listener (the rUS check, the admin API, health). 0 picks a free port.',
  },
  host: {
    env: 'HOST',
    default: '0.0.0.0',
    schema: z.string().min(1),
    doc: 'Address to listen on.',
  },
  dataDir: {
    env: 'DATA_DIR',
    default: './data',
    schema: z.string().min(1),
    doc: 'Directory of the embedded PostgreSQL (PGlite) database. Unused when DATABASE_URL is set.',
  },
  databaseUrl: {
    env: 'DATABASE_URL',
    schema: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
      .optional(),
    doc: 'PostgreSQL connection URL. When set, entgate uses that server through `pg` instead of the embedded database.',
    secret: true,
  },
  databasePoolMax: {
    env: 'DATABASE_POOL_MAX',
    default: '10',
    schema: positiveInt(200),
    doc: 'Maximum connections in the PostgreSQL pool (DATABASE_URL only).',
  },
  databaseQueryTimeoutMs: {
    env: 'DATABASE_QUERY_TIMEOUT_MS',
    default: '10000',
    schema: positiveInt(600_000),
    doc: "Longest one database statement may run (DATABASE_URL only): the server's `statement_timeout`, and one second later the client gives up by itself and drops the connection, for a server that cannot answer at all (frozen, unreachable). A request that meets either answers 503 `database_unavailable` with `Retry-After`.",
  },
  databaseConnectTimeoutMs: {
    env: 'DATABASE_CONNECT_TIMEOUT_MS',
    default: '5000',
    schema: positiveInt(600_000),
    doc: 'Longest wait for a database connection (DATABASE_URL only): to open one, or for a free one from the pool. Past it the request answers 503 `database_unavailable` with `Retry-After`.',
  },
  migrateOnStart: {
    env: 'ENTGATE_MIGRATE_ON_START',
    default: 'true',
    schema: bool,
    doc: 'Apply pending migrations when the server starts. When false, run `entgate migrate` before starting.',
  },
  keySecret: {
    env: 'ENTGATE_KEY_SECRET',
    schema: z.string().min(32, 'must be at least 32 characters').optional(),
    doc: 'Secret for the keyed hash (HMAC-SHA-256) under which virtual keys are stored. When unset, one is generated once and kept in the database (a start-up warning says so); a secret held outside the database is stronger. Changing it makes every stored virtual key unknown.',
    secret: true,
  },
  adminToken: {
    env: 'ENTGATE_ADMIN_TOKEN',
    schema: z.string().min(16, 'must be at least 16 characters').optional(),
    doc: 'The bootstrap credential of the admin API, a bearer credential holding every scope: create named API credentials with it (`entgate credential create`), then turn it off (`entgate credential bootstrap --disable`). The CLI sends this variable as its credential, bootstrap or not. Unset, only stored credentials are accepted. (The variable keeps its historical name.)',
    secret: true,
  },
  requireClassMatch: {
    env: 'ENTGATE_REQUIRE_CLASS_MATCH',
    default: 'false',
    schema: bool,
    doc: "When true, a check is granted only if the request's `class` equals the entitlement's class (absent when the entitlement has none). The seed deprecates `class`, so the default decides on the key alone.",
  },
  checkPaths: {
    env: 'ENTGATE_CHECK_PATHS',
    default: '/,/rus/check',
    schema: checkPathList,
    doc: "Comma-separated URL paths that answer the rUS check, each also with a trailing slash (`/rus/check/`): the path of your repositories' entitlementCheckURL. Keep an older web service's path here when entgate replaces it (`/,/rus/check,/service`). Letters, digits and `-._~/` only, and none of entgate's own paths (`/admin`, `/v1`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/console`, `/softwareEntitlements`).",
  },
  repositoryCacheSeconds: {
    env: 'ENTGATE_RUS_AUTH_CACHE_TIMEOUT',
    schema: positiveInt(31_536_000).optional(),
    doc: "The `authCacheTimeout` your Conary repositories are configured with, if any: how long they cache a grant whose answer has no `<timeout>`. entgate then sends keys that expire sooner a `<timeout>` that ends with them, so that no cached grant outlives its key. Unset: the repositories cache nothing by default (Conary's own default).",
  },
  resolvers: {
    env: 'ENTGATE_RESOLVERS',
    default: 'postgres',
    schema: z
      .string()
      .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
      .refine((list) => list.length > 0, 'must name at least one resolver')
      .refine((list) => new Set(list).size === list.length, 'must not name a resolver twice'),
    doc: 'The resolver chain, in order, comma-separated: built-in `postgres` (entgate\'s own tables), `crm` (a CRM over HTTP), `rus` (another entitlementCheckURL service), or a plugin module path (`./plugins/my-crm.js`) or package name. The first definitive answer wins; when all pass, the check is denied.',
  },
  resolverOptionsFile: {
    env: 'ENTGATE_RESOLVER_OPTIONS_FILE',
    schema: z.string().min(1).optional(),
    doc: 'A JSON file of per-resolver options, keyed by the names used in ENTGATE_RESOLVERS (`{"crm": {...}, "./plugins/my-crm.js": {...}}`). Each section is validated by its resolver\'s own schema at start.',
  },
  failurePolicy: {
    env: 'ENTGATE_FAILURE_POLICY',
    default: 'deny',
    schema: z.enum(['deny', 'stale-if-error']),
    doc: 'What a check gets when a resolver fails (timeout, transport error, bad answer, open circuit): `deny` (404), or `stale-if-error`: the last grant for the same question, if it is younger than ENTGATE_STALE_GRACE_SECONDS, else 404.',
  },
  staleGraceSeconds: {
    env: 'ENTGATE_STALE_GRACE_SECONDS',
    default: '300',
    schema: positiveInt(7 * 86_400),
    doc: 'With `stale-if-error`, how long after a resolver last granted a key that grant may still be served while the resolver fails.',
  },
  cacheMaxEntries: {
    env: 'ENTGATE_CACHE_MAX_ENTRIES',
    default: '100000',
    schema: nonNegativeInt(10_000_000),
    doc: 'Capacity of the key cache and of the resolver decision cache (least recently used entries are evicted). 0 disables both.',
  },
  cacheTtlSeconds: {
    env: 'ENTGATE_CACHE_TTL_SECONDS',
    default: '30',
    schema: positiveInt(86_400),
    doc: 'How long a found virtual key, or a resolver\'s grant without a TTL of its own, is cached. Admin changes evict entries at once on every instance; this bounds staleness for changes made elsewhere (a CRM).',
  },
  cacheNegativeTtlSeconds: {
    env: 'ENTGATE_CACHE_NEGATIVE_TTL_SECONDS',
    default: '5',
    schema: positiveInt(86_400),
    doc: 'How long an unknown virtual key, or a resolver\'s denial without a TTL of its own, is remembered.',
  },
  checkTimeoutMs: {
    env: 'ENTGATE_CHECK_TIMEOUT_MS',
    default: '2000',
    schema: positiveInt(60_000),
    doc: 'Longest a check may wait for its lookup before it is denied (Conary itself never times out).',
  },
  auditQueueMax: {
    env: 'ENTGATE_AUDIT_QUEUE_MAX',
    default: '50000',
    schema: positiveInt(10_000_000),
    doc: 'Most check events held in memory waiting to be written; past it new events are dropped and counted.',
  },
  auditBatchSize: {
    env: 'ENTGATE_AUDIT_BATCH_SIZE',
    default: '500',
    schema: positiveInt(10_000),
    doc: 'Most check events written in one statement.',
  },
  auditFlushMs: {
    env: 'ENTGATE_AUDIT_FLUSH_MS',
    default: '250',
    schema: positiveInt(60_000),
    doc: 'Longest time a check event waits in memory before it is written.',
  },
  leaseDefaultTtlSeconds: {
    env: 'ENTGATE_LEASE_DEFAULT_TTL_SECONDS',
    default: '60',
    schema: integer(2, 86_400),
    doc: 'Lease TTL of a pool created without one, and of the pools virtual keys define (`maxConcurrentLeases`). A client that stops heartbeating loses its seat this long after its last heartbeat.',
  },
  leaseMaxTtlSeconds: {
    env: 'ENTGATE_LEASE_MAX_TTL_SECONDS',
    default: '3600',
    schema: integer(2, 7 * 86_400),
    doc: 'Longest TTL a client may ask for in a pool created without a maximum, and in the pools virtual keys define.',
  },
  leaseTidySeconds: {
    env: 'ENTGATE_LEASE_TIDY_SECONDS',
    default: '5',
    schema: positiveInt(3_600),
    doc: 'How often the background job records `expired` lease events and deletes what has aged out. Never on the critical path: a lease stops counting the instant it expires.',
  },
  leaseRetentionHours: {
    env: 'ENTGATE_LEASE_RETENTION_HOURS',
    default: '24',
    schema: positiveInt(24 * 365),
    doc: 'How long ended (released or expired) leases are kept before the tidy job deletes them; their events stay in lease_events.',
  },
  signedRequestWindowSeconds: {
    env: 'ENTGATE_SIGNED_REQUEST_WINDOW_SECONDS',
    default: '30',
    schema: positiveInt(3_600),
    doc: 'A signed lease request is refused when its `ts` is further than this from the server\'s clock; within it, the same signed message is accepted once, on every instance.',
  },
  tlsCertFile: {
    env: 'TLS_CERT_FILE',
    schema: z.string().min(1).optional(),
    doc: 'PEM certificate chain (the server certificate, then its intermediates) to serve HTTPS on HTTPS_PORT, beside HTTP on PORT. The SES client pins an intermediate: send the full chain. `entgate dev-certs <dir>` makes one for local tests.',
  },
  tlsKeyFile: {
    env: 'TLS_KEY_FILE',
    schema: z.string().min(1).optional(),
    doc: 'PEM private key of TLS_CERT_FILE.',
    secret: true,
  },
  httpsPort: {
    env: 'HTTPS_PORT',
    default: '8443',
    schema: port,
    doc: 'HTTPS port when TLS_CERT_FILE and TLS_KEY_FILE are set (TLS 1.2 or newer); 0 picks a free port.',
  },
  checkAllowedCallers: {
    env: 'ENTGATE_CHECK_ALLOWED_CALLERS',
    default: '127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7',
    schema: cidrList,
    doc: 'Comma-separated addresses or CIDRs of the rUS hosts that may call the check (`/`, `/rus/check`); others get 403 and are recorded as `caller_not_allowed`. The default is loopback and private ranges; `0.0.0.0/0,::/0` opens it to all (warned at every start). Behind a proxy, list it in ENTGATE_TRUSTED_PROXIES.',
  },
  maxConcurrentRequests: {
    env: 'ENTGATE_MAX_CONCURRENT_REQUESTS',
    default: '2000',
    schema: positiveInt(1_000_000),
    doc: 'Requests one process handles at once on each front door: the rUS check, SES (`/softwareEntitlements`), leases (`/v1`) and everything else (admin, health) each have a budget of this size, so that one door\'s load never takes another\'s places. Past it that door\'s new requests get a fast 503 (`Retry-After: 1`) instead of queueing without bound.',
  },
  bodyTimeoutMs: {
    env: 'ENTGATE_BODY_TIMEOUT_MS',
    default: '5000',
    schema: integer(100, 600_000),
    doc: 'Longest a request body on SES or `/v1` (at most 64 KiB) may take to arrive once its headers have; a slower one gets 408 and its connection is closed. Admin bodies (CSV imports) have ENTGATE_REQUEST_TIMEOUT_MS.',
  },
  maxRequestsPerClient: {
    env: 'ENTGATE_MAX_REQUESTS_PER_CLIENT',
    default: '50',
    schema: integer(0, 1_000_000),
    doc: 'Requests in flight at once from one client address (an IPv6 address by its /64) on SES and `/v1`; past it 429 (`Retry-After: 1`). Behind a proxy, list it in ENTGATE_TRUSTED_PROXIES, or every client counts as the proxy. 0: no cap.',
  },
  headersTimeoutMs: {
    env: 'ENTGATE_HEADERS_TIMEOUT_MS',
    default: '10000',
    schema: integer(100, 600_000),
    doc: 'Longest a client may take to send a request line and headers, counted from its first byte (from connecting, for a connection\'s first request); slower clients get 408 and are disconnected. A TLS handshake on HTTPS_PORT has the same limit. At most ENTGATE_REQUEST_TIMEOUT_MS.',
  },
  requestTimeoutMs: {
    env: 'ENTGATE_REQUEST_TIMEOUT_MS',
    default: '30000',
    schema: integer(100, 3_600_000),
    doc: 'Longest a client may take to send a whole request, headers and body; slower clients get 408 (unless the answer has begun) and are disconnected. Raise it for large CSV imports over slow links.',
  },
  keepAliveTimeoutMs: {
    env: 'ENTGATE_KEEP_ALIVE_TIMEOUT_MS',
    default: '5000',
    schema: integer(100, 600_000),
    doc: 'How long an idle keep-alive connection stays open after its last answer. Behind a load balancer that reuses connections, set it above the balancer\'s idle timeout.',
  },
  maxHeaderBytes: {
    env: 'ENTGATE_MAX_HEADER_BYTES',
    default: '16384',
    schema: integer(1024, 1_048_576),
    doc: 'Most bytes of a request line (the rUS check\'s query string included) and headers together; a larger request gets 431 and is disconnected.',
  },
  maxConnections: {
    env: 'ENTGATE_MAX_CONNECTIONS',
    default: '10000',
    schema: positiveInt(1_000_000),
    doc: 'Open connections per listener (PORT, HTTPS_PORT and METRICS_PORT each); past it a new connection is closed at once (warned at most once a minute). The default leaves room for ENTGATE_MAX_CONCURRENT_REQUESTS plus idle keep-alive clients; keep it well below the open-file limit (`ulimit -n`).',
  },
  metricsPort: {
    env: 'METRICS_PORT',
    schema: port.optional(),
    doc: 'Serve `GET /metrics` (Prometheus text) on this port only, apart from the API; unset: on PORT. Either way, keep it off the public network.',
  },
  trustedProxies: {
    env: 'ENTGATE_TRUSTED_PROXIES',
    default: '',
    schema: cidrList,
    doc: 'Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For is believed, for the client address of SES requests (matched against an SES token\'s ip) and lease requests (a virtual key\'s allowed networks, the address recorded). Empty: the socket\'s peer address is the client.',
  },
  sesIssuer: {
    env: 'ENTGATE_SES_ISSUER',
    default: 'https://batch.azure.test/software-entitlement',
    schema: z.string().min(1),
    doc: 'The `iss` every SES token must carry (the SDK\'s default).',
  },
  sesAudience: {
    env: 'ENTGATE_SES_AUDIENCE',
    default: 'https://batch.azure.test/software-entitlement',
    schema: z.string().min(1),
    doc: 'The `aud` every SES token must carry (the SDK\'s default).',
  },
  sesSigningKeys: {
    env: 'ENTGATE_SES_SIGNING_KEYS',
    default: '',
    schema: pathList,
    doc: 'Comma-separated files with the keys that sign SES tokens: PEM certificates or public keys, or JSON Web Key Sets. Several at once for rotation (chosen by `kid`/`x5t`).',
  },
  licencePublicKeys: {
    env: 'ENTGATE_LICENCE_PUBLIC_KEYS',
    default: '',
    schema: pathList,
    doc: 'Comma-separated files with the vendor keys this installation trusts to sign licences (docs/licences.md): PEM public keys or certificates, or JSON Web Key Sets; Ed25519 or P-256. Several at once for rotation. Empty: no licence can be installed (`PUT /admin/v1/licence` answers 409 `no_trusted_keys`).',
  },
  sesDecryptionKeys: {
    env: 'ENTGATE_SES_DECRYPTION_KEYS',
    default: '',
    schema: pathList,
    doc: 'Comma-separated files with the private keys that decrypt SES tokens (PEM, optionally with the certificate; or JWKS).',
    secret: true,
  },
  sesRequireSigned: {
    env: 'ENTGATE_SES_REQUIRE_SIGNED',
    default: 'true',
    schema: bool,
    doc: 'Refuse SES tokens without a signature (`alg: none`). Turn off only for tests.',
  },
  sesRequireEncrypted: {
    env: 'ENTGATE_SES_REQUIRE_ENCRYPTED',
    default: 'auto',
    schema: z.enum(['auto', 'true', 'false']),
    doc: 'Refuse SES tokens that are not encrypted: `auto` does so when ENTGATE_SES_DECRYPTION_KEYS is set, as the SDK does.',
  },
  sesMintSigningKey: {
    env: 'ENTGATE_SES_MINT_SIGNING_KEY',
    schema: z.string().min(1).optional(),
    doc: 'PEM private key (with its certificate, for kid/x5t) that `POST /admin/v1/tokens` signs SES tokens with. Unset: the admin API mints no SES tokens.',
    secret: true,
  },
  sesMintEncryptionKey: {
    env: 'ENTGATE_SES_MINT_ENCRYPTION_KEY',
    schema: z.string().min(1).optional(),
    doc: 'PEM certificate or public key that minted SES tokens are encrypted to. Unset: minted SES tokens are signed only.',
  },
  sesClockSkewSeconds: {
    env: 'ENTGATE_SES_CLOCK_SKEW_SECONDS',
    default: '60',
    schema: nonNegativeInt(3_600),
    doc: 'Clock skew allowed when checking an SES token\'s nbf and exp.',
  },
  sesAllowHttp: {
    env: 'ENTGATE_SES_ALLOW_HTTP',
    default: 'false',
    schema: bool,
    doc: 'When TLS_CERT_FILE is set, the SES endpoints (`/softwareEntitlements`) are served on HTTPS_PORT only and answer 404 on PORT, so that SES tokens do not travel in the clear by accident; true serves them on PORT too. Without TLS_CERT_FILE they are served on PORT, and start-up warns of it when SES tokens can be granted (ENTGATE_SES_SIGNING_KEYS is set) and this is false: set it true when TLS ends in front of entgate, at a load balancer.',
  },
  auditRetentionDays: {
    env: 'ENTGATE_AUDIT_RETENTION_DAYS',
    default: '90',
    schema: nonNegativeInt(36_500),
    doc: 'Check, SES token and lease events older than this many days are deleted, in small batches, about every 10 minutes. 0 keeps them forever.',
  },
  guessBudget: {
    env: 'ENTGATE_GUESS_BUDGET',
    default: '30',
    schema: nonNegativeInt(1_000_000),
    doc: 'Unknown virtual keys one client address (an IPv6 address by its /64) may present within ENTGATE_GUESS_WINDOW_SECONDS; past it the address is denied for ENTGATE_GUESS_COOLDOWN_SECONDS without the resolvers being asked. Checks without remote_ip count against the calling rUS host, which is never refused a key: past the budget its unknown keys are answered after ENTGATE_GUESS_DELAY_MS. Counted across every instance on the database. Grants never count. 0 turns budgets off.',
  },
  guessWindowSeconds: {
    env: 'ENTGATE_GUESS_WINDOW_SECONDS',
    default: '600',
    schema: positiveInt(86_400),
    doc: 'The window in which an address\'s unknown keys are counted against ENTGATE_GUESS_BUDGET; it starts at the first unknown key and restarts once it has ended.',
  },
  guessCooldownSeconds: {
    env: 'ENTGATE_GUESS_COOLDOWN_SECONDS',
    default: '900',
    schema: positiveInt(604_800),
    doc: 'How long an address past its guessing budget is denied (`guess_budget_exceeded`). `entgate blocks clear <address>` lifts it early.',
  },
  guessDelayMs: {
    env: 'ENTGATE_GUESS_DELAY_MS',
    default: '1000',
    schema: integer(0, 10_000),
    doc: "How long the answer to an unknown key is held for a rUS host past its guessing budget that sends no remote_ip (it speaks for every client behind it, so it is slowed, never refused a key; at most 256 answers held at once per host). Known keys are answered at once. 0: not held.",
  },
  guessSyncMs: {
    env: 'ENTGATE_GUESS_SYNC_MS',
    default: '500',
    schema: integer(50, 10_000),
    doc: 'How often each instance writes its count of unknown keys to the database and reads the blocks other instances set: how late an address past its budget on several instances at once is blocked everywhere.',
  },
  shutdownTimeoutMs: {
    env: 'ENTGATE_SHUTDOWN_TIMEOUT_MS',
    default: '8000',
    schema: positiveInt(60_000),
    doc: 'On SIGTERM/SIGINT, how long in-flight requests may take before the process exits anyway.',
  },
  logLevel: {
    env: 'LOG_LEVEL',
    default: 'info',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    doc: 'pino log level. Check decisions are logged at debug; every decision is in the check_events table.',
  },
  url: {
    env: 'ENTGATE_URL',
    default: 'http://127.0.0.1:8080',
    schema: z.url(),
    doc: 'Base URL of the entgate server that the `entgate` CLI talks to.',
    cliOnly: true,
  },
} as const satisfies Record<string, Setting>;

export type SettingName = keyof typeof settings;

/** The validated, converted configuration. */
export type Config = {
  readonly [K in Exclude<SettingName, 'url'>]: z.output<(typeof settings)[K]['schema']>;
};
