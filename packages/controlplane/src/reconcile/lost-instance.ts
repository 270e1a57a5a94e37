/**
 * Why a Running sandbox whose agent answers is Lost: the agent no longer holds its instance (its
 * container was removed behind the agent's back: `SandboxMissing`), or holds it with its process 1
 * gone (its task stopped or vanished: killed outside Fast Sandbox, or the host restarted, which ends
 * every task and keeps every container: `SandboxStopped`), or its agent stopped it, its disk use past
 * the pool's sandboxResources.ephemeralStorage (`Evicted`, as the kubelet evicts a Pod past its
 * ephemeral-storage limit). Either way the instance can run nothing more; failurePolicy
 * AutoRecreate replaces it, Manual leaves it Lost until it is deleted.
 */
import type { Condition } from "@fast-sandbox/api";

export type LostInstance = "missing" | "stopped";

/** The reasons of the conditions lostInstanceCondition writes. */
export const LOST_INSTANCE_REASONS: ReadonlySet<string> = new Set(["SandboxMissing", "SandboxStopped", "Evicted"]);

/**
 * The `Ready=False` condition that says why, for the sandbox the agent `agentName` was running;
 * `evicted`: why that agent stopped it, as it reports (a stopped instance's only).
 */
export function lostInstanceCondition(agentName: string, how: LostInstance, evicted?: string): Condition {
  if (how === "stopped" && evicted) return { type: "Ready", status: "False", reason: "Evicted", message: `agent ${agentName} stopped it: ${evicted}` };
  return how === "missing"
    ? { type: "Ready", status: "False", reason: "SandboxMissing", message: `agent ${agentName} answers but does not run it` }
    : {
        type: "Ready",
        status: "False",
        reason: "SandboxStopped",
        message: `agent ${agentName} answers but the sandbox's process 1 is gone (killed outside Fast Sandbox, or its host restarted): it can run nothing more`,
      };
}
