/**
 * What every instance of a pool's sandboxes has in common, as the agent is told it: the resource
 * limits a create carries, and the template of the pool's prepared instances (FSB_PREPARED_*
 * environment of its agents, read by the agent's agent-config.ts). The template is an agent create
 * request for a sandbox that names nothing of its own, translated by the same code as a create,
 * so the agent's comparison of a create against it cannot drift from what creates send.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { parseCpuMillis, parseMemoryBytes, pb, preparedInstancesOf, type SandboxPool } from "@fast-sandbox/api";
import type { AgentSandboxSpec } from "../agent-client/agent-client.js";
import { agentSandboxSpecToMessage } from "../agent-client/rpc-agent-client.js";
import { instanceNetwork } from "./sandbox-network.js";

/** The pool's per-sandbox limits, as an agent create request carries them (undefined: none). */
export function poolInstanceLimits(pool: SandboxPool): Pick<AgentSandboxSpec, "cpuMillis" | "memoryBytes" | "pids" | "ephemeralStorageBytes"> {
  const resources = pool.spec.sandboxResources;
  return {
    cpuMillis: resources?.cpu ? parseCpuMillis(resources.cpu, "pool.spec.sandboxResources.cpu") : undefined,
    memoryBytes: resources?.memory ? parseMemoryBytes(resources.memory, "pool.spec.sandboxResources.memory") : undefined,
    pids: resources?.pids,
    ephemeralStorageBytes: resources?.ephemeralStorage
      ? parseMemoryBytes(resources.ephemeralStorage, "pool.spec.sandboxResources.ephemeralStorage")
      : undefined,
  };
}

/**
 * The environment that tells a pool's agent which prepared instances to keep: FSB_PREPARED_INSTANCES,
 * FSB_PREPARED_TEMPLATE and, for a gVisor pool's copies of a checkpoint, FSB_PREPARED_FROM_CHECKPOINT;
 * none when the pool keeps none or its spec cannot make a sandbox.
 */
export function preparedInstancesEnv(pool: SandboxPool): Record<string, string> {
  const count = preparedInstancesOf(pool.spec);
  const fromCheckpoint = pool.spec.preparedFromCheckpoint;
  // A gVisor pool's instances are its checkpoint's copies: the checkpoint names the image.
  const image = pool.spec.image ?? (fromCheckpoint ? "" : undefined);
  if (count === 0 || image === undefined) return {};
  let template: AgentSandboxSpec;
  try {
    template = {
      sandboxId: "",
      namespace: pool.metadata.namespace ?? "default",
      name: "",
      image,
      command: [],
      args: [],
      envs: [],
      runtimeType: pool.spec.runtimeType ?? "container",
      ...poolInstanceLimits(pool),
      exposedPorts: [],
      network: instanceNetwork({ poolRef: pool.metadata.name, image }, pool),
    };
  } catch {
    // A pool whose spec cannot make a sandbox cannot make a prepared one either; its creates say why.
    return {};
  }
  return {
    FSB_PREPARED_INSTANCES: String(count),
    FSB_PREPARED_TEMPLATE: toJsonString(pb.AgentCreateSandboxRequestSchema, agentSandboxSpecToMessage(template)),
    ...(fromCheckpoint ? { FSB_PREPARED_FROM_CHECKPOINT: fromCheckpoint } : {}),
  };
}
