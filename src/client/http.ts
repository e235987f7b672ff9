import axios, { type AxiosInstance, type AxiosRequestConfig, type AxiosResponse } from 'axios';

/** A failed call as entgate answers one (`{code, message, ...fields}`); status 0: entgate could not be reached. */
export interface Refusal {
  status: number;
  code: string;
  message: string;
  /** The answer's other top-level fields (the limit and the use, say). */
  fields: Record<string, unknown>;
  headers: Record<string, unknown>;
}

/** An axios instance for entgate's /v1 API: every status is an answer (the clients map them), no redirects. */
export function apiHttp(baseUrl: string, timeoutMs: number): AxiosInstance {
  return axios.create({ baseURL: `${baseUrl.replace(/\/+$/, '')}/v1`, timeout: timeoutMs, validateStatus: () => true, maxRedirects: 0 });
}

/** What an answer other than 2xx says, from its (JSON) body. */
export function refusalOf(status: number, data: unknown, headers: Record<string, unknown> = {}): Refusal {
  const fields = (typeof data === 'object' && data !== null && !Array.isArray(data) ? data : {}) as Record<string, unknown>;
  return {
    status,
    code: typeof fields.code === 'string' ? fields.code : `http_${status}`,
    message: typeof fields.message === 'string' ? fields.message : `HTTP ${status}`,
    fields,
    headers,
  };
}

/** The refusal for a request that never got an answer. */
export function unreachable(baseUrl: string, err: unknown): Refusal {
  const e = err as { code?: string; message?: string };
  return { status: 0, code: e.code ?? 'unreachable', message: `cannot reach entgate at ${baseUrl}: ${e.code ?? e.message ?? String(err)}`, fields: {}, headers: {} };
}

/**
 * Sends a request and returns a 2xx answer; anything else (no answer at all: status 0) is
 * thrown as what `refuse` makes of it: each client's typed errors.
 */
export async function sendApi(http: AxiosInstance, baseUrl: string, config: AxiosRequestConfig, refuse: (r: Refusal) => Error): Promise<AxiosResponse> {
  let res: AxiosResponse;
  try {
    res = await http.request(config);
  } catch (err) {
    throw refuse(unreachable(baseUrl, err));
  }
  if (res.status < 300) return res;
  throw refuse(refusalOf(res.status, res.data, res.headers as Record<string, unknown>));
}
