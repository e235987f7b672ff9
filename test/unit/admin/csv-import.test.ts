import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseImportCsv, readImportCsv, IMPORT_COLUMNS, type ImportItem, type ImportProblem, type ImportRow } from '../../../src/admin/csv-import.ts';

function rows(csv: string): ImportRow[] {
  const r = parseImportCsv(csv);
  assert.ok('rows' in r, `expected rows, got ${JSON.stringify(r)}`);
  return r.rows;
}

function problems(csv: string): ImportProblem[] {
  const r = parseImportCsv(csv);
  assert.ok('problems' in r, `expected problems, got ${JSON.stringify(r)}`);
  return r.problems;
}

describe('parseImportCsv: reading', () => {
  it('when every column is given, in any order and with quoting, then each row is read with its line number', () => {
    const [row] = rows(
      'customer_ref,key,entitlement_id,allowed_cidrs,retry,cache_timeout,not_before,expires_at\n' +
        '"ACME, Inc.","k,1",3,10.0.0.0/8  192.0.2.1,false,60,2027-01-01,2028-01-01T00:00:00Z\n',
    );
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

  it('when only key and entitlement_id are given, or the others are empty, then the others are left unset', () => {
    for (const csv of ['key,entitlement_id\nk,1\n', `${IMPORT_COLUMNS.join(',')}\nk,1,,,,,,\n`]) {
      const [row] = rows(csv);
      assert.deepEqual(
        Object.fromEntries(Object.entries(row!.input).filter(([, v]) => v !== undefined)),
        { key: 'k', entitlementId: 1 },
        csv,
      );
    }
  });

  it('when the file has a byte-order mark or CRLF line ends, then it is read the same', () => {
    const read = rows('\ufeffkey,entitlement_id,retry,cache_timeout\r\nk1,1,true,\r\nk2,2,false,60\r\n');
    assert.deepEqual(
      read.map((r) => [r.line, r.input.key, r.input.entitlementId, r.input.retry]),
      [
        [2, 'k1', 1, true],
        [3, 'k2', 2, false],
      ],
    );
  });

  it('when retry is true or false, then it is a boolean; cache_timeout 0 is kept', () => {
    const read = rows('key,entitlement_id,retry,cache_timeout\na,1,true,0\nb,1,false,31536000\n');
    assert.deepEqual(read.map((r) => [r.input.retry, r.input.cacheTimeout]), [[true, 0], [false, 31_536_000]]);
  });

  it('when retry is false without a cache_timeout of 1 or more, then the line is refused, saying why', () => {
    const p = problems('key,entitlement_id,retry,cache_timeout\na,1,false,\nb,1,false,0\nc,1,false,1\n');
    assert.deepEqual(p.map((x) => x.line), [2, 3]);
    for (const x of p) assert.match(x.message, /^retry: retry false needs a cacheTimeout of 1 second or more/);
  });
});

describe('parseImportCsv: line numbers', () => {
  it('when rows have problems, then each is reported with its line, the header being line 1', () => {
    const p = problems('key,entitlement_id\nok,1\n,1\nk3,x\nok2,2\nk5,0\n');
    assert.deepEqual(p.map((x) => x.line), [3, 4, 6]);
  });

  it('when blank lines come between rows, then they still count as lines', () => {
    assert.deepEqual(problems('key,entitlement_id\n\n\na,1\n\nb,x\n').map((x) => x.line), [6]);
  });

  it('when the file has CRLF line ends, then line numbers are the same as with LF', () => {
    assert.deepEqual(problems('key,entitlement_id\r\na,1\r\nb,x\r\n').map((x) => x.line), [3]);
  });

  it('when a quoted field spans lines, then later rows keep their own line numbers', () => {
    assert.deepEqual(problems('key,entitlement_id,customer_ref\na,1,"two\nlines"\nb,x,\n').map((x) => x.line), [4]);
  });

  it('when a key appears again, then the later line is refused naming the earlier line', () => {
    const p = problems('key,entitlement_id\na,1\nb,1\na,2\na,3\n');
    assert.deepEqual(p, [
      { line: 4, message: 'key: the same key is on line 2' },
      { line: 5, message: 'key: the same key is on line 2' },
    ]);
  });

  it('when several rows are bad, then every bad row is reported, not only the first', () => {
    assert.equal(problems('key,entitlement_id,retry\na,x,\nb,1,maybe\nc,1,\n d,1,\n').length, 3);
  });
});

describe('parseImportCsv: columns', () => {
  it('when a column is unknown, then line 1 is refused naming it and listing the known columns', () => {
    const p = problems('key,entitlement_id,colour\nk,1,red\n');
    assert.deepEqual(p, [{ line: 1, message: `unknown column colour; known: ${IMPORT_COLUMNS.join(', ')}` }]);
  });

  it('when column names differ in case, then they are unknown', () => {
    assert.match(problems('Key,entitlement_id\nk,1\n')[0]!.message, /^unknown column Key;/);
  });

  it('when key or entitlement_id is missing, then line 1 is refused naming the missing column', () => {
    assert.deepEqual(problems('key\nk\n'), [{ line: 1, message: 'missing column entitlement_id' }]);
    assert.deepEqual(problems('entitlement_id,retry\n1,true\n'), [{ line: 1, message: 'missing column key' }]);
  });

  it('when the file is empty or has only a header, then it is refused: no rows', () => {
    for (const csv of ['', 'key,entitlement_id\n', '\n\n']) assert.match(problems(csv)[0]!.message, /^no rows/, JSON.stringify(csv));
  });

  it('when a row has more or fewer fields than the header, or a quote is left open, then it is not valid CSV, with the line', () => {
    assert.deepEqual(problems('key,entitlement_id\na,1,extra\n').map((p) => [p.line, /^not valid CSV/.test(p.message)]), [[2, true]]);
    assert.deepEqual(problems('key,entitlement_id\na,1\nb\n').map((p) => [p.line, /^not valid CSV/.test(p.message)]), [[3, true]]);
    assert.match(problems('key,entitlement_id\n"k,1\n')[0]!.message, /^not valid CSV/);
  });
});

describe('parseImportCsv: values', () => {
  const one = (header: string, row: string) => {
    const p = problems(`${header}\n${row}\n`);
    assert.equal(p.length, 1, JSON.stringify(p));
    assert.equal(p[0]!.line, 2);
    return p[0]!.message;
  };

  it('when the key is empty, has a control character or outer spaces, or is too long, then the key column is named', () => {
    assert.match(one('key,entitlement_id', ',1'), /^key: is empty/);
    assert.match(one('key,entitlement_id', '"a\tb",1'), /^key: contains a control character/);
    assert.match(one('key,entitlement_id', ' a,1'), /^key: has leading or trailing whitespace/);
    assert.match(one('key,entitlement_id', `${'k'.repeat(256)},1`), /^key: is longer than 255/);
  });

  it('when entitlement_id is not a positive whole number, then entitlement_id is named', () => {
    for (const id of ['x', '0', '-1', '1.5', '']) assert.match(one('key,entitlement_id', `k,${id}`), /^entitlement_id: /, id);
  });

  it(
    'when entitlement_id is not written in plain decimal digits, then it is refused rather than read as another number',
    () => {
      for (const id of ['0x10', '1e1', ' 7']) assert.match(one('key,entitlement_id', `k,${id}`), /^entitlement_id: /, id);
    },
  );

  it('when retry is not exactly true or false, then retry is named', () => {
    for (const v of ['yes', 'TRUE', '1', 'False']) assert.equal(one('key,entitlement_id,retry', `k,1,${v}`), 'retry: must be true or false', v);
  });

  it('when cache_timeout is not a whole number of seconds up to a year, then cache_timeout is named', () => {
    for (const v of ['-5', '1.5', 'abc', '31536001', '1e3']) assert.match(one('key,entitlement_id,cache_timeout', `k,1,${v}`), /^cache_timeout: /, v);
  });

  it('when a time is not ISO-8601 with a zone or a date, then its column is named', () => {
    assert.match(one('key,entitlement_id,expires_at', 'k,1,tomorrow'), /^expires_at: must be an ISO-8601 time/);
    assert.match(one('key,entitlement_id,not_before', 'k,1,2027-01-01T00:00:00'), /^not_before: must be an ISO-8601 time/);
  });

  it('when not_before is not earlier than expires_at, then expires_at is named', () => {
    assert.match(one('key,entitlement_id,not_before,expires_at', 'k,1,2030-01-01,2029-01-01'), /^expires_at: notBefore must be earlier than expiresAt/);
    assert.match(one('key,entitlement_id,not_before,expires_at', 'k,1,2030-01-01,2030-01-01'), /^expires_at: /);
  });

  it('when a CIDR is invalid or has host bits set, then allowed_cidrs is named with the reason', () => {
    assert.match(one('key,entitlement_id,allowed_cidrs', 'k,1,10.0.0.0/8 10.0.0.1/8'), /^allowed_cidrs: '10\.0\.0\.1\/8' has host bits set; did you mean 10\.0\.0\.0\/8\?/);
    assert.match(one('key,entitlement_id,allowed_cidrs', 'k,1,nonsense'), /^allowed_cidrs: 'nonsense' is not an IP address/);
  });

  it('when customer_ref is longer than 255 characters, then customer_ref is named', () => {
    assert.match(one('key,entitlement_id,customer_ref', `k,1,${'c'.repeat(256)}`), /^customer_ref: /);
  });
});

describe('readImportCsv: the streaming reader the server uses', () => {
  const read = async (csv: string | Buffer) => {
    const items: ImportItem[] = [];
    for await (const item of readImportCsv(Buffer.isBuffer(csv) ? csv : Buffer.from(csv))) items.push(item);
    return items;
  };

  it('when given the same files as parseImportCsv, then it finds the same rows and problems, with the same lines', async () => {
    const files = [
      'customer_ref,key,entitlement_id,allowed_cidrs,retry,cache_timeout,not_before,expires_at\n"ACME, Inc.","k,1",3,10.0.0.0/8  192.0.2.1,false,60,2027-01-01,2028-01-01T00:00:00Z\n',
      '\ufeffkey,entitlement_id,retry,cache_timeout\r\nk1,1,true,\r\nk2,2,false,60\r\n',
      'key,entitlement_id,retry,cache_timeout\na,1,false,\nb,1,false,0\nc,1,false,1\n',
      'key,entitlement_id\nok,1\n,1\nk3,x\nok2,2\nk5,0\n',
      'key,entitlement_id\n\n\na,1\n\nb,x\n',
      'key,entitlement_id,customer_ref\na,1,"two\nlines"\nb,x,\n',
      'key,entitlement_id,retry\na,x,\nb,1,maybe\nc,1,\n d,1,\n',
      'key,entitlement_id,colour\nk,1,red\n',
      'key\nk\n',
      '',
      'key,entitlement_id\n',
      '\n\n',
      'key,entitlement_id\na,1,extra\n',
      'key,entitlement_id\na,1\nb\n',
      'key,entitlement_id\n"k,1\n',
      `key,entitlement_id,customer_ref\nk,1,${'c'.repeat(256)}\n`,
    ];
    for (const csv of files) {
      const whole = parseImportCsv(csv);
      const items = await read(csv);
      const problems = items.filter((i): i is ImportProblem => 'message' in i);
      if ('problems' in whole) assert.deepEqual(problems, whole.problems, JSON.stringify(csv));
      else assert.deepEqual(items, whole.rows, JSON.stringify(csv));
    }
  });

  it('when a key appears again, then the reader leaves it to the writer (which sees the store)', async () => {
    assert.deepEqual((await read('key,entitlement_id\na,1\na,1\n')).map((i) => i.line), [2, 3]);
  });

  it('when a large file has a bad row at its end, then every row is read in order and the bad one names its line', async () => {
    const rows = 50_000;
    const csv = ['key,entitlement_id', ...Array.from({ length: rows }, (_, i) => `key-${i},${(i % 7) + 1}`), 'last,x'].join('\n');
    const items = await read(csv);
    assert.equal(items.length, rows + 1);
    assert.deepEqual(items.slice(0, 2).map((i) => i.line), [2, 3]);
    assert.deepEqual(items.at(-1), { line: rows + 2, message: 'entitlement_id: Invalid input' });
  });

  it('while it reads a large file, then the event loop keeps turning (other requests share the thread)', async () => {
    const csv = ['key,entitlement_id', ...Array.from({ length: 50_000 }, (_, i) => `key-${i},1`)].join('\n');
    let turns = 0;
    let reading = true;
    const spin = () => {
      turns++;
      if (reading) setImmediate(spin);
    };
    setImmediate(spin);
    await read(csv);
    reading = false;
    // Without a turn between slices, setImmediate could not run at all until the end.
    assert.ok(turns > 10, `the event loop turned ${turns} times`);
  });
});
