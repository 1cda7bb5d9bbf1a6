import { isIPv4, isIPv6 } from 'node:net';

/**
 * Address arithmetic for origin comparison: which network an address belongs to (a /24 by
 * default) and whether it lies inside a CIDR block. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
 * are treated as the IPv4 address they carry, since dual-stack sources log the same client both ways.
 */

/** A parsed address: its family and its bits as a bigint. */
export interface ParsedIp {
  family: 4 | 6;
  bits: bigint;
}

/** A parsed CIDR block. */
export interface Cidr {
  family: 4 | 6;
  /** Network bits (host bits zeroed). */
  network: bigint;
  prefix: number;
  /** The block as written in the policy, for messages. */
  text: string;
}

function parseV4(ip: string): bigint {
  let v = 0n;
  for (const part of ip.split('.')) v = (v << 8n) | BigInt(Number(part));
  return v;
}

function parseV6(ip: string): bigint {
  let text = ip;
  let tail: bigint | undefined;
  // An embedded dotted quad takes the last 32 bits.
  const dot = /(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (dot) {
    tail = parseV4(dot[1] as string);
    text = `${text.slice(0, dot.index)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const restParts = rest === undefined || rest === '' ? [] : rest.split(':');
  const fill = rest === undefined ? 0 : 8 - headParts.length - restParts.length;
  const groups = [...headParts, ...Array<string>(Math.max(0, fill)).fill('0'), ...restParts];
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16) || 0);
  if (tail !== undefined) v = (v & ~0xffffffffn) | tail;
  return v;
}

/** Parses an address, or undefined when it is not an IP literal (a host name, `AWS Internal`). */
export function parseIp(ip: string): ParsedIp | undefined {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (isIPv4(bare)) return { family: 4, bits: parseV4(bare) };
  if (isIPv6(bare)) {
    const bits = parseV6(bare);
    if (bits >> 32n === 0xffffn) return { family: 4, bits: bits & 0xffffffffn };
    return { family: 6, bits };
  }
  return undefined;
}

function width(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

function mask(family: 4 | 6, prefix: number): bigint {
  const w = width(family);
  const p = Math.max(0, Math.min(prefix, w));
  return p === 0 ? 0n : ((1n << BigInt(p)) - 1n) << BigInt(w - p);
}

/** Parses `10.0.0.0/16` or `2001:db8::/32`; undefined when malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const [addr, len, extra] = text.trim().split('/');
  if (addr === undefined || extra !== undefined) return undefined;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const prefix = len === undefined ? width(ip.family) : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > width(ip.family)) return undefined;
  return { family: ip.family, network: ip.bits & mask(ip.family, prefix), prefix, text };
}

/** True when the address lies inside the block. */
export function inCidr(ip: ParsedIp, cidr: Cidr): boolean {
  return ip.family === cidr.family && (ip.bits & mask(cidr.family, cidr.prefix)) === cidr.network;
}

/** The network an address belongs to at the given prefix lengths, as `family/prefix/bits`. */
export function networkOf(ip: ParsedIp, v4Prefix: number, v6Prefix: number): string {
  const prefix = ip.family === 4 ? v4Prefix : v6Prefix;
  return `${ip.family}/${prefix}/${(ip.bits & mask(ip.family, prefix)).toString(16)}`;
}
