/**
 * The node's sandbox network as an agent sees it, read from the agent's environment. Every agent on
 * a host that names the same network shares its bridge, its address range (host-local IPAM's file
 * lock makes allocation safe across processes) and its firewall tables; give a test run or a second
 * installation its own name and subnet so they never meet.
 */
import { readFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { endianness } from "node:os";
import { join } from "node:path";
import { ValidationError } from "@fast-sandbox/api/core";
import { ipv4InCidr, ipv4ToNumber, parseIpv4Cidr, type Ipv4Cidr } from "./egress-policy.js";
import { NEVER_REACHED } from "./firewall-rules.js";
import { hostIpv4Addresses } from "./sandbox-dns.js";

/** Where each network keeps its state unless told otherwise: `<root>/<name>` (a tmpfs: it goes with a reboot, as network namespaces do). */
export const DEFAULT_NETWORK_STATE_ROOT = "/run/fast-sandbox/network";
export const DEFAULT_NETWORK_NAME = "fsb0";
export const DEFAULT_NETWORK_SUBNET = "10.213.0.0/16";
/** Debian's containernetworking-plugins, then the upstream default location. */
export const DEFAULT_CNI_PLUGIN_DIRS: readonly string[] = ["/usr/lib/cni", "/opt/cni/bin"];
export const DEFAULT_UPSTREAM_DNS: readonly string[] = ["8.8.8.8", "1.1.1.1"];
export const DEFAULT_PREPARED_NAMESPACES = 2;

export interface SandboxNetworkSettings {
  /**
   * FSB_NETWORK_NAME: names the CNI network, the node's bridge and the firewall tables; at most 15
   * characters (an interface name), lower-case letters, digits and '-'. @default "fsb0"
   */
  name: string;
  /** FSB_NETWORK_SUBNET: the sandboxes' IPv4 range; the bridge takes its first address. @default "10.213.0.0/16" */
  subnet: string;
  /**
   * FSB_NETWORK_STATE_DIR: the network's state (IPAM reservations, one record per network namespace),
   * shared by the agents of the node and read by the janitor. @default "/run/fast-sandbox/network/<name>"
   */
  stateDir: string;
  /** FSB_CNI_PATH: directories of the CNI plugin binaries, `:`-separated. @default "/usr/lib/cni:/opt/cni/bin" */
  cniPluginDirs: string[];
  /**
   * FSB_NETWORK_DNS: resolvers for the sandboxes, `,`-separated IPv4 addresses, used when the host's
   * own (FSB_NETWORK_RESOLV_CONF) are loopback or host addresses a sandbox may not reach.
   * @default "8.8.8.8,1.1.1.1"
   */
  upstreamDnsServers: string[];
  /** FSB_NETWORK_RESOLV_CONF: the host's resolver configuration, copied for the sandboxes. @default "/etc/resolv.conf" */
  hostResolvConfPath: string;
  /**
   * FSB_NETWORK_PREPARED: network namespaces the agent keeps ready (namespace made, CNI ADD done)
   * once it has served an Isolated sandbox, so a create only claims one. 0: each create makes its
   * own. @default 2
   */
  preparedNamespaces: number;
  /**
   * FSB_NETWORK_DENY: IPv4 addresses or CIDRs, `,`-separated, that no sandbox reaches whatever its
   * egress policy (as the clouds' metadata addresses), save its resolvers on port 53: on Kubernetes
   * the cluster's Service, Pod and node ranges (the API server, the kubelets, the controller's
   * metrics), which an allowAll sandbox would otherwise reach. Set, even empty, it is the whole list.
   * @default in a Pod, the private ranges (PRIVATE_RANGES: RFC 1918 and 100.64.0.0/10, where the
   * cluster's Pods, Services and nodes are), and what the agent knows of the cluster without being
   * told outside them: the API server's Service address (KUBERNETES_SERVICE_HOST), the node's
   * (FSB_HOST_IP), the Pod's own addresses and its default gateway; a cluster on public addresses
   * stays reachable (`defaultDenyInPod`). Outside a Pod, the host's directly connected
   * subnets (its LAN, other bridges: Docker's, libvirt's, another installation's sandboxes) as the
   * routing table lists them at the agent's start, save the sandboxes' own subnet: the internet
   * through the default route stays reachable, the host's neighbours do not.
   */
  deniedCidrs: string[];
  /**
   * True when the agent runs in a Pod and FSB_NETWORK_DENY is unset: `deniedCidrs` is then the
   * default above, and the agent says at start what it denies and how to widen or narrow it.
   */
  defaultDenyInPod?: boolean;
}

/** What an agent finds out about its own network by itself, for the default deny list in a Pod. */
export interface LocalNetwork {
  /** The IPv4 addresses of its interfaces. */
  addresses(): Iterable<string>;
  /** The gateways of its default routes. */
  defaultGateways(): string[];
  /** The IPv4 subnets its routes reach without a gateway (directly connected), as CIDRs. */
  directSubnets(): string[];
}

/** The agent's own network: its interfaces, and the kernel's routing table (read from /proc, no process started). */
export const LOCAL_NETWORK: LocalNetwork = {
  addresses: hostIpv4Addresses,
  defaultGateways: () => defaultGatewaysOf(routeTable()),
  directSubnets: () => directSubnetsOf(routeTable()),
};

function routeTable(): string {
  try {
    return readFileSync("/proc/net/route", "utf8");
  } catch {
    return "";
  }
}

const NETWORK_NAME = /^[a-z][a-z0-9-]{0,14}$/;

/** @param local consulted only without FSB_NETWORK_DENY */
export function networkSettingsFromEnv(env: NodeJS.ProcessEnv = process.env, local: LocalNetwork = LOCAL_NETWORK): SandboxNetworkSettings {
  const name = env.FSB_NETWORK_NAME || DEFAULT_NETWORK_NAME;
  if (!NETWORK_NAME.test(name)) {
    throw new ValidationError(
      "FSB_NETWORK_NAME",
      `${JSON.stringify(name)} must be 1-15 lower-case letters, digits or '-', starting with a letter (it names a bridge)`,
    );
  }
  const subnet = env.FSB_NETWORK_SUBNET || DEFAULT_NETWORK_SUBNET;
  checkSubnet(subnet);
  const upstreamDnsServers = env.FSB_NETWORK_DNS ? splitList(env.FSB_NETWORK_DNS, ",") : [...DEFAULT_UPSTREAM_DNS];
  for (const server of upstreamDnsServers) {
    if (!isIPv4(server)) throw new ValidationError("FSB_NETWORK_DNS", `${JSON.stringify(server)} is not an IPv4 address`);
  }
  const prepared = env.FSB_NETWORK_PREPARED ?? String(DEFAULT_PREPARED_NAMESPACES);
  if (!/^\d{1,2}$/.test(prepared) || Number(prepared) > 64) {
    throw new ValidationError("FSB_NETWORK_PREPARED", `${JSON.stringify(prepared)} must be a number of network namespaces from 0 to 64`);
  }
  const defaultDenyInPod = Boolean(env.KUBERNETES_SERVICE_HOST) && env.FSB_NETWORK_DENY === undefined;
  const deniedCidrs = defaultDenyInPod
    ? deniedInPod(env, subnet, local)
    : env.FSB_NETWORK_DENY === undefined
      ? deniedOnHost(subnet, local)
      : deniedFromEnv(env);
  const cniPluginDirs = env.FSB_CNI_PATH ? splitList(env.FSB_CNI_PATH, ":") : [...DEFAULT_CNI_PLUGIN_DIRS];
  if (cniPluginDirs.length === 0) throw new ValidationError("FSB_CNI_PATH", "must name at least one directory");
  return {
    name,
    subnet,
    stateDir: env.FSB_NETWORK_STATE_DIR || join(DEFAULT_NETWORK_STATE_ROOT, name),
    cniPluginDirs,
    upstreamDnsServers,
    hostResolvConfPath: env.FSB_NETWORK_RESOLV_CONF || "/etc/resolv.conf",
    preparedNamespaces: Number(prepared),
    deniedCidrs,
    ...(defaultDenyInPod ? { defaultDenyInPod } : {}),
  };
}

/**
 * The default deny list of an agent in a Pod: the API server's Service address, the node's own (its
 * kubelet, its NodePorts), and what the agent finds of its Pod's network: the Pod's addresses and
 * its default gateway, which on most Pod networks (a bridge or point-to-point link to the node) is
 * the node at another address. The cluster's Pod, Service and node ranges are not to be found out
 * from inside a Pod: only FSB_NETWORK_DENY names them.
 */
function deniedInPod(env: NodeJS.ProcessEnv, subnet: string, local: LocalNetwork): string[] {
  const given = [env.KUBERNETES_SERVICE_HOST, env.FSB_HOST_IP].filter((address): address is string => Boolean(address && isIPv4(address)));
  // Loopback and link-local ones are never reached anyway (NEVER_REACHED), nor the sandbox subnet (the bridge's address).
  const covered = [...NEVER_REACHED, subnet].flatMap((cidr) => parseIpv4Cidr(cidr) ?? []);
  const found = [...local.addresses(), ...local.defaultGateways()].filter((address) => isIPv4(address) && !covered.some((cidr) => ipv4InCidr(address, cidr)));
  const privateRanges = PRIVATE_RANGES.flatMap((cidr) => parseIpv4Cidr(cidr) ?? []);
  const addresses = [...new Set([...given, ...found])].filter((address) => !privateRanges.some((range) => ipv4InCidr(address, range)));
  return [...addresses.map((address) => `${address}/32`), ...PRIVATE_RANGES];
}

/**
 * The private IPv4 ranges (RFC 1918, and RFC 6598's shared space that some Pod networks and
 * clouds use): where a cluster's Pods, Services and nodes almost always are, and what an Isolated
 * sandbox in a Pod does not reach by default. The sandboxes' own subnet among them is the
 * firewall's (peers, then the rest dropped) before any deny list is read.
 */
export const PRIVATE_RANGES: readonly string[] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];

/**
 * The default deny list of an agent outside a Pod: the subnets the host reaches directly, so a
 * sandbox reaches none of the host's neighbours — its LAN, the containers of other bridges (Docker,
 * libvirt), another installation's sandboxes — whatever its egress allows. Not its own subnet (the
 * firewall handles sandbox-to-sandbox), nor loopback and link-local ones (never reached anyway). The
 * host's own addresses are dropped by the firewall's node rules already.
 */
function deniedOnHost(subnet: string, local: LocalNetwork): string[] {
  const own = parseIpv4Cidr(subnet);
  const covered = NEVER_REACHED.flatMap((cidr) => parseIpv4Cidr(cidr) ?? []);
  const overlaps = (a: Ipv4Cidr, b: Ipv4Cidr) => ipv4InCidr(a.network, b) || ipv4InCidr(b.network, a);
  const found = local
    .directSubnets()
    .flatMap((text) => parseIpv4Cidr(text) ?? [])
    .filter((cidr) => cidr.prefixLength > 0 && !(own && overlaps(cidr, own)) && !covered.some((never) => ipv4InCidr(cidr.network, never)));
  return [...new Set(found.map((cidr) => cidr.text))];
}

/**
 * The subnets of the routes without a gateway (RTF_GATEWAY clear) in a routing table as
 * /proc/net/route shows it, default routes and loopback's left out.
 */
export function directSubnetsOf(routeTable: string, byteOrder: "BE" | "LE" = endianness()): string[] {
  const RTF_UP = 0x1;
  const RTF_GATEWAY = 0x2;
  const address = (hex: string) => {
    const bytes = Buffer.from(hex, "hex");
    if (byteOrder === "LE") bytes.reverse();
    return bytes.join(".");
  };
  return routeTable
    .split("\n")
    .slice(1)
    .flatMap((line) => {
      const [iface, destination, , flags, , , , mask] = line.trim().split(/\s+/);
      if (!iface || iface === "lo" || !destination || !mask || !/^[0-9A-Fa-f]{8}$/.test(destination) || !/^[0-9A-Fa-f]{8}$/.test(mask)) return [];
      const bits = Number.parseInt(flags ?? "0", 16);
      if ((bits & RTF_UP) === 0 || (bits & RTF_GATEWAY) !== 0 || mask === "00000000") return [];
      const maskBits = ipv4ToNumber(address(mask));
      const prefixLength = 32 - Math.log2((~maskBits >>> 0) + 1);
      if (!Number.isInteger(prefixLength)) return []; // a mask that is not a prefix
      const cidr = parseIpv4Cidr(`${address(destination)}/${prefixLength}`);
      return cidr ? [cidr.text] : [];
    });
}

/**
 * The gateways of the default routes in a routing table as /proc/net/route shows it: one route a
 * line, addresses as 8 hex digits of the kernel's 32-bit value (in network byte order in memory,
 * printed as the host's integer: reversed on little-endian hosts).
 */
export function defaultGatewaysOf(routeTable: string, byteOrder: "BE" | "LE" = endianness()): string[] {
  const RTF_GATEWAY = 0x2;
  return routeTable
    .split("\n")
    .slice(1)
    .flatMap((line) => {
      const [, destination, gateway, flags, , , , mask] = line.trim().split(/\s+/);
      if (destination !== "00000000" || mask !== "00000000" || !gateway || !/^[0-9A-Fa-f]{8}$/.test(gateway)) return [];
      if ((Number.parseInt(flags ?? "0", 16) & RTF_GATEWAY) === 0) return [];
      const bytes = Buffer.from(gateway, "hex");
      if (byteOrder === "LE") bytes.reverse();
      return [bytes.join(".")];
    });
}

/** FSB_NETWORK_DENY as CIDRs (an address is its /32); none when unset outside a Pod. */
function deniedFromEnv(env: NodeJS.ProcessEnv): string[] {
  if (env.FSB_NETWORK_DENY === undefined) return [];
  return splitList(env.FSB_NETWORK_DENY, ",").map((entry) => {
    const cidr = parseIpv4Cidr(entry.includes("/") ? entry : `${entry}/32`);
    if (!cidr) throw new ValidationError("FSB_NETWORK_DENY", `${JSON.stringify(entry)} is not an IPv4 address or CIDR such as 10.96.0.0/12`);
    if (cidr.text !== (entry.includes("/") ? entry : `${entry}/32`)) {
      throw new ValidationError("FSB_NETWORK_DENY", `${entry} has host bits set; did you mean ${cidr.text}?`);
    }
    return cidr.text;
  });
}

/** A subnet for sandboxes: an IPv4 network address with a prefix of 8 to 29 bits (room for the bridge and a few sandboxes). */
function checkSubnet(subnet: string): void {
  const cidr = parseIpv4Cidr(subnet);
  if (!cidr) throw new ValidationError("FSB_NETWORK_SUBNET", `${JSON.stringify(subnet)} is not an IPv4 CIDR such as ${DEFAULT_NETWORK_SUBNET}`);
  if (cidr.prefixLength < 8 || cidr.prefixLength > 29) throw new ValidationError("FSB_NETWORK_SUBNET", `${subnet}: the prefix must be /8 to /29`);
  if (cidr.text !== subnet) throw new ValidationError("FSB_NETWORK_SUBNET", `${subnet} has host bits set; did you mean ${cidr.text}?`);
}

function splitList(text: string, separator: string): string[] {
  return text
    .split(separator)
    .map((item) => item.trim())
    .filter(Boolean);
}
