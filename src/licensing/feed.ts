import type { Response } from 'express';
import { AppError } from '../lib/errors.ts';
import { leaveAdmission } from '../lib/http/long-lived.ts';
import type { Logger } from '../lib/logger.ts';
import type { Database } from '../store/db.ts';
import type { LicenceRepo, InstalledLicence } from './repo.ts';
import { licenceJson } from '../domain/licence.ts';

const CHANNEL = 'entgate_licence';
/** A comment line this often keeps proxies and clients from calling an idle stream dead. */
const KEEPALIVE_MS = 15_000;
/** What a client waits before reconnecting (the SSE `retry` field). */
const RETRY_MS = 2_000;
/** Streams one process serves at most (each holds a socket and a little memory). */
const MAX_SUBSCRIBERS = 10_000;
/** A subscriber that reads nothing is cut off past this much unsent data. */
const MAX_BUFFERED = 1024 * 1024;

/** A licence as the stream and GET /v1/licence carry it. */
export function licenceMessage(installed: InstalledLicence) {
  return { seq: installed.seq, token: installed.token, installedAt: installed.installedAt.toISOString(), ...licenceJson(installed.licence) };
}

/**
 * The licence stream (`GET /v1/licence/events`, server-sent events): each subscriber gets the
 * current licence when it connects (unless its Last-Event-ID is that licence's seq already),
 * then every licence installed afterwards, through any process on the database: an install
 * NOTIFYs the others (in-process on PGlite), each reads the new licence and pushes it to its
 * own subscribers. A lost LISTEN connection is followed, once back, by a read of the current
 * licence, so that nothing installed meanwhile is missed.
 */
export class LicenceFeed {
  /** Each open stream, with the seq of the newest licence it has (sent, or its Last-Event-ID). */
  private readonly subscribers = new Map<Response, number>();
  /** The newest licence this process knows of. */
  private lastSeq = 0;
  private refreshing: Promise<void> = Promise.resolve();
  private closed = false;
  private unsubscribe: (() => Promise<void>) | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  delivered = 0;

  constructor(
    private readonly db: Database,
    private readonly repo: LicenceRepo,
    private readonly logger: Logger,
  ) {}

  /** Listens for new licences; answers the current one. */
  async start(): Promise<InstalledLicence | undefined> {
    const current = await this.repo.current();
    this.lastSeq = current?.seq ?? 0;
    this.unsubscribe = await this.db.listen(
      CHANNEL,
      () => this.refresh(),
      () => this.refresh(),
    );
    this.keepalive = setInterval(() => {
      for (const res of this.subscribers.keys()) res.write(': keepalive\n\n');
    }, KEEPALIVE_MS);
    this.keepalive.unref();
    return current;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Tells every process (this one too) that licence `seq` was installed. Never throws. */
  announce(seq: number): void {
    this.db.knex.raw('select pg_notify(?, ?)', [CHANNEL, String(seq)]).catch((err: Error) => {
      this.logger.error({ err: err.message }, 'could not announce a new licence to the other processes; their subscribers get it when they reconnect');
    });
  }

  /** Reads the current licence and pushes it to every subscriber that does not have it yet. Serialised. */
  refresh(): Promise<void> {
    this.refreshing = this.refreshing.then(async () => {
      try {
        const current = await this.repo.current();
        if (!current) return;
        this.lastSeq = Math.max(this.lastSeq, current.seq);
        let event: string | undefined;
        for (const [res, seq] of this.subscribers) {
          if (seq >= current.seq) continue;
          this.send(res, (event ??= frame(current)), current.seq);
        }
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'could not read the licence to push it to subscribers');
      }
    });
    return this.refreshing;
  }

  /** Opens a stream on `res`: the current licence first (unless `lastEventId` is its seq), then each new one. */
  async subscribe(res: Response, lastEventId: string | undefined): Promise<void> {
    if (this.subscribers.size >= MAX_SUBSCRIBERS) {
      throw new AppError(503, 'too_many_streams', `this process serves ${MAX_SUBSCRIBERS} licence streams already: try another instance, or later`, { headers: { 'Retry-After': '5' } });
    }
    const current = await this.repo.current();
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      'X-Accel-Buffering': 'no',
      Connection: 'keep-alive',
    });
    res.write(`retry: ${RETRY_MS}\n\n`);
    // An open stream holds no place meant for requests that end (per-address and per-door caps).
    leaveAdmission(res);
    if (this.closed) {
      res.end();
      return;
    }
    this.subscribers.set(res, current && lastEventId === String(current.seq) ? current.seq : 0);
    res.on('close', () => this.subscribers.delete(res));
    if (current) this.send(res, frame(current), current.seq);
    // A licence installed while this one was read was pushed to the others before this stream was listed.
    if (this.lastSeq > (current?.seq ?? 0)) void this.refresh();
  }

  /** Sends licence `seq` to a subscriber that does not have it yet. */
  private send(res: Response, event: string, seq: number): void {
    if ((this.subscribers.get(res) ?? Infinity) >= seq) return;
    if (res.writableLength > MAX_BUFFERED) {
      this.subscribers.delete(res);
      res.destroy();
      return;
    }
    this.subscribers.set(res, seq);
    res.write(event);
    this.delivered++;
  }

  /** Ends every stream (at shutdown, before the listeners drain). */
  endStreams(): void {
    this.closed = true;
    for (const res of this.subscribers.keys()) res.end();
    this.subscribers.clear();
  }

  async close(): Promise<void> {
    clearInterval(this.keepalive);
    this.endStreams();
    await this.unsubscribe?.();
  }
}

function frame(installed: InstalledLicence): string {
  return `id: ${installed.seq}\nevent: licence\ndata: ${JSON.stringify(licenceMessage(installed))}\n\n`;
}
