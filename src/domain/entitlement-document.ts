import { create } from 'xmlbuilder2';
import type { GrantedEntitlement } from './check.ts';

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

/**
 * The 200 answer of the rUS check. Values are Conary-safe by construction (validated when
 * stored; the server echo is checked before a grant), so no value contains whitespace,
 * markup or entity references, and each is delivered to Conary as one chunk.
 * `<timeout>` always carries `retry`: Conary reads that attribute unconditionally.
 */
export function renderEntitlementDocument(ent: GrantedEntitlement): string {
  const root = create().ele('entitlement');
  root.ele('server').txt(ent.server);
  if (ent.class !== null) root.ele('class').txt(ent.class);
  root.ele('key').txt(ent.key);
  if (ent.timeout !== null) {
    root.ele('timeout', { val: String(ent.timeout.val), retry: ent.timeout.retry ? 'True' : 'False' });
  }
  const body = root.end({ headless: true, prettyPrint: false });
  return `${ent.timeout === null ? PROLOG : PROLOG_WITH_TIMEOUT}${body}\n`;
}
