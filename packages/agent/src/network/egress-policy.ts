/**
 * The rules a sandbox's network spec must follow before anything is set up for it, and the
 * address arithmetic the firewall rules need. Pure functions, unit-tested.
 */
import { isIPv4, isIPv6 } from "node:net";
import { ValidationError } from "@fast-sandbox/api/core";
import type { EgressPolicy, EgressRule, SandboxNetworkSpec } from "../runtime/runtime.js";

export interface Ipv4Cidr {
  /** The network address (host bits cleared). */
  network: string;
  prefixLength: number;
  /** `network/prefixLength`. */
  text: string;
}

/** `a.b.c.d/n` (or a bare address, as /32) with the host bits cleared; undefined for anything else. */
export function parseIpv4Cidr(text: string): Ipv4Cidr | undefined {
  const [address = "", prefix, ...rest] = text.split("/");
  if (rest.length > 0 || !isIPv4(address)) return undefined;
  if (prefix !== undefined && !/^\d{1,2}$/.test(prefix)) return undefined;
  const prefixLength = prefix === undefined ? 32 : Number(prefix);
  if (prefixLength > 32) return undefined;
  const network = ipv4FromNumber((ipv4ToNumber(address) & prefixMask(prefixLength)) >>> 0);
  return { network, prefixLength, text: `${network}/${prefixLength}` };
}

export function ipv4ToNumber(address: string): number {
  return address.split(".").reduce((value, octet) => value * 256 + Number(octet), 0);
}

export function ipv4FromNumber(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}

function prefixMask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** True when the IPv4 address lies in the CIDR. */
export function ipv4InCidr(address: string, cidr: Ipv4Cidr): boolean {
  return (ipv4ToNumber(address) & prefixMask(cidr.prefixLength)) >>> 0 === ipv4ToNumber(cidr.network);
}

/** An IPv6 CIDR (or bare address) in the syntax nft accepts; undefined otherwise. */
function isIpv6Cidr(text: string): boolean {
  const [address = "", prefix, ...rest] = text.split("/");
  if (rest.length > 0 || !isIPv6(address)) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= 128);
}

/**
 * The spec with its defaults applied and its CIDRs normalised, or a ValidationError naming the
 * field (under `field`). Shared sandboxes take no egress policy: their traffic is the agent's.
 */
export function checkSandboxNetwork(spec: SandboxNetworkSpec, field = "network"): SandboxNetworkSpec {
  if (spec.mode === "shared") {
    if (spec.egress && spec.egress.kind !== "allowAll") {
      throw new ValidationError(`${field}.egress`, "an egress policy needs the Isolated network mode (a Shared sandbox uses its agent's network)");
    }
    if (spec.allowSandboxToSandbox) throw new ValidationError(`${field}.allowSandboxToSandbox`, "needs the Isolated network mode");
    return { mode: "shared" };
  }
  return {
    mode: "isolated",
    egress: checkEgressPolicy(spec.egress ?? { kind: "allowAll" }, `${field}.egress`),
    allowSandboxToSandbox: spec.allowSandboxToSandbox ?? false,
  };
}

function checkEgressPolicy(policy: EgressPolicy, field: string): EgressPolicy {
  const rules = policy.allow ?? [];
  if (policy.kind !== "allowList") {
    if (rules.length > 0) throw new ValidationError(`${field}.allow`, `destinations are only allowed with the allowList kind, not ${policy.kind}`);
    return { kind: policy.kind };
  }
  return { kind: "allowList", allow: rules.map((rule, index) => checkEgressRule(rule, `${field}.allow[${index}]`)) };
}

function checkEgressRule(rule: EgressRule, field: string): EgressRule {
  const v4 = parseIpv4Cidr(rule.cidr);
  if (!v4 && !isIpv6Cidr(rule.cidr)) throw new ValidationError(`${field}.cidr`, `${JSON.stringify(rule.cidr)} is not an IPv4 or IPv6 CIDR (e.g. 10.0.0.0/8)`);
  const ports = [...new Set(rule.ports ?? [])].sort((a, b) => a - b);
  ports.forEach((port) => {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ValidationError(`${field}.ports`, `${port} is not a port (1-65535)`);
  });
  const protocol = rule.protocol;
  if (protocol !== undefined && protocol !== "tcp" && protocol !== "udp") {
    throw new ValidationError(`${field}.protocol`, `${JSON.stringify(protocol)} must be tcp, udp or empty (both)`);
  }
  return { cidr: v4 ? v4.text : rule.cidr, ...(ports.length > 0 ? { ports } : {}), ...(protocol ? { protocol } : {}) };
}
