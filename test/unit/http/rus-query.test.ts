import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCheckQuery } from '../../../src/http/rus-query.ts';

const ok = (q: string) => {
  const r = parseCheckQuery(q);
  assert.ok(r.ok, `expected ${q} to parse, got ${!r.ok && r.reason}`);
  return r.request;
};
const refused = (q: string, reason: RegExp) => {
  const r = parseCheckQuery(q);
  assert.equal(r.ok, false, `expected ${q} to be refused`);
  if (!r.ok) assert.match(r.reason, reason);
};

describe('parseCheckQuery', () => {
  it('reads what Conary sends, separated by ;', () => {
    assert.deepEqual(ok('server=rm.example.com;class=myProduct;key=w45tv-23xda;remote_ip=10.0.0.1'), {
      server: 'rm.example.com',
      class: 'myProduct',
      key: 'w45tv-23xda',
      remoteIp: '10.0.0.1',
    });
  });

  it('accepts & and mixed separators, and empty segments', () => {
    assert.deepEqual(ok('server=s&key=k'), { server: 's', key: 'k' });
    assert.deepEqual(ok(';;server=s&;key=k;'), { server: 's', key: 'k' });
  });

  it('percent-decodes names and values as UTF-8, keeping raw + and /', () => {
    assert.deepEqual(ok('ser%76er=s;key=a%3Bb%26c%20d%2Be'), { server: 's', key: 'a;b&c d+e' });
    assert.equal(ok('server=s;key=a+b/c').key, 'a+b/c');
    assert.equal(ok('server=s;key=%E2%82%AC%F0%9F%94%91').key, '€🔑');
  });

  it('ignores unknown parameters, even repeated ones, and parameters without =', () => {
    assert.deepEqual(ok('x=1;x=2;server=s;flag;key=k;Key=K'), { server: 's', key: 'k' });
  });

  it('takes an empty class as absent', () => {
    assert.deepEqual(ok('server=s;class=;key=k'), { server: 's', key: 'k' });
  });

  it('requires server and key, non-empty', () => {
    refused('key=k', /server is required/);
    refused('server=;key=k', /server is required/);
    refused('server=s', /key is required/);
    refused('server=s;key', /key is required/);
    refused('', /server is required/);
  });

  it('refuses a known parameter given twice, even when equal or empty', () => {
    refused('server=s;key=k;key=k', /key is repeated/);
    refused('server=s;server=s;key=k', /server is repeated/);
    refused('server=s;class=a;class=;key=k', /class is repeated/);
    refused('server=s;key=k;remote_ip=1.1.1.1&remote_ip=1.1.1.1', /remote_ip is repeated/);
    refused('server=s;key=k;k%65y=j', /key is repeated/);
  });

  it('allows 255 characters and refuses 256, counted after decoding', () => {
    assert.equal(ok(`server=s;key=${'k'.repeat(255)}`).key.length, 255);
    refused(`server=s;key=${'k'.repeat(256)}`, /key is longer than 255/);
    assert.equal(ok(`server=s;key=${'%41'.repeat(255)}`).key.length, 255);
    refused(`server=${'s'.repeat(256)};key=k`, /server is longer than 255/);
    refused(`server=s;class=${'c'.repeat(256)};key=k`, /class is longer than 255/);
  });

  it('accepts IPv4, IPv6 and IPv4-mapped remote_ip; refuses anything else', () => {
    for (const ip of ['10.0.0.1', '255.255.255.255', '::1', '2001:db8::1', '::ffff:10.0.0.1', 'fe80::1%25eth0'.replace('%25eth0', '')]) {
      assert.equal(ok(`server=s;key=k;remote_ip=${ip}`).remoteIp, ip);
    }
    for (const ip of ['', '1.2.3', '999.1.1.1', '1.2.3.4.5', 'abc', '0x7f.0.0.1', '10.0.0.1/8', ':::', '1.2.3.4 ']) {
      refused(`server=s;key=k;remote_ip=${encodeURIComponent(ip)}`, /remote_ip is not an IP address/);
    }
  });

  it('refuses malformed escapes and invalid UTF-8', () => {
    for (const bad of ['%C0%AF', '%FF', '%E2%82', '%G1', '%', 'a%2', '%ED%A0%80', '%F4%90%80%80']) {
      refused(`server=s;key=${bad}`, /not valid percent-encoded UTF-8/);
    }
    refused('server=s;key=k;%FF=1', /parameter name is not valid/);
  });

  it('refuses raw lone surrogates', () => {
    refused('server=s;key=a\ud800b', /not valid percent-encoded UTF-8/);
    assert.equal(ok('server=s;key=a\ud83d\udd11').key, 'a🔑');
  });
});
