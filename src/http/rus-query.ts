import { parseIp } from '../lib/ip.ts';
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
 * given twice; a `server`, `class` or `key` over 255 characters; anything that is not valid
 * percent-encoded UTF-8. Unknown parameters are ignored; an empty `class` is taken as absent.
 *
 * `remote_ip` is taken as a repository may pass it (see remoteAddress): an address, with a
 * port behind a proxy, or empty. One that holds no usable address is taken as absent, never
 * refused: a key that is not locked to a network is granted whatever the repository saw, and
 * a network-locked one is denied without an address.
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
  const address = remoteIp === undefined ? undefined : remoteAddress(remoteIp);

  const request: CheckRequest = { server, key };
  if (cls !== undefined && cls !== '') request.class = cls;
  if (address !== undefined) request.remoteIp = address;
  return { ok: true, request };
}

const WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;
const BRACKETED = /^\[([0-9A-Fa-f:.]{2,45})\](?::\d{1,5})?$/;

/**
 * The client's address in a `remote_ip` as a Conary repository passes it on: `203.0.113.9`,
 * `2001:db8::1`, or, with forwarded headers, `203.0.113.9:5555` and `[2001:db8::1]:5555`.
 * The address text as given (without port or brackets), or undefined when there is none
 * (empty, or not an address).
 */
export function remoteAddress(value: string): string | undefined {
  if (value === '') return undefined;
  if (parseIp(value) !== undefined) return value;
  const inner = WITH_PORT.exec(value)?.[1] ?? BRACKETED.exec(value)?.[1];
  return inner !== undefined && parseIp(inner) !== undefined ? inner : undefined;
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
