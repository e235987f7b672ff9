import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { constants } from 'node:os';
import { LeaseClient, LeaseRequestError, NoSeatAvailableError, type AcquireRequest, type HeldLease } from '../client/lease-client.ts';
import { CliError } from './output.ts';

/** No seat was free (after --wait). EX_TEMPFAIL: try again later. */
export const EXIT_NO_SEAT = 75;
/** The lease was lost while the command ran (and no seat could be re-acquired); the command was stopped. */
export const EXIT_LEASE_LOST = 76;

export interface LeaseRunOptions {
  baseUrl: string;
  pool?: string;
  virtualKeyEnv?: string;
  clientId?: string;
  ttl?: number;
  wait?: number;
  signKey?: string;
  /** The environment variable holding the client token (the default, ENTGATE_CLIENT_TOKEN, may be unset). */
  tokenEnv?: string;
  command: string[];
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const say = (line: string) => process.stderr.write(`entgate lease run: ${line}\n`);

/**
 * `entgate lease run`: holds a seat for as long as a command runs. Acquires (waiting up to
 * --wait seconds for a free seat, at the server's Retry-After), heartbeats in the background,
 * forwards SIGINT/SIGTERM/SIGHUP to the command, releases the seat when the command exits and
 * resolves with the exit code to use: the command's, 128 + signal when it was killed,
 * EXIT_NO_SEAT or EXIT_LEASE_LOST.
 */
export async function leaseRun(o: LeaseRunOptions): Promise<number> {
  if (o.command.length === 0) throw new CliError('give the command to run after --');
  if ((o.pool === undefined) === (o.virtualKeyEnv === undefined)) throw new CliError('give either --pool or --virtual-key-env');
  let target: { pool: string } | { virtualKey: string };
  if (o.virtualKeyEnv !== undefined) {
    const key = process.env[o.virtualKeyEnv];
    if (!key) throw new CliError(`the environment variable ${o.virtualKeyEnv} (the virtual key) is not set`);
    target = { virtualKey: key };
  } else {
    target = { pool: o.pool! };
  }
  let signingKey: string | undefined;
  if (o.signKey !== undefined) {
    try {
      signingKey = readFileSync(o.signKey, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read ${o.signKey}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const tokenEnv = o.tokenEnv ?? 'ENTGATE_CLIENT_TOKEN';
  const token = process.env[tokenEnv];
  if (tokenEnv !== 'ENTGATE_CLIENT_TOKEN' && !token) throw new CliError(`the environment variable ${tokenEnv} (the client token) is not set`);
  // Kept off the command line (ps shows it to every user), like the virtual key.
  const client = new LeaseClient({ baseUrl: o.baseUrl, token: token ?? '', ...(signingKey !== undefined && { signingKey }) });
  const request = {
    ...target,
    clientId: o.clientId ?? `${hostname()}-${process.pid}`,
    ...(o.ttl !== undefined && { ttlSeconds: o.ttl }),
    metadata: { command: o.command[0]!.slice(0, 200), pid: process.pid },
  } as AcquireRequest;

  let child: ReturnType<typeof spawn> | undefined;
  let lostLease = false;
  let finished = false;
  let reacquiring: Promise<void> | undefined;
  const stopCommand = (why: string) => {
    lostLease = true;
    say(`${why}; stopping the command`);
    child?.kill('SIGTERM');
  };
  const onLost = (err: LeaseRequestError) => {
    // Ended on purpose (an admin released it, its key was revoked): stop, do not take it back.
    if (err.code !== 'lease_expired') return stopCommand(`lease ended (${err.code})`);
    // Expired (a long pause, a partition): its seat may be someone else's now; try once to get one.
    reacquiring = client.hold(request, { onLost }).then(
      (again) => {
        if (finished) return again.release().catch(() => {});
        held = again;
        say(`lease lost (${err.code}); re-acquired ${again.lease.leaseId}`);
      },
      (reason: unknown) => stopCommand(`lease lost (${err.code}) and no seat could be re-acquired (${(reason as LeaseRequestError).code ?? reason})`),
    );
  };

  // Signals are ours from the start: one that arrives before the command runs ends the run
  // (releasing a seat already taken) instead of killing this process with the seat held.
  let pendingSignal: NodeJS.Signals | undefined;
  const forward = (signal: NodeJS.Signals) => () => {
    if (child) child.kill(signal);
    else pendingSignal ??= signal;
  };
  const handlers = FORWARDED.map((s) => [s, forward(s)] as const);
  for (const [signal, handler] of handlers) process.on(signal, handler);
  const bySignal = (signal: NodeJS.Signals) => 128 + (constants.signals[signal] ?? 0);

  let held: HeldLease | undefined;
  try {
    const deadline = Date.now() + (o.wait ?? 0) * 1000;
    for (;;) {
      if (pendingSignal) return bySignal(pendingSignal);
      try {
        held = await client.hold(request, { onLost });
        break;
      } catch (err) {
        if (err instanceof NoSeatAvailableError && Date.now() < deadline) {
          const pause = Math.min(err.retryAfterSeconds * 1000, deadline - Date.now());
          await new Promise((r) => setTimeout(r, Math.max(100, pause)));
          continue;
        }
        if (err instanceof NoSeatAvailableError) {
          say(`no seat available (${err.inUse} of ${err.seats} in use; retry in ${err.retryAfterSeconds} s)`);
          return EXIT_NO_SEAT;
        }
        if (err instanceof LeaseRequestError) throw new CliError(err.message);
        throw err;
      }
    }
    if (pendingSignal) return bySignal(pendingSignal);

    const outcome = await new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: Error }>((resolve) => {
      child = spawn(o.command[0]!, o.command.slice(1), { stdio: 'inherit' });
      child.once('error', (error) => resolve({ error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    if ('error' in outcome) throw new CliError(`cannot run ${o.command[0]}: ${(outcome.error as NodeJS.ErrnoException).code ?? outcome.error.message}`);
    if (lostLease) return EXIT_LEASE_LOST;
    if (outcome.signal) return bySignal(outcome.signal);
    return outcome.code ?? 1;
  } finally {
    finished = true;
    for (const [signal, handler] of handlers) process.off(signal, handler);
    await reacquiring; // a seat re-acquired while the command ended is released with it
    await held?.release().catch((err: Error) => say(`could not release the lease (${err.message}); it expires on its own`));
  }
}
