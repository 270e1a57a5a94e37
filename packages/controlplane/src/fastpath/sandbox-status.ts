/**
 * Status writes of sandboxes. The control plane owns the status of every sandbox and the
 * SandboxManager serializes its work per sandbox, so these writes are unconditional (the store's
 * `{ unconditional: true }`: no resourceVersion precondition, the uid still checked) and replace the
 * status with the given one merged with the patch.
 */
import type { Condition, Sandbox, SandboxStatus } from "@fast-sandbox/api";
import type { ResourceStore } from "../store/resource-store.js";

/** Sets or replaces the condition of `next.type`, keeping its transition time while its status holds. */
export function setCondition(conditions: Condition[] | undefined, next: Condition, now: Date): Condition[] {
  const list = [...(conditions ?? [])];
  const index = list.findIndex((c) => c.type === next.type);
  const previous = index >= 0 ? list[index] : undefined;
  const lastTransitionTime = previous && previous.status === next.status ? previous.lastTransitionTime : now.toISOString();
  const condition = { ...next, ...(lastTransitionTime ? { lastTransitionTime } : {}) };
  if (index >= 0) list[index] = condition;
  else list.push(condition);
  return list;
}

/** Writes `patch` over the sandbox's status, and `condition` into its conditions when given. */
export function writeStatus(store: ResourceStore, sandbox: Sandbox, patch: SandboxStatus, condition?: Condition, now = new Date()): Promise<Sandbox> {
  const status: SandboxStatus = { ...sandbox.status, ...patch };
  if (condition) status.conditions = setCondition(status.conditions, condition, now);
  return store.updateStatus("Sandbox", { ...sandbox, status }, { unconditional: true });
}
