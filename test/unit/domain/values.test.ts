import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CONARY_MAX_LENGTH, conaryValueProblem, isConarySafe } from '../../../src/domain/conary-values.ts';
import { serverPatternProblem, compileServerPattern } from '../../../src/domain/server-pattern.ts';
import { compileCidrs, ipInRanges, normalizeCidr, parseIp } from '../../../src/lib/ip.ts';
import { createKeyHasher, generateVirtualKey, keyHint, virtualKeyProblem } from '../../../src/domain/virtual-key.ts';
import { conaryQuote } from '../../helpers/conary-judge.ts';

const problemOf = (r: { cidr: string } | { problem: string }) => ('problem' in r ? r.problem : `accepted as ${r.cidr}`);

describe('conaryValueProblem (classes and real keys)', () => {
  it('when a value is printable ASCII without & < > " \' and without outer spaces, 1 to 255 long, then it is safe', () => {
    for (const v of ['a', 'myProduct', '03d59e663c1af9ac33a9949d1193505a8460731e', 'a b', 'a  b', '!#$%()*+,-./:;=?@[]^_`{|}~\\', 'x'.repeat(255)]) {
      assert.equal(conaryValueProblem(v), undefined, v);
      assert.equal(isConarySafe(v), true, v);
    }
    assert.equal(CONARY_MAX_LENGTH, 255);
  });

  it('when each printable ASCII character stands inside a value, then exactly & < > " \' are refused', () => {
    const refused: string[] = [];
    for (let c = 0x20; c < 0x7f; c++) if (!isConarySafe(`a${String.fromCharCode(c)}b`)) refused.push(String.fromCharCode(c));
    assert.deepEqual(refused.sort(), ['"', '&', "'", '<', '>']);
  });

  it('when a value holds any control character (0x00-0x1F, DEL), then it is refused', () => {
    for (let c = 0; c < 0x20; c++) assert.match(conaryValueProblem(`a${String.fromCharCode(c)}b`) ?? 'safe', /control character or newline/, `0x${c.toString(16)}`);
    assert.match(conaryValueProblem('a\u007fb') ?? 'safe', /control character/);
  });

  it('when a value holds any non-ASCII character, then it is refused', () => {
    for (const v of ['caf\u00e9', 'a\u0080', 'a\u00a0b', 'k\u20ac', 'k\ud83d\udd11', 'k\ud800']) {
      assert.match(conaryValueProblem(v) ?? 'safe', /non-ASCII/, JSON.stringify(v));
    }
  });

  it('when a value is empty, 256 long, or has a leading or trailing space, then it is refused saying why', () => {
    const cases: [string, RegExp][] = [
      ['', /^is empty$/],
      ['x'.repeat(256), /longer than 255 characters/],
      [' a', /leading or trailing whitespace/],
      ['a ', /leading or trailing whitespace/],
      [' ', /leading or trailing whitespace/],
      ['a&b', /contains &, which Conary's parser mangles/],
      ['a<b', /contains </],
      ['a>b', /contains >/],
      ['a"b', /contains "/],
      ["a'b", /contains '/],
    ];
    for (const [v, why] of cases) assert.match(conaryValueProblem(v) ?? 'safe', why, JSON.stringify(v));
  });
});

describe('server patterns', () => {
  it('when a pattern is a host name, *.domain or *, with or without a port, then it is accepted', () => {
    for (const p of ['*', 'rm.example.com', 'localhost', 'repo_1.internal', 'RM.Example.COM', '10.0.0.1', '*.example.com', 'rm.example.com:8443', '*.a.b:1', 'a'.repeat(255)]) {
      assert.equal(serverPatternProblem(p), undefined, p);
    }
  });

  it('when a pattern is anything else, then it is refused', () => {
    for (const p of ['', ' ', 'a b', 'a.*.com', '*example.com', '**', '*.', '*.*', 'a..b', '.a', 'a.', 'a:', 'a:123456', 'a/b', 'caf\u00e9.com', 'a&b', `${'a'.repeat(256)}`, '*.a b']) {
      assert.match(serverPatternProblem(p) ?? 'accepted', /host name|longer than 255/, JSON.stringify(p));
    }
  });

  it('when matching an exact host, then letter case does not matter and nothing else matches', () => {
    const m = compileServerPattern('RM.example.com');
    assert.deepEqual(['rm.EXAMPLE.com', 'rm.example.com', 'rm.example.com.evil', 'rm.example.co', 'a.rm.example.com', ''].map(m), [true, true, false, false, false, false]);
  });

  it('when matching *.domain, then at least one label must come before the domain: example.com itself does not match', () => {
    const m = compileServerPattern('*.Example.com');
    assert.deepEqual(
      ['a.example.COM', 'x.y.example.com', 'example.com', '.example.com', 'badexample.com', 'a.example.com.evil', 'a.example.com:1'].map(m),
      [true, true, false, false, false, false, false],
    );
  });

  it('when matching *, then every name matches', () => {
    const m = compileServerPattern('*');
    assert.deepEqual(['', 'x', 'a&b'].map(m), [true, true, true]);
  });
});

describe('parseIp', () => {
  it('when given IPv4 dotted decimal or IPv6, then it parses; IPv4-mapped IPv6 becomes the IPv4 address', () => {
    assert.equal(parseIp('10.0.0.1')?.toString(), '10.0.0.1');
    assert.equal(parseIp('2001:DB8::1')?.toString(), '2001:db8::1');
    const mapped = parseIp('::ffff:10.0.0.1');
    assert.deepEqual([mapped?.kind(), mapped?.toString()], ['ipv4', '10.0.0.1']);
    assert.equal(parseIp('::ffff:a00:1')?.toString(), '10.0.0.1');
  });

  it('when given anything that is not four-part dotted decimal IPv4 or IPv6, then it refuses', () => {
    for (const bad of ['', '10.1', '1.2.3', '010.1.1.1', '0x0a.0.0.1', '2130706433', '1.2.3.4.5', '256.1.1.1', 'x', ' 10.0.0.1', '10.0.0.1 ', ':::', `${'1:'.repeat(40)}1`]) {
      assert.equal(parseIp(bad), undefined, bad);
    }
  });

  it(
    'when an IPv4-mapped IPv6 address carries an IPv4 part that is not dotted decimal, then it refuses, as it refuses that IPv4 part alone',
    () => {
      for (const bad of ['::ffff:010.1.1.1', '::ffff:0x7f.0.0.1']) assert.equal(parseIp(bad), undefined, bad);
    },
  );

  it(
    'when an IPv6 address embeds an IPv4 part without the ::ffff: prefix (IPv4-compatible), then it stays IPv6',
    () => {
      assert.deepEqual([parseIp('::1.2.3.4')?.kind(), parseIp('::1.2.3.4')?.toString()], ['ipv6', '::102:304']);
      assert.equal(parseIp('::0.0.0.1')?.toString(), '::1');
    },
  );
});

describe('normalizeCidr', () => {
  it('when given a network in canonical or loose form, then it returns the canonical text', () => {
    const cases: [string, string][] = [
      ['10.0.0.0/8', '10.0.0.0/8'],
      ['192.0.2.7', '192.0.2.7/32'],
      ['0.0.0.0/0', '0.0.0.0/0'],
      ['2001:DB8:0::/32', '2001:db8::/32'],
      ['2001:db8::1', '2001:db8::1/128'],
      ['::/0', '::/0'],
      ['10.0.0.0/08', '10.0.0.0/8'],
    ];
    for (const [input, cidr] of cases) assert.deepEqual(normalizeCidr(input), { cidr }, input);
  });

  it('when the address has host bits set for its prefix, then it is refused with the network it probably meant', () => {
    assert.equal(problemOf(normalizeCidr('10.0.0.1/8')), "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?");
    assert.equal(problemOf(normalizeCidr('192.168.1.1/24')), "'192.168.1.1/24' has host bits set; did you mean 192.168.1.0/24?");
    assert.match(problemOf(normalizeCidr('2001:db8::1/32')), /host bits set; did you mean 2001:db8::\/32\?/);
  });

  it('when the prefix length is missing, too long or not a number, then it is refused', () => {
    for (const bad of ['10.0.0.0/', '10.0.0.0/33', '2001:db8::/129', '10.0.0.0/x', '10.0.0.0/-1', '10.0.0.0/ 8', '10.0.0.0/8/8', '10.0.0.0/1000']) {
      assert.match(problemOf(normalizeCidr(bad)), /invalid prefix length \(0 to (32|128)\)/, bad);
    }
  });

  it('when the address is not an address, then it is refused', () => {
    for (const bad of ['nonsense/8', '', '/8', '10.0.0/8', '010.0.0.0/8']) assert.match(problemOf(normalizeCidr(bad)), /is not an IP address or CIDR range/, bad);
  });

  it(
    'when a range is written as IPv4-mapped IPv6, then its prefix counts IPv6 bits (::ffff:10.0.0.0/104 is 10.0.0.0/8)',
    () => {
      assert.deepEqual(normalizeCidr('::ffff:10.0.0.0/104'), { cidr: '10.0.0.0/8' });
      assert.match(problemOf(normalizeCidr('::ffff:10.0.0.0/8')), /host bits set|prefix length/);
    },
  );
});

describe('compileCidrs and ipInRanges', () => {
  it('when an address is inside one of the ranges of its family, then it matches; otherwise not', () => {
    const ranges = compileCidrs(['10.0.0.0/8', '2001:db8::/32']);
    const inRanges = (ip: string) => ipInRanges(parseIp(ip)!, ranges);
    assert.deepEqual(['10.2.3.4', '11.0.0.0', '2001:db8::9', '2001:db9::', '::ffff:10.0.0.1'].map(inRanges), [true, false, true, false, true]);
    assert.equal(ipInRanges(parseIp('10.0.0.1')!, []), false);
  });

  it('when a stored CIDR is invalid, then compiling throws', () => {
    assert.throws(() => compileCidrs(['bogus/8']), /stored CIDR 'bogus\/8' is invalid/);
  });
});

describe('virtual keys', () => {
  it('hashes with HMAC-SHA-256 under the secret (RFC 4231 test case 2)', () => {
    assert.equal(createKeyHasher('Jefe')('what do ya want for nothing?'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });

  it('when the secret or the key differs, then the hash differs; the same key hashes the same', () => {
    const a = createKeyHasher('secret-one-secret-one-secret-one');
    const b = createKeyHasher('secret-two-secret-two-secret-two');
    assert.match(a('k'), /^[0-9a-f]{64}$/);
    assert.equal(a('k'), a('k'));
    assert.notEqual(a('k'), b('k'));
    assert.notEqual(a('k'), a('K'));
    assert.notEqual(a('k'), a('k '));
  });

  it('when a hint is made, then it shows at most 4 characters and at most a third of the key, as a prefix', () => {
    assert.equal(keyHint('w45tv-23xda-e4dd2-11zgv'), 'w45t…');
    assert.equal(keyHint('abcdefghijkl'), 'abcd…');
    assert.equal(keyHint('abcdefghijk'), 'ab…');
    assert.equal(keyHint('abcdef'), 'ab…');
    assert.equal(keyHint('abcde'), '…');
    assert.equal(keyHint(''), '…');
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 })), (key) => {
        const hint = keyHint(key);
        assert.ok(hint.endsWith('…'));
        const shown = Array.from(hint.slice(0, -1));
        const chars = Array.from(key);
        assert.ok(shown.length <= 4, `${shown.length} shown of ${JSON.stringify(key)}`);
        assert.ok(shown.length * 3 <= chars.length, `${shown.length} shown of ${chars.length}`);
        assert.deepEqual(shown, chars.slice(0, shown.length));
      }),
      { numRuns: 500 },
    );
  });

  it('when keys are generated, then they are distinct, 27 characters of [A-Za-z0-9_-], and Conary sends them unquoted', () => {
    const keys = new Set(Array.from({ length: 500 }, generateVirtualKey));
    assert.equal(keys.size, 500);
    for (const k of keys) {
      assert.match(k, /^[A-Za-z0-9_-]{27}$/);
      assert.equal(conaryQuote(k), k);
      assert.equal(virtualKeyProblem(k), undefined);
    }
  });

  it('when an admin chooses a key, then anything printable up to 255 characters is accepted, non-ASCII included', () => {
    for (const k of ['cust 42+a;b', 'kunde-\u00e4', 'a&b<c>"\'', '\ud83d\udd11', 'x'.repeat(255)]) assert.equal(virtualKeyProblem(k), undefined, k);
  });

  it('when an admin-chosen key is empty, too long, has a control character or outer whitespace, then it is refused', () => {
    const cases: [string, RegExp][] = [
      ['', /is empty/],
      ['x'.repeat(256), /longer than 255/],
      ['a\nb', /control character/],
      ['a\u0000b', /control character/],
      ['a\u007fb', /control character/],
      ['a\tb', /control character/],
      [' a', /leading or trailing whitespace/],
      ['a ', /leading or trailing whitespace/],
      ['\u00a0a', /leading or trailing whitespace/],
    ];
    for (const [k, why] of cases) assert.match(virtualKeyProblem(k) ?? 'accepted', why, JSON.stringify(k));
  });
});
