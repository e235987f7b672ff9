import { ipInRanges, parseIp, type IpAddress, type IpRange } from '../ip.ts';

/**
 * The address of the client a request comes from. The socket's peer, unless that peer is a
 * trusted proxy: then X-Forwarded-For is read from the right, skipping trusted proxies, and
 * the first address that is not one is the client (what a proxy appended, not what the client
 * claimed). An unparseable entry ends the walk at the last trusted hop.
 */
export function callerAddress(
  socketAddress: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustedProxies: readonly IpRange[],
): IpAddress | undefined {
  const peer = socketAddress === undefined ? undefined : parseIp(socketAddress);
  if (!peer || trustedProxies.length === 0 || !ipInRanges(peer, trustedProxies) || forwardedFor === undefined) return peer;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor)
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  let caller = peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = parseIp(hops[i]!);
    if (!hop) return caller;
    caller = hop;
    if (!ipInRanges(hop, trustedProxies)) return hop;
  }
  return caller;
}
