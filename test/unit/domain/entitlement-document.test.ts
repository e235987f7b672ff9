import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser } from 'fast-xml-parser';
import { renderEntitlementDocument, PROLOG, PROLOG_WITH_TIMEOUT } from '../../../src/domain/entitlement-document.ts';

describe('renderEntitlementDocument', () => {
  it("writes Conary's prolog and the seed's element order", () => {
    const xml = renderEntitlementDocument({ server: 'rm.example.com', class: 'myProduct', key: 'K1', timeout: null });
    assert.equal(
      xml,
      `${PROLOG}<entitlement><server>rm.example.com</server><class>myProduct</class><key>K1</key></entitlement>\n`,
    );
    assert.ok(PROLOG.startsWith('<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n<!DOCTYPE entitlement [\n'));
    assert.doesNotMatch(PROLOG, /timeout/);
  });

  it('leaves <class> out when there is none', () => {
    const xml = renderEntitlementDocument({ server: 's', class: null, key: 'K', timeout: null });
    assert.match(xml, /<entitlement><server>s<\/server><key>K<\/key><\/entitlement>\n$/);
  });

  it('adds <timeout> with both attributes and declares it in the DOCTYPE', () => {
    const xml = renderEntitlementDocument({ server: 's', class: 'c', key: 'K', timeout: { val: 30, retry: false } });
    assert.ok(xml.startsWith(PROLOG_WITH_TIMEOUT));
    assert.match(PROLOG_WITH_TIMEOUT, /<!ELEMENT timeout EMPTY>\n {4}<!ATTLIST\n {4}timeout retry \(True\|False\) "True"\n {4}val CDATA #IMPLIED>/);
    assert.match(xml, /<key>K<\/key><timeout val="30" retry="False"\/><\/entitlement>\n$/);
    assert.match(renderEntitlementDocument({ server: 's', class: 'c', key: 'K', timeout: { val: 0, retry: true } }), /<timeout val="0" retry="True"\/>/);
  });

  it('is well-formed XML whose values contain no whitespace', () => {
    const xml = renderEntitlementDocument({ server: 'a.b', class: 'c!#$', key: 'k/+=', timeout: { val: 5, retry: true } });
    const parsed = new XMLParser({ ignoreAttributes: false, parseTagValue: false }).parse(xml);
    assert.deepEqual(parsed.entitlement, { server: 'a.b', class: 'c!#$', key: 'k/+=', timeout: { '@_val': '5', '@_retry': 'True' } });
  });
});
