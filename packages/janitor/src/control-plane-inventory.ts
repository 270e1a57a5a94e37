import type { FastSandboxClient } from "@fast-sandbox/sdk";
import type { Inventory, InventorySnapshot } from "./inventory.js";

/**
 * The inventory as the control plane's fast-path API tells it: the agents of every pool and the
 * sandbox records of every namespace. Both lists are read in full or the read fails.
 */
export function controlPlaneInventory(client: Pick<FastSandboxClient, "pools" | "sandboxes">): Inventory {
  return {
    async read(signal?: AbortSignal): Promise<InventorySnapshot> {
      signal?.throwIfAborted();
      const [agents, sandboxes] = await Promise.all([client.pools.agents({ namespace: "*" }), client.sandboxes.list({ namespace: "*" })]);
      signal?.throwIfAborted();
      return {
        agents: new Set(agents.map((agent) => agent.name)),
        sandboxIds: new Set(sandboxes.map((sandbox) => sandbox.status?.sandboxID).filter((id): id is string => Boolean(id))),
      };
    },
  };
}
