/**
 * The agent API's create request in the runtime's terms: one translation, used by CreateSandbox
 * and by the pool's prepared-instance template (FSB_PREPARED_TEMPLATE carries a create request),
 * so a create and the template it must match are read the same way.
 */
import { pb } from "@fast-sandbox/api/core";
import type { EgressPolicy, RuntimeSandboxSpec, RuntimeType, SandboxNetworkSpec } from "../runtime/runtime.js";
import { checkSandboxNetwork } from "../network/egress-policy.js";

const EGRESS_KINDS: Record<pb.EgressPolicy_Kind, EgressPolicy["kind"]> = {
  [pb.EgressPolicy_Kind.KIND_UNSPECIFIED]: "allowAll",
  [pb.EgressPolicy_Kind.ALLOW_ALL]: "allowAll",
  [pb.EgressPolicy_Kind.DENY_ALL]: "denyAll",
  [pb.EgressPolicy_Kind.ALLOW_LIST]: "allowList",
};

/** The request's network in the runtime's terms, checked (ValidationError); unset or unspecified: shared. */
export function sandboxNetworkOf(message: pb.SandboxNetwork | undefined): SandboxNetworkSpec {
  if (!message || message.mode !== pb.SandboxNetwork_Mode.ISOLATED) {
    const egress = message?.egress ? { egress: { kind: EGRESS_KINDS[message.egress.kind] ?? "allowAll" } } : {};
    return checkSandboxNetwork({ mode: "shared", ...egress, allowSandboxToSandbox: message?.allowSandboxToSandbox ?? false });
  }
  const egress = message.egress;
  return checkSandboxNetwork({
    mode: "isolated",
    egress: {
      kind: egress ? (EGRESS_KINDS[egress.kind] ?? "allowAll") : "allowAll",
      allow: (egress?.allow ?? []).map((rule) => ({
        cidr: rule.cidr,
        ...(rule.ports.length > 0 ? { ports: [...rule.ports] } : {}),
        ...(rule.protocol ? { protocol: rule.protocol as "tcp" | "udp" } : {}),
      })),
    },
    allowSandboxToSandbox: message.allowSandboxToSandbox,
  });
}

/** The sandbox the request describes, for the runtime: of the agent's `pool`, logging to `logPath`. Throws ValidationError for a bad network. */
export function runtimeSpecOf(request: pb.AgentCreateSandboxRequest, pool: string, logPath: string): RuntimeSandboxSpec {
  const network = sandboxNetworkOf(request.network);
  const runtimeType: RuntimeType = request.runtimeType === "gvisor" ? "gvisor" : "container";
  return {
    sandboxId: request.sandboxId,
    namespace: request.namespace,
    name: request.name,
    pool,
    image: request.image,
    command: request.command,
    args: request.args,
    env: request.envs.map((e) => ({ name: e.name, value: e.value })),
    ...(request.workingDir ? { workingDir: request.workingDir } : {}),
    resources: {
      ...(request.cpuMillis > 0 ? { cpuMillis: request.cpuMillis } : {}),
      ...(request.memoryBytes > 0n ? { memoryBytes: Number(request.memoryBytes) } : {}),
      ...(request.pids > 0 ? { pids: request.pids } : {}),
      ...(request.ephemeralStorageBytes > 0n ? { ephemeralStorageBytes: Number(request.ephemeralStorageBytes) } : {}),
    },
    runtimeType,
    logPath,
    ...(request.exposedPorts.length > 0 ? { exposedPorts: [...request.exposedPorts] } : {}),
    ...(network.mode === "isolated" ? { network } : {}),
    ...(request.fromCheckpoint ? { fromCheckpoint: request.fromCheckpoint } : {}),
  };
}
