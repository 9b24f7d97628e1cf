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

/** An address as 16 bytes (IPv4 as IPv4-mapped IPv6), or undefined when it is not one. */
function addressBytes(address: string): number[] | undefined {
  const text = address.trim().replace(/^\[(.*)\]$/, '$1');
  if (net.isIPv4(text)) return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...ipv4Bytes(text)];
  if (!net.isIPv6(text)) return undefined;
  return ipv6Groups(text).flatMap((g) => [g >> 8, g & 0xff]);
}

interface Range { bytes: number[]; bits: number }

/** `10.0.0.0/8`, `fd00::/8`, `127.0.0.1` (a /32 or /128): the range, or undefined when the text is not one. */
function parseRange(text: string): Range | undefined {
  const [address = '', prefix, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const bytes = addressBytes(address);
  if (!bytes) return undefined;
  const v4 = net.isIPv4(address.trim());
  const max = v4 ? 32 : 128;
  if (prefix !== undefined && !/^\d{1,3}$/.test(prefix)) return undefined;
  const bits = prefix === undefined ? max : Number(prefix);
  if (bits > max) return undefined;
  return { bytes, bits: v4 ? bits + 96 : bits };
}

function inRange(bytes: number[], range: Range): boolean {
  for (let bit = 0; bit < range.bits; bit += 8) {
    const mask = range.bits - bit >= 8 ? 0xff : (0xff << (8 - (range.bits - bit))) & 0xff;
    if (((bytes[bit / 8]! ^ range.bytes[bit / 8]!) & mask) !== 0) return false;
  }
  return true;
}

/** Why `text` is not an address or a CIDR range, or undefined when it is one (for config validation). */
export function rangeProblem(text: string): string | undefined {
  return parseRange(text) ? undefined : 'expected an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8';
}

/**
 * The reverse proxies OnAir believes (`ONAIR_TRUST_PROXY`): addresses and CIDR ranges. A peer in the set speaks for
 * the client in `X-Forwarded-For`; any other peer is the client, whatever it writes there.
 */
export class TrustedProxies {
  readonly #ranges: Range[];

  /** Items that are not addresses or ranges are ignored (config validation refuses them first). */
  constructor(items: readonly string[]) {
    this.#ranges = items.map(parseRange).filter((r): r is Range => r !== undefined);
  }

  get empty(): boolean {
    return this.#ranges.length === 0;
  }

  has(address: string): boolean {
    const bytes = addressBytes(address);
    return bytes !== undefined && this.#ranges.some((range) => inRange(bytes, range));
  }

  /**
   * The client's address: starting from the peer, each trusted hop hands over to the `X-Forwarded-For` entry left of
   * it (the address that proxy saw), right to left; the first untrusted one is the client. A forged entry a client
   * put in front is never reached: its own proxy appended the address it really came from.
   */
  clientAddress(peer: string, forwardedFor: string | readonly string[] | undefined): string {
    let client = peer;
    if (!this.has(client) || forwardedFor === undefined) return client;
    const hops = (typeof forwardedFor === 'string' ? forwardedFor : forwardedFor.join(',')).split(',');
    // Bounded: a header of 10,000 commas costs at most this many steps.
    for (let i = hops.length - 1; i >= 0 && i >= hops.length - 32; i--) {
      const hop = hops[i]!.trim();
      if (!isIpAddress(hop)) return client;
      client = hop;
      if (!this.has(client)) return client;
    }
    return client;
  }
}
