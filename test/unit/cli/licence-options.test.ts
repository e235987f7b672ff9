import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_CAPACITY, parseCapacityName } from '../../../src/domain/licence.ts';
import { parseCapacities, parseInstant } from '../../../src/cli/licence-commands.ts';
import { CliError, EXIT_USAGE } from '../../../src/cli/output.ts';

/** A usage refusal (exit 2) whose one-line message matches. */
const usage = (message: RegExp) => (err: unknown) => err instanceof CliError && err.exitCode === EXIT_USAGE && message.test(err.message) && !err.message.includes('\n');

describe('entgate licence issue: option values', () => {
  it('reads a bare day as its first second (--not-before) or its last (--expires), in UTC, and a time with its zone as given', () => {
    assert.equal(parseInstant('--not-before', 'start')('2027-01-01').toISOString(), '2027-01-01T00:00:00.000Z');
    assert.equal(parseInstant('--expires', 'end')('2027-12-31').toISOString(), '2027-12-31T23:59:59.000Z');
    assert.equal(parseInstant('--expires', 'end')('2028-02-29').toISOString(), '2028-02-29T23:59:59.000Z');
    assert.equal(parseInstant('--expires', 'end')('2027-06-30T12:00:00Z').toISOString(), '2027-06-30T12:00:00.000Z');
    assert.equal(parseInstant('--expires', 'end')('2027-06-30T12:00+02:00').toISOString(), '2027-06-30T10:00:00.000Z');
    assert.equal(parseInstant('--expires', 'start')('2027-06-30T12:00:00.250-05:30').toISOString(), '2027-06-30T17:30:00.250Z');
  });

  it('refuses a time without a zone, a day that does not exist, and anything not ISO-8601', () => {
    for (const bad of ['2027-12-31T12:00', '2027-02-30', '2027-02-29', '2027-13-01', '2027-12-31T25:00:00Z', '2027-1-1', '31/12/2027', 'tomorrow', '', '2027-12-31 12:00:00Z', '2027-12-31Z', '12027-01-01']) {
      assert.throws(() => parseInstant('--expires', 'end')(bad), usage(/^--expires takes a day \(2027-12-31, in UTC\) or a time with its zone/), bad);
    }
  });

  it('reads --capacity <name>=<n>, and refuses a missing =, a name that is no capacity, a limit that is no whole number in range, a name given twice', () => {
    const parse = (...given: string[]) => parseCapacities(given, parseCapacityName, MAX_CAPACITY);
    assert.deepEqual(parse('assigned:users=50', 'feature:reports=0', `concurrent:calls=${MAX_CAPACITY}`), {
      'assigned:users': 50,
      'feature:reports': 0,
      'concurrent:calls': MAX_CAPACITY,
    });
    assert.deepEqual(parse(), {});
    const refusals: [string[], RegExp][] = [
      [['seats:5'], /^--capacity 'seats:5': give <name>=<limit>, as in assigned:users=50$/],
      [['seats=5'], /^--capacity 'seats=5': 'seats' is not concurrent:<name>, assigned:<name> or feature:<feature>/],
      [['assigned:us=ers=5'], /'assigned:us=ers' is not concurrent:/],
      [['assigned:=5'], /'assigned:' is not/],
      [['assigned:users=-1'], /^--capacity 'assigned:users=-1': the limit must be a whole number from 0 to 2147483647$/],
      [['assigned:users='], /the limit must be a whole number/],
      [['assigned:users=1.5'], /the limit must be a whole number/],
      [['assigned:users=1e3'], /the limit must be a whole number/],
      [['assigned:users= 5'], /the limit must be a whole number/],
      [[`assigned:users=${MAX_CAPACITY + 1}`], /the limit must be a whole number/],
      [['assigned:users=1', 'assigned:users=2'], /^--capacity assigned:users is given twice$/],
    ];
    for (const [given, message] of refusals) assert.throws(() => parse(...given), usage(message), given.join(' '));
  });
});
