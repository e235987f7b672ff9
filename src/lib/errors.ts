/**
 * One error type for everything entgate reports to a caller: an HTTP status, a stable
 * snake_case code that clients may branch on, and a human message. `expose` is false for
 * server faults, whose message is replaced by a generic one at the edge.
 */
export class AppError extends Error {
  readonly status: number;
  readonly code: string;
  readonly expose: boolean;
  readonly details?: unknown;
  /** Response headers that go with the error (Retry-After). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Fields answered beside `code` and `message` (a refusal's limit and use, say), for clients to read directly. */
  readonly fields?: Readonly<Record<string, unknown>>;

  constructor(
    status: number,
    code: string,
    message: string,
    options: { cause?: unknown; details?: unknown; expose?: boolean; headers?: Record<string, string>; fields?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.status = status;
    this.code = code;
    this.expose = options.expose ?? status < 500;
    if (options.details !== undefined) this.details = options.details;
    if (options.headers !== undefined) this.headers = options.headers;
    if (options.fields !== undefined) this.fields = options.fields;
  }
}

export class ValidationError extends AppError {
  constructor(message: string, details?: unknown) {
    super(400, 'invalid_request', message, { details });
    this.name = 'ValidationError';
  }
}

export class NotFoundError extends AppError {
  constructor(what: string) {
    super(404, 'not_found', `${what} not found`);
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends AppError {
  constructor(code: string, message: string) {
    super(409, code, message);
    this.name = 'ConflictError';
  }
}

/** Configuration that cannot be used; start-up stops with this message. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
