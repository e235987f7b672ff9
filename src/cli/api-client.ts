import type { AxiosInstance, Method } from 'axios';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { CliError } from './output.ts';

/**
 * The admin API as the CLI sees it. The embedded database belongs to the server process,
 * so the CLI never opens it: every admin command is a request to ENTGATE_URL.
 */
export class AdminClient {
  /** axios, loaded by the commands that make requests: not by `--help`, `serve` or `migrate` (~0.25 CPU-s). */
  private readonly http: Promise<AxiosInstance>;

  constructor(
    private readonly baseUrl: string,
    token: string | undefined,
  ) {
    this.http = import('axios').then(({ default: axios }) =>
      axios.create({
        baseURL: `${baseUrl.replace(/\/+$/, '')}/admin/v1`,
        timeout: 30_000,
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        validateStatus: () => true,
        maxRedirects: 0,
      }),
    );
  }

  async request<T>(method: Method, path: string, data?: unknown, contentType?: string): Promise<T> {
    let res;
    try {
      res = await (await this.http).request({
        method,
        url: path,
        data,
        ...(contentType ? { headers: { 'Content-Type': contentType } } : {}),
      });
    } catch (err) {
      const e = err as { code?: string; message: string };
      throw new CliError(`cannot reach entgate at ${this.baseUrl}: ${e.code ?? e.message}`);
    }
    if (res.status >= 400) throw failure(res.data, res.status);
    return res.data as T;
  }

  /**
   * A request whose answer is a stream of JSON lines (`Accept: application/x-ndjson`): each
   * line before the last goes to `onLine` as it arrives (progress); the last carries the
   * outcome with its status in `status`, and is returned, or thrown as a CliError from 400 on.
   * Refusals before the stream begins (401, 413, 415...) come as plain JSON, as elsewhere.
   */
  async requestLines<T>(method: Method, path: string, data: unknown, contentType: string, onLine: (line: Record<string, unknown>) => void, contentLength?: number): Promise<T> {
    let outcome: { status?: unknown } | undefined;
    try {
      const res = await (await this.http).request<Readable>({
        method,
        url: path,
        data,
        headers: { 'Content-Type': contentType, Accept: 'application/x-ndjson', ...(contentLength !== undefined && { 'Content-Length': contentLength }) },
        responseType: 'stream',
        maxBodyLength: Infinity,
        maxContentLength: Infinity,
      });
      if (!String(res.headers['content-type'] ?? '').startsWith('application/x-ndjson')) {
        let text = '';
        for await (const chunk of res.data) text += String(chunk);
        const body = parseJson(text);
        if (res.status >= 400) throw failure(body, res.status);
        return body as T;
      }
      for await (const text of createInterface({ input: res.data, crlfDelay: Infinity })) {
        if (text.trim() === '') continue;
        const line = parseJson(text) as Record<string, unknown>;
        if (line && typeof line === 'object' && 'status' in line) outcome = line;
        else onLine(line);
      }
    } catch (err) {
      if (err instanceof CliError) throw err;
      const e = err as { code?: string; message: string };
      throw new CliError(`cannot reach entgate at ${this.baseUrl}, or the answer broke off: ${e.code ?? e.message}`);
    }
    if (outcome === undefined) throw new CliError('the answer ended before its outcome: whether the request took effect is unknown');
    const { status, ...body } = outcome;
    if (typeof status !== 'number' || status >= 400) throw failure(body, Number(status));
    return body as T;
  }
}

/** A refusal as one line: the server's message and code, or the bare status. */
function failure(data: unknown, status: number): CliError {
  const body = data as { code?: string; message?: string } | undefined;
  return new CliError(body && typeof body === 'object' && body.message ? `${body.message} (${body.code})` : `HTTP ${status}`);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
