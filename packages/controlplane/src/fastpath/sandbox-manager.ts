/**
 * The fast path: create, get, list, update and delete sandboxes by talking to the registry and the
 * agents directly. The store keeps the durable record (the audit trail and the source of crash
 * recovery); the registry keeps the slots.
 */
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import {
  AlreadyExistsError,
  API_VERSION,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  UnavailableError,
  ValidationError,
  parseCpuMillis,
  parseMemoryBytes,
  validateSandbox,
  type EnvVar,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type SandboxStatus,
  type pb,
} from "@fast-sandbox/api";
import type { Logger } from "pino";
import type { AgentClient } from "../agent-client/agent-client.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { setCondition, writeStatus } from "./sandbox-status.js";

export const DEFAULT_NAMESPACE = "default";
/** Held by every sandbox until its container is gone from its agent. */
export const CLEANUP_FINALIZER = "sandbox.fast.io/agent-cleanup";
export const REQUEST_ID_ANNOTATION = "sandbox.fast.io/request-id";
const DEFAULT_GRACE_PERIOD_MS = 2000;

export interface AgentClients {
  /** The client of a registered agent, or undefined when the agent is unknown. */
  get(agentName: string): AgentClient | undefined;
}

export interface SandboxManagerOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  agents: AgentClients;
  logger: Logger;
  clock?: () => Date;
  /** How long a create waits for the first agent of a pool that has none ready. @default 15000 */
  agentStartWaitMs?: number;
}

export interface CreateSandboxInput {
  namespace?: string;
  name?: string;
  spec: SandboxSpec;
  labels?: Record<string, string>;
  requestId?: string;
}

export interface ExecInput {
  namespace?: string;
  name: string;
  command: string[];
  envs?: EnvVar[];
  workingDir?: string;
}

export function sandboxKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** containerd's identifier rule: alphanumeric runs joined by single `.`, `_` or `-`, at most 76 characters. */
const CONTAINERD_ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** The runtime id of a new sandbox: readable (`namespace.name.xxxxxx`) when containerd accepts that, random otherwise. */
export function runtimeId(namespace: string, name: string): string {
  const readable = `${namespace}.${name}.${randomBytes(3).toString("hex")}`;
  return readable.length <= 76 && CONTAINERD_ID.test(readable) ? readable : `sb-${randomBytes(8).toString("hex")}`;
}

function generatedName(): string {
  return `sb-${randomBytes(5).toString("hex")}`;
}

/** Fields a user may change after creation; everything else is fixed for the sandbox's life. */
const MUTABLE_SPEC_FIELDS = new Set<keyof SandboxSpec>(["expireTime", "failurePolicy", "recoveryTimeoutSeconds", "resetRevision", "consistencyMode"]);

export class SandboxManager {
  private readonly store: ResourceStore;
  private readonly registry: AgentRegistry;
  private readonly agents: AgentClients;
  private readonly logger: Logger;
  private readonly clock: () => Date;
  private readonly agentStartWaitMs: number;
  /** Keys being created right now: a second create of the same name fails fast instead of racing. */
  private readonly creating = new Map<string, Promise<unknown>>();
  /** requestId → the create it started (in flight or done), for idempotent retries. */
  private readonly requests = new Map<string, Promise<Sandbox>>();
  private readonly pools = new Map<string, SandboxPool>();
  /** Pools being deleted: no new sandboxes there. */
  private readonly closingPools = new Set<string>();
  /** Cleanups in progress, by key. */
  private readonly finalizing = new Map<string, Promise<void>>();
  /** Status writes of fast-mode creates that have not landed yet. */
  private readonly pendingStatus = new Map<string, Promise<unknown>>();
  private ready: Promise<void> = Promise.resolve();

  constructor(options: SandboxManagerOptions) {
    this.store = options.store;
    this.registry = options.registry;
    this.agents = options.agents;
    this.logger = options.logger;
    this.clock = options.clock ?? (() => new Date());
    this.agentStartWaitMs = options.agentStartWaitMs ?? 15_000;
  }

  /** Writes wait for this (crash recovery), so decisions rest on the true state. */
  holdWritesUntil(ready: Promise<void>): void {
    this.ready = ready;
  }

  /** The pool cache is fed by the pool reconciler's watch. */
  setPool(pool: SandboxPool): void {
    this.pools.set(sandboxKey(pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name), pool);
  }

  deletePool(namespace: string, name: string): void {
    this.pools.delete(sandboxKey(namespace, name));
  }

  /** Request ids are scoped to a namespace: another tenant's id never returns this tenant's sandbox. */
  rememberRequest(requestId: string, sandbox: Sandbox): void {
    this.requests.set(`${sandbox.metadata.namespace ?? DEFAULT_NAMESPACE}/${requestId}`, Promise.resolve(sandbox));
  }

  async create(input: CreateSandboxInput): Promise<Sandbox> {
    const requestId = input.requestId?.trim();
    if (requestId) {
      const requestKey = `${input.namespace || DEFAULT_NAMESPACE}/${requestId}`;
      const previous = this.requests.get(requestKey);
      if (previous) return previous;
      const attempt = this.createOnce(input, requestId);
      this.requests.set(requestKey, attempt);
      // A failed attempt may be retried with the same id.
      attempt.catch(() => this.requests.delete(requestKey));
      if (this.requests.size > 10_000) {
        const oldest = this.requests.keys().next().value;
        if (oldest !== undefined) this.requests.delete(oldest);
      }
      return attempt;
    }
    return this.createOnce(input, undefined);
  }

  private async createOnce(input: CreateSandboxInput, requestId: string | undefined): Promise<Sandbox> {
    await this.ready;
    const namespace = input.namespace || DEFAULT_NAMESPACE;
    const name = input.name || generatedName();
    const candidate: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: {
        name,
        namespace,
        ...(input.labels && Object.keys(input.labels).length > 0 ? { labels: input.labels } : {}),
        ...(requestId ? { annotations: { [REQUEST_ID_ANNOTATION]: requestId } } : {}),
        finalizers: [CLEANUP_FINALIZER],
      },
      spec: input.spec,
    };
    validateSandbox(candidate);
    const pool = this.pools.get(sandboxKey(namespace, input.spec.poolRef));
    if (!pool) {
      const known = [...this.pools.values()].filter((p) => p.metadata.namespace === namespace).map((p) => p.metadata.name);
      throw new NotFoundError(
        `pool ${namespace}/${input.spec.poolRef} does not exist${known.length ? ` (pools in ${namespace}: ${known.join(", ")})` : ""}; create it with 'fsb apply -f pool.yaml'`,
      );
    }
    if (this.closingPools.has(sandboxKey(namespace, input.spec.poolRef))) {
      throw new FailedPreconditionError(`pool ${namespace}/${input.spec.poolRef} is being deleted`);
    }
    const key = sandboxKey(namespace, name);
    const taken = () => new AlreadyExistsError(`sandbox ${key} already exists; choose another name or delete it first`);
    // Claimed synchronously, before any await: a second create of the name fails fast, and a
    // delete of the name waits for this create to finish (see delete()).
    if (this.creating.has(key)) throw taken();
    const attempt = (async () => {
      if (await this.store.get("Sandbox", { namespace, name })) throw taken();
      return this.place(candidate, pool);
    })();
    this.creating.set(key, attempt);
    try {
      return await attempt;
    } finally {
      this.creating.delete(key);
    }
  }

  /** Waits until no create, status write or cleanup of the sandbox is in flight. */
  private async settledKey(key: string): Promise<void> {
    await this.creating.get(key)?.catch(() => undefined);
    await this.pendingStatus.get(key);
  }

  /**
   * Runs `fn` (a pool's deletion) while the pool takes no new sandboxes, after the creates in
   * flight have finished, so its check for remaining sandboxes cannot race a create.
   */
  async withPoolClosed<T>(namespace: string, pool: string, fn: () => Promise<T>): Promise<T> {
    const key = sandboxKey(namespace, pool);
    this.closingPools.add(key);
    try {
      await Promise.allSettled(this.creating.values());
      return await fn();
    } finally {
      this.closingPools.delete(key);
    }
  }

  /** Waits for every create and status write in flight (before shutting down). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.creating.values(), ...this.pendingStatus.values(), ...this.finalizing.values()]);
  }

  /**
   * A pool that has just been created (or is scaling from zero) has no ready agent yet: the first
   * request waits for one, up to `agentStartWaitMs`, instead of failing. A full pool fails at once.
   */
  private async waitForReadyAgent(namespace: string, pool: string): Promise<void> {
    const deadline = Date.now() + this.agentStartWaitMs;
    while (this.registry.poolUsage(namespace, pool).readyAgents === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  private async place(candidate: Sandbox, pool: SandboxPool): Promise<Sandbox> {
    const namespace = candidate.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, candidate.metadata.name);
    const spec = candidate.spec;
    if (this.registry.poolUsage(namespace, spec.poolRef).readyAgents === 0) await this.waitForReadyAgent(namespace, spec.poolRef);
    const placement = this.registry.place({
      sandboxKey: key,
      namespace,
      pool: spec.poolRef,
      image: spec.image,
      ports: spec.exposedPorts ?? [],
    });
    const agent = placement.agent;
    const sandboxId = runtimeId(namespace, candidate.metadata.name);
    let stored: Sandbox | undefined;
    try {
      const client = this.agents.get(agent.name);
      if (!client) throw new UnavailableError(`agent ${agent.name} has no connection; retry in a moment`);
      stored = await this.store.create("Sandbox", candidate);
      const bound: SandboxStatus = { phase: "Bound", assignedPod: agent.name, sandboxID: sandboxId, ...(agent.nodeName ? { nodeName: agent.nodeName } : {}) };
      stored = await this.store.updateStatus("Sandbox", { ...stored, status: bound });
      const resources = pool.spec.sandboxResources;
      await client.createSandbox({
        sandboxId,
        namespace,
        name: candidate.metadata.name,
        image: spec.image,
        command: spec.command ?? [],
        args: spec.args ?? [],
        envs: (spec.envs ?? []).map((e) => ({ $typeName: "fastsandbox.v1alpha1.EnvVar" as const, name: e.name, value: e.value })),
        workingDir: spec.workingDir ?? "",
        runtimeType: pool.spec.runtimeType ?? "container",
        cpuMillis: resources?.cpu ? parseCpuMillis(resources.cpu, "pool.spec.sandboxResources.cpu") : 0,
        memoryBytes: BigInt(resources?.memory ? parseMemoryBytes(resources.memory, "pool.spec.sandboxResources.memory") : 0),
        pids: resources?.pids ?? 0,
      });
    } catch (error) {
      // Undo everything: no half-created sandbox, no leaked slot, no record without a container.
      this.registry.release(key);
      // The agent may have created the container although the call failed (e.g. a timeout).
      await this.agents
        .get(agent.name)
        ?.deleteSandbox(sandboxId, 0)
        .catch((e: unknown) => this.logger.warn({ err: e, sandbox: key }, "could not make sure the agent holds nothing of a failed create"));
      if (stored)
        await this.forget(stored).catch((e: unknown) => this.logger.error({ err: e, sandbox: key }, "could not remove the record of a failed create"));
      throw FsbError.from(error);
    }
    const running: Sandbox = {
      ...stored,
      status: {
        ...stored.status,
        phase: "Running",
        endpoints: (spec.exposedPorts ?? []).map((port) => `${agent.hostIP}:${port}`),
        conditions: setCondition(undefined, { type: "Ready", status: "True", reason: "Started" }, this.clock()),
      },
    };
    const write = writeStatus(this.store, stored, running.status ?? {});
    if (spec.consistencyMode === "strong") {
      try {
        return await write;
      } catch (error) {
        // The caller is told it failed: leave nothing running that it would have to find and delete.
        this.registry.release(key);
        await this.agents
          .get(agent.name)
          ?.deleteSandbox(sandboxId, 0)
          .catch(() => undefined);
        await this.forget(stored).catch(() => undefined);
        throw FsbError.from(error);
      }
    }
    // fast: answer now; the status lands right after. Later operations on the key wait for it.
    const tracked = write
      .catch((error: unknown) => this.logger.error({ err: error, sandbox: key }, "could not store the Running status"))
      .finally(() => this.pendingStatus.delete(key));
    this.pendingStatus.set(key, tracked);
    return running;
  }

  /** Removes a record whose container never started (or is gone), dropping the finalizer first. */
  private async forget(sandbox: Sandbox): Promise<void> {
    const key = { namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, name: sandbox.metadata.name };
    const current = await this.store.get("Sandbox", key);
    if (!current) return;
    await this.store.update("Sandbox", { ...current, metadata: { ...current.metadata, finalizers: [] } });
    if (await this.store.get("Sandbox", key)) await this.store.delete("Sandbox", key);
  }

  private async settled(namespace: string, name: string): Promise<void> {
    await this.settledKey(sandboxKey(namespace, name));
  }

  async get(namespace: string | undefined, name: string): Promise<Sandbox> {
    const ns = namespace || DEFAULT_NAMESPACE;
    await this.settled(ns, name);
    const sandbox = await this.store.get("Sandbox", { namespace: ns, name });
    if (!sandbox) throw new NotFoundError(`sandbox ${ns}/${name} not found; 'fsb ls' lists the sandboxes`);
    return sandbox;
  }

  async list(namespace: string | undefined, pool?: string): Promise<Sandbox[]> {
    await Promise.all(this.pendingStatus.values());
    const all = namespace === "*";
    const { items } = await this.store.list("Sandbox", all ? {} : { namespace: namespace || DEFAULT_NAMESPACE });
    return pool ? items.filter((s) => s.spec.poolRef === pool) : items;
  }

  async update(input: { namespace?: string; name: string; spec: SandboxSpec; labels?: Record<string, string>; resourceVersion?: string }): Promise<Sandbox> {
    await this.ready;
    const current = await this.get(input.namespace, input.name);
    for (const field of Object.keys({ ...current.spec, ...input.spec }) as (keyof SandboxSpec)[]) {
      if (MUTABLE_SPEC_FIELDS.has(field)) continue;
      if (!isDeepStrictEqual(current.spec[field] ?? null, input.spec[field] ?? null)) {
        throw new ValidationError(`spec.${field}`, "is immutable; delete the sandbox and create a new one");
      }
    }
    if (current.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${input.name} is being deleted`);
    const next: Sandbox = {
      ...current,
      metadata: {
        ...current.metadata,
        ...(input.labels ? { labels: input.labels } : {}),
        resourceVersion: input.resourceVersion || current.metadata.resourceVersion,
      },
      spec: input.spec,
    };
    validateSandbox(next);
    return this.store.update("Sandbox", next);
  }

  /** Deletes the sandbox and waits until its container, task and snapshot are gone. */
  async delete(namespace: string | undefined, name: string, gracePeriodMs = DEFAULT_GRACE_PERIOD_MS): Promise<void> {
    await this.ready;
    const ns = namespace || DEFAULT_NAMESPACE;
    await this.settled(ns, name);
    const marked = await this.store.delete("Sandbox", { namespace: ns, name });
    if (marked) await this.finalize(marked, gracePeriodMs);
  }

  /**
   * Level-triggered cleanup of a sandbox marked for deletion: stop it on its agent, free its slot,
   * then drop the finalizer. Safe to repeat; the reconciler calls it again after failures.
   */
  async finalize(sandbox: Sandbox, gracePeriodMs = DEFAULT_GRACE_PERIOD_MS): Promise<void> {
    const key = sandboxKey(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.metadata.name);
    // The API's delete and the reconciler may both get here: one cleanup per sandbox at a time.
    const running = this.finalizing.get(key);
    if (running) return running;
    const cleanup = this.finalizeOnce(sandbox, gracePeriodMs).finally(() => this.finalizing.delete(key));
    this.finalizing.set(key, cleanup);
    return cleanup;
  }

  private async finalizeOnce(seen: Sandbox, gracePeriodMs: number): Promise<void> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    // Act on the record as it is now: the caller's copy may be stale, and a sandbox of the same
    // name created since is not this one (different uid) and must be left alone.
    let sandbox = await this.store.get("Sandbox", { namespace, name: seen.metadata.name });
    if (!sandbox || sandbox.metadata.uid !== seen.metadata.uid || !sandbox.metadata.deletionTimestamp) return;
    if (!sandbox.metadata.finalizers?.includes(CLEANUP_FINALIZER)) return;
    if (sandbox.status?.phase !== "Terminating") {
      sandbox = await writeStatus(this.store, sandbox, { phase: "Terminating" });
    }
    const agentName = sandbox.status?.assignedPod;
    const sandboxId = sandbox.status?.sandboxID;
    if (agentName && sandboxId) {
      const client = this.agents.get(agentName);
      if (client) {
        await client.deleteSandbox(sandboxId, gracePeriodMs);
      } else {
        // The agent is gone for good; its leftovers are the janitor's to reclaim.
        this.logger.warn({ sandbox: key, agent: agentName }, "agent unknown; dropping the record, the janitor reclaims leftovers");
      }
    }
    this.registry.release(key);
    const current = await this.store.get("Sandbox", { namespace, name: sandbox.metadata.name });
    if (!current) return;
    await this.store.update("Sandbox", {
      ...current,
      metadata: { ...current.metadata, finalizers: (current.metadata.finalizers ?? []).filter((f) => f !== CLEANUP_FINALIZER) },
    });
  }

  private async agentOf(namespace: string | undefined, name: string): Promise<{ client: AgentClient; sandboxId: string; sandbox: Sandbox }> {
    const sandbox = await this.get(namespace, name);
    const agentName = sandbox.status?.assignedPod;
    const sandboxId = sandbox.status?.sandboxID;
    if (!agentName || !sandboxId) throw new FailedPreconditionError(`sandbox ${name} is not placed on an agent (phase ${sandbox.status?.phase ?? "Pending"})`);
    const client = this.agents.get(agentName);
    if (!client) throw new UnavailableError(`agent ${agentName} of sandbox ${name} is not connected; retry shortly`);
    return { client, sandboxId, sandbox };
  }

  async *logs(namespace: string | undefined, name: string, follow: boolean, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const { client, sandboxId } = await this.agentOf(namespace, name);
    yield* client.logs(sandboxId, follow, signal);
  }

  async *exec(input: ExecInput, signal?: AbortSignal): AsyncGenerator<pb.ExecResponse> {
    if (input.command.length === 0) throw new ValidationError("command", "must name the program to run, e.g. ['sh', '-c', 'ls']");
    const { client, sandboxId, sandbox } = await this.agentOf(input.namespace, input.name);
    if (sandbox.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${input.name} is being deleted`);
    yield* client.exec(
      {
        sandboxId,
        command: input.command,
        envs: (input.envs ?? []).map((e) => ({ $typeName: "fastsandbox.v1alpha1.EnvVar" as const, name: e.name, value: e.value })),
        workingDir: input.workingDir ?? "",
      },
      signal,
    );
  }
}
