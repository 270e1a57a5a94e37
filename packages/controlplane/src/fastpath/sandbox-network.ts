/**
 * The network of a sandbox's instances, as the control plane decides it: the pool's mode (or
 * DEFAULT_NETWORK_MODE), the sandbox's own egress policy — which may only narrow the pool's — or
 * the pool's, and the pool's allowSandboxToSandbox; and which ports an instance takes on its agent's
 * address (a Shared instance's exposed ports; an Isolated one has an address of its own).
 */
import {
  FailedPreconditionError,
  ValidationError,
  checkEgressOverride,
  checkEgressPolicy,
  checkPoolNetwork,
  egressPolicyOf,
  networkModeOf,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type SandboxStatus,
} from "@fast-sandbox/api";
import type { AgentSandboxNetwork } from "../agent-client/agent-client.js";

function poolName(pool: SandboxPool): string {
  return `${pool.metadata.namespace ?? "default"}/${pool.metadata.name}`;
}

/**
 * The network a new instance of a sandbox with `spec` gets in `pool`. ValidationError (on
 * `spec.egress…`) when the sandbox's egress policy allows more than the pool's, or restricts a
 * Shared network; FailedPreconditionError when the pool's own network settings are not valid (a
 * pool written through the Kubernetes API, which does not know the default mode).
 */
export function instanceNetwork(spec: SandboxSpec, pool: SandboxPool): AgentSandboxNetwork {
  try {
    checkPoolNetwork(pool.spec);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    throw new FailedPreconditionError(`pool ${poolName(pool)} cannot take sandboxes until its spec is fixed: ${error.message}`);
  }
  if (spec.egress) checkEgressPolicy(spec.egress, "spec.egress");
  if (networkModeOf(pool.spec) === "Shared") {
    if (spec.egress) {
      throw new ValidationError(
        "spec.egress",
        `pool ${poolName(pool)} has a Shared network (its sandboxes use their agent's network), where egress cannot be restricted; leave egress out, or use a pool with network.mode: Isolated`,
      );
    }
    return { mode: "Shared" };
  }
  const poolEgress = egressPolicyOf(pool.spec);
  if (spec.egress) checkEgressOverride(spec.egress, poolEgress, poolName(pool));
  return { mode: "Isolated", egress: spec.egress ?? poolEgress, allowSandboxToSandbox: pool.spec.network?.allowSandboxToSandbox ?? false };
}

/** The ports a new instance takes on its agent's address: its exposed ports on a Shared network, none on an Isolated one. */
export function portsOnAgent(spec: SandboxSpec, network: AgentSandboxNetwork): number[] {
  return network.mode === "Shared" ? (spec.exposedPorts ?? []) : [];
}

/**
 * The ports an existing instance holds on its agent's address, from its record: none when it has an
 * address of its own (`status.sandboxIP`); for an instance being created (Bound), what its pool's
 * mode gives it; otherwise — it runs in its agent's network — its exposed ports. `pool` undefined:
 * not known here (then Bound counts as Shared).
 */
export function portsHeldBy(sandbox: Sandbox, pool: SandboxPool | undefined): number[] {
  if (sandbox.status?.sandboxIP) return [];
  if (sandbox.status?.phase === "Bound" && pool && networkModeOf(pool.spec) === "Isolated") return [];
  return sandbox.spec.exposedPorts ?? [];
}

/**
 * `status` with the instance's own address as `sandboxIP`, or without one. An address that goes
 * away stays as an undefined key, so a status write over the stored status removes it.
 */
export function withSandboxIP(status: SandboxStatus, address: string | undefined): SandboxStatus {
  if (address) return { ...status, sandboxIP: address };
  return "sandboxIP" in status ? { ...status, sandboxIP: undefined } : status;
}
