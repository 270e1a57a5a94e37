/**
 * IPv4 and IPv6 CIDR blocks as egress rules name them (`10.0.0.0/8`, `203.0.113.7/32`,
 * `2001:db8::/32`): parsed strictly — the address part is the network's own address, with no bits
 * set after the prefix — so that a rule means what it reads, and compared by containment.
 */
import { isIPv4, isIPv6 } from "node:net";
import { ValidationError } from "../errors.js";

export interface Cidr {
  family: 4 | 6;
  /** The network address as an unsigned integer of 32 (IPv4) or 128 (IPv6) bits. */
  network: bigint;
  prefixLength: number;
}

const EXAMPLES = "e.g. 10.0.0.0/8, 203.0.113.7/32 or 2001:db8::/32";

/** Why `value` is not a CIDR this API accepts, or undefined when it is one. */
export function cidrProblem(value: string): string | undefined {
  const parsed = parse(value);
  return typeof parsed === "string" ? parsed : undefined;
}

/** Parses a CIDR; ValidationError (on `field`) says what is wrong and shows examples. */
export function parseCidr(value: string, field = "cidr"): Cidr {
  const parsed = parse(value);
  if (typeof parsed === "string") throw new ValidationError(field, `${JSON.stringify(value)} is not a valid CIDR: ${parsed} (${EXAMPLES})`);
  return parsed;
}

/** True when every address of `inner` is in `outer` (same family, prefix at least as long, same leading bits). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || inner.prefixLength < outer.prefixLength) return false;
  return (inner.network & mask(outer.family, outer.prefixLength)) === outer.network;
}

function parse(value: string): Cidr | string {
  const slash = value.indexOf("/");
  if (slash < 0) {
    const alone = isIPv4(value) ? `${value}/32` : isIPv6(value) ? `${value}/128` : undefined;
    return `it has no /prefix length${alone ? `; the address alone is ${alone}` : ""}`;
  }
  const address = value.slice(0, slash);
  const prefix = value.slice(slash + 1);
  const family = isIPv4(address) ? 4 : isIPv6(address) && !address.includes("%") ? 6 : undefined;
  if (family === undefined) return `${JSON.stringify(address)} is not an IPv4 or IPv6 address`;
  const bits = family === 4 ? 32 : 128;
  const prefixLength = Number(prefix);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefix) || prefixLength > bits) return `the prefix length must be a number from 0 to ${bits} for IPv${family}`;
  const network = family === 4 ? ipv4ToInteger(address) : ipv6ToInteger(address);
  const masked = network & mask(family, prefixLength);
  if (masked !== network) {
    return `bits are set after the /${prefixLength} prefix; the network is ${formatAddress(family, masked)}/${prefixLength}`;
  }
  return { family, network, prefixLength };
}

function mask(family: 4 | 6, prefixLength: number): bigint {
  const bits = BigInt(family === 4 ? 32 : 128);
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefixLength))) & all;
}

function ipv4ToInteger(address: string): bigint {
  return address.split(".").reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n);
}

/** An address `isIPv6` accepted: hextets, at most one `::`, maybe a dotted IPv4 tail (`::ffff:192.0.2.1`). */
function ipv6ToInteger(address: string): bigint {
  const toHextets = (part: string): number[] => {
    if (part === "") return [];
    const groups = part.split(":");
    const last = groups[groups.length - 1] ?? "";
    if (!last.includes(".")) return groups.map((group) => parseInt(group, 16));
    const v4 = Number(ipv4ToInteger(last));
    return [...groups.slice(0, -1).map((group) => parseInt(group, 16)), v4 >>> 16, v4 & 0xffff];
  };
  const [head = "", tail] = address.split("::");
  const left = toHextets(head);
  const right = tail === undefined ? [] : toHextets(tail);
  const hextets = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return hextets.reduce((value, hextet) => (value << 16n) | BigInt(hextet), 0n);
}

/** The canonical text of an address (RFC 5952 for IPv6: lower case, the longest run of zero groups as `::`). */
function formatAddress(family: 4 | 6, value: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
  const hextets = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((shift) => Number((value >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; start++) {
    let length = 0;
    while (start + length < 8 && hextets[start + length] === 0) length++;
    if (length > bestLength) [bestStart, bestLength] = [start, length];
  }
  const hex = (groups: number[]) => groups.map((group) => group.toString(16)).join(":");
  if (bestStart < 0) return hex(hextets);
  return `${hex(hextets.slice(0, bestStart))}::${hex(hextets.slice(bestStart + bestLength))}`;
}
