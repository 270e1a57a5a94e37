/**
 * The inventory in the Kubernetes mode, read from the API server:
 *
 * - agents: the agent Pods (label `fast-sandbox.io/pool` present) scheduled on this node
 *   (`spec.nodeName`), by Pod name — the name the agent's containers carry in their
 *   `fast-sandbox.io/agent` label — with each Pod's UID beside it. A Pod that has finished
 *   (phase Succeeded or Failed) runs no agent any more and does not count; one being deleted still
 *   does until it is gone, since its agent may still be working;
 * - sandbox ids: `status.sandboxID` of every Sandbox (sandbox.fast.io/v1alpha1) in every namespace,
 *   and the pools they name (`spec.poolRef` in their namespace);
 * - pools: every SandboxPool, by namespace and name (a gone pool's checkpoint directory on the node
 *   is the janitor's to remove, pool-checkpoints.ts). A role without `list` on sandboxpools (an
 *   older ClusterRole: the janitor's image rolled out before its manifests) leaves the pools unknown
 *   — every checkpoint directory stays — rather than failing the whole read, which would stop the
 *   janitor reclaiming anything else.
 *
 * Every list is read in full (every page) or the read fails, so an unreachable or refusing API
 * server makes the janitor remove nothing.
 */
import { ApiException, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, UnavailableError, VERSION } from "@fast-sandbox/api/core";
import type { Inventory, InventorySnapshot } from "./inventory.js";
import { poolKey } from "./pool-checkpoints.js";

export const LABEL_POOL = "fast-sandbox.io/pool";

export interface KubernetesInventoryOptions {
  /** Where the API server is (in-cluster config or a kubeconfig). */
  kubeConfig: KubeConfig;
  /** This node's name: only agents scheduled here count (the janitor looks after this node's containers). */
  nodeName: string;
  /** @default 15_000 */
  requestTimeoutMs?: number;
  /** Objects per list request. @default 500 */
  pageSize?: number;
}

export interface KubernetesInventorySnapshot extends InventorySnapshot {
  /**
   * The UID of each agent Pod, by name: a Pod recreated under the same name is another agent. Empty
   * when two Pods of the node share the name (in different namespaces): the name alone decides then.
   */
  agentPodUids: ReadonlyMap<string, string>;
}

export interface KubernetesInventory extends Inventory {
  read(signal?: AbortSignal): Promise<KubernetesInventorySnapshot>;
}

interface CustomObjectList {
  items?: Array<{ metadata?: { name?: unknown; namespace?: unknown }; spec?: { poolRef?: unknown }; status?: { sandboxID?: unknown } }>;
  metadata?: { continue?: string };
}

export function kubernetesInventory(options: KubernetesInventoryOptions): KubernetesInventory {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const timeoutMs = options.requestTimeoutMs ?? 15_000;
  const limit = options.pageSize ?? 500;
  const server = options.kubeConfig.getCurrentCluster()?.server ?? "the Kubernetes API server";

  async function agentPods(): Promise<Map<string, string>> {
    const uids = new Map<string, string>();
    let next: string | undefined;
    do {
      const page = await core.listPodForAllNamespaces({
        labelSelector: LABEL_POOL,
        fieldSelector: `spec.nodeName=${options.nodeName}`,
        limit,
        ...(next ? { _continue: next } : {}),
      });
      for (const pod of page.items) {
        if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") continue;
        const name = pod.metadata?.name;
        if (!name) continue;
        const uid = pod.metadata?.uid ?? "";
        // Containers carry the name only; which of two namespaces' Pods owns them cannot be told.
        uids.set(name, uids.has(name) && uids.get(name) !== uid ? "" : uid);
      }
      next = page.metadata?._continue || undefined;
    } while (next);
    return uids;
  }

  /** Every object of the custom resource, in every namespace, page by page. */
  async function listAll(plural: "sandboxes" | "sandboxpools"): Promise<NonNullable<CustomObjectList["items"]>> {
    const items: NonNullable<CustomObjectList["items"]> = [];
    let next: string | undefined;
    do {
      const page = (await custom.listClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural,
        limit,
        ...(next ? { _continue: next } : {}),
      })) as CustomObjectList;
      items.push(...(page.items ?? []));
      next = page.metadata?.continue || undefined;
    } while (next);
    return items;
  }

  async function sandboxes(): Promise<{ ids: Set<string>; pools: Set<string> }> {
    const ids = new Set<string>();
    const pools = new Set<string>();
    for (const sandbox of await listAll("sandboxes")) {
      const id = sandbox.status?.sandboxID;
      if (typeof id === "string" && id) ids.add(id);
      const { namespace } = sandbox.metadata ?? {};
      const pool = sandbox.spec?.poolRef;
      if (typeof namespace === "string" && typeof pool === "string" && pool) pools.add(poolKey(namespace, pool));
    }
    return { ids, pools };
  }

  /** Undefined when the janitor's role may not list pools (403): unknown, not none. */
  async function pools(): Promise<Set<string> | undefined> {
    const keys = new Set<string>();
    let listed: Awaited<ReturnType<typeof listAll>>;
    try {
      listed = await listAll("sandboxpools");
    } catch (error) {
      if (error instanceof ApiException && error.code === 403) return undefined;
      throw error;
    }
    for (const pool of listed) {
      const { namespace, name } = pool.metadata ?? {};
      if (typeof namespace === "string" && typeof name === "string" && name) keys.add(poolKey(namespace, name));
    }
    return keys;
  }

  return {
    async read(signal?: AbortSignal): Promise<KubernetesInventorySnapshot> {
      signal?.throwIfAborted();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new UnavailableError(`no answer from ${server} within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        const [uids, records, existing] = await Promise.race([Promise.all([agentPods(), sandboxes(), pools()]), timeout]);
        signal?.throwIfAborted();
        return {
          agents: new Set(uids.keys()),
          agentPodUids: uids,
          sandboxIds: records.ids,
          ...(existing ? { pools: existing, poolsNamedBySandboxes: records.pools } : {}),
        };
      } catch (error) {
        if (error instanceof UnavailableError || signal?.aborted) throw error;
        const message = error instanceof Error ? error.message : String(error);
        throw new UnavailableError(`cannot read agent Pods of node ${options.nodeName}, Sandboxes and SandboxPools from ${server}: ${message}`, {
          cause: error,
        });
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
