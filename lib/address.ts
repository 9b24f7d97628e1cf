import net from 'node:net';

function ipv4Bytes(text: string): number[] {
  return text.split('.').map(Number);
}

/** The eight 16-bit groups of an IPv6 address (zone id dropped, embedded IPv4 expanded). */
function ipv6Groups(address: string): number[] {
  const text = address.split('%')[0]!;
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').flatMap((group) => {
    if (group.includes('.')) {
      const [a, b, c, d] = ipv4Bytes(group);
      return [(a! << 8) | b!, (c! << 8) | d!];
    }
    return [parseInt(group, 16)];
  }));
  const cut = text.indexOf('::');
  if (cut < 0) return parse(text);
  const head = parse(text.slice(0, cut));
  const tail = parse(text.slice(cut + 2));
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/**
 * The key under which per-address limits and bans apply: an IPv4 address as is (IPv4-mapped IPv6 included), an IPv6
 * address by its /64 (one subscriber usually holds a whole /64 and can pick any address in it). Anything that is not
 * an IP address is its own key.
 */
export function addressKey(address: string): string {
  const text = address.trim().replace(/^\[(.*)\]$/, '$1');
  if (net.isIPv4(text)) return text;
  if (!net.isIPv6(text)) return text;
  const groups = ipv6Groups(text);
  // ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`;
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** Is `address` an IPv4 or IPv6 address (brackets and an IPv6 zone id allowed)? */
export function isIpAddress(address: string): boolean {
  const text = address.trim().replace(/^\[(.*)\]$/, '$1');
  return net.isIPv4(text) || net.isIPv6(text);
}
