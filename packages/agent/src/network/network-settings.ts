/**
 * The node's sandbox network as an agent sees it, read from the agent's environment. Every agent on
 * a host that names the same network shares its bridge, its address range (host-local IPAM's file
 * lock makes allocation safe across processes) and its firewall tables; give a test run or a second
 * installation its own name and subnet so they never meet.
 */
import { isIPv4 } from "node:net";
import { join } from "node:path";
import { ValidationError } from "@fast-sandbox/api/core";
import { parseIpv4Cidr } from "./egress-policy.js";

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
   * @default in a Pod, the API server's Service address (KUBERNETES_SERVICE_HOST) and the node's
   * (FSB_HOST_IP); else none
   */
  deniedCidrs: string[];
}

const NETWORK_NAME = /^[a-z][a-z0-9-]{0,14}$/;

export function networkSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): SandboxNetworkSettings {
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
  const deniedCidrs = deniedFromEnv(env);
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
  };
}

/** FSB_NETWORK_DENY as CIDRs (an address is its /32), or the API server's Service address in a Pod. */
function deniedFromEnv(env: NodeJS.ProcessEnv): string[] {
  if (env.FSB_NETWORK_DENY === undefined) {
    // In a Pod: the API server's Service address and the node's own (its kubelet, its NodePorts).
    if (!env.KUBERNETES_SERVICE_HOST) return [];
    return [env.KUBERNETES_SERVICE_HOST, env.FSB_HOST_IP]
      .filter((address): address is string => Boolean(address && isIPv4(address)))
      .map((address) => `${address}/32`);
  }
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
