import ipaddr from 'ipaddr.js';

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;
export type IpRange = [IpAddress, number];

/**
 * Parses an IPv6 address strictly: an embedded IPv4 tail (`::ffff:10.0.0.1`, `::1.2.3.4`)
 * must be four-part dotted decimal, as a bare IPv4 address must, and is read as the two
 * 16-bit groups it spells. ipaddr.js alone reads `::ffff:010.1.1.1` as 10.1.1.1 and turns
 * the IPv4-compatible `::1.2.3.4` into the IPv4-mapped `::ffff:1.2.3.4`.
 */
function parseIpv6(value: string): ipaddr.IPv6 | undefined {
  let text = value;
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) return undefined;
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(tail)) return undefined;
    const [a, b, c, d] = ipaddr.IPv4.parse(tail).octets as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  if (!ipaddr.IPv6.isValid(text)) return undefined;
  return ipaddr.IPv6.parse(text);
}

/**
 * Parses an address as it may arrive in `remote_ip` or a socket: IPv4 in four-part dotted
 * decimal, or IPv6 (an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, is taken as the IPv4
 * address it carries; the deprecated IPv4-compatible form `::a.b.c.d` stays IPv6).
 * Returns undefined for anything else.
 */
export function parseIp(value: string): IpAddress | undefined {
  if (value.length === 0 || value.length > 64) return undefined;
  if (ipaddr.IPv4.isValidFourPartDecimal(value)) return ipaddr.IPv4.parse(value);
  const v6 = parseIpv6(value);
  if (v6 === undefined) return undefined;
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6;
}

/**
 * Normalises a CIDR (or a bare address, taken as /32 or /128) to its canonical text.
 * A range with host bits set is refused rather than silently widened or narrowed. A range
 * written in IPv6 counts IPv6 bits; an IPv4-mapped one of /96 or longer is stored as the
 * IPv4 range it covers (`::ffff:10.0.0.0/104` is `10.0.0.0/8`).
 */
export function normalizeCidr(value: string): { cidr: string } | { problem: string } {
  const slash = value.indexOf('/');
  const addrText = slash < 0 ? value : value.slice(0, slash);
  const addr: IpAddress | undefined = ipaddr.IPv4.isValidFourPartDecimal(addrText)
    ? ipaddr.IPv4.parse(addrText)
    : addrText.length <= 64
      ? parseIpv6(addrText)
      : undefined;
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
  if (addr.kind() === 'ipv6' && bits >= 96 && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return { cidr: `${(addr as ipaddr.IPv6).toIPv4Address().toString()}/${bits - 96}` };
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

/**
 * One client, as budgets and caps count it: an IPv4 address as it is, an IPv6 address by its
 * /64 (which one client usually holds whole): `2001:db8:0:1::/64`.
 */
export function clientOfAddress(ip: IpAddress): string {
  if (ip.kind() === 'ipv4') return ip.toString();
  return `${(ip as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16)).join(':')}::/64`;
}
