/**
 * The CNI configuration of a sandbox network, and what a sandbox's attachment to it is (read from
 * the ADD result). Two lists per network namespace, as containerd's CRI plugin does it:
 *
 * - `loopback` brings `lo` up (runc leaves a namespace it did not create as it is; gVisor has its
 *   own loopback, and this does no harm there);
 * - the sandbox network: `bridge` (the node's bridge, the gateway address on it, a default route)
 *   with `host-local` IPAM (reservations are files under the network's state directory, allocated
 *   under a file lock, so the agents of a node share one range safely), then `firewall` (its
 *   iptables backend accepts the sandbox's traffic in FORWARD on hosts whose FORWARD policy drops,
 *   e.g. where Docker runs). What a sandbox may reach, and the masquerading of its outbound
 *   traffic, are the agent's own nftables rules (firewall-rules.ts): one rule for the whole subnet
 *   instead of the bridge plugin's per-sandbox iptables chain, which its DEL cannot find again
 *   once the namespace is gone (after a reboot, or a namespace deleted by hand).
 */
import { join } from "node:path";
import { FsbError } from "@fast-sandbox/api/core";
import type { CniNetworkList, CniResult } from "./cni-invoker.js";
import { parseIpv4Cidr } from "./egress-policy.js";

export const CNI_VERSION = "1.0.0";
/** The interface of a sandbox in its namespace. */
export const SANDBOX_INTERFACE = "eth0";

export interface SandboxNetworkIdentity {
  /** The network's name: CNI network name, bridge and nftables table names. */
  name: string;
  subnet: string;
}

export const LOOPBACK_NETWORK: CniNetworkList = { cniVersion: CNI_VERSION, name: "fsb-loopback", plugins: [{ type: "loopback" }] };

/** The network list of the sandbox network `network`, whose IPAM reservations live under `stateDir`. */
export function sandboxNetworkList(network: SandboxNetworkIdentity, stateDir: string): CniNetworkList {
  return {
    cniVersion: CNI_VERSION,
    name: network.name,
    plugins: [
      {
        type: "bridge",
        bridge: network.name,
        isGateway: true,
        ipMasq: false,
        // A sandbox never talks to itself through the bridge; hairpin would only help spoofing.
        hairpinMode: false,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: network.subnet }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: ipamDataDir(stateDir),
        },
      },
      { type: "firewall", backend: "iptables" },
    ],
  };
}

/** host-local's data directory: it keeps one file per reserved address in `<dataDir>/<network name>/`. */
export function ipamDataDir(stateDir: string): string {
  return join(stateDir, "ipam");
}

/** A sandbox's place on the network, from the ADD result of `sandboxNetworkList`. */
export interface SandboxAddress {
  /** The sandbox's IPv4 address. */
  address: string;
  prefixLength: number;
  gateway: string;
  /** The host side of the sandbox's veth pair (a port of the bridge). */
  hostInterface: string;
  /** The MAC address of the sandbox's interface: the only source MAC its port accepts. */
  sandboxMac: string;
}

/** Reads the address, gateway and interfaces from a bridge plugin's result; throws when one is missing. */
export function sandboxAddressOf(result: CniResult, netnsPath: string): SandboxAddress {
  const interfaces = result.interfaces ?? [];
  const ip = (result.ips ?? []).find((candidate) => parseIpv4Cidr(candidate.address.split("/")[0] ?? "") !== undefined);
  const inside = interfaces.find((item) => item.sandbox === netnsPath && item.name === SANDBOX_INTERFACE);
  // The bridge plugin lists the bridge, then the host-side veth (no sandbox), then the one inside.
  const hostSide = interfaces.find((item, index) => !item.sandbox && index > 0);
  const [address = "", prefix = ""] = ip?.address.split("/") ?? [];
  if (!ip || !ip.gateway || !inside?.mac || !hostSide?.name || !/^\d+$/.test(prefix)) {
    throw new FsbError("internal", `the CNI result lacks the sandbox's IPv4 address, gateway or interfaces: ${JSON.stringify(result)}`);
  }
  return { address, prefixLength: Number(prefix), gateway: ip.gateway, hostInterface: hostSide.name, sandboxMac: inside.mac };
}
