/**
 * Conary's own entitlement prolog, as shared/reference/conary-client.md gives it, written out
 * here rather than taken from src so that tests compare entgate's output with the reference.
 */
export const DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n';
export const DTD =
  '<!DOCTYPE entitlement [\n' +
  '    <!ELEMENT entitlement (server, class, key)>\n' +
  '    <!ELEMENT server (#PCDATA)>\n' +
  '    <!ELEMENT class (#PCDATA)>\n' +
  '    <!ELEMENT key (#PCDATA)>\n' +
  ']>\n';
export const DTD_WITH_TIMEOUT =
  '<!DOCTYPE entitlement [\n' +
  '    <!ELEMENT entitlement (server, class, key)>\n' +
  '    <!ELEMENT server (#PCDATA)>\n' +
  '    <!ELEMENT class (#PCDATA)>\n' +
  '    <!ELEMENT key (#PCDATA)>\n' +
  '    <!ELEMENT timeout EMPTY>\n' +
  '    <!ATTLIST\n' +
  '    timeout retry (True|False) "True"\n' +
  '    val CDATA #IMPLIED>\n' +
  ']>\n';
