import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';

/**
 * What a Conary repository makes of an rUS answer body (the rules are in conary_judge.py).
 * `granted` is all Conary acts on; the other fields say what it read.
 */
export interface ConaryVerdict {
  granted: boolean;
  server?: string;
  class?: string;
  key?: string;
  timeout?: number | null;
  retry?: boolean;
  error?: string;
}

export interface JudgeRequest {
  /** The body as received; a string is taken as its UTF-8 bytes. */
  document: string | Uint8Array;
  requestedServer: string;
}

const SCRIPT = fileURLToPath(new URL('./conary_judge.py', import.meta.url));
const PYTHON = process.env.PYTHON3 || 'python3';

interface Waiter<V> {
  resolve: (verdict: V) => void;
  reject: (err: Error) => void;
}

/**
 * One python3 process per test file (node runs each file in its own process), started on
 * first use. It holds node's event loop only while answers are awaited, so a file that never
 * calls closeConaryJudge() still exits, and python then reads the end of its stdin and exits.
 */
class JudgeProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting = new Map<number, Waiter<ConaryVerdict>>();
  private nextId = 1;
  private failure: Error | undefined;
  private readonly exited: Promise<void>;

  constructor() {
    this.child = spawn(PYTHON, ['-u', SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    this.child.stdin.on('error', () => {}); // EPIPE when python is gone: reported by 'error' / 'exit'
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.fail(new Error(`the Conary judge needs ${PYTHON} (with xml.parsers.expat) on PATH; starting it failed: ${err.message}`));
        resolve();
      });
      this.child.once('exit', (code, signal) => {
        this.fail(new Error(`the Conary judge (${PYTHON} ${SCRIPT}) exited with ${signal ?? code}: ${stderr.trim()}`));
        resolve();
      });
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => this.answer(line));
    this.holdLoop();
  }

  judge(document: string | Uint8Array, requestedServer: string): Promise<ConaryVerdict> {
    const bytes = typeof document === 'string' ? Buffer.from(document, 'utf8') : Buffer.from(document);
    return this.send({ doc: bytes.toString('base64'), server: requestedServer });
  }

  send<V extends ConaryVerdict>(request: Record<string, unknown>): Promise<V> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const line = `${JSON.stringify({ id, ...request })}\n`;
    return new Promise<V>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: ConaryVerdict) => void, reject });
      this.holdLoop();
      this.child.stdin.write(line);
    });
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    await this.exited;
  }

  private answer(line: string): void {
    let parsed: ConaryVerdict & { id: number };
    try {
      parsed = JSON.parse(line) as ConaryVerdict & { id: number };
    } catch {
      this.fail(new Error(`the Conary judge wrote something that is not JSON: ${line}`));
      return;
    }
    const { id, ...verdict } = parsed;
    const waiter = this.waiting.get(id);
    if (waiter === undefined) return;
    this.waiting.delete(id);
    waiter.resolve(verdict);
    this.holdLoop();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
    this.holdLoop();
  }

  /** Keeps node alive while answers are awaited, and only then. */
  private holdLoop(): void {
    const busy = this.waiting.size > 0;
    const handles = [this.child, this.child.stdin as unknown as Socket, this.child.stdout as unknown as Socket, this.child.stderr as unknown as Socket];
    for (const handle of handles) {
      if (busy) handle.ref?.();
      else handle.unref?.();
    }
  }
}

let judgeProcess: JudgeProcess | undefined;

/**
 * Reads an rUS answer body the way a Conary repository that asked about `requestedServer`
 * would: real expat (python3) with Conary's parser rules. Rejects only when python3 cannot run.
 */
export function judgeEntitlement(document: string | Uint8Array, requestedServer: string): Promise<ConaryVerdict> {
  judgeProcess ??= new JudgeProcess();
  return judgeProcess.judge(document, requestedServer);
}

/** What a repository made of one entitlement a client presented. */
export interface RepositoryVerdict extends ConaryVerdict {
  /** Whether the repository asked the service (false: answered from its own cache). */
  asked: boolean;
  /** The service's HTTP status, when it was asked and answered. */
  status?: number;
}

export interface ConaryRepositoryOptions {
  /** The repository's entitlementCheckURL, as configured (used as given). */
  entitlementCheckURL: string;
  /** The repository's authCacheTimeout (seconds); undefined: not set (Conary's default). */
  authCacheTimeout?: number;
  /** The real keys in the repository's own Entitlements table; undefined: any key has roles. */
  realKeys?: string[];
}

let repositories = 0;

/**
 * A Conary repository with entitlementCheckURL set, played by the judge: each `present` is a
 * client presenting one entitlement, handled as getAuthorizedRoles does (its grant cache on
 * server + class + key, the document's `<timeout>` or authCacheTimeout, retry, the URL built
 * with `;` and urllib.quote, any non-2xx is no access). `now` (seconds) replaces the
 * repository's clock for cache expiry; left out, the real clock.
 */
export function conaryRepository(options: ConaryRepositoryOptions) {
  const repo = `repo-${process.pid}-${++repositories}`;
  return {
    present(q: { server: string; class?: string; key: string; remoteIp?: string; now?: number }): Promise<RepositoryVerdict> {
      judgeProcess ??= new JudgeProcess();
      return judgeProcess.send<RepositoryVerdict>({
        op: 'check',
        repo,
        url: options.entitlementCheckURL,
        server: q.server,
        key: q.key,
        ...(q.class !== undefined && { class: q.class }),
        ...(q.remoteIp !== undefined && { remote_ip: q.remoteIp }),
        ...(q.now !== undefined && { now: q.now }),
        ...(options.authCacheTimeout !== undefined && { authCacheTimeout: options.authCacheTimeout }),
        ...(options.realKeys !== undefined && { realKeys: options.realKeys }),
      });
    },
  };
}

/** Many documents at once: every one is written to the judge before any answer is awaited. */
export function judgeEntitlements(requests: readonly JudgeRequest[]): Promise<ConaryVerdict[]> {
  return Promise.all(requests.map((r) => judgeEntitlement(r.document, r.requestedServer)));
}

/** Stops this file's judge process (call it from an `after` hook); a later call starts a new one. */
export async function closeConaryJudge(): Promise<void> {
  const current = judgeProcess;
  judgeProcess = undefined;
  await current?.close();
}

/**
 * Python 2 `urllib.quote(value)`, as Conary applies it to each query value: letters, digits
 * and `_.-/` stay; every other byte of the value's UTF-8 becomes `%XX` (upper-case hex).
 */
export function conaryQuote(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const safe =
      (byte >= 0x30 && byte <= 0x39) ||
      (byte >= 0x41 && byte <= 0x5a) ||
      (byte >= 0x61 && byte <= 0x7a) ||
      byte === 0x5f || // _
      byte === 0x2e || // .
      byte === 0x2d || // -
      byte === 0x2f; // /
    out += safe ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The query a Conary repository appends to its entitlementCheckURL (without the `?`). */
export function conaryCheckQuery(q: { server: string; class?: string; key: string; remoteIp?: string }): string {
  const parts = [`server=${conaryQuote(q.server)}`];
  if (q.class !== undefined) parts.push(`class=${conaryQuote(q.class)}`);
  parts.push(`key=${conaryQuote(q.key)}`);
  if (q.remoteIp !== undefined) parts.push(`remote_ip=${conaryQuote(q.remoteIp)}`);
  return parts.join(';');
}
