/**
 * Name resolution for isolated sandboxes: their `/etc/resolv.conf` and `/etc/hosts`. A sandbox gets
 * the host's resolvers, except those it cannot reach from its namespace — loopback ones (e.g.
 * systemd-resolved's 127.0.0.53), the host's own addresses and link-local ones (always denied),
 * IPv6 ones (sandboxes have IPv4 only) — and when none is left, the configured upstream resolvers.
 */
import { isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";
import { ipv4InCidr, parseIpv4Cidr } from "./egress-policy.js";

export interface SandboxResolvers {
  nameservers: string[];
  search: string[];
  options: string[];
}

const LOOPBACK = parseIpv4Cidr("127.0.0.0/8");
const LINK_LOCAL = parseIpv4Cidr("169.254.0.0/16");

/** The host's IPv4 addresses, on every interface. */
export function hostIpv4Addresses(): Set<string> {
  return new Set(
    Object.values(networkInterfaces())
      .flat()
      .filter((address) => address?.family === "IPv4")
      .map((address) => address?.address ?? ""),
  );
}

/** The resolvers a sandbox gets from the host's resolv.conf text. */
export function sandboxResolvers(hostResolvConf: string, hostAddresses: ReadonlySet<string>, upstream: readonly string[]): SandboxResolvers {
  const nameservers: string[] = [];
  let search: string[] = [];
  let options: string[] = [];
  for (const line of hostResolvConf.split("\n")) {
    const [keyword, ...values] = line
      .replace(/[#;].*$/, "")
      .trim()
      .split(/\s+/);
    if (keyword === "nameserver" && values[0] && reachable(values[0], hostAddresses)) nameservers.push(values[0]);
    // As in resolv.conf(5), the last search/domain line wins.
    else if (keyword === "search" || keyword === "domain") search = values.filter(Boolean);
    else if (keyword === "options") options = [...options, ...values.filter(Boolean)];
  }
  return { nameservers: nameservers.length > 0 ? [...new Set(nameservers)].slice(0, 3) : [...upstream].slice(0, 3), search, options };
}

function reachable(address: string, hostAddresses: ReadonlySet<string>): boolean {
  if (!isIPv4(address) || !LOOPBACK || !LINK_LOCAL) return false;
  return !ipv4InCidr(address, LOOPBACK) && !ipv4InCidr(address, LINK_LOCAL) && !hostAddresses.has(address) && address !== "0.0.0.0";
}

export function resolvConfText(resolvers: SandboxResolvers): string {
  return [
    "# Written by the Fast Sandbox agent for this sandbox.",
    ...resolvers.nameservers.map((server) => `nameserver ${server}`),
    ...(resolvers.search.length > 0 ? [`search ${resolvers.search.join(" ")}`] : []),
    ...(resolvers.options.length > 0 ? [`options ${resolvers.options.join(" ")}`] : []),
    "",
  ].join("\n");
}

export function hostsText(hostname: string, address: string): string {
  return ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", `${address}\t${hostname}`, ""].join("\n");
}

/**
 * `read`'s last result while younger than `ttlMs` (by `now`, milliseconds). Listing every interface
 * of a busy host took 6–8 ms of each network claim; a new address matters at the next claim after
 * the TTL, not within it.
 */
export function cachedFor<T>(ttlMs: number, read: () => T, now: () => number = () => performance.now()): () => T {
  let value: T | undefined;
  let readAt = -Infinity;
  return () => {
    const at = now();
    if (value === undefined || at - readAt >= ttlMs) {
      value = read();
      readAt = at;
    }
    return value;
  };
}
