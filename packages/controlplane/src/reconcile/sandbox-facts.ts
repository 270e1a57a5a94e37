/**
 * Facts an agent reports about its sandboxes on every heartbeat, recorded as conditions of their
 * Sandbox objects: the command exited (`CommandExited`; the sandbox stays up for exec), and the
 * kernel's OOM killer killed a process of the sandbox (`OOMKilled`). Each is written once; a
 * heartbeat that brings nothing new writes nothing, and — with the informer's cache at hand — reads
 * nothing either: every heartbeat of an agent reports the facts of its sandboxes again, and at
 * thousands of sandboxes a store read of all of them per heartbeat took a whole core.
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

export interface SandboxFactsOptions {
  /** Dates the conditions. @default systemClock */
  clock?: Clock;
  /**
   * The sandboxes as last seen, by `namespace/name` (the Sandbox informer's cache): only a sandbox
   * whose cached record lacks a reported fact is read from the store (and written). One the cache
   * does not hold yet is left for a later heartbeat. @default none: a store read per reported sandbox
   */
  cached?: (key: string) => Sandbox | undefined;
  /**
   * The namespace of the agent's Pod as the fleet knows it (not as the agent says): facts about a
   * sandbox of another namespace are ignored, as every call about a sandbox refuses an agent of
   * another namespace (agent-connections.ts). @default any namespace (embedded: one per pool, made by the control plane)
   */
  agentNamespace?: string;
}

/**
 * Records, once each, the facts `agentName` reports about the sandboxes assigned to it: the record
 * of each reported sandbox (by the namespace and name the agent reports) is looked up, never a
 * list of every sandbox.
 */
export async function recordSandboxFacts(store: ResourceStore, agentName: string, status: AgentStatus, options: SandboxFactsOptions = {}): Promise<void> {
  const { clock = systemClock, cached, agentNamespace } = options;
  for (const facts of status.sandboxes) {
    // A sandbox only the agent's create knows yet has no namespace and name: there is no record to mark.
    if ((facts.exitCode === undefined && !facts.oomKilled) || !facts.namespace || !facts.name) continue;
    if (agentNamespace !== undefined && facts.namespace !== agentNamespace) continue;
    const isTheReported = (sandbox: Sandbox | undefined): sandbox is Sandbox =>
      sandbox?.status?.sandboxID === facts.sandboxId && sandbox.status.assignedPod === agentName && !sandbox.metadata.deletionTimestamp;
    if (cached) {
      const seen = cached(`${facts.namespace}/${facts.name}`);
      if (!isTheReported(seen) || newSandboxFacts(seen, facts).length === 0) continue;
    }
    const sandbox = await store.get("Sandbox", { namespace: facts.namespace, name: facts.name });
    if (!isTheReported(sandbox)) continue;
    const conditions = newSandboxFacts(sandbox, facts);
    if (conditions.length === 0) continue;
    const now = clock.now();
    await writeStatus(store, sandbox, {
      conditions: conditions.reduce((all, condition) => setCondition(all, condition, now), sandbox.status?.conditions),
    });
  }
}
