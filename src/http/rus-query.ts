import { parseIp } from '../domain/ip.ts';
import type { CheckRequest } from '../domain/types.ts';

export type ParsedCheckQuery = { ok: true; request: CheckRequest } | { ok: false; reason: string };

const KNOWN = new Set(['server', 'class', 'key', 'remote_ip']);
const MAX_LENGTH = 255;

/**
 * Parses the query string of an rUS check (without the leading `?`). Conary separates
 * parameters with `;` and quotes values with Python's urllib.quote; `&` is accepted too.
 * Names and values are percent-decoded as UTF-8. A `+` is a literal plus (Conary always
 * sends `%2B`; treating it as a space would change keys that contain one).
 *
 * Refused, with a one-line reason: a missing or empty `server` or `key`; a known parameter
 * given twice; a `server`, `class` or `key` over 255 characters; a `remote_ip` that is not an
 * IP address; anything that is not valid percent-encoded UTF-8. Unknown parameters are ignored;
 * an empty `class` is taken as absent.
 */
export function parseCheckQuery(query: string): ParsedCheckQuery {
  const values: Partial<Record<'server' | 'class' | 'key' | 'remote_ip', string>> = {};
  let start = 0;
  const n = query.length;
  while (start <= n) {
    let end = start;
    while (end < n) {
      const c = query.charCodeAt(end);
      if (c === 0x3b /* ; */ || c === 0x26 /* & */) break;
      end++;
    }
    if (end > start) {
      const part = query.slice(start, end);
      const eq = part.indexOf('=');
      const rawName = eq < 0 ? part : part.slice(0, eq);
      const name = decode(rawName);
      if (name === undefined) return { ok: false, reason: 'a parameter name is not valid percent-encoded UTF-8' };
      if (KNOWN.has(name)) {
        const key = name as keyof typeof values;
        if (values[key] !== undefined) return { ok: false, reason: `parameter ${name} is repeated` };
        const value = decode(eq < 0 ? '' : part.slice(eq + 1));
        if (value === undefined) return { ok: false, reason: `parameter ${name} is not valid percent-encoded UTF-8` };
        values[key] = value;
      }
    }
    start = end + 1;
  }

  const { server, key, remote_ip: remoteIp } = values;
  const cls = values.class;
  if (server === undefined || server === '') return { ok: false, reason: 'parameter server is required' };
  if (key === undefined || key === '') return { ok: false, reason: 'parameter key is required' };
  if (tooLong(server)) return { ok: false, reason: `parameter server is longer than ${MAX_LENGTH} characters` };
  if (tooLong(key)) return { ok: false, reason: `parameter key is longer than ${MAX_LENGTH} characters` };
  if (cls !== undefined && tooLong(cls)) {
    return { ok: false, reason: `parameter class is longer than ${MAX_LENGTH} characters` };
  }
  if (remoteIp !== undefined && parseIp(remoteIp) === undefined) {
    return { ok: false, reason: 'parameter remote_ip is not an IP address' };
  }

  const request: CheckRequest = { server, key };
  if (cls !== undefined && cls !== '') request.class = cls;
  if (remoteIp !== undefined) request.remoteIp = remoteIp;
  return { ok: true, request };
}

/**
 * Lengths are counted in characters (code points), as PostgreSQL's varchar(255) counts them,
 * not in UTF-16 code units: 128 characters outside the BMP are 128, not 256.
 */
function tooLong(value: string): boolean {
  if (value.length <= MAX_LENGTH) return false;
  let count = 0;
  for (const _ of value) if (++count > MAX_LENGTH) return true;
  return false;
}

function decode(text: string): string | undefined {
  // Raw characters must be well formed whether or not the value also carries escapes.
  if (!isWellFormed(text)) return undefined;
  if (!text.includes('%')) return text;
  try {
    // decodeURIComponent rejects malformed escapes and invalid UTF-8 (overlong forms,
    // surrogates, truncated sequences) with a URIError.
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** A raw (unescaped) value must not carry lone surrogates. */
function isWellFormed(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return false;
    }
  }
  return true;
}
