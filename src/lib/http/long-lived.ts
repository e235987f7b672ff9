import type { ServerResponse } from 'node:http';

const leavers = new WeakMap<ServerResponse, () => void>();

/**
 * Admission (the front doors' budgets of requests in flight, per door and per client address)
 * is for requests that end. A response that becomes a long-lived stream (server-sent events)
 * leaves it once established, so that open streams never hold the places of requests: fifty
 * subscribers behind one address must not turn that address's claims away with 429.
 */
export function onLeavingAdmission(res: ServerResponse, leave: () => void): void {
  leavers.set(res, leave);
}

/** Called by a handler whose response is now a long-lived stream (once; later calls do nothing). */
export function leaveAdmission(res: ServerResponse): void {
  const leave = leavers.get(res);
  if (!leave) return;
  leavers.delete(res);
  leave();
}
