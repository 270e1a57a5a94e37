/**
 * The janitor's port to the control plane's view of the world: which agents exist and which sandbox
 * ids a sandbox record holds, and which pools exist. The embedded
 * implementation asks the fast-path API (control-plane-inventory.ts); the Kubernetes mode reads agent
 * Pods, Sandbox and SandboxPool objects.
 */

export interface InventorySnapshot {
  /** Names of the agents that exist (ready or not). */
  agents: ReadonlySet<string>;
  /** `status.sandboxID` of every sandbox record, in every namespace (being deleted included). */
  sandboxIds: ReadonlySet<string>;
  /**
   * The UID of each agent's Pod, by agent name (Kubernetes mode; absent in the embedded mode): a
   * container labelled with another UID belongs to a replaced Pod of the same name. An empty UID
   * means unknown, and that agent is judged by its name alone.
   */
  agentPodUids?: ReadonlyMap<string, string>;
  /**
   * The pools that exist, as `<namespace>/<pool>` (pool-checkpoints.ts's poolKey), being deleted
   * included: both inventories list every pool. Absent when the pools are unknown (a Kubernetes role
   * without `list` on them, a fixed inventory): then no pool's checkpoint directory is judged gone.
   */
  pools?: ReadonlySet<string>;
  /** The pools some Sandbox record names (`spec.poolRef`, with its namespace), as `pools`; present whenever `pools` is. */
  poolsNamedBySandboxes?: ReadonlySet<string>;
}

export interface Inventory {
  /**
   * The current inventory. Throws when it cannot be read completely (control plane down, timeout):
   * the janitor then removes nothing, because "unknown" is never "gone".
   */
  read(signal?: AbortSignal): Promise<InventorySnapshot>;
}

/** A fixed inventory, e.g. "no agent and no record exist" for the sweep after `fsb down --delete-sandboxes`. */
export function staticInventory(agents: Iterable<string> = [], sandboxIds: Iterable<string> = []): Inventory {
  const snapshot: InventorySnapshot = { agents: new Set(agents), sandboxIds: new Set(sandboxIds) };
  return { read: () => Promise.resolve(snapshot) };
}
