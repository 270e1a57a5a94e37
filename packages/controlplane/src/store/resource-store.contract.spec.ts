/**
 * The ResourceStore contract on the two in-process stores (the API server's run is an e2e test). The
 * namespaces `team` and `team-b` tell an order by key ("namespace/name") from one by namespace, then name.
 */
import { describeResourceStoreContract } from "./resource-store.contract.js";
import { MemoryResourceStore } from "./memory-resource-store.js";
import { openSqliteResourceStore } from "./sqlite-resource-store.js";

const quiet = { warn: () => undefined };

describeResourceStoreContract({
  name: "SQLite",
  open: () => {
    // A small replay history, so that a few writes make an old version expire.
    const store = openSqliteResourceStore({ path: ":memory:", watchHistory: 64, logger: quiet });
    return Promise.resolve({ store, namespaces: ["team", "team-b"], close: () => store.close() });
  },
  expiredResourceVersion: async ({ store, namespaces }) => {
    const first = await store.create("SandboxPool", {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name: "filler", namespace: namespaces[1] },
      spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1 },
    });
    for (let i = 0; i < 70; i++) await store.updateStatus("SandboxPool", { ...first, status: { agents: i } }, { unconditional: true });
    return first.metadata.resourceVersion ?? "";
  },
});

describeResourceStoreContract({
  name: "memory",
  open: () => {
    const store = new MemoryResourceStore({ logger: quiet });
    return Promise.resolve({ store, namespaces: ["team", "team-b"], close: () => store.close() });
  },
  expiredResourceVersion: async (context) => {
    const { resourceVersion } = await context.store.list("Sandbox");
    (context.store as MemoryResourceStore).expireWatches();
    return resourceVersion;
  },
});
