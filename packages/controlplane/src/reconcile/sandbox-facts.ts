/**
 * Facts an agent reports about its sandboxes on every heartbeat, recorded as conditions of their
 * Sandbox objects: the command exited (`CommandExited`; the sandbox stays up for exec), and the
 * kernel's OOM killer killed a process of the sandbox (`OOMKilled`). Each is written once; a
 * heartbeat that brings nothing new writes nothing.
 */
import type { Condition, Sandbox } from "@fast-sandbox/api";
import type { AgentSandbox, AgentStatus } from "../agent-client/agent-client.js";
import { systemClock, type Clock } from "../controller/clock.js";
import type { ResourceStore } from "../store/resource-store.js";
import { setCondition, writeStatus } from "../fastpath/sandbox-status.js";

export const CONDITION_COMMAND_EXITED = "CommandExited";
export const CONDITION_OOM_KILLED = "OOMKilled";

/** The conditions a sandbox lacks for what its agent reports about it (empty when it has them all). */
export function newSandboxFacts(sandbox: Sandbox, reported: AgentSandbox): Condition[] {
  const has = (type: string) => sandbox.status?.conditions?.some((condition) => condition.type === type) ?? false;
  const facts: Condition[] = [];
  if (reported.oomKilled && !has(CONDITION_OOM_KILLED)) {
    facts.push({
      type: CONDITION_OOM_KILLED,
      status: "True",
      reason: "OOMKilled",
      message: "the kernel's OOM killer killed a process of the sandbox: it reached its memory limit (the pool's sandboxResources.memory)",
    });
  }
  if (reported.exitCode !== undefined && !has(CONDITION_COMMAND_EXITED)) {
    facts.push({
      type: CONDITION_COMMAND_EXITED,
      status: "True",
      reason: reported.exitCode === 0 ? "Succeeded" : "Failed",
      message: `the command exited with code ${reported.exitCode}; exec still works`,
    });
  }
  return facts;
}

/** Records, once each, the facts `agentName` reports about the sandboxes assigned to it; `clock` dates them (@default systemClock). */
export async function recordSandboxFacts(store: ResourceStore, agentName: string, status: AgentStatus, clock: Clock = systemClock): Promise<void> {
  const reported = new Map(status.sandboxes.filter((s) => s.exitCode !== undefined || s.oomKilled).map((s) => [s.sandboxId, s]));
  if (reported.size === 0) return;
  const { items } = await store.list("Sandbox");
  const now = clock.now();
  for (const sandbox of items) {
    const facts = reported.get(sandbox.status?.sandboxID ?? "");
    if (!facts || sandbox.status?.assignedPod !== agentName || sandbox.metadata.deletionTimestamp) continue;
    const conditions = newSandboxFacts(sandbox, facts);
    if (conditions.length === 0) continue;
    await writeStatus(store, sandbox, {
      conditions: conditions.reduce((all, condition) => setCondition(all, condition, now), sandbox.status.conditions),
    });
  }
}
