import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseImportCsv } from '../../../src/admin/csv-import.ts';

const problems = (csv: string) => {
  const r = parseImportCsv(csv);
  assert.ok('problems' in r, 'expected problems');
  return r.problems;
};

describe('parseImportCsv', () => {
  it('reads every column, in any order, with quoting', () => {
    const r = parseImportCsv(
      'customer_ref,key,entitlement_id,allowed_cidrs,retry,cache_timeout,not_before,expires_at\n' +
        '"ACME, Inc.","k,1",3,10.0.0.0/8  192.0.2.1,false,60,2027-01-01,2028-01-01T00:00:00Z\n',
    );
    assert.ok('rows' in r);
    const [row] = r.rows;
    assert.equal(row!.line, 2);
    assert.deepEqual(
      { ...row!.input, notBefore: row!.input.notBefore?.toISOString(), expiresAt: row!.input.expiresAt?.toISOString() },
      {
        key: 'k,1',
        entitlementId: 3,
        customerRef: 'ACME, Inc.',
        allowedCidrs: ['10.0.0.0/8', '192.0.2.1/32'],
        retry: false,
        cacheTimeout: 60,
        notBefore: '2027-01-01T00:00:00.000Z',
        expiresAt: '2028-01-01T00:00:00.000Z',
      },
    );
  });

  it('names the line of every problem, counting the header as line 1', () => {
    const p = problems('key,entitlement_id,retry,cache_timeout\nok,1,,\n,1,,\nk3,x,,\nk4,1,maybe,\nk5,1,,-5\nok,2,,\n');
    assert.deepEqual(
      p.map((x) => x.line),
      [3, 4, 5, 6, 7],
    );
    assert.match(p[0]!.message, /^key: is empty/);
    assert.match(p[1]!.message, /^entitlement_id:/);
    assert.match(p[2]!.message, /^retry: must be true or false/);
    assert.match(p[3]!.message, /^cache_timeout:/);
    assert.match(p[4]!.message, /^key: the same key is on line 2/);
  });

  it('refuses unknown or missing columns, empty files and broken CSV', () => {
    assert.match(problems('key,entitlement_id,colour\nk,1,red\n')[0]!.message, /unknown column colour/);
    assert.match(problems('key\nk\n')[0]!.message, /missing column entitlement_id/);
    assert.match(problems('')[0]!.message, /no rows/);
    assert.match(problems('key,entitlement_id\n"k,1\n')[0]!.message, /not valid CSV/);
  });

  it('reports CIDR and window problems with column names', () => {
    const p = problems('key,entitlement_id,allowed_cidrs,not_before,expires_at\nk,1,10.0.0.1/8,,\nj,1,,2030-01-01,2029-01-01\n');
    assert.match(p[0]!.message, /^allowed_cidrs: '10\.0\.0\.1\/8' has host bits set/);
    assert.match(p[1]!.message, /^expires_at: notBefore must be earlier than expiresAt/);
  });
});
