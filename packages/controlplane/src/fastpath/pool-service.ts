import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  API_VERSION,
  FailedPreconditionError,
  NotFoundError,
  pb,
  sandboxPoolFromMessage,
  sandboxPoolToMessage,
  validateSandboxPool,
  ValidationError,
  type SandboxPool,
} from "@fast-sandbox/api";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, type SandboxManager } from "./sandbox-manager.js";
import { edge } from "./sandbox-service.js";

/** Creates the pool or replaces its spec (like `kubectl apply` of a whole object). */
export async function applySandboxPool(store: ResourceStore, input: SandboxPool): Promise<SandboxPool> {
  const pool: SandboxPool = {
    ...input,
    apiVersion: input.apiVersion || API_VERSION,
    kind: "SandboxPool",
    metadata: { ...input.metadata, namespace: input.metadata.namespace || DEFAULT_NAMESPACE },
  };
  delete pool.status;
  validateSandboxPool(pool);
  // The pool's name is part of its agents' names and of their containers' ids in containerd.
  const { name, namespace = DEFAULT_NAMESPACE } = pool.metadata;
  if (name.includes("--"))
    throw new ValidationError("metadata.name", `${JSON.stringify(name)} must not contain "--": it names the pool's agents and their containers`);
  if (namespace.length + name.length > 54) {
    throw new ValidationError("metadata.name", `namespace and pool name together have ${namespace.length + name.length} characters; at most 54 are allowed`);
  }
  const key = { namespace: pool.metadata.namespace ?? DEFAULT_NAMESPACE, name: pool.metadata.name };
  const current = await store.get("SandboxPool", key);
  if (!current) {
    const { uid: _uid, resourceVersion: _rv, creationTimestamp: _ct, ...metadata } = pool.metadata;
    return store.create("SandboxPool", { ...pool, metadata });
  }
  return store.update("SandboxPool", {
    ...current,
    metadata: { ...current.metadata, labels: pool.metadata.labels ?? {}, annotations: pool.metadata.annotations ?? {} },
    spec: pool.spec,
  });
}

export interface PoolServiceOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  manager: SandboxManager;
}

export function createPoolService({ store, registry, manager }: PoolServiceOptions): ServiceImpl<typeof pb.PoolService> {
  return {
    applySandboxPool: (request) =>
      edge(async () => {
        if (!request.pool) throw new FailedPreconditionError("pool is required");
        return sandboxPoolToMessage(await applySandboxPool(store, sandboxPoolFromMessage(request.pool)));
      }),
    getSandboxPool: (request) =>
      edge(async () => {
        const namespace = request.namespace || DEFAULT_NAMESPACE;
        const pool = await store.get("SandboxPool", { namespace, name: request.name });
        if (!pool) throw new NotFoundError(`pool ${namespace}/${request.name} not found`);
        return sandboxPoolToMessage(pool);
      }),
    listSandboxPools: (request) =>
      edge(async () => {
        const { items } = await store.list("SandboxPool", request.namespace === "*" ? {} : { namespace: request.namespace || DEFAULT_NAMESPACE });
        return create(pb.ListSandboxPoolsResponseSchema, { pools: items.map(sandboxPoolToMessage) });
      }),
    deleteSandboxPool: (request) =>
      edge(async () => {
        const namespace = request.namespace || DEFAULT_NAMESPACE;
        await manager.withPoolClosed(namespace, request.name, async () => {
          const { items } = await store.list("Sandbox", { namespace });
          const users = items.filter((s) => s.spec.poolRef === request.name);
          if (users.length > 0) {
            throw new FailedPreconditionError(`pool ${namespace}/${request.name} still has ${users.length} sandboxes; delete them first`);
          }
          await store.delete("SandboxPool", { namespace, name: request.name });
        });
        return create(pb.DeleteSandboxPoolResponseSchema, {});
      }),
    listAgents: (request) =>
      edge(() => {
        const agents = registry.listAgents({
          ...(request.namespace && request.namespace !== "*" ? { namespace: request.namespace } : {}),
          ...(request.pool ? { pool: request.pool } : {}),
        });
        return Promise.resolve(
          create(pb.ListAgentsResponseSchema, {
            agents: agents.map((a) =>
              create(pb.AgentSchema, {
                name: a.name,
                namespace: a.namespace,
                pool: a.pool,
                endpoint: a.endpoint,
                capacity: a.capacity,
                allocated: a.allocated,
                images: [...a.images],
                pid: a.pid ?? 0,
                ready: a.ready,
                usedPorts: [...a.usedPorts],
                nodeName: a.nodeName ?? "",
              }),
            ),
          }),
        );
      }),
  };
}
