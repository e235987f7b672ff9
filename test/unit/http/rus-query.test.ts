import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { conaryQuote } from '../../helpers/conary-judge.ts';
import { parseCheckQuery } from '../../../src/http/rus-query.ts';
import type { CheckRequest } from '../../../src/domain/types.ts';

function parsed(query: string): CheckRequest {
  const r = parseCheckQuery(query);
  assert.ok(r.ok, `expected ${JSON.stringify(query)} to parse, got: ${r.ok ? '' : r.reason}`);
  return r.request;
}

function refused(query: string, reason: string | RegExp): void {
  const r = parseCheckQuery(query);
  assert.equal(r.ok, false, `expected ${JSON.stringify(query)} to be refused, got ${JSON.stringify(r)}`);
  if (r.ok) return;
  if (typeof reason === 'string') assert.equal(r.reason, reason, query);
  else assert.match(r.reason, reason, query);
  assert.doesNotMatch(r.reason, /[\r\n]/, 'a reason is one line');
}

describe('parseCheckQuery: separators', () => {
  it("when Conary's query arrives (; separated), then server, class, key and remote_ip are read", () => {
    assert.deepEqual(parsed('server=rm.example.com;class=myProduct;key=w45tv-23xda-e4dd2-11zgv;remote_ip=10.0.0.1'), {
      server: 'rm.example.com',
      class: 'myProduct',
      key: 'w45tv-23xda-e4dd2-11zgv',
      remoteIp: '10.0.0.1',
    });
  });

  it('when parameters are separated by &, or by a mix of ; and &, then they are read the same', () => {
    const want = { server: 's', class: 'c', key: 'k', remoteIp: '::1' };
    assert.deepEqual(parsed('server=s&class=c&key=k&remote_ip=::1'), want);
    assert.deepEqual(parsed('server=s;class=c&key=k;remote_ip=::1'), want);
  });

  it('when segments are empty (leading, trailing or doubled separators), then they are skipped', () => {
    assert.deepEqual(parsed(';;server=s&;&key=k;&'), { server: 's', key: 'k' });
  });

  it('when parameters come in any order, then the result is the same', () => {
    assert.deepEqual(parsed('remote_ip=10.0.0.1;key=k;class=c;server=s'), { server: 's', class: 'c', key: 'k', remoteIp: '10.0.0.1' });
  });

  it('when the request carries no class and no remote_ip, then the result has neither property', () => {
    const r = parsed('server=s;key=k');
    assert.deepEqual(Object.keys(r).sort(), ['key', 'server']);
  });
});

describe('parseCheckQuery: percent-decoding', () => {
  it('when a value holds %3B or %26, then it decodes to ; or & inside the value and does not split it', () => {
    assert.deepEqual(parsed('server=s;key=a%3Bb%26c'), { server: 's', key: 'a;b&c' });
    assert.equal(parsed('server=s;key=a%3bb').key, 'a;b', 'lower-case hex');
  });

  it('when a value holds %2B, then it is +; a raw + stays + (never a space)', () => {
    assert.equal(parsed('server=s;key=a%2Bb').key, 'a+b');
    assert.equal(parsed('server=s;key=a+b').key, 'a+b');
    assert.equal(parsed('server=s;key=a%20b').key, 'a b');
  });

  it('when a value holds a raw / (urllib.quote leaves it) or %2F, then it is /', () => {
    assert.equal(parsed('server=s;key=a/b%2Fc').key, 'a/b/c');
  });

  it('when a value holds a raw =, then it is part of the value (only the first = separates)', () => {
    assert.equal(parsed('server=s;key=a=b==').key, 'a=b==');
  });

  it('when Conary quotes every punctuation character, then each decodes back', () => {
    const punct = "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \"";
    const quoted = [...Buffer.from(punct)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
    assert.equal(parsed(`server=s;key=${quoted}`).key, punct);
  });

  it('when a value is percent-encoded UTF-8 (2 and 4 bytes), then it decodes to those characters', () => {
    assert.equal(parsed('server=s;key=kunde-%C3%A4%E2%82%AC%F0%9F%94%91').key, 'kunde-ä€🔑');
  });

  it('when a parameter name is percent-encoded, then it is decoded before it is recognised', () => {
    assert.deepEqual(parsed('ser%76er=s;%6Bey=k;remote%5Fip=10.0.0.1'), { server: 's', key: 'k', remoteIp: '10.0.0.1' });
  });

  it('when a parameter name differs in case (KEY, Server), then it is an unknown parameter', () => {
    refused('Server=s;KEY=k', 'parameter server is required');
    refused('server=s;KEY=k', 'parameter key is required');
  });
});

describe('parseCheckQuery: unknown and repeated parameters', () => {
  it('when unknown parameters appear, repeated or without =, then they are ignored', () => {
    assert.deepEqual(parsed('x=1;x=2;server=s;flag;key=k;version=2'), { server: 's', key: 'k' });
  });

  it('when an unknown parameter has a value that is not valid UTF-8, then it is still ignored (only known values are decoded)', () => {
    assert.deepEqual(parsed('x=%FF;y=%G1;server=s;key=k'), { server: 's', key: 'k' });
  });

  it('when a parameter name itself is not valid percent-encoded UTF-8, then the query is refused', () => {
    refused('server=s;key=k;%FF=1', 'a parameter name is not valid percent-encoded UTF-8');
    refused('server=s;key=k;%G1', 'a parameter name is not valid percent-encoded UTF-8');
  });

  it('when a known parameter is given twice, even with equal values, then the query is refused', () => {
    refused('server=s;key=k;key=k', 'parameter key is repeated');
    refused('server=s;server=s;key=k', 'parameter server is repeated');
    refused('server=s;class=a;class=b;key=k', 'parameter class is repeated');
    refused('server=s;key=k;remote_ip=1.1.1.1&remote_ip=1.1.1.1', 'parameter remote_ip is repeated');
  });

  it('when the repeat is empty, has no =, or is spelt with escapes, then it still counts as a repeat', () => {
    refused('server=s;class=a;class=;key=k', 'parameter class is repeated');
    refused('server=s;key;key=k', 'parameter key is repeated');
    refused('server=s;key=k;k%65y=j', 'parameter key is repeated');
  });
});

describe('parseCheckQuery: required values', () => {
  it('when server is missing, empty or has no =, then the query is refused', () => {
    refused('key=k', 'parameter server is required');
    refused('server=;key=k', 'parameter server is required');
    refused('server;key=k', 'parameter server is required');
  });

  it('when key is missing, empty or has no =, then the query is refused', () => {
    refused('server=s', 'parameter key is required');
    refused('server=s;key=', 'parameter key is required');
    refused('server=s;key', 'parameter key is required');
  });

  it('when the query is empty or only separators, then server is reported missing first', () => {
    refused('', 'parameter server is required');
    refused(';&;', 'parameter server is required');
  });

  it('when class is empty or has no =, then it is taken as absent', () => {
    for (const q of ['server=s;class=;key=k', 'server=s;class;key=k']) {
      const r = parsed(q);
      assert.deepEqual(r, { server: 's', key: 'k' }, q);
      assert.equal('class' in r, false);
    }
  });

  it('when class is a single space (%20), then it is kept: only the empty class is absent', () => {
    assert.equal(parsed('server=s;class=%20;key=k').class, ' ');
  });
});

describe('parseCheckQuery: lengths, counted after decoding', () => {
  it('when server, class or key is 255 characters, then it is accepted; 256, then refused', () => {
    for (const name of ['server', 'class', 'key'] as const) {
      const other = (n: string) => (n === name ? '' : `;${n}=x`);
      const base = `${other('server')}${other('key')}`;
      assert.equal(parsed(`${name}=${'a'.repeat(255)}${base}`)[name]?.length, 255, name);
      refused(`${name}=${'a'.repeat(256)}${base}`, `parameter ${name} is longer than 255 characters`);
    }
  });

  it('when the value is percent-encoded, then its decoded length counts, not its encoded length', () => {
    assert.equal(parsed(`server=s;key=${'%41'.repeat(255)}`).key, 'A'.repeat(255));
    refused(`server=s;key=${'%41'.repeat(256)}`, 'parameter key is longer than 255 characters');
    refused(`server=s;key=${'a'.repeat(255)}%41`, 'parameter key is longer than 255 characters');
  });

  it('when a value is 255 two-byte characters (510 bytes encoded), then it is accepted', () => {
    assert.equal(parsed(`server=s;key=${'%C3%A9'.repeat(255)}`).key, 'é'.repeat(255));
    refused(`server=s;key=${'%C3%A9'.repeat(256)}`, 'parameter key is longer than 255 characters');
  });

  it(
    'when a value is 128 characters outside the BMP, then it is accepted (128 characters, not 256 UTF-16 code units)',
    () => {
      const r = parseCheckQuery(`server=s;key=${'%F0%9F%94%91'.repeat(128)}`);
      assert.deepEqual(r.ok ? Array.from(r.request.key).length : r.reason, 128);
    },
  );
});

describe('parseCheckQuery: remote_ip', () => {
  it('when remote_ip is IPv4, IPv6 or IPv4-mapped IPv6 (raw or quoted as Conary does), then it is kept as given', () => {
    const ips = ['10.0.0.1', '0.0.0.0', '255.255.255.255', '::1', '::', '2001:db8::1', '2001:DB8:0:0:0:0:0:1', '::ffff:10.0.0.1', '::ffff:a00:1', 'fe80::1'];
    for (const ip of ips) {
      assert.equal(parsed(`server=s;key=k;remote_ip=${ip}`).remoteIp, ip, ip);
      assert.equal(parsed(`server=s;key=k;remote_ip=${ip.replaceAll(':', '%3A')}`).remoteIp, ip, `${ip} quoted`);
    }
  });

  it('when remote_ip holds no address (not an IPv4 four-part dotted decimal nor an IPv6 address, or empty), then it is taken as absent, never refused', () => {
    const bad = [
      '1.2.3',
      '999.1.1.1',
      '256.0.0.1',
      '1.2.3.4.5',
      'abc',
      '',
      '010.1.1.1', // a leading zero reads as octal to some parsers: no address
      '0x7f.0.0.1',
      '2130706433',
      '10.0.0.1/8',
      '1.2.3.4 ',
      ' 1.2.3.4',
      ':::',
      '1::2::3',
      '12345::',
      'localhost',
      `${'1:'.repeat(40)}1`,
      '1.2.3.4:',
      '1.2.3.4:123456',
      '[::1',
      '[::1]:',
      '[nope]:80',
      '999.0.0.1:80',
    ];
    for (const ip of bad) {
      const request = parsed(`server=s;key=k;remote_ip=${encodeURIComponent(ip)}`);
      assert.equal('remoteIp' in request, false, JSON.stringify(ip));
    }
  });

  it('when remote_ip carries a port behind a proxy (203.0.113.9:5555, [2001:db8::1]:5555) or brackets, then the address is taken', () => {
    const cases = {
      '203.0.113.9:5555': '203.0.113.9',
      '203.0.113.9:0': '203.0.113.9',
      '[2001:db8::1]:5555': '2001:db8::1',
      '[2001:db8::1]': '2001:db8::1',
      '[::ffff:10.0.0.1]:80': '::ffff:10.0.0.1',
      '[1.2.3.4]:80': '1.2.3.4', // brackets are for IPv6, but the address is plain
    };
    for (const [given, address] of Object.entries(cases)) {
      assert.equal(parsed(`server=s;key=k;remote_ip=${given}`).remoteIp, address, given);
      assert.equal(parsed(`server=s;key=k;remote_ip=${conaryQuote(given)}`).remoteIp, address, `${given} quoted as Conary quotes it`);
    }
    // An IPv6 address without brackets is read whole: its last group is not a port.
    assert.equal(parsed('server=s;key=k;remote_ip=2001:db8::1:5555').remoteIp, '2001:db8::1:5555');
  });

  it('when remote_ip has no =, then it is present and empty, and taken as absent', () => {
    assert.equal('remoteIp' in parsed('server=s;key=k;remote_ip'), false);
  });
});

describe('parseCheckQuery: invalid percent-encoding and UTF-8', () => {
  const BAD = {
    'overlong /': '%C0%AF',
    'byte FF': '%FF',
    'truncated 3-byte sequence': '%E2%82',
    'bad escape': '%G1',
    'lone %': '%',
    'short escape': 'a%2',
    'encoded lone surrogate': '%ED%A0%80',
    'beyond U+10FFFF': '%F4%90%80%80',
    'lone continuation byte': '%80',
    'lead byte without continuation': '%C3%28',
    'five-byte form': '%F8%88%80%80%80',
  };

  for (const [what, bad] of Object.entries(BAD)) {
    it(`when a known value holds ${what} (${bad}), then the query is refused naming the parameter`, () => {
      refused(`server=s;key=${bad}`, 'parameter key is not valid percent-encoded UTF-8');
      refused(`server=${bad};key=k`, 'parameter server is not valid percent-encoded UTF-8');
      refused(`server=s;class=${bad};key=k`, 'parameter class is not valid percent-encoded UTF-8');
      refused(`server=s;key=k;remote_ip=${bad}`, 'parameter remote_ip is not valid percent-encoded UTF-8');
    });
  }

  it('when a raw value carries a lone surrogate, then the query is refused; a raw surrogate pair is accepted', () => {
    refused('server=s;key=a\ud800b', 'parameter key is not valid percent-encoded UTF-8');
    refused('server=s;key=a\udc00', 'parameter key is not valid percent-encoded UTF-8');
    assert.equal(parsed('server=s;key=a\ud83d\udd11').key, 'a🔑');
  });

  it(
    'when a value mixes escapes with a raw lone surrogate, then the query is refused as well',
    () => {
      refused('server=s;key=%41\ud800', 'parameter key is not valid percent-encoded UTF-8');
    },
  );
});
