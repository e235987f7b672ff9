import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SSE_LINE, SseParser, type SseEvent } from '../../../src/client/sse.ts';

const STREAM =
  '\uFEFF: a comment\r\n' +
  'retry: 2000\n' +
  'retry: soon\n\n' +
  'id: 7\nevent: licence\ndata: {"seq": 7,\ndata:  "note": "café ✓"}\n\n' +
  'data:no space\r\rid\r\n' +
  'data\n\n' +
  'event: ignored-without-data\nid: 8\n\n' +
  'id: bad\u0000id\nfield: unknown\ndata: last\n\n' +
  'data: never dispatched';

const EXPECTED: SseEvent[] = [
  { type: 'licence', data: '{"seq": 7,\n "note": "café ✓"}', lastEventId: '7' },
  { type: 'message', data: 'no space', lastEventId: '7' },
  { type: 'message', data: '', lastEventId: '' },
  { type: 'message', data: 'last', lastEventId: '8' },
];

function parse(chunks: (string | Uint8Array)[]): { events: SseEvent[]; retries: number[] } {
  const events: SseEvent[] = [];
  const retries: number[] = [];
  const parser = new SseParser({ event: (e) => events.push(e), retry: (ms) => retries.push(ms) });
  for (const chunk of chunks) parser.push(chunk);
  return { events, retries };
}

test('the event-stream format: fields, comments, line ends, persistent ids, retry', () => {
  assert.deepEqual(parse([STREAM]), { events: EXPECTED, retries: [2000] });
});

test('the same events whatever the chunking: one character, or one UTF-8 byte, at a time', () => {
  assert.deepEqual(parse([...STREAM]), { events: EXPECTED, retries: [2000] });
  const bytes = Buffer.from(STREAM, 'utf8');
  assert.deepEqual(parse([...bytes].map((b) => Uint8Array.of(b))), { events: EXPECTED, retries: [2000] });
  // A CR LF split between chunks is one line end, not two (which would dispatch early).
  assert.deepEqual(parse(['data: a\r', '\ndata: b\r', '\n\r', '\n']).events, [{ type: 'message', data: 'a\nb', lastEventId: '' }]);
});

test('a line longer than the bound ends the stream', () => {
  const parser = new SseParser({ event: () => {} });
  assert.throws(() => parser.push(`data: ${'x'.repeat(MAX_SSE_LINE)}`), /longer than/);
});
