import axios, { type AxiosInstance, type Method } from 'axios';
import { CliError } from './output.ts';

/**
 * The admin API as the CLI sees it. The embedded database belongs to the server process,
 * so the CLI never opens it: every admin command is a request to ENTGATE_URL.
 */
export class AdminClient {
  private readonly http: AxiosInstance;

  constructor(
    private readonly baseUrl: string,
    token: string | undefined,
  ) {
    this.http = axios.create({
      baseURL: `${baseUrl.replace(/\/+$/, '')}/admin/v1`,
      timeout: 30_000,
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      validateStatus: () => true,
      maxRedirects: 0,
    });
  }

  async request<T>(method: Method, path: string, data?: unknown, contentType?: string): Promise<T> {
    let res;
    try {
      res = await this.http.request({
        method,
        url: path,
        data,
        ...(contentType ? { headers: { 'Content-Type': contentType } } : {}),
      });
    } catch (err) {
      const e = err as { code?: string; message: string };
      throw new CliError(`cannot reach entgate at ${this.baseUrl}: ${e.code ?? e.message}`);
    }
    if (res.status >= 400) {
      const body = res.data as { code?: string; message?: string } | undefined;
      const detail = body && typeof body === 'object' && body.message ? `${body.message} (${body.code})` : `HTTP ${res.status}`;
      throw new CliError(detail);
    }
    return res.data as T;
  }
}
