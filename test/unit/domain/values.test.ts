import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { conaryValueProblem } from '../../../src/domain/conary-values.ts';
import { serverPatternProblem, compileServerPattern } from '../../../src/domain/server-pattern.ts';
import { normalizeCidr, parseIp } from '../../../src/domain/ip.ts';
import { createKeyHasher, generateVirtualKey, keyHint, virtualKeyProblem } from '../../../src/domain/virtual-key.ts';

describe('conaryValueProblem', () => {
  it('accepts printable ASCII without markup characters, 1 to 255 long', () => {
    for (const v of ['a', 'myProduct', '03d59e663c1af9ac33a9949d1193505a8460731e', 'a b', '!#$%()*+,-./:;=?@[]^_`{|}~\\', 'x'.repeat(255)]) {
      assert.equal(conaryValueProblem(v), undefined, v);
    }
  });
  it('refuses what the parser would mangle', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['x'.repeat(256), /longer than 255/],
      ['caf\u00e9', /non-ASCII/],
      ['a\nb', /control/],
      ['a\tb', /control/],
      ['a\u007fb', /control/],
      ['a&b', /contains &/],
      ['a<b', /contains </],
      ['a>b', /contains >/],
      ['a"b', /contains "/],
      ["a'b", /contains '/],
      [' a', /whitespace/],
      ['a ', /whitespace/],
    ];
    for (const [v, why] of cases) assert.match(conaryValueProblem(v) ?? 'accepted', why, JSON.stringify(v));
  });
});

describe('server patterns', () => {
  it('accepts hosts, *.domain and *, with optional ports', () => {
    for (const p of ['*', 'rm.example.com', 'localhost', 'repo_1.internal', '10.0.0.1', '*.example.com', 'rm.example.com:8443', '*.a.b:1']) {
      assert.equal(serverPatternProblem(p), undefined, p);
    }
  });
  it('refuses anything else', () => {
    for (const p of ['', 'a b', 'a.*.com', '*example.com', '**', '*.', 'a..b', '.a', 'a:', 'a:123456', 'a/b', 'caf\u00e9.com']) {
      assert.ok(serverPatternProblem(p), p);
    }
  });
  it('matches case-insensitively; *.domain needs a label before the domain', () => {
    const m = compileServerPattern('*.Example.com');
    assert.equal(m('a.example.COM'), true);
    assert.equal(m('.example.com'), false);
    assert.equal(m('example.com'), false);
    assert.equal(compileServerPattern('RM.example.com')('rm.EXAMPLE.com'), true);
    assert.equal(compileServerPattern('rm.example.com')('rm.example.com.evil'), false);
  });
});

describe('IP addresses and CIDRs', () => {
  it('parses IPv4 strictly and IPv4-mapped IPv6 as IPv4', () => {
    assert.equal(parseIp('10.0.0.1')?.toString(), '10.0.0.1');
    assert.equal(parseIp('::ffff:10.0.0.1')?.kind(), 'ipv4');
    for (const bad of ['10.1', '0x0a.0.0.1', '1.2.3.4.5', 'x', '']) assert.equal(parseIp(bad), undefined, bad);
  });
  it('normalises CIDRs and refuses host bits', () => {
    assert.deepEqual(normalizeCidr('10.0.0.0/8'), { cidr: '10.0.0.0/8' });
    assert.deepEqual(normalizeCidr('192.0.2.7'), { cidr: '192.0.2.7/32' });
    assert.deepEqual(normalizeCidr('2001:DB8:0::/32'), { cidr: '2001:db8::/32' });
    assert.deepEqual(normalizeCidr('::ffff:10.0.0.0/8'), { cidr: '10.0.0.0/8' });
    assert.match((normalizeCidr('10.0.0.1/8') as { problem: string }).problem, /host bits set; did you mean 10\.0\.0\.0\/8/);
    assert.match((normalizeCidr('10.0.0.0/33') as { problem: string }).problem, /prefix length/);
    assert.match((normalizeCidr('10.0.0.0/') as { problem: string }).problem, /prefix length/);
    assert.match((normalizeCidr('nonsense/8') as { problem: string }).problem, /not an IP address/);
  });
});

describe('virtual keys', () => {
  it('hashes with HMAC-SHA-256 under the secret', () => {
    const a = createKeyHasher('secret-one-secret-one-secret-one');
    const b = createKeyHasher('secret-two-secret-two-secret-two');
    assert.match(a('k'), /^[0-9a-f]{64}$/);
    assert.equal(a('k'), a('k'));
    assert.notEqual(a('k'), b('k'));
    assert.notEqual(a('k'), a('K'));
  });
  it('hints at most four characters and at most a third of the key', () => {
    assert.equal(keyHint('w45tv-23xda-e4dd2-11zgv'), 'w45t…');
    assert.equal(keyHint('abcdefgh'), 'ab…');
    assert.equal(keyHint('abcde'), '…');
    assert.equal(keyHint('🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑'), '🔑🔑🔑🔑…');
    for (let n = 1; n < 40; n++) {
      const shown = Array.from(keyHint('x'.repeat(n))).length - 1;
      assert.ok(shown <= 4 && shown <= n / 3, `length ${n} shows ${shown}`);
    }
  });
  it('generates distinct keys made of characters Conary never escapes', () => {
    const keys = new Set(Array.from({ length: 200 }, generateVirtualKey));
    assert.equal(keys.size, 200);
    for (const k of keys) assert.match(k, /^[A-Za-z0-9_-]{27}$/);
  });
  it('refuses admin-chosen keys that cannot arrive intact', () => {
    assert.equal(virtualKeyProblem('cust 42+a;b'), undefined);
    assert.equal(virtualKeyProblem('kunde-ä'), undefined);
    for (const k of ['', 'x'.repeat(256), 'a\nb', 'a\u0000b', ' a', 'a ']) assert.ok(virtualKeyProblem(k), JSON.stringify(k));
  });
});
