import type { FastSandboxClient } from "@fast-sandbox/sdk";
import type { Inventory, InventorySnapshot } from "./inventory.js";
import { poolKey } from "./pool-checkpoints.js";

/**
 * The inventory as the control plane's fast-path API tells it: the agents of every pool, the sandbox
 * records of every namespace (their ids and the pools they name) and the pools (being deleted
 * included). The lists are read in full or the read fails.
 */
export function controlPlaneInventory(client: Pick<FastSandboxClient, "pools" | "sandboxes">): Inventory {
  return {
    async read(signal?: AbortSignal): Promise<InventorySnapshot> {
      signal?.throwIfAborted();
      const [agents, sandboxes, pools] = await Promise.all([
        client.pools.agents({ namespace: "*" }),
        client.sandboxes.list({ namespace: "*" }),
        client.pools.list({ namespace: "*" }),
      ]);
      signal?.throwIfAborted();
      return {
        agents: new Set(agents.map((agent) => agent.name)),
        sandboxIds: new Set(sandboxes.map((sandbox) => sandbox.status?.sandboxID).filter((id): id is string => Boolean(id))),
        pools: new Set(pools.map((pool) => poolKey(pool.metadata.namespace ?? "default", pool.metadata.name))),
        poolsNamedBySandboxes: new Set(sandboxes.map((sandbox) => poolKey(sandbox.metadata.namespace ?? "default", sandbox.spec.poolRef))),
      };
    },
  };
}
