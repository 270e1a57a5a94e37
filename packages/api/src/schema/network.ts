/**
 * How sandboxes are networked: a pool's `spec.network` (mode, egress policy, sandbox-to-sandbox
 * traffic) and a sandbox's own `spec.egress`, which may only narrow what its pool allows.
 *
 *   network:
 *     mode: Isolated               # or Shared; unset: DEFAULT_NETWORK_MODE
 *     egress:                      # Isolated only; unset: allowAll
 *       policy: allowList          # allowAll | denyAll | allowList
 *       allow:
 *         - cidr: 10.0.0.0/8
 *           ports: [443]           # unset: every port
 *           protocol: tcp          # unset: tcp and udp
 *     allowSandboxToSandbox: false # Isolated only
 */
import { Type, type Static } from "@sinclair/typebox";
import { ValidationError } from "../errors.js";
import { cidrContains, parseCidr } from "./cidr.js";

/**
 * The mode of a pool that does not set `spec.network.mode`, applied by the control plane (there is
 * no schema default, so that this one constant decides, and a stored pool keeps "unset").
 */
export const DEFAULT_NETWORK_MODE: "Isolated" | "Shared" = "Isolated";

// In a module of its own: the agent reads it through `@fast-sandbox/api/core`, which loads no schema.
export { CODE_INTERPRETER_PORT, CODE_RUNNING_PORTS, SANDBOX_DAEMON_PORT } from "./sandbox-daemon-port.js";

export const NetworkMode = Type.Union([Type.Literal("Isolated"), Type.Literal("Shared")], {
  description: `Isolated: each sandbox has its own network namespace and address on its node's sandbox bridge, so sandboxes' ports never collide. Shared: sandboxes use their agent's network; each exposed port is exclusive on the agent's address. Unset: ${DEFAULT_NETWORK_MODE}.`,
});
export type NetworkMode = Static<typeof NetworkMode>;

export const EgressProtocol = Type.Union([Type.Literal("tcp"), Type.Literal("udp")], { description: "tcp or udp; unset: both." });
export type EgressProtocol = Static<typeof EgressProtocol>;

export const EgressRule = Type.Object(
  {
    cidr: Type.String({
      format: "cidr",
      description: "Destination addresses: an IPv4 or IPv6 network (no bits set after the prefix), e.g. 10.0.0.0/8, 203.0.113.7/32 or 2001:db8::/32.",
    }),
    ports: Type.Optional(
      Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), {
        minItems: 1,
        maxItems: 32,
        uniqueItems: true,
        description: "Destination ports; unset: every port.",
      }),
    ),
    protocol: Type.Optional(EgressProtocol),
  },
  { additionalProperties: false },
);
export type EgressRule = Static<typeof EgressRule>;

export const EgressPolicyName = Type.Union([Type.Literal("allowAll"), Type.Literal("denyAll"), Type.Literal("allowList")], {
  description:
    "allowAll: anywhere; denyAll: nowhere (DNS included); allowList: only the destinations in allow, and DNS. Always denied whatever the policy: the node's own addresses and loopback services, other sandboxes (unless the pool's allowSandboxToSandbox), and 169.254.0.0/16.",
});
export type EgressPolicyName = Static<typeof EgressPolicyName>;

const EGRESS_RULE_LIMIT = 64;

function egressPolicy(description: string) {
  return Type.Object(
    {
      policy: EgressPolicyName,
      allow: Type.Optional(
        Type.Array(EgressRule, { maxItems: EGRESS_RULE_LIMIT, description: "policy allowList: where sandboxes may connect to (at least one entry)." }),
      ),
    },
    {
      additionalProperties: false,
      description,
      // The cross-field rules of checkEgressPolicy, for the API server (CEL, Kubernetes mode).
      "x-kubernetes-validations": [
        {
          rule: "self.policy != 'allowList' || (has(self.allow) && size(self.allow) > 0)",
          message: "policy allowList needs at least one entry in allow (denyAll allows nothing)",
          fieldPath: ".allow",
          reason: "FieldValueRequired",
        },
        {
          rule: "self.policy == 'allowList' || !has(self.allow) || size(self.allow) == 0",
          message: "is read with policy allowList only; remove it, or use policy allowList",
          fieldPath: ".allow",
          reason: "FieldValueForbidden",
        },
      ],
    },
  );
}

/** Where a sandbox may connect to. */
export const EgressPolicy = egressPolicy("Where the pool's sandboxes may connect to (Isolated network). Unset: allowAll.");
export type EgressPolicy = Static<typeof EgressPolicy>;

/** A sandbox's own egress policy: within its pool's. */
export const SandboxEgressPolicy = egressPolicy(
  "Narrows the pool's egress policy for this sandbox (Isolated network only): denyAll always; allowAll only under a pool's allowAll; an allowList whose every entry lies within one entry of the pool's allowList (or anything under the pool's allowAll). Unset: the pool's.",
);

/** Egress of an Isolated pool that sets none. */
export const DEFAULT_EGRESS_POLICY: EgressPolicy = Object.freeze({ policy: "allowAll" as const });

export const PoolNetwork = Type.Object(
  {
    mode: Type.Optional(NetworkMode),
    egress: Type.Optional(EgressPolicy),
    allowSandboxToSandbox: Type.Optional(
      Type.Boolean({ description: "Isolated network: the pool's sandboxes may connect to each other (on any port). Default false." }),
    ),
  },
  {
    additionalProperties: false,
    description: "How the pool's sandboxes are networked. Changes apply to sandboxes created (or recreated) afterwards.",
    // What checkPoolNetwork refuses for an explicit Shared mode (an unset mode is the control plane's
    // default, which the API server does not know: the control plane checks that case).
    "x-kubernetes-validations": [
      {
        rule: "!has(self.egress) || !has(self.mode) || self.mode == 'Isolated'",
        message: "applies to an Isolated network only: a Shared sandbox uses its agent's network, where egress cannot be restricted",
        fieldPath: ".egress",
        reason: "FieldValueForbidden",
      },
      {
        rule: "!has(self.allowSandboxToSandbox) || !self.allowSandboxToSandbox || !has(self.mode) || self.mode == 'Isolated'",
        message: "applies to an Isolated network only: Shared sandboxes share their agent's network",
        fieldPath: ".allowSandboxToSandbox",
        reason: "FieldValueForbidden",
      },
    ],
  },
);
export type PoolNetwork = Static<typeof PoolNetwork>;

/** The network mode of a pool: its own, else DEFAULT_NETWORK_MODE. */
export function networkModeOf(spec: { network?: PoolNetwork }): NetworkMode {
  return spec.network?.mode ?? DEFAULT_NETWORK_MODE;
}

/** The egress policy of a pool: its own, else allowAll. */
export function egressPolicyOf(spec: { network?: PoolNetwork }): EgressPolicy {
  return spec.network?.egress ?? DEFAULT_EGRESS_POLICY;
}

/**
 * The rules of an egress policy that the schema cannot say (`field`: where it is, e.g.
 * `spec.egress`): an allowList has entries, other policies none, and every CIDR is a network of its
 * own (the API server's `format: cidr` lets `10.0.0.1/8` through).
 */
export function checkEgressPolicy(egress: EgressPolicy, field: string): void {
  egress.allow?.forEach((rule, index) => parseCidr(rule.cidr, `${field}.allow[${index}].cidr`));
  const entries = egress.allow?.length ?? 0;
  if (egress.policy === "allowList" && entries === 0) {
    throw new ValidationError(`${field}.allow`, "policy allowList needs at least one entry in allow (denyAll allows nothing)");
  }
  if (egress.policy !== "allowList" && entries > 0) {
    throw new ValidationError(`${field}.allow`, `is read with policy allowList only, and the policy is ${egress.policy}; remove it, or use policy allowList`);
  }
}

/** The rules of a pool's `spec.network` that depend on its mode (an unset mode counts as DEFAULT_NETWORK_MODE). */
export function checkPoolNetwork(spec: { network?: PoolNetwork }): void {
  const network = spec.network;
  if (!network) return;
  if (network.egress) checkEgressPolicy(network.egress, "spec.network.egress");
  if (networkModeOf(spec) === "Isolated") return;
  const mode = network.mode ? "Shared" : `Shared (mode unset: the default, ${DEFAULT_NETWORK_MODE})`;
  if (network.egress) {
    throw new ValidationError(
      "spec.network.egress",
      `applies to an Isolated network only, and this pool's is ${mode}: its sandboxes use their agent's network, where egress cannot be restricted; set network.mode: Isolated, or remove egress`,
    );
  }
  if (network.allowSandboxToSandbox) {
    throw new ValidationError(
      "spec.network.allowSandboxToSandbox",
      `applies to an Isolated network only, and this pool's is ${mode}: its sandboxes share their agent's network; set network.mode: Isolated, or remove it`,
    );
  }
}

/** `10.0.0.0/8 tcp port 443`, `2001:db8::/32 tcp+udp any port`. */
export function describeEgressRule(rule: EgressRule): string {
  const ports = rule.ports?.length ? `port${rule.ports.length > 1 ? "s" : ""} ${rule.ports.join(",")}` : "any port";
  return `${rule.cidr} ${rule.protocol ?? "tcp+udp"} ${ports}`;
}

/** `allowAll`, `denyAll`, `allowList (10.0.0.0/8 tcp port 443; …)`. */
export function describeEgressPolicy(egress: EgressPolicy): string {
  return egress.policy === "allowList" ? `allowList (${(egress.allow ?? []).map(describeEgressRule).join("; ")})` : egress.policy;
}

/** Every destination `inner` allows, `outer` allows too. */
function ruleWithin(inner: EgressRule, outer: EgressRule): boolean {
  if (!cidrContains(parseCidr(outer.cidr), parseCidr(inner.cidr))) return false;
  if (outer.protocol !== undefined && inner.protocol !== outer.protocol) return false;
  if (outer.ports === undefined) return true;
  return inner.ports !== undefined && inner.ports.every((port) => outer.ports?.includes(port));
}

/**
 * Refuses (ValidationError on `spec.egress…`) a sandbox's egress policy that allows more than its
 * pool's `poolEgress`: denyAll is always allowed; under the pool's allowAll anything is; under its
 * allowList, an allowList each of whose entries lies within one entry of the pool's (network,
 * ports and protocol); under its denyAll, denyAll only. `pool` names the pool in messages.
 */
export function checkEgressOverride(override: EgressPolicy, poolEgress: EgressPolicy, pool: string): void {
  if (override.policy === "denyAll" || poolEgress.policy === "allowAll") return;
  const poolSays = `the egress policy of pool ${pool} is ${describeEgressPolicy(poolEgress)}`;
  if (poolEgress.policy === "denyAll") {
    throw new ValidationError("spec.egress.policy", `${override.policy} allows more than the pool does: ${poolSays}; allowed here: denyAll`);
  }
  if (override.policy === "allowAll") {
    throw new ValidationError(
      "spec.egress.policy",
      `allowAll allows more than the pool does: ${poolSays}; allowed here: denyAll, or an allowList whose every entry lies within one of the pool's`,
    );
  }
  const poolRules = poolEgress.allow ?? [];
  (override.allow ?? []).forEach((rule, index) => {
    if (poolRules.some((allowed) => ruleWithin(rule, allowed))) return;
    throw new ValidationError(
      `spec.egress.allow[${index}]`,
      `${describeEgressRule(rule)} is not within the pool's allowList: ${poolSays}; narrow this entry to lie within one of the pool's (its network, ports and protocol), or use denyAll`,
    );
  });
}
