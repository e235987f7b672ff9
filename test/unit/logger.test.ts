import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, LogOutput, logOutputOf } from '../../src/lib/logger.ts';

/** A stream that takes nothing until `release()` (a reader that does not read), or fails on `fail()`. */
function stalledOutput() {
  const pending: ((err?: Error) => void)[] = [];
  const taken: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      pending.push((err) => {
        if (!err) taken.push(chunk.toString());
        cb(err);
      });
    },
  });
  return {
    stream,
    taken,
    release: () => pending.splice(0).forEach((f) => f()),
    // As a socket whose peer went away: the write in progress fails, the stream errors.
    fail: (code: string) => pending.splice(0).forEach((f) => f(Object.assign(new Error(code), { code }))),
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('LogOutput', () => {
  it('keeps at most its bound for an output that does not take lines, and counts what it drops', () => {
    const out = stalledOutput();
    const log = new LogOutput([{ name: 'stdout', stream: out.stream }], 100);
    for (let i = 0; i < 20; i++) log.write(`${'x'.repeat(19)}\n`);
    const stats = log.stats();
    assert.equal(stats.output, 'stdout');
    // Lines are taken while 100 bytes or fewer wait: 6 lines of 20 (the 6th makes 120).
    assert.equal(stats.buffered, 120);
    assert.equal(stats.dropped, 14);
  });

  it('gives up a failed output for the next one, says so there, and counts the lines lost with it', async () => {
    const stdout = stalledOutput();
    const stderr = stalledOutput();
    const log = new LogOutput([
      { name: 'stdout', stream: stdout.stream },
      { name: 'stderr', stream: stderr.stream },
    ]);
    log.write('one\n');
    log.write('two\n');
    stdout.fail('EPIPE');
    await tick();
    log.write('three\n');
    stderr.release(); // the note
    stderr.release(); // 'three'
    const stats = log.stats();
    assert.equal(stats.output, 'stderr');
    assert.deepEqual(stats.failures, ['stdout: EPIPE']);
    assert.equal(stats.dropped, 2);
    assert.equal(stderr.taken.length, 2);
    assert.match(stderr.taken[0]!, /"msg":"log output stdout failed: logging to stderr"/);
    assert.equal(stderr.taken[1], 'three\n');

    log.write('four\n');
    stderr.fail('EPIPE');
    await tick();
    log.write('five\n');
    assert.equal(log.stats().output, 'none');
    assert.deepEqual(log.stats().failures, ['stdout: EPIPE', 'stderr: EPIPE']);
    assert.equal(log.stats().dropped, 4);
  });

  it('waits for a slow output to take its lines, but never past its bound', async () => {
    const out = stalledOutput();
    const log = new LogOutput([{ name: 'stdout', stream: out.stream }]);
    log.write('line\n');
    let started = Date.now();
    await log.flushed(100);
    assert.ok(Date.now() - started >= 90);
    setTimeout(out.release, 30);
    started = Date.now();
    await log.flushed(5000);
    assert.ok(Date.now() - started < 1000);
    assert.deepEqual(out.taken, ['line\n']);
  });

  it('is what createLogger writes to by default, children included', () => {
    const logger = createLogger('silent');
    assert.ok(logOutputOf(logger) instanceof LogOutput);
    assert.equal(logOutputOf(logger.child({ a: 1 })), logOutputOf(logger));
    assert.equal(logOutputOf(createLogger('info', { write: () => {} })), undefined);
  });
});
