import type { Logger } from '../lib/logger.ts';

type Closer = () => unknown;

/**
 * What a running service holds open, in the order it was acquired: the database, its LISTEN
 * client, background jobs, event writers, listeners. Each resource is added the moment it is
 * acquired, so that whatever step of a start fails, everything acquired before it is closed;
 * `close()` runs once (later calls share its promise), in reverse order, and goes on past a
 * closer that fails (logged), so that one stuck part never leaves the rest open.
 */
export class Lifecycle {
  private readonly closers: { name: string; close: Closer }[] = [];
  private closing: Promise<void> | undefined;

  constructor(private readonly logger: Logger) {}

  /** Registers a resource already acquired. Refused once closing: the caller closes it itself. */
  add(name: string, close: Closer): void {
    if (this.closing) throw new Error(`${name} was acquired while the service was closing`);
    this.closers.push({ name, close });
  }

  /** Acquires a resource and registers its closer in one step. */
  async acquire<T>(name: string, open: () => T | Promise<T>, close: (resource: T) => unknown): Promise<T> {
    const resource = await open();
    try {
      this.add(name, () => close(resource));
    } catch (err) {
      await close(resource);
      throw err;
    }
    return resource;
  }

  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  /** Names of what is held, in acquisition order (for logs and tests). */
  get held(): readonly string[] {
    return this.closers.map((c) => c.name);
  }

  close(): Promise<void> {
    return (this.closing ??= this.closeAll());
  }

  private async closeAll(): Promise<void> {
    for (const { name, close } of [...this.closers].reverse()) {
      try {
        await close();
      } catch (err) {
        this.logger.error({ resource: name, err: (err as Error).message }, 'could not close a resource');
      }
    }
    this.closers.length = 0;
  }
}

/**
 * Runs `start` with a fresh lifecycle; when it throws, everything it acquired is closed before
 * the error goes on, so that a refused start leaves no handle open.
 */
export async function withLifecycle<T>(logger: Logger, start: (life: Lifecycle) => Promise<T>): Promise<T> {
  const life = new Lifecycle(logger);
  try {
    return await start(life);
  } catch (err) {
    await life.close();
    throw err;
  }
}
