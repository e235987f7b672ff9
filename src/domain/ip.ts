import ipaddr from 'ipaddr.js';

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;
export type IpRange = [IpAddress, number];

/**
 * Parses an address as it may arrive in `remote_ip` or a socket: IPv4 in four-part dotted
 * decimal, or IPv6 (an IPv4-mapped IPv6 address is taken as the IPv4 address it carries).
 * Returns undefined for anything else.
 */
export function parseIp(value: string): IpAddress | undefined {
  if (value.length === 0 || value.length > 64) return undefined;
  if (ipaddr.IPv4.isValidFourPartDecimal(value)) return ipaddr.IPv4.parse(value);
  if (!value.includes(':') || !ipaddr.IPv6.isValid(value)) return undefined;
  const v6 = ipaddr.IPv6.parse(value);
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6;
}

/**
 * Normalises a CIDR (or a bare address, taken as /32 or /128) to its canonical text.
 * A range with host bits set is refused rather than silently widened or narrowed.
 */
export function normalizeCidr(value: string): { cidr: string } | { problem: string } {
  const slash = value.indexOf('/');
  const addrText = slash < 0 ? value : value.slice(0, slash);
  const addr = parseIp(addrText);
  if (addr === undefined) return { problem: `'${value}' is not an IP address or CIDR range` };
  const max = addr.kind() === 'ipv4' ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const bitsText = value.slice(slash + 1);
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) {
      return { problem: `'${value}' has an invalid prefix length (0 to ${max})` };
    }
    bits = Number(bitsText);
  }
  const network =
    addr.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${bits}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${bits}`);
  if (network.toString() !== addr.toString()) {
    return { problem: `'${value}' has host bits set; did you mean ${network.toString()}/${bits}?` };
  }
  return { cidr: `${addr.toString()}/${bits}` };
}

export function compileCidrs(cidrs: readonly string[]): IpRange[] {
  return cidrs.map((c) => {
    const [addrText, bits] = c.split('/') as [string, string];
    const addr = parseIp(addrText);
    if (addr === undefined) throw new Error(`stored CIDR '${c}' is invalid`);
    return [addr, Number(bits)];
  });
}

export function ipInRanges(ip: IpAddress, ranges: readonly IpRange[]): boolean {
  for (const range of ranges) {
    if (range[0].kind() === ip.kind() && ip.match(range)) return true;
  }
  return false;
}
