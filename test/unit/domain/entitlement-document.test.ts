import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser } from 'fast-xml-parser';
import { renderEntitlementDocument, PROLOG, PROLOG_WITH_TIMEOUT } from '../../../src/domain/entitlement-document.ts';
import { DECLARATION, DTD, DTD_WITH_TIMEOUT } from '../../helpers/conary-prolog.ts';

// Conary's emitter, as described in shared/reference/conary-client.md, written out in full.
const EXPECTED_PROLOG = DECLARATION + DTD;
const EXPECTED_PROLOG_WITH_TIMEOUT = DECLARATION + DTD_WITH_TIMEOUT;

describe('renderEntitlementDocument', () => {
  it("when the grant has a class and no timeout, then the document is Conary's prolog and server, class, key in that order", () => {
    assert.equal(
      renderEntitlementDocument({ server: 'rm.example.com', class: 'myProduct', key: '03d59e663c1af9ac33a9949d1193505a8460731e', timeout: null }),
      `${EXPECTED_PROLOG}<entitlement><server>rm.example.com</server><class>myProduct</class><key>03d59e663c1af9ac33a9949d1193505a8460731e</key></entitlement>\n`,
    );
  });

  it('when the grant has no class, then <class> is left out (not written empty, which Conary would read as None)', () => {
    const xml = renderEntitlementDocument({ server: 's', class: null, key: 'K', timeout: null });
    assert.equal(xml, `${EXPECTED_PROLOG}<entitlement><server>s</server><key>K</key></entitlement>\n`);
    assert.doesNotMatch(xml, /<class/);
  });

  it('when the grant has no timeout, then neither the DOCTYPE nor the body mention timeout', () => {
    const xml = renderEntitlementDocument({ server: 's', class: 'c', key: 'K', timeout: null });
    assert.doesNotMatch(xml, /timeout/);
  });

  it('when the grant has a timeout, then the DOCTYPE declares timeout with retry defaulting to True, and <timeout> carries val and retry', () => {
    assert.equal(
      renderEntitlementDocument({ server: 's', class: 'c', key: 'K', timeout: { val: 30, retry: false } }),
      `${EXPECTED_PROLOG_WITH_TIMEOUT}<entitlement><server>s</server><class>c</class><key>K</key><timeout val="30" retry="False"/></entitlement>\n`,
    );
    assert.equal(
      renderEntitlementDocument({ server: 's', class: null, key: 'K', timeout: { val: 0, retry: true } }),
      `${EXPECTED_PROLOG_WITH_TIMEOUT}<entitlement><server>s</server><key>K</key><timeout val="0" retry="True"/></entitlement>\n`,
    );
  });

  it('exports the two prologs it writes', () => {
    assert.equal(PROLOG, EXPECTED_PROLOG);
    assert.equal(PROLOG_WITH_TIMEOUT, EXPECTED_PROLOG_WITH_TIMEOUT);
  });

  it('when values hold every Conary-safe punctuation character and inner spaces, then they are written literally, with no entity reference', () => {
    const punct = '!#$%()*+,-./:;=?@[]^_`{|}~\\';
    const xml = renderEntitlementDocument({ server: `s${punct}`, class: `c ${punct}`, key: `k  ${punct}`, timeout: { val: 5, retry: true } });
    const body = xml.slice(EXPECTED_PROLOG_WITH_TIMEOUT.length);
    assert.equal(body, `<entitlement><server>s${punct}</server><class>c ${punct}</class><key>k  ${punct}</key><timeout val="5" retry="True"/></entitlement>\n`);
    assert.doesNotMatch(body, /&/, 'an entity reference would split the value for Conary');
  });

  it('when parsed by a generic XML parser, then it is well-formed and holds the values', () => {
    const xml = renderEntitlementDocument({ server: 'a.b', class: 'c!#$', key: 'k/+=', timeout: { val: 5, retry: true } });
    const parsed = new XMLParser({ ignoreAttributes: false, parseTagValue: false }).parse(xml);
    assert.deepEqual(parsed.entitlement, { server: 'a.b', class: 'c!#$', key: 'k/+=', timeout: { '@_val': '5', '@_retry': 'True' } });
  });

  it('writes the body on one line after the prolog, ending with a newline', () => {
    const xml = renderEntitlementDocument({ server: 's', class: 'c', key: 'K', timeout: null });
    const body = xml.slice(EXPECTED_PROLOG.length);
    assert.equal(body.indexOf('\n'), body.length - 1);
  });
});
