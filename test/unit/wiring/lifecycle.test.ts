import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Lifecycle, withLifecycle } from '../../../src/wiring/lifecycle.ts';

const silent = pino({ level: 'silent' });

test('closes in reverse order of acquisition, once', async () => {
  const life = new Lifecycle(silent);
  const closed: string[] = [];
  life.add('database', () => void closed.push('database'));
  const bus = await life.acquire('bus', () => 'bus', (name) => void closed.push(name));
  assert.equal(bus, 'bus');
  life.add('listener', async () => {
    await new Promise((r) => setTimeout(r, 5));
    closed.push('listener');
  });
  assert.deepEqual(life.held, ['database', 'bus', 'listener']);
  await Promise.all([life.close(), life.close()]);
  await life.close();
  assert.deepEqual(closed, ['listener', 'bus', 'database']);
  assert.deepEqual(life.held, []);
});

test('a closer that fails does not stop the others', async () => {
  const life = new Lifecycle(silent);
  const closed: string[] = [];
  life.add('a', () => void closed.push('a'));
  life.add('b', () => {
    throw new Error('stuck');
  });
  life.add('c', async () => {
    closed.push('c');
    throw new Error('also stuck');
  });
  await life.close();
  assert.deepEqual(closed, ['c', 'a']);
});

test('nothing may be added once closing; what was acquired then is closed at once', async () => {
  const life = new Lifecycle(silent);
  const closing = life.close();
  assert.throws(() => life.add('late', () => {}), /while the service was closing/);
  let closedLate = false;
  await assert.rejects(
    life.acquire('late', () => 1, () => {
      closedLate = true;
    }),
    /while the service was closing/,
  );
  assert.equal(closedLate, true);
  await closing;
});

test('withLifecycle closes what a failed start acquired, and rethrows', async () => {
  const closed: string[] = [];
  await assert.rejects(
    withLifecycle(silent, async (life) => {
      life.add('database', () => void closed.push('database'));
      await life.acquire('listener', () => 'l', () => void closed.push('listener'));
      throw new Error('port taken');
    }),
    /port taken/,
  );
  assert.deepEqual(closed, ['listener', 'database']);
  // A start that succeeds keeps what it holds.
  const kept: string[] = [];
  const life = await withLifecycle(silent, async (l) => {
    l.add('database', () => void kept.push('database'));
    return l;
  });
  assert.deepEqual(kept, []);
  await life.close();
  assert.deepEqual(kept, ['database']);
});
