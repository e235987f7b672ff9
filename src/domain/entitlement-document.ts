import { create } from 'xmlbuilder2';
import { isConarySafe } from './conary-values.ts';

/*
 * The prolog is Conary's own (conarycfg.emitEntitlement): the XML declaration and an internal
 * DOCTYPE, which declares <timeout> only when the document carries one. xmlbuilder2 cannot
 * write an internal DTD subset, so the prolog is a constant; the element tree below it is
 * built with xmlbuilder2.
 */
const DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n';
const ELEMENTS =
  '    <!ELEMENT entitlement (server, class, key)>\n' +
  '    <!ELEMENT server (#PCDATA)>\n' +
  '    <!ELEMENT class (#PCDATA)>\n' +
  '    <!ELEMENT key (#PCDATA)>\n';
const TIMEOUT_DECLARATIONS =
  '    <!ELEMENT timeout EMPTY>\n' + '    <!ATTLIST\n' + '    timeout retry (True|False) "True"\n' + '    val CDATA #IMPLIED>\n';

export const PROLOG = `${DECLARATION}<!DOCTYPE entitlement [\n${ELEMENTS}]>\n`;
export const PROLOG_WITH_TIMEOUT = `${DECLARATION}<!DOCTYPE entitlement [\n${ELEMENTS}${TIMEOUT_DECLARATIONS}]>\n`;

export interface ConaryTimeout {
  val: number;
  retry: boolean;
}

/** What the 200 answer says, element by element. */
export interface EntitlementDocument {
  server: string;
  /** Always sent: Conary reads `class` unconditionally. '' is an empty element (read as None). */
  class: string;
  key: string;
  timeout: ConaryTimeout | null;
}

/**
 * The `<class>` of a grant. Conary reads `p['class']` unconditionally (a document without one
 * raises KeyError inside the repository: the client gets an internal error, not access), but
 * does not use the value for its look-up. So: the entitlement's class; else the class the
 * request asked with, when Conary can read it back; else an empty element.
 */
export function documentClass(entitlementClass: string | null, requestedClass: string | undefined): string {
  if (entitlementClass !== null) return entitlementClass;
  return requestedClass !== undefined && isConarySafe(requestedClass) ? requestedClass : '';
}

export interface TimeoutInputs {
  /** The grant's own cache timeout (the key's, a resolver's); null: none. */
  timeout: ConaryTimeout | null;
  /** When the grant stops being valid (epoch ms); null: never. */
  expiresAt: number | null;
  /** The decision depended on the client's address. */
  dependsOnAddress: boolean;
}

/**
 * The `<timeout>` to send, so that no grant Conary caches outlives what it allows. Conary
 * caches a grant on server + class + key (not on the client's address) for `val` seconds, or
 * for its own `authCacheTimeout` when the document has no `<timeout>`; and a cached grant
 * that expires with `retry="False"` makes the next request fail with an entitlement timeout.
 *
 * - A grant that depends on the client's address is never cached: `val="0"` (which overrides
 *   the repository's default), retry True.
 * - A grant that expires: `val` is capped at the whole seconds left. When it has no timeout of
 *   its own and the repositories cache grants (`repositoryCacheSeconds`, their
 *   authCacheTimeout) for longer than what is left, it gets `val` = what is left.
 * - `retry="False"` is kept only with the grant's own, uncapped, non-zero `val`: on a capped or
 *   zero one it would fail a client's next request instead of asking again.
 */
export function conaryTimeout(grant: TimeoutInputs, nowMs: number, repositoryCacheSeconds: number | null): ConaryTimeout | null {
  if (grant.dependsOnAddress) return { val: 0, retry: true };
  const own = grant.timeout;
  if (grant.expiresAt !== null) {
    const left = Math.max(0, Math.floor((grant.expiresAt - nowMs) / 1000));
    if (own === null) return repositoryCacheSeconds !== null && left < repositoryCacheSeconds ? { val: left, retry: true } : null;
    if (own.val > left) return { val: left, retry: true };
  }
  if (own !== null && own.val === 0 && !own.retry) return { val: 0, retry: true };
  return own;
}

/**
 * The 200 answer of the rUS check. Values are Conary-safe by construction (validated when
 * stored; the server echo and the requested class are checked before they are sent), so no
 * value contains whitespace, markup or entity references, and each is delivered to Conary as
 * one chunk. `<class>` is always there (empty when there is none), and `<timeout>` always
 * carries `retry`: Conary reads both unconditionally.
 */
export function renderEntitlementDocument(doc: EntitlementDocument): string {
  const root = create().ele('entitlement');
  root.ele('server').txt(doc.server);
  root.ele('class').txt(doc.class);
  root.ele('key').txt(doc.key);
  if (doc.timeout !== null) {
    root.ele('timeout', { val: String(doc.timeout.val), retry: doc.timeout.retry ? 'True' : 'False' });
  }
  const body = root.end({ headless: true, prettyPrint: false });
  return `${doc.timeout === null ? PROLOG : PROLOG_WITH_TIMEOUT}${body}\n`;
}
