/**
 * The janitor's decision, free of I/O, about a pool's checkpoint directory on the node
 * (`<checkpoint dir>/<namespace>/<pool>`, the agents' FSB_CHECKPOINT_DIR; the controller's
 * agent-pod.ts): whether it belongs to a pool that is gone for good, so nothing will ever remove it.
 *
 * Who removes a pool's checkpoints otherwise: its ready agents on the node, when told to (a resumed
 * or deleted paused sandbox, a fork, a user's delete, the controller's checkpoint collector, and the
 * pool-deletion cascade, which deletes every Sandbox of the pool — paused ones with their
 * checkpoints — and then the checkpoints the pool's ready agents report). A node where the pool had
 * no ready agent at that moment (scaled to zero there, its agent lost, the controller down) keeps
 * the directory, and once the pool's agents are gone (owner references) nothing reaches it: each
 * checkpoint holds a gVisor sandbox's memory. So the janitor removes the whole directory, and only
 * when all of this holds:
 *
 * - the inventory says which pools exist (the Kubernetes inventory lists every SandboxPool in full,
 *   or the pass removes nothing: an API error is never "gone"), and no pool of that namespace and
 *   name is among them. The directory is keyed by name, not by UID: a pool deleted and created again
 *   under the same name has the same directory, its agents write their checkpoints into it and
 *   report whatever is there as the new pool's (usable and deletable through the API). While a pool
 *   of that name exists its directory is never touched, whatever its UID: telling the old pool's
 *   checkpoints from the new one's would mean deleting single checkpoints under agents that may be
 *   restoring from them (the agents' readers and tombstones, checkpoint-readers.ts), which only an
 *   agent does safely.
 * - no Sandbox record names the pool (`spec.poolRef`) in that namespace, being deleted or not. The
 *   cascade deletes them all before the pool goes, but a record can outlive it (its finalizer removed
 *   by hand, a create racing the deletion until the garbage collector takes it), and a Paused one
 *   names its checkpoint in that directory (`sandbox.fast.io/paused-checkpoint`): created again, the
 *   pool would resume it from there, so the checkpoint stays as long as such a record does.
 * - the pool has been absent from every pass's inventory for the whole grace period (a pass that
 *   could not read the inventory starts the count over), so a pool deleted and created again within
 *   the grace period keeps its directory, and
 * - nothing in the directory (files, directories, the directory itself) changed during the grace
 *   period: an agent still stopping, or the first agent of a pool created after the inventory was
 *   read, writes there, and its directory is young.
 */
import type { InventorySnapshot } from "./inventory.js";

/** Why a pool's checkpoint directory is removed. */
export type PoolCheckpointReason = "pool_gone";

/** Why a pool's checkpoint directory stays. `protected`: its pool is gone, but not for the whole grace period yet. */
export type PoolCheckpointKeepReason = "pool_exists" | "named_by_sandbox" | "pools_unknown" | "protected";

export type PoolCheckpointVerdict = { action: "remove"; reason: PoolCheckpointReason } | { action: "keep"; why: PoolCheckpointKeepReason };

/** One pool's checkpoint directory on the node (pool-checkpoint-dirs.ts lists them). */
export interface PoolCheckpointDirFacts {
  namespace: string;
  pool: string;
  path: string;
  /** The newest change (modification or status change) of anything in the directory, itself included. */
  changedAtMs: number;
}

/** The key of a pool in the inventory's `pools` and `poolsNamedBySandboxes`. */
export function poolKey(namespace: string, pool: string): string {
  return `${namespace}/${pool}`;
}

export interface PoolCheckpointJudgeContext {
  inventory: Pick<InventorySnapshot, "pools" | "poolsNamedBySandboxes">;
  /** Since when the passes have found the directory's pool absent (undefined: not absent in this pass). */
  absentSinceMs: number | undefined;
  nowMs: number;
  graceMs: number;
}

export function judgePoolCheckpointDir(dir: PoolCheckpointDirFacts, context: PoolCheckpointJudgeContext): PoolCheckpointVerdict {
  const { pools, poolsNamedBySandboxes } = context.inventory;
  // An inventory that does not list pools (the embedded mode's) knows nothing of them.
  if (!pools || !poolsNamedBySandboxes) return { action: "keep", why: "pools_unknown" };
  const key = poolKey(dir.namespace, dir.pool);
  if (pools.has(key)) return { action: "keep", why: "pool_exists" };
  if (poolsNamedBySandboxes.has(key)) return { action: "keep", why: "named_by_sandbox" };
  const absentSinceMs = context.absentSinceMs ?? context.nowMs;
  if (context.nowMs - absentSinceMs < context.graceMs || context.nowMs - dir.changedAtMs < context.graceMs) return { action: "keep", why: "protected" };
  return { action: "remove", reason: "pool_gone" };
}
