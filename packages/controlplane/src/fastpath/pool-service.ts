import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  API_VERSION,
  AsyncQueue,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  parseImageReference,
  pb,
  sandboxPoolFromMessage,
  sandboxPoolToMessage,
  agentLimitsOf,
  validateSandboxPool,
  ValidationError,
  type SandboxPool,
} from "@fast-sandbox/api";
import type { PullProgress } from "../agent-client/agent-client.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, type AgentClients, type SandboxManager } from "./sandbox-manager.js";
import { edge, edgeStream } from "./sandbox-service.js";

/**
 * What the deployment refuses of a pool that is otherwise valid (Kubernetes mode: the namespaces that
 * may run pools, the agent template policy): throws the refusal (a PermissionDeniedError saying what
 * and why), which the API returns instead of storing a pool that would never get an agent.
 */
export type PoolAdmission = (pool: SandboxPool) => void;

/** Creates the pool or replaces its spec (like `kubectl apply` of a whole object). */
export async function applySandboxPool(store: ResourceStore, input: SandboxPool, admit?: PoolAdmission): Promise<SandboxPool> {
  const pool: SandboxPool = {
    ...input,
    apiVersion: input.apiVersion || API_VERSION,
    kind: "SandboxPool",
    metadata: { ...input.metadata, namespace: input.metadata.namespace || DEFAULT_NAMESPACE },
  };
  delete pool.status;
  validateSandboxPool(pool);
  // Inside the agent template only Kubernetes' own Pod validation would look, and only in its mode.
  agentLimitsOf(pool.spec);
  // The pool's name is part of its agents' names and of their containers' ids in containerd.
  const { name, namespace = DEFAULT_NAMESPACE } = pool.metadata;
  if (name.includes("--"))
    throw new ValidationError("metadata.name", `${JSON.stringify(name)} must not contain "--": it names the pool's agents and their containers`);
  if (namespace.length + name.length > 54) {
    throw new ValidationError("metadata.name", `namespace and pool name together have ${namespace.length + name.length} characters; at most 54 are allowed`);
  }
  admit?.(pool);
  const key = { namespace: pool.metadata.namespace ?? DEFAULT_NAMESPACE, name: pool.metadata.name };
  const current = await store.get("SandboxPool", key);
  if (!current) {
    const { uid: _uid, resourceVersion: _rv, creationTimestamp: _ct, ...metadata } = pool.metadata;
    return store.create("SandboxPool", { ...pool, metadata });
  }
  // Its cleanup ends with the record: a spec written now would be reported applied, then vanish.
  if (current.metadata.deletionTimestamp) {
    throw new FailedPreconditionError(
      `pool ${key.namespace}/${key.name} is being deleted; apply it again once it is gone ('fsb get pools' no longer lists it)`,
    );
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
  agents: AgentClients;
  /** What the deployment refuses of a pool applied through the API. @default every valid pool is stored */
  admitPool?: PoolAdmission;
}

/** Progress of a pool's pull on one of its agents. */
export interface AgentPullProgress extends PullProgress {
  /** The agent that reports it. */
  agent: string;
}

/**
 * Pulls `image` on every ready agent of the pool at once, merging their progress streams (each
 * report names its agent). Fails, after every agent has finished, when any agent's pull failed.
 */
export async function* pullImageOnPool(
  { store, registry, agents }: Pick<PoolServiceOptions, "store" | "registry" | "agents">,
  request: { namespace: string; pool: string; image: string },
  signal?: AbortSignal,
): AsyncGenerator<AgentPullProgress> {
  const namespace = request.namespace || DEFAULT_NAMESPACE;
  const poolName = request.pool || "default";
  parseImageReference(request.image, "image");
  if (!(await store.get("SandboxPool", { namespace, name: poolName }))) throw new NotFoundError(`pool ${namespace}/${poolName} not found`);
  const ready = registry.listAgents({ namespace, pool: poolName }).filter((agent) => agent.ready);
  if (ready.length === 0)
    throw new FailedPreconditionError(`pool ${namespace}/${poolName} has no ready agent to pull on; try again when 'fsb agents' shows one`);
  const queue = new AsyncQueue<AgentPullProgress>();
  const failures: { agent: string; error: FsbError }[] = [];
  const pulls = ready.map(async ({ name }) => {
    try {
      const client = agents.get(name);
      if (!client) throw new FsbError("unavailable", "not connected");
      for await (const progress of client.pullImage(request.image, signal)) queue.push({ ...progress, agent: name });
    } catch (error) {
      failures.push({ agent: name, error: FsbError.from(error) });
    }
  });
  void Promise.all(pulls).then(() => queue.end());
  yield* queue;
  const [first] = failures;
  if (first) {
    const others = failures.length > 1 ? ` (and on ${failures.length - 1} more of ${ready.length} agents)` : "";
    throw new FsbError(first.error.code, `agent ${first.agent}: ${first.error.message}${others}`, { cause: first.error });
  }
}

export function createPoolService({ store, registry, manager, agents, admitPool }: PoolServiceOptions): ServiceImpl<typeof pb.PoolService> {
  return {
    pullImage: (request, context) =>
      edgeStream(async function* () {
        for await (const progress of pullImageOnPool({ store, registry, agents }, request, context.signal)) {
          yield create(pb.PullProgressSchema, { ...progress, bytesTotal: BigInt(progress.bytesTotal), bytesDone: BigInt(progress.bytesDone) });
        }
      }),
    applySandboxPool: (request) =>
      edge(async () => {
        if (!request.pool) throw new ValidationError("pool", "is required: the SandboxPool to create or update");
        return sandboxPoolToMessage(await applySandboxPool(store, sandboxPoolFromMessage(request.pool), admitPool));
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
            throw new FailedPreconditionError(
              `pool ${namespace}/${request.name} still has ${users.length === 1 ? "1 sandbox; delete it" : `${users.length} sandboxes; delete them`} first`,
            );
          }
          await store.delete("SandboxPool", { namespace, name: request.name });
        });
        return create(pb.DeleteSandboxPoolResponseSchema, {});
      }),
    listAgents: (request) =>
      edge(() => {
        const namespace = request.namespace && request.namespace !== "*" ? request.namespace : undefined;
        const registeredAgents = registry.listAgents({ ...(namespace ? { namespace } : {}), ...(request.pool ? { pool: request.pool } : {}) });
        const registered = new Set(registeredAgents.map((a) => a.name));
        // Agents the registry does not know yet (never ready since this control plane started: one
        // starting, or failing to start): not ready, no slots, but there.
        const starting = (agents.fleetAgents?.() ?? []).filter(
          (a) => !registered.has(a.name) && (!namespace || a.namespace === namespace) && (!request.pool || a.pool === request.pool),
        );
        return Promise.resolve(
          create(pb.ListAgentsResponseSchema, {
            agents: [
              ...registeredAgents.map((a) =>
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
              ...starting.map((a) =>
                create(pb.AgentSchema, { name: a.name, namespace: a.namespace, pool: a.pool, pid: a.pid ?? 0, ready: false, nodeName: a.nodeName ?? "" }),
              ),
            ],
          }),
        );
      }),
  };
}
