/**
 * Status writes of sandboxes. Several writers may change one sandbox's status (the replica that
 * creates it, the leader's reconciler, facts from heartbeats), so a write is conditional on the
 * resourceVersion of the copy it was computed from, and never merges that copy over a newer status:
 * on a conflict the status is read again and only the change the writer made — the fields it set or
 * removed, the conditions it set — is applied to the fresh one (a three-way merge), then written
 * conditionally again.
 */
import { ConflictError, type Condition, type Sandbox, type SandboxStatus } from "@fast-sandbox/api";
import { isDeepStrictEqual } from "node:util";
import { systemClock } from "../controller/clock.js";
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

/** How often a status write reads again after a conflict before it gives up. */
const STATUS_WRITE_ATTEMPTS = 8;

/**
 * Writes `patch` over the sandbox's status, and `condition` into its conditions when given, with
 * `now` (the caller's clock; @default systemClock.now()) as its transition time when it changed. The
 * write is conditional on `sandbox`'s resourceVersion; after a conflict the same change is applied to
 * a fresh read (see `rebaseStatus`). Fails with NotFoundError when the sandbox is gone (or has another uid).
 */
export async function writeStatus(
  store: ResourceStore,
  sandbox: Sandbox,
  patch: SandboxStatus,
  condition?: Condition,
  now = systemClock.now(),
): Promise<Sandbox> {
  const base = sandbox.status ?? {};
  const desired: SandboxStatus = { ...base, ...patch };
  if (condition) desired.conditions = setCondition(desired.conditions, condition, now);
  let current = sandbox;
  let status = desired;
  for (let attempt = 1; ; attempt++) {
    try {
      return await store.updateStatus("Sandbox", { ...current, status });
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= STATUS_WRITE_ATTEMPTS) throw error;
      const fresh = await store.get("Sandbox", { namespace: sandbox.metadata.namespace ?? "default", name: sandbox.metadata.name });
      // Gone, or another object of the same name: the uid check of the write says so.
      if (!fresh || fresh.metadata.uid !== sandbox.metadata.uid) return store.updateStatus("Sandbox", { ...current, status }, { unconditional: true });
      current = fresh;
      status = rebaseStatus(base, desired, fresh.status ?? {});
    }
  }
}

/**
 * The writer's change from `base` to `desired`, applied to `current` (what another writer left):
 * fields set or changed in `desired` win, fields it removed are removed, others are `current`'s;
 * conditions are merged by type the same way.
 */
export function rebaseStatus(base: SandboxStatus, desired: SandboxStatus, current: SandboxStatus): SandboxStatus {
  const result: Record<string, unknown> = { ...current };
  const keys = new Set([...Object.keys(base), ...Object.keys(desired)]);
  keys.delete("conditions");
  for (const key of keys) {
    const before = (base as Record<string, unknown>)[key];
    const after = (desired as Record<string, unknown>)[key];
    if (isDeepStrictEqual(before, after)) continue;
    if (after === undefined) delete result[key];
    else result[key] = after;
  }
  const conditions = rebaseConditions(base.conditions ?? [], desired.conditions ?? [], current.conditions ?? []);
  if (conditions.length > 0) result.conditions = conditions;
  else delete result.conditions;
  return result;
}

function rebaseConditions(base: Condition[], desired: Condition[], current: Condition[]): Condition[] {
  const list = [...current];
  const types = new Set([...base.map((c) => c.type), ...desired.map((c) => c.type)]);
  for (const type of types) {
    const before = base.find((c) => c.type === type);
    const after = desired.find((c) => c.type === type);
    if (isDeepStrictEqual(before, after)) continue;
    const index = list.findIndex((c) => c.type === type);
    if (after === undefined) {
      if (index >= 0) list.splice(index, 1);
    } else if (index >= 0) list[index] = after;
    else list.push(after);
  }
  return list;
}
