/**
 * A pool's agent limits (its agentTemplate's agent container: agent-pod.ts `agentPodLimits`) as the
 * agent reads them: FSB_AGENT_CPU_LIMIT_MILLICORES and FSB_AGENT_MEMORY_LIMIT_BYTES, what Kubernetes'
 * Downward API gives an agent Pod. The embedded mode's agents get them this way.
 */
import type { SandboxPool } from "@fast-sandbox/api";
import { agentPodLimits } from "./agent-pod.js";

export function agentLimitsEnv(pool: SandboxPool): Record<string, string> {
  const limits = agentPodLimits(pool);
  return {
    ...(limits.cpuMillis !== undefined ? { FSB_AGENT_CPU_LIMIT_MILLICORES: String(limits.cpuMillis) } : {}),
    ...(limits.memoryBytes !== undefined ? { FSB_AGENT_MEMORY_LIMIT_BYTES: String(limits.memoryBytes) } : {}),
  };
}
