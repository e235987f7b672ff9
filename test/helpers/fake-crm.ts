import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** How the fake CRM answers one customer. */
export type Behaviour =
  | { kind: 'json'; status?: string; products?: unknown[]; delayMs?: number; endsAt?: unknown }
  | { kind: 'xml'; status?: string; products?: string[] }
  | { kind: 'unknown' }
  | { kind: 'error'; code: number }
  | { kind: 'malformed' }
  | { kind: 'slow'; delayMs: number }
  | { kind: 'reset' };

/**
 * A CRM as a real HTTP server on 127.0.0.1: `GET /customers/:id` answers as scripted per
 * customer id (default: unknown), and every call is counted with its headers.
 */
export class FakeCrm {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  readonly scripts = new Map<string, Behaviour>();
  fallback: Behaviour = { kind: 'unknown' };
  calls: { id: string; headers: IncomingMessage['headers'] }[] = [];
  url = '';

  constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  callsFor(id: string): number {
    return this.calls.filter((c) => c.id === id).length;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const match = /^\/customers\/([^/?]+)/.exec(req.url ?? '');
    const id = match ? decodeURIComponent(match[1]!) : '';
    this.calls.push({ id, headers: req.headers });
    const b = this.scripts.get(id) ?? this.fallback;
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    switch (b.kind) {
      case 'json': {
        const answer = () =>
          json(200, { customer: { id, status: b.status ?? 'active', products: b.products ?? [], ...(b.endsAt !== undefined && { endsAt: b.endsAt }) } });
        if (b.delayMs) setTimeout(answer, b.delayMs);
        else answer();
        return;
      }
      case 'xml':
        res.writeHead(200, { 'Content-Type': 'application/xml' });
        res.end(
          `<?xml version="1.0"?><customer><id>${id}</id><status>${b.status ?? 'active'}</status>` +
            `${(b.products ?? []).map((p) => `<products>${p}</products>`).join('')}</customer>`,
        );
        return;
      case 'unknown':
        return json(404, { error: 'no such customer' });
      case 'error':
        return json(b.code, { error: 'boom' });
      case 'malformed':
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"customer": {"status": "act');
        return;
      case 'slow':
        setTimeout(() => json(200, { customer: { status: 'active', products: [] } }), b.delayMs);
        return;
      case 'reset':
        // Headers and half a body, then the connection dies.
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
        res.write('{"customer": {"st');
        setTimeout(() => req.socket.destroy(), 5);
        return;
    }
  }
}
