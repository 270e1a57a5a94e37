/**
 * The one rule builder of sandbox networking: nftables commands (libnftables JSON, what `nft -j -f`
 * reads) for a sandbox network and its sandboxes. Pure functions; sandbox-firewall.ts applies them.
 *
 * Enforcement is on the host, so it holds for runsc as well (gVisor's netstack bypasses its
 * namespace's own netfilter). Two tables per network, both named after it and owned by no one else:
 *
 *   table bridge <net>     layer 2, on the bridge's ports (works with or without br_netfilter)
 *     prerouting           a sandbox's port only carries frames from the sandbox's MAC and IPv4
 *                          address, IPv4 and ARP only: no spoofing another sandbox or the gateway
 *     forward              port-to-port frames (sandbox to sandbox) only inside a peer group, and
 *                          never to the in-sandbox daemon's port
 *                          Both fail closed: every port of the bridge is a sandbox's and carries the
 *                          network's device group (`portGroupOf`, set on the interface itself, so no
 *                          loss of nftables state takes it away); a frame from such a port that its
 *                          own chain did not accept is dropped. (`meta ibrname` would say the same
 *                          without marking ports, but needs CONFIG_NFT_BRIDGE_META, which kernels
 *                          such as the CI machines' lack.)
 *   table inet <net>       layer 3
 *     before_nat           the input chain's verdict, taken before destination NAT: a connection
 *                          from the bridge to any address of this network namespace's own is
 *                          dropped here, so no DNAT rule of it (Docker's published ports, a
 *                          NodePort where the agent runs in the node's network) can turn it into
 *                          forwarded traffic that a sandbox's allowAll would let through. (An agent
 *                          Pod with a network of its own: its addresses; the node's NodePorts are
 *                          reached as any Pod reaches them. IPVS ClusterIPs are local addresses,
 *                          already unreachable through the input chain.) Needs nft_fib.
 *     input                nothing from the bridge reaches the host itself (any of its addresses,
 *                          its services, the agents, the control plane) but replies to the host's
 *                          own connections (e.g. a proxy reaching a sandbox)
 *     output               of the host's processes, only root's open connections to the bridge
 *                          (the proxy, the agent): no other local account reaches a sandbox
 *     forward              from a sandbox: its own chain, found by its source address (which the
 *                          bridge table vouches for); unknown sources dropped. To a sandbox: only
 *                          replies (nothing from elsewhere opens connections to sandboxes)
 *     sandbox_<id>         DNS to its resolvers (unless denyAll), never the clouds' metadata
 *                          addresses (NEVER_REACHED) or the network's denied ranges, loopback or other sandboxes (save its peer
 *                          group), then its egress policy
 *     postrouting          masquerades what leaves the subnet (one rule for every sandbox)
 *
 * Per-sandbox objects are keyed by the network namespace's id (`<id>`) and found again from the
 * ruleset by that id, the sandbox's address and its port (`removalCommands`), so removal needs
 * nothing but the attachment's record and is safe to repeat.
 */
import { createHash } from "node:crypto";
import { CODE_RUNNING_PORTS } from "@fast-sandbox/api/core";
import type { EgressPolicy, EgressRule } from "../runtime/runtime.js";
import { parseIpv4Cidr } from "./egress-policy.js";

export type NftFamily = "inet" | "bridge";
export type NftExpression = Record<string, unknown>;
/** A libnftables JSON object: `{ table: … }`, `{ chain: … }`, `{ rule: … }`, `{ set: … }`, `{ map: … }`, `{ element: … }`. */
export type NftObject = Record<string, Record<string, unknown>>;
export type NftCommand = { add: NftObject } | { flush: NftObject } | { delete: NftObject };

/** The node-wide part of a sandbox network. */
export interface FirewallNetwork {
  /** Name of both tables (the network's name). */
  table: string;
  /** The bridge the sandboxes' ports belong to. */
  bridge: string;
  /** The sandboxes' subnet (CIDR). */
  subnet: string;
  /** IPv4 CIDRs no sandbox reaches whatever its policy, besides NEVER_REACHED (FSB_NETWORK_DENY). @default none */
  denied?: readonly string[];
}

/** What pins a port of the bridge to one sandbox. */
export interface PortGuard {
  /** The network namespace's id. */
  id: string;
  /** The bridge port (host side of the veth pair). */
  hostInterface: string;
  sandboxMac: string;
  address: string;
}

/** What a claimed sandbox may reach. */
export interface SandboxPolicy {
  id: string;
  address: string;
  hostInterface: string;
  egress: EgressPolicy;
  /** Resolvers in the sandbox's resolv.conf: reachable on port 53 unless the policy is denyAll. */
  dnsServers: readonly string[];
  /** Sandboxes of one group may connect to each other (`peerGroupOf`); absent: none. */
  peerGroup?: string;
}

export const EGRESS_MAP = "egress";
export const PORTS_MAP = "ports";
export const PEERS_MAP = "peers";
export const SANDBOX_PORTS_SET = "sandbox_ports";
const GROUP_PREFIX = "group_";

export const sandboxChain = (id: string) => `sandbox_${id}`;
export const portChain = (id: string) => `port_${id}`;
export const peersChain = (id: string) => `peers_${id}`;
export const groupSet = (group: string) => `${GROUP_PREFIX}${group}`;

/**
 * The device group (`ip link set dev <port> group N`) that marks a bridge port as one of the
 * network's: derived from the network's name (so every agent of the node agrees), never 0 (every
 * interface's default), and one network's ports never match another's rules.
 */
export function portGroupOf(network: FirewallNetwork): number {
  const hash = createHash("sha256").update(`fsb-port-group/${network.bridge}`).digest().readUInt32BE(0);
  return 0x10000 + (hash % 0x7fff0000);
}

/** The peer group of a pool: sandboxes of the same namespace and pool (16 hex digits of a SHA-256). */
export function peerGroupOf(namespace: string, pool: string): string {
  return createHash("sha256").update(`${namespace}/${pool}`).digest("hex").slice(0, 16);
}

// Expressions, named after what `nft list` prints.
const meta = (key: string): NftExpression => ({ meta: { key } });
const payload = (protocol: string, field: string): NftExpression => ({ payload: { protocol, field } });
const match = (left: NftExpression, right: unknown, op = "=="): NftExpression => ({ match: { op, left, right } });
const prefix = (cidr: string): unknown => {
  const parsed = parseIpv4Cidr(cidr);
  if (!parsed) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  return parsed.prefixLength === 32 ? parsed.network : { prefix: { addr: parsed.network, len: parsed.prefixLength } };
};
const anyOf = (values: readonly (string | number)[]): unknown => (values.length === 1 ? values[0] : { set: [...values] });
const established = match({ ct: { key: "state" } }, ["established", "related"], "in");
const ACCEPT: NftExpression = { accept: null };
const DROP: NftExpression = { drop: null };
const jump = (target: string): NftExpression => ({ jump: { target } });

const table = (family: NftFamily, name: string) => ({ table: { family, name } });
const chain = (family: NftFamily, tableName: string, name: string, hook?: { hook: string; prio: number }) => ({
  chain: { family, table: tableName, name, ...(hook ? { type: "filter", hook: hook.hook, prio: hook.prio, policy: "accept" } : {}) },
});
const rule = (family: NftFamily, tableName: string, chainName: string, ...expr: NftExpression[]): NftCommand => ({
  add: { rule: { family, table: tableName, chain: chainName, expr } },
});
const element = (family: NftFamily, tableName: string, name: string, elem: unknown[]) => ({ element: { family, table: tableName, name, elem } });

/** Filter priority in both families (`nft list` prints it as `filter`). */
const FILTER_PRIORITY = { inet: 0, bridge: -200 } as const;
/** `srcnat`. */
const SOURCE_NAT_PRIORITY = 100;
/** `mangle`: after conntrack (-200), before destination NAT (`dstnat`, -100). */
const BEFORE_DESTINATION_NAT_PRIORITY = -150;
/** The packet is addressed to one of the host's own addresses (before any NAT rewrites it). */
const toHostAddress = match({ fib: { result: "type", flags: ["daddr"] } }, "local");

/**
 * Creates both tables, their maps and sets, and (re)writes their base chains. Idempotent and
 * atomic (flush and refill in one transaction), so every agent of the node may run it at start;
 * per-sandbox chains and elements are left as they are.
 */
export function nodeCommands(network: FirewallNetwork): NftCommand[] {
  const { table: name, bridge } = network;
  const inet = (chainName: string, ...expr: NftExpression[]) => rule("inet", name, chainName, ...expr);
  const bridged = (chainName: string, ...expr: NftExpression[]) => rule("bridge", name, chainName, ...expr);
  const fromBridge = match(meta("iifname"), bridge);
  const toBridge = match(meta("oifname"), bridge);
  // A frame from a port of the bridge that no port chain accepted (prerouting) or no peer chain let
  // through (forward). The set catches ports of agents older than the device group.
  const fromUnknownPort = [match(meta("iifname"), `@${SANDBOX_PORTS_SET}`), match(meta("iifgroup"), portGroupOf(network))];
  const subnet = prefix(network.subnet);
  const baseChains: [NftFamily, string, string | undefined][] = [
    ["inet", "input", "input"],
    ["inet", "forward", "forward"],
    ["inet", "output", "output"],
    ["inet", "from_sandbox", undefined],
    ["bridge", "prerouting", "prerouting"],
    ["bridge", "forward", "forward"],
  ];
  return [
    { add: table("inet", name) },
    { add: { map: { family: "inet", table: name, name: EGRESS_MAP, type: "ipv4_addr", map: "verdict" } } },
    { add: table("bridge", name) },
    { add: { map: { family: "bridge", table: name, name: PORTS_MAP, type: "ifname", map: "verdict" } } },
    { add: { map: { family: "bridge", table: name, name: PEERS_MAP, type: "ifname", map: "verdict" } } },
    { add: { set: { family: "bridge", table: name, name: SANDBOX_PORTS_SET, type: "ifname" } } },
    ...baseChains.flatMap(([family, chainName, hook]): NftCommand[] => [
      { add: chain(family, name, chainName, hook ? { hook, prio: FILTER_PRIORITY[family] } : undefined) },
      { flush: chain(family, name, chainName) },
    ]),
    {
      add: {
        chain: { family: "inet", table: name, name: "before_nat", type: "filter", hook: "prerouting", prio: BEFORE_DESTINATION_NAT_PRIORITY, policy: "accept" },
      },
    },
    { flush: chain("inet", name, "before_nat") },
    { add: { chain: { family: "inet", table: name, name: "postrouting", type: "nat", hook: "postrouting", prio: SOURCE_NAT_PRIORITY, policy: "accept" } } },
    { flush: chain("inet", name, "postrouting") },
    inet("postrouting", match(payload("ip", "saddr"), subnet), match(payload("ip", "daddr"), subnet, "!="), { masquerade: null }),
    inet("before_nat", fromBridge, established, ACCEPT),
    inet("before_nat", fromBridge, toHostAddress, DROP),
    inet("input", fromBridge, established, ACCEPT),
    inet("input", fromBridge, DROP),
    inet("forward", fromBridge, jump("from_sandbox")),
    inet("forward", toBridge, established, ACCEPT),
    inet("forward", toBridge, DROP),
    // Of the host's own processes, only root's open connections to sandboxes (the proxy, the agent):
    // another local account would otherwise reach every sandbox's ports and daemon without a token.
    // Rejected, not dropped: the caller is told at once instead of waiting out its connect timeout.
    inet("output", toBridge, match({ ct: { key: "state" } }, "new", "in"), match(meta("skuid"), 0, "!="), { reject: null }),
    inet("from_sandbox", established, ACCEPT),
    inet("from_sandbox", { vmap: { key: payload("ip", "saddr"), data: `@${EGRESS_MAP}` } }),
    inet("from_sandbox", DROP),
    bridged("prerouting", { vmap: { key: meta("iifname"), data: `@${PORTS_MAP}` } }),
    ...fromUnknownPort.map((port) => bridged("prerouting", port, DROP)),
    bridged("forward", { vmap: { key: meta("iifname"), data: `@${PEERS_MAP}` } }),
    ...fromUnknownPort.map((port) => bridged("forward", port, DROP)),
  ];
}

/** Pins a bridge port to its sandbox's MAC and address (done when the namespace is prepared). */
export function portGuardCommands(network: FirewallNetwork, guard: PortGuard): NftCommand[] {
  const name = network.table;
  const chainName = portChain(guard.id);
  const guardRule = (...expr: NftExpression[]) => rule("bridge", name, chainName, ...expr);
  return [
    { add: chain("bridge", name, chainName) },
    { flush: chain("bridge", name, chainName) },
    guardRule(match(payload("ether", "saddr"), guard.sandboxMac, "!="), DROP),
    guardRule(match(payload("arp", "saddr ip"), guard.address, "!="), DROP),
    guardRule(match(payload("ip", "saddr"), guard.address, "!="), DROP),
    guardRule(match(payload("ether", "type"), { set: ["ip", "arp"] }, "!="), DROP),
    guardRule(ACCEPT),
    { add: element("bridge", name, PORTS_MAP, [[guard.hostInterface, jump(chainName)]]) },
    { add: element("bridge", name, SANDBOX_PORTS_SET, [guard.hostInterface]) },
  ];
}

/**
 * Where no sandbox goes, whatever its egress policy: the clouds' instance metadata and host services
 * — link-local (169.254.169.254 of AWS, GCP, Azure, OpenStack…), Alibaba Cloud's 100.100.100.200,
 * Azure's WireServer 168.63.129.16 (Azure's DNS at that address stays reachable on port 53 through
 * the DNS rule before these, when it is the host's resolver) — and loopback.
 */
export const NEVER_REACHED = ["169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32", "127.0.0.0/8"] as const;

/** A claimed sandbox's egress policy (and peer group), in force once the commands are applied. */
export function sandboxPolicyCommands(network: FirewallNetwork, policy: SandboxPolicy): NftCommand[] {
  const name = network.table;
  const chainName = sandboxChain(policy.id);
  const egressRule = (...expr: NftExpression[]) => rule("inet", name, chainName, ...expr);
  const daddr = payload("ip", "daddr");
  const commands: NftCommand[] = [{ add: chain("inet", name, chainName) }, { flush: chain("inet", name, chainName) }];
  if (policy.egress.kind !== "denyAll" && policy.dnsServers.length > 0) {
    commands.push(
      egressRule(match(daddr, anyOf(policy.dnsServers)), match(meta("l4proto"), { set: ["tcp", "udp"] }), match(payload("th", "dport"), 53), ACCEPT),
    );
  }
  // The sandboxes' own subnet first (peers, then the rest dropped): a deny list may cover it (a Pod's
  // default denies the private ranges it lies in) without cutting the peers of a group.
  if (policy.peerGroup) {
    const set = groupSet(policy.peerGroup);
    commands.push(
      { add: { set: { family: "inet", table: name, name: set, type: "ipv4_addr" } } },
      { add: element("inet", name, set, [policy.address]) },
      // Peers reach each other's ports, never each other's in-sandbox daemon (it runs commands as
      // root) nor code interpreter (it runs code as the sandbox's user): those need the proxy's token.
      egressRule(match(daddr, `@${set}`), match(payload("tcp", "dport"), { set: [...CODE_RUNNING_PORTS] }), DROP),
      egressRule(match(daddr, `@${set}`), ACCEPT),
    );
  }
  commands.push(egressRule(match(daddr, prefix(network.subnet)), DROP));
  commands.push(...[...NEVER_REACHED, ...(network.denied ?? [])].map((cidr) => egressRule(match(daddr, prefix(cidr)), DROP)));
  switch (policy.egress.kind) {
    case "allowAll":
      commands.push(egressRule(ACCEPT));
      break;
    case "denyAll":
      commands.push(egressRule(DROP));
      break;
    case "allowList":
      for (const allowed of policy.egress.allow ?? []) {
        const expr = allowRule(allowed);
        if (expr) commands.push(egressRule(...expr, ACCEPT));
      }
      commands.push(egressRule(DROP));
      break;
  }
  commands.push({ add: element("inet", name, EGRESS_MAP, [[policy.address, jump(chainName)]]) });
  if (policy.peerGroup) {
    const set = groupSet(policy.peerGroup);
    const peers = peersChain(policy.id);
    commands.push(
      { add: { set: { family: "bridge", table: name, name: set, type: "ifname" } } },
      { add: element("bridge", name, set, [policy.hostInterface]) },
      { add: chain("bridge", name, peers) },
      { flush: chain("bridge", name, peers) },
      rule("bridge", name, peers, match(payload("tcp", "dport"), { set: [...CODE_RUNNING_PORTS] }), DROP),
      rule("bridge", name, peers, match(meta("oifname"), `@${set}`), ACCEPT),
      { add: element("bridge", name, PEERS_MAP, [[policy.hostInterface, jump(peers)]]) },
    );
  }
  return commands;
}

/**
 * The match of an allow-list entry. Sandboxes have IPv4 only, so an IPv6 entry can never match
 * their traffic: it yields nothing (and what is not allowed is dropped).
 */
function allowRule(allowed: EgressRule): NftExpression[] | undefined {
  if (!parseIpv4Cidr(allowed.cidr)) return undefined;
  const expr = [match(payload("ip", "daddr"), prefix(allowed.cidr))];
  const ports = allowed.ports ?? [];
  if (allowed.protocol && ports.length > 0) expr.push(match(payload(allowed.protocol, "dport"), anyOf(ports)));
  else if (allowed.protocol) expr.push(match(meta("l4proto"), allowed.protocol));
  else if (ports.length > 0) expr.push(match(meta("l4proto"), { set: ["tcp", "udp"] }), match(payload("th", "dport"), anyOf(ports)));
  return expr;
}

/** One attachment's keys in the ruleset. */
export interface AttachmentKeys {
  id: string;
  address?: string;
  hostInterface?: string;
}

/** What `nft -j list table` returns, minus the metainfo. */
export type NftListing = NftObject[];

/**
 * Removes everything of one attachment that `listing` (both tables) holds: its elements in every
 * map and set (they reference its chains), then its chains. Empty when nothing is left, so a
 * repeated removal is a no-op.
 */
export function removalCommands(network: FirewallNetwork, listing: NftListing, keys: AttachmentKeys): NftCommand[] {
  const elements: NftCommand[] = [];
  const chains: NftCommand[] = [];
  const mine = new Set([sandboxChain(keys.id), portChain(keys.id), peersChain(keys.id)]);
  for (const object of listing) {
    const [kind, body] = Object.entries(object)[0] ?? [];
    if (!body || body.table !== network.table) continue;
    const family = body.family as NftFamily;
    if ((kind === "set" || kind === "map") && Array.isArray(body.elem)) {
      const key = family === "inet" ? keys.address : keys.hostInterface;
      if (key === undefined) continue;
      const held = (body.elem as unknown[]).filter((item) => elementKey(item) === key);
      if (held.length > 0) elements.push({ delete: element(family, network.table, String(body.name), [key]) });
    } else if (kind === "chain" && mine.has(String(body.name))) {
      chains.push({ flush: chain(family, network.table, String(body.name)) }, { delete: chain(family, network.table, String(body.name)) });
    }
  }
  return [...elements, ...chains];
}

/** What one agent knows to be in force in a network's firewall. */
export interface FirewallExpectation {
  /** Bridge ports (host-side interfaces) whose port guard is in force. */
  ports: readonly string[];
  /** Sandbox addresses whose egress policy is in force. */
  addresses: readonly string[];
}

/**
 * What `listing` (both tables) lacks of the network's firewall: a table, the rules of a base chain,
 * the expected port guards and egress policies. All of it goes with a `flush ruleset` (Debian's
 * `systemctl reload nftables` runs /etc/nftables.conf, which starts with one), and then every
 * sandbox reaches the host and the others. Empty when everything is there.
 */
export function firewallGaps(network: FirewallNetwork, listing: NftListing, expected: FirewallExpectation): string[] {
  const tables = new Set<string>();
  const chainsWithRules = new Set<string>();
  const guardedPorts = new Set<unknown>();
  const policedAddresses = new Set<unknown>();
  for (const object of listing) {
    const [kind, body] = Object.entries(object)[0] ?? [];
    if (!body || (kind === "table" ? body.name : body.table) !== network.table) continue;
    if (kind === "table") tables.add(String(body.family));
    else if (kind === "rule") chainsWithRules.add(`${String(body.family)} ${String(body.chain)}`);
    else if (kind === "map" && Array.isArray(body.elem)) {
      const keys =
        body.family === "bridge" && body.name === PORTS_MAP ? guardedPorts : body.family === "inet" && body.name === EGRESS_MAP ? policedAddresses : undefined;
      for (const item of body.elem as unknown[]) keys?.add(elementKey(item));
    }
  }
  const gaps: string[] = [];
  for (const family of ["inet", "bridge"] as const) if (!tables.has(family)) gaps.push(`table ${family} ${network.table}`);
  const baseChains = new Set(
    nodeCommands(network).flatMap((command) => {
      const body = "add" in command ? command.add.rule : undefined;
      return body ? [`${String(body.family)} ${String(body.chain)}`] : [];
    }),
  );
  for (const baseChain of baseChains)
    if (tables.has(baseChain.split(" ")[0] ?? "") && !chainsWithRules.has(baseChain)) gaps.push(`the rules of chain ${baseChain}`);
  const unguarded = expected.ports.filter((port) => !guardedPorts.has(port));
  if (unguarded.length > 0) gaps.push(`the port guards of ${unguarded.join(", ")}`);
  const unpoliced = expected.addresses.filter((address) => !policedAddresses.has(address));
  if (unpoliced.length > 0) gaps.push(`the egress policies of ${unpoliced.join(", ")}`);
  return gaps;
}

/** The group sets of `listing` that hold no element any more (removing one still in use fails: a chain refers to it). */
export function emptyGroupSets(network: FirewallNetwork, listing: NftListing): { family: NftFamily; name: string }[] {
  return listing.flatMap((object) => {
    const body = object.set;
    if (!body || body.table !== network.table || !String(body.name).startsWith(GROUP_PREFIX)) return [];
    const elements = Array.isArray(body.elem) ? body.elem : [];
    return elements.length === 0 ? [{ family: body.family as NftFamily, name: String(body.name) }] : [];
  });
}

export function deleteSetCommand(network: FirewallNetwork, set: { family: NftFamily; name: string }): NftCommand {
  return { delete: { set: { family: set.family, table: network.table, name: set.name } } };
}

export function deleteTablesCommands(network: FirewallNetwork): NftCommand[] {
  return [{ delete: table("inet", network.table) }, { delete: table("bridge", network.table) }];
}

/** The key of a set or map element as `nft -j list` prints it: `key`, `[key, value]` or `{ elem: { val: key } }`. */
export function elementKey(item: unknown): unknown {
  const first: unknown = Array.isArray(item) ? item[0] : item;
  if (first && typeof first === "object" && "elem" in first) return (first as { elem: { val?: unknown } }).elem.val;
  return first;
}
