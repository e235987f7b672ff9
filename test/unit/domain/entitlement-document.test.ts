import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser } from 'fast-xml-parser';
import { conaryTimeout, documentClass, renderEntitlementDocument, PROLOG, PROLOG_WITH_TIMEOUT } from '../../../src/domain/entitlement-document.ts';
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

  it('when the class is empty, then <class> is still written, empty (Conary reads p[\'class\'] unconditionally, and an empty one as None)', () => {
    const xml = renderEntitlementDocument({ server: 's', class: '', key: 'K', timeout: null });
    assert.equal(xml, `${EXPECTED_PROLOG}<entitlement><server>s</server><class></class><key>K</key></entitlement>\n`);
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
      renderEntitlementDocument({ server: 's', class: '', key: 'K', timeout: { val: 0, retry: true } }),
      `${EXPECTED_PROLOG_WITH_TIMEOUT}<entitlement><server>s</server><class></class><key>K</key><timeout val="0" retry="True"/></entitlement>\n`,
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

describe('documentClass', () => {
  it("when the entitlement has a class, then that class, whatever was asked", () => {
    assert.equal(documentClass('myProduct', undefined), 'myProduct');
    assert.equal(documentClass('myProduct', 'other'), 'myProduct');
  });

  it('when the entitlement has none, then the class asked with when Conary can read it back, else empty', () => {
    assert.equal(documentClass(null, 'asked'), 'asked');
    assert.equal(documentClass(null, undefined), '');
    for (const unreadable of ['a&b', 'caf\u00e9', ' x', 'a<b', 'x'.repeat(256)]) assert.equal(documentClass(null, unreadable), '', unreadable);
  });
});

describe('conaryTimeout', () => {
  const NOW = Date.UTC(2027, 0, 1);
  const grant = (over: Partial<Parameters<typeof conaryTimeout>[0]> = {}) => ({ timeout: null, expiresAt: null, dependsOnAddress: false, ...over });

  it('when nothing limits the grant, then its own timeout (or none) is sent as configured', () => {
    assert.equal(conaryTimeout(grant(), NOW, null), null);
    assert.equal(conaryTimeout(grant(), NOW, 3600), null);
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 600, retry: false } }), NOW, null), { val: 600, retry: false });
  });

  it('when the grant depends on the client address, then val 0 with retry True, whatever its own timeout', () => {
    for (const timeout of [null, { val: 600, retry: true }, { val: 600, retry: false }]) {
      assert.deepEqual(conaryTimeout(grant({ timeout, dependsOnAddress: true }), NOW, 3600), { val: 0, retry: true });
    }
  });

  it('when the grant expires before its own timeout, then val is the whole seconds left and retry True', () => {
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 600, retry: false }, expiresAt: NOW + 90_999 }), NOW, null), { val: 90, retry: true });
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 600, retry: true }, expiresAt: NOW + 999 }), NOW, null), { val: 0, retry: true });
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 600, retry: true }, expiresAt: NOW - 5000 }), NOW, null), { val: 0, retry: true });
  });

  it('when the grant expires after its own timeout, then its own timeout is sent unchanged', () => {
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 60, retry: false }, expiresAt: NOW + 61_000 }), NOW, null), { val: 60, retry: false });
  });

  it("when the grant has no timeout of its own, then it is capped only where the repositories' authCacheTimeout would outlive it", () => {
    const expiresAt = NOW + 120_500;
    assert.equal(conaryTimeout(grant({ expiresAt }), NOW, null), null, 'repositories that cache nothing need no cap');
    assert.equal(conaryTimeout(grant({ expiresAt }), NOW, 60), null, 'their 60 s ends before the key');
    assert.deepEqual(conaryTimeout(grant({ expiresAt }), NOW, 3600), { val: 120, retry: true });
  });

  it('when a zero val would come with retry False, then retry is True (Conary would fail the next request)', () => {
    assert.deepEqual(conaryTimeout(grant({ timeout: { val: 0, retry: false } }), NOW, null), { val: 0, retry: true });
  });
});
