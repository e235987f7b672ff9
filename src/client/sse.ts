/** One server-sent event, as the WHATWG event-stream format defines it. */
export interface SseEvent {
  /** The `event:` field; `message` when the event named none. */
  type: string;
  /** The `data:` lines, joined by line feeds. */
  data: string;
  /** The last `id:` seen on the stream so far (ids persist across events), '' before any. */
  lastEventId: string;
}

/** What a stream told besides its events. */
export interface SseHandlers {
  event(event: SseEvent): void;
  /** A `retry:` field: the reconnection time the server asks for, in ms. */
  retry?(ms: number): void;
}

/** A line longer than this ends the stream as broken (a licence event is well under 70 KiB). */
export const MAX_SSE_LINE = 1024 * 1024;

/**
 * A parser of the `text/event-stream` format (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * fed the body in chunks of any size, split anywhere (inside a line, a UTF-8 sequence or a
 * CR LF pair), it calls `event` for each event dispatched by a blank line. Lines end with
 * CR LF, LF or CR; a leading byte order mark is dropped; lines starting with a colon are
 * comments; `data:` lines accumulate; `id:` persists until changed (one holding NUL is
 * ignored); `retry:` of ASCII digits only is reported; other fields are ignored; an event with
 * no data is not dispatched. An incomplete event at the end of the stream is discarded.
 */
export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  private pending = '';
  private started = false;
  /** The previous chunk ended in CR: a LF opening this one belongs to that line end. */
  private afterCr = false;
  private data: string[] = [];
  private type = '';
  private lastEventId = '';

  constructor(private readonly handlers: SseHandlers) {}

  /** Feeds a chunk. Throws when a line grows beyond MAX_SSE_LINE. */
  push(chunk: Uint8Array | string): void {
    let text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.afterCr && text.length > 0) {
      if (text.startsWith('\n')) text = text.slice(1);
      this.afterCr = false;
    }
    let from = 0;
    for (;;) {
      const end = lineEnd(text, from);
      if (end < 0) break;
      this.line(this.pending + text.slice(from, end));
      this.pending = '';
      if (text[end] === '\r') {
        if (end + 1 === text.length) {
          this.afterCr = true;
          from = end + 1;
          break;
        }
        from = text[end + 1] === '\n' ? end + 2 : end + 1;
      } else {
        from = end + 1;
      }
    }
    this.pending += text.slice(from);
    if (this.pending.length > MAX_SSE_LINE) throw new Error(`an event-stream line is longer than ${MAX_SSE_LINE} characters`);
  }

  private line(line: string): void {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.type = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.handlers.retry?.(Number(value));
        break;
      default:
      // ignored, as the format says
    }
  }

  private dispatch(): void {
    const data = this.data;
    const type = this.type;
    this.data = [];
    this.type = '';
    if (data.length === 0) return;
    this.handlers.event({ type: type || 'message', data: data.join('\n'), lastEventId: this.lastEventId });
  }
}

function lineEnd(text: string, from: number): number {
  const lf = text.indexOf('\n', from);
  const cr = text.indexOf('\r', from);
  if (lf < 0) return cr;
  if (cr < 0) return lf;
  return Math.min(lf, cr);
}
