/**
 * The fast path: create, get, list, update and delete sandboxes by talking to the registry and the
 * agents directly. The store keeps the durable record (the audit trail and the source of crash
 * recovery); the registry keeps the slots.
 */
import { createHash, randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import {
  AlreadyExistsError,
  API_VERSION,
  ConflictError,
  FailedPreconditionError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  UnavailableError,
  UpstreamUnavailableError,
  ValidationError,
  checkProcess,
  networkModeOf,
  normalizeImageName,
  parseExecUser,
  sandboxSpecFromMessage,
  sandboxSpecToMessage,
  validateSandbox,
  type EnvVar,
  type NetworkMode,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type SandboxStats,
  type SandboxStatus,
  type Condition,
  type OwnerReference,
} from "@fast-sandbox/api";
import type { Logger } from "pino";
import type { AgentClient, AgentLogsOptions, AgentSandbox, AgentSandboxNetwork, AgentSandboxSpec, ExecEvent } from "../agent-client/agent-client.js";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import type { AgentRegistry, Placement } from "../registry/agent-registry.js";
import type { FleetAgent } from "../fleet/agent-fleet.js";
import { DEFAULT_WAKE_TIMEOUT_SECONDS } from "../reconcile/pool-sizer.js";
import type { ResourceStore } from "../store/resource-store.js";
import { newInstanceId } from "./instance-id.js";
import { hashAccessToken, newAccessToken } from "../proxy/access-token.js";
import { endpointUrl, parseProxyBaseUrl, proxyBaseUrl, type ProxyAddress } from "../proxy/sandbox-endpoints.js";
import { poolInstanceLimits } from "./instance-template.js";
import { instanceNetwork, portsHeldBy, portsOnAgent, withSandboxIP } from "./sandbox-network.js";
import { setCondition, writeStatus } from "./sandbox-status.js";

export const DEFAULT_NAMESPACE = "default";
/** Held by every sandbox until its container is gone from its agent. */
export const CLEANUP_FINALIZER = "sandbox.fast.io/agent-cleanup";
export const REQUEST_ID_ANNOTATION = "sandbox.fast.io/request-id";
/** The Kubernetes user who created the sandbox through the fast path with their own token (api-caller-check.ts); none for the API token. */
export const CREATED_BY_ANNOTATION = "sandbox.fast.io/created-by";
/** Set on records a fast path writes (CreateSandbox): the replica that wrote it places it; the reconciler does not, for a while. */
export const FAST_PATH_ANNOTATION = "sandbox.fast.io/created-by-fast-path";
const DEFAULT_GRACE_PERIOD_MS = 2000;
/** How often a delete waiting for an agent tries its cleanup again. */
export const DELETE_RETRY_MS = 1000;
/** Conditions that describe one instance of a sandbox; a replacement starts without them. */
const PER_INSTANCE_CONDITIONS = new Set(["CommandExited", "OOMKilled"]);
/** Tries of a create whose agent became unreachable (each on a freshly chosen agent). */
const PLACEMENT_ATTEMPTS = 3;
/** Tries of a create whose agent refused it for want of a slot or port (each placed afresh, after REFUSAL_PAUSE_MS × try). */
const REFUSED_PLACEMENT_ATTEMPTS = 5;
const REFUSAL_PAUSE_MS = 50;

/**
 * The agent refused a create this registry placed on it: admission is the agent's to decide, and
 * another control-plane replica (with its own registry) took the slot or port meanwhile.
 */
class RefusedByAgentError extends NoCapacityError {}

/**
 * The agents' clients, by agent name. A call about a sandbox names the sandbox's `namespace`: agents
 * are known by name, unique only within a namespace (a Pod's), and an agent of another namespace —
 * a Pod that took the name of the sandbox's agent, gone since — is answered as one not there (no
 * client, not existing, no connectivity), so that nothing of the sandbox is sent to it.
 */
export interface AgentClients {
  /** The client of a registered agent (of `namespace`, when given), or undefined when the agent is unknown. */
  get(agentName: string, namespace?: string): AgentClient | undefined;
  /**
   * Whether the agent still exists although it has no client now (e.g. its Pod is there but not
   * ready): its sandboxes' cleanup waits for it instead of leaving their containers to the janitor.
   * @default the agent exists only while it has a client
   */
  exists?(agentName: string, namespace?: string): boolean;
  /**
   * Whether the agent's connection serves now, and since when it does (or does not). A deleted
   * sandbox's cleanup gives up on an agent away for longer than the sandbox's recoveryTimeoutSeconds
   * by this, when its record carries no condition that says so (deleted before one was written).
   * @default unknown
   */
  agentConnectivity?(agentName: string, namespace?: string): { connected: boolean; since: Date } | undefined;
  /**
   * Every agent the fleet has, ready or not (an embedded agent its supervisor restarts, a Pod not
   * yet ready): ListAgents lists those the registry does not know yet, so that nothing (the
   * janitor above all) takes an agent that is starting for one that is gone. @default none
   */
  fleetAgents?(): readonly FleetAgent[];
}

/** The pool controller's side of capacity: whether a pool can still gain a slot, and a nudge to do it now. */
export interface PoolCapacity {
  /** True while the pool may start an agent (below poolMax) or one of its agents is still starting. */
  canGrow(namespace: string, pool: string): boolean;
  /** Creates wait for this pool: resize it now. */
  wake(namespace: string, pool: string): void;
  /**
   * Why no agent starts for the pool (its agentTemplate, its namespace: what its status condition
   * says); undefined when agents may start. A create refused because the pool cannot grow says it
   * rather than blaming poolMax. @default the pool is at its poolMax
   */
  blockedReason?(namespace: string, pool: string): string | undefined;
}

export interface SandboxManagerOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  agents: AgentClients;
  logger: Logger;
  /** Times the waits (for capacity, for another replica's create, between placement tries) and the conditions. @default systemClock */
  clock?: Clock;
  /** Set later with setPoolCapacity when the pool controller is created after the manager. */
  capacity?: PoolCapacity;
  /** The sandbox proxy's public address: `status.endpoints` are URLs through it. @default http://localhost:7072 */
  proxyAddress?: ProxyAddress;
}

/** The sandbox proxy's public base URL when none is configured (its default port on this host). */
export const DEFAULT_PROXY_BASE_URL = "http://localhost:7072";

/**
 * Why an instance of a sandbox is replaced by a new one: its agent was lost, its answering agent lost
 * the instance (SandboxMissing, SandboxStopped), or a reset.
 */
export type ReplaceReason = "AgentLost" | "InstanceLost" | "Reset";

export interface CreateSandboxInput {
  namespace?: string;
  name?: string;
  spec: SandboxSpec;
  labels?: Record<string, string>;
  /** Stored with the record (e.g. what the E2B-compatible API keeps of a sandbox); the manager's own annotations win. */
  annotations?: Record<string, string>;
  requestId?: string;
  /**
   * sha256 hash of the access token the caller hands out (`hashAccessToken`); stored as
   * status.accessTokenHash. @default a token nobody is told (the sandbox is reachable once rotated)
   */
  accessTokenHash?: string;
  /**
   * Restore the sandbox from a checkpoint instead of starting it from its image (checkpoint-manager.ts):
   * the checkpoint's id on its node and the agents that hold it, the only ones it may be placed on.
   * @default none
   */
  restore?: { checkpointId: string; agents: readonly string[] };
}

export interface ExecInput {
  namespace?: string;
  name: string;
  command: string[];
  envs?: EnvVar[];
  workingDir?: string;
  /** USER[:GROUP] (exec-user.ts). @default the image's USER */
  user?: string;
}

export function sandboxKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** A sandbox's reference to its pool: not its controller (the sandbox reconcilers are), and blocking nothing. */
function poolOwnerReference(pool: SandboxPool): OwnerReference {
  return { apiVersion: API_VERSION, kind: "SandboxPool", name: pool.metadata.name, uid: pool.metadata.uid ?? "" };
}

function generatedName(): string {
  return `sb-${randomBytes(5).toString("hex")}`;
}

/**
 * The name of a sandbox created with a request id and no name: derived from the id, so a retry on
 * another control-plane replica (whose memory of requests is its own) finds the same object.
 */
export function requestName(namespace: string, requestId: string): string {
  return `sb-${createHash("sha256").update(`${namespace}/${requestId}`).digest("hex").slice(0, 10)}`;
}

/** How long a retried request waits for the create an earlier attempt of it started (on another replica, or before a restart) to finish. */
export const REQUEST_SETTLE_MS = 90_000;

/** Fields a user may change after creation; everything else is fixed for the sandbox's life. */
const MUTABLE_SPEC_FIELDS = new Set<keyof SandboxSpec>(["expireTime", "failurePolicy", "recoveryTimeoutSeconds", "resetRevision", "consistencyMode"]);

export class SandboxManager {
  private readonly store: ResourceStore;
  private readonly registry: AgentRegistry;
  private readonly agents: AgentClients;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly proxyAddress: ProxyAddress;
  private capacity: PoolCapacity | undefined;
  /** Removes what a deleted sandbox kept besides its instance (set by setSavedStateCleanup). */
  private savedStateCleanup: ((sandbox: Sandbox) => Promise<void>) | undefined;
  /** Creates waiting for a free slot, per pool key: demand the pool sizer counts. */
  private readonly waiting = new Map<string, number>();
  /** Keys being created right now: a second create of the same name fails fast instead of racing. */
  private readonly creating = new Map<string, Promise<unknown>>();
  /** The image pulls a create in flight waits for, by sandbox key: a delete of the sandbox stops waiting for them. */
  private readonly pulls = new Map<string, AbortController>();
  /** The failures of `placeOnce` that were its agent's being unreachable: `place` tries another agent for them. */
  private readonly unreachableAgents = new WeakSet<object>();
  /** Set by `drain`: the control plane stops, and creates give up their waits with this error. */
  private stopping: UnavailableError | undefined;
  /**
   * requestId → the create it started, while it is in flight: a retry meanwhile waits for it. Once it
   * has settled a retry finds the record by its request-derived name or its annotation (createOnce),
   * as on another replica, so nothing is kept per create (every SDK create carries an id).
   */
  private readonly requests = new Map<string, Promise<Sandbox>>();
  /**
   * Keys whose record an earlier attempt of a retried request wrote (on another replica, or before a
   * restart), with how many retries here wait for it to settle (settledRequest). Such a wait is no
   * operation on the record: isBusy ignores it, so that the reconciler places, adopts or removes the
   * record meanwhile, and the reconciler places a Pending one for the retry instead of removing it.
   */
  private readonly retriesWaiting = new Map<string, number>();
  private readonly pools = new Map<string, SandboxPool>();
  /** Pools being deleted: no new sandboxes there. */
  private readonly closingPools = new Set<string>();
  /** Cleanups in progress, by key. */
  private readonly finalizing = new Map<string, Promise<void>>();
  /**
   * Sandboxes written to the store by their users (e.g. `kubectl apply`) being placed now: a failed
   * try leaves their record (Pending again, the reconciler says why) instead of removing it.
   */
  private readonly keptOnFailure = new Set<string>();
  /** Status writes of fast-mode creates that have not landed yet. */
  private readonly pendingStatus = new Map<string, Promise<unknown>>();
  private ready: Promise<void> = Promise.resolve();
  private writesHeld = false;

  constructor(options: SandboxManagerOptions) {
    this.store = options.store;
    this.registry = options.registry;
    this.agents = options.agents;
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.capacity = options.capacity;
    this.proxyAddress = options.proxyAddress ?? parseProxyBaseUrl(DEFAULT_PROXY_BASE_URL);
  }

  setPoolCapacity(capacity: PoolCapacity): void {
    this.capacity = capacity;
  }

  /**
   * What a sandbox's cleanup also removes, besides its instance: the state it keeps while it has none
   * (a paused sandbox's checkpoint, checkpoint-pauses.ts). Called for every deleted sandbox; it must
   * be safe to repeat. @default nothing
   */
  setSavedStateCleanup(cleanup: (sandbox: Sandbox) => Promise<void>): void {
    this.savedStateCleanup = cleanup;
  }

  /**
   * Runs `work` on an existing sandbox as this process's one operation on it (as a create or a
   * replacement is): the reconcilers leave it alone meanwhile, and a delete, get or create of the name
   * waits for it. For steps that other fast-path modules take on a record (a pause and its resume,
   * checkpoint-pauses.ts); `work` reads and writes the store itself (get() would wait for it).
   * FailedPreconditionError when the sandbox is being created, changed or deleted here already.
   */
  async exclusively<T>(namespace: string, name: string, work: () => Promise<T>): Promise<T> {
    await this.ready;
    const key = sandboxKey(namespace, name);
    if (this.creating.has(key) || this.finalizing.has(key)) {
      throw new FailedPreconditionError(`sandbox ${key} is being created, changed or deleted right now; retry once that is done`);
    }
    const attempt = work();
    this.creating.set(key, attempt);
    try {
      return await attempt;
    } finally {
      this.creating.delete(key);
    }
  }

  /** How long a create in the pool may wait for capacity (its wakeTimeoutSeconds), in ms. */
  wakeTimeoutMs(namespace: string, pool: string): number {
    return (this.pools.get(sandboxKey(namespace, pool))?.spec.capacity.wakeTimeoutSeconds ?? DEFAULT_WAKE_TIMEOUT_SECONDS) * 1000;
  }

  /**
   * The ports an existing instance holds on its agent's address (restored into the registry after a
   * restart): see `portsHeldBy` of sandbox-network.ts; its pool is the one this manager knows.
   */
  portsHeldBy(sandbox: Sandbox): number[] {
    return portsHeldBy(sandbox, this.pools.get(sandboxKey(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.spec.poolRef)));
  }

  /**
   * Waits, up to the pool's `wakeTimeoutSeconds`, until an agent of the pool is ready, counted meanwhile
   * as a create waiting for the pool (so a pool scaled to zero starts one). For callers that need an
   * agent before they can place (a restore looks its checkpoint up on the ready agents). False when
   * none became ready, or the pool is unknown here or cannot grow; true at once when one is ready.
   */
  async awaitReadyAgent(namespace: string, pool: string): Promise<boolean> {
    const ready = () => this.registry.listAgents({ namespace, pool }).some((agent) => agent.ready);
    if (ready()) return true;
    const poolKey = sandboxKey(namespace, pool);
    if (!this.pools.has(poolKey) || !this.capacity?.canGrow(namespace, pool)) return false;
    const deadline = this.clock.now().getTime() + this.wakeTimeoutMs(namespace, pool);
    this.waiting.set(poolKey, (this.waiting.get(poolKey) ?? 0) + 1);
    try {
      this.capacity.wake(namespace, pool);
      while (!ready()) {
        if (this.clock.now().getTime() >= deadline || !this.capacity.canGrow(namespace, pool)) return false;
        await sleep(this.clock, 25);
      }
      return true;
    } finally {
      const left = (this.waiting.get(poolKey) ?? 1) - 1;
      if (left > 0) this.waiting.set(poolKey, left);
      else this.waiting.delete(poolKey);
    }
  }

  /** Creates of the pool waiting for a free slot right now. */
  waitingFor(namespace: string, pool: string): number {
    return this.waiting.get(sandboxKey(namespace, pool)) ?? 0;
  }

  /** True while this process creates, replaces, finalizes or writes the status of the sandbox. */
  isBusy(namespace: string, name: string): boolean {
    const key = sandboxKey(namespace, name);
    return this.creating.has(key) || this.finalizing.has(key) || this.pendingStatus.has(key);
  }

  /**
   * True while a retried create waits here for the record an earlier attempt of its request wrote
   * (before a restart, or on another replica) to settle: a Pending one is to be placed for it.
   */
  awaitedByRetry(namespace: string, name: string): boolean {
    return this.retriesWaiting.has(sandboxKey(namespace, name));
  }

  /** Writes wait for this (crash recovery), so decisions rest on the true state. */
  holdWritesUntil(ready: Promise<void>): void {
    this.ready = ready;
    this.writesHeld = true;
    const released = () => {
      if (this.ready === ready) this.writesHeld = false;
    };
    void ready.then(released, released);
  }

  /** The sandbox proxy's public base URL, where clients reach the sandboxes (e.g. `http://localhost:7072`). */
  get proxyBaseUrl(): string {
    return proxyBaseUrl(this.proxyAddress);
  }

  /** False while writes wait for crash recovery (`holdWritesUntil`); `/readyz` answers 503 meanwhile. */
  get writesReleased(): boolean {
    return !this.writesHeld;
  }

  /** The pool cache is fed by the pool reconciler's watch. */
  setPool(pool: SandboxPool): void {
    this.pools.set(sandboxKey(pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name), pool);
  }

  /** The network mode of the sandbox's pool, when the pool cache has the pool. */
  networkModeOf(sandbox: Sandbox): NetworkMode | undefined {
    const pool = this.pools.get(sandboxKey(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.spec.poolRef));
    return pool ? networkModeOf(pool.spec) : undefined;
  }

  deletePool(namespace: string, name: string): void {
    this.pools.delete(sandboxKey(namespace, name));
  }

  async create(input: CreateSandboxInput): Promise<Sandbox> {
    const requestId = input.requestId?.trim();
    if (requestId) {
      const requestKey = `${input.namespace || DEFAULT_NAMESPACE}/${requestId}`;
      const previous = this.requests.get(requestKey);
      if (previous) return previous;
      // Request ids are scoped to a namespace: another tenant's id never returns this tenant's sandbox.
      const attempt = this.createOnce(input, requestId);
      this.requests.set(requestKey, attempt);
      // Settled, a retry goes to the store (a failed attempt's id may be retried: it creates anew).
      const forget = () => {
        if (this.requests.get(requestKey) === attempt) this.requests.delete(requestKey);
      };
      attempt.then(forget, forget);
      return attempt;
    }
    return this.createOnce(input, undefined);
  }

  private async createOnce(input: CreateSandboxInput, requestId: string | undefined): Promise<Sandbox> {
    await this.ready;
    const namespace = input.namespace || DEFAULT_NAMESPACE;
    const name = input.name || (requestId ? requestName(namespace, requestId) : generatedName());
    const candidate: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: {
        name,
        namespace,
        ...(input.labels && Object.keys(input.labels).length > 0 ? { labels: input.labels } : {}),
        annotations: { ...input.annotations, [FAST_PATH_ANNOTATION]: "true", ...(requestId ? { [REQUEST_ID_ANNOTATION]: requestId } : {}) },
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
    if (this.closingPools.has(sandboxKey(namespace, input.spec.poolRef)) || pool.metadata.deletionTimestamp) {
      throw new FailedPreconditionError(`pool ${namespace}/${input.spec.poolRef} is being deleted`);
    }
    // The pool owns the record: a pool deleted through another replica while this create runs
    // (its last look for sandboxes done) still takes the sandbox with it (Kubernetes' garbage collector).
    if (pool.metadata.uid) candidate.metadata.ownerReferences = [poolOwnerReference(pool)];
    // An egress policy the pool does not allow is refused before anything is stored or placed.
    instanceNetwork(input.spec, pool);
    const key = sandboxKey(namespace, name);
    const taken = () => new AlreadyExistsError(`sandbox ${key} already exists; choose another name or delete it first`);
    // A retry may find its record being placed, removed or paused here right now (by the reconciler,
    // or a pause): it waits for that step and then looks, instead of being told the name is taken.
    while (requestId && this.creating.has(key)) await this.creating.get(key)?.catch(() => undefined);
    // Claimed synchronously, before any await: a second create of the name fails fast, and a
    // delete of the name waits for this create to finish (see delete()).
    if (this.creating.has(key)) throw taken();
    const attempt = (async (): Promise<{ placed: Sandbox } | { earlier: Sandbox }> => {
      const existing = await this.store.get("Sandbox", { namespace, name });
      if (existing && requestId && existing.metadata.annotations?.[REQUEST_ID_ANNOTATION] === requestId) {
        // Counted before the claim is let go: the reconciler never finds the record with neither.
        this.retriesWaiting.set(key, (this.retriesWaiting.get(key) ?? 0) + 1);
        return { earlier: existing };
      }
      if (existing) throw taken();
      return { placed: await this.place(candidate, pool, undefined, input.accessTokenHash, input.restore) };
    })();
    this.creating.set(key, attempt);
    let outcome: { placed: Sandbox } | { earlier: Sandbox };
    try {
      outcome = await attempt;
    } finally {
      this.creating.delete(key);
    }
    if ("placed" in outcome) return outcome.placed;
    // An earlier attempt of the request wrote the record: this retry only waits for it to settle, and
    // holds no claim meanwhile, so the reconciler can finish or remove that create.
    try {
      return await this.settledRequest(outcome.earlier);
    } finally {
      const left = (this.retriesWaiting.get(key) ?? 1) - 1;
      if (left > 0) this.retriesWaiting.set(key, left);
      else this.retriesWaiting.delete(key);
    }
  }

  /**
   * The sandbox a retried request created before (on another replica, or before a restart), once
   * that create has finished: its record is no longer Pending or Bound. Meanwhile the record is left
   * to whoever finishes it (that replica; here the reconciler places it for this retry, or adopts or
   * removes it when it is Bound). UnavailableError when the record is gone or replaced (that create
   * failed), is being deleted, or has not settled within REQUEST_SETTLE_MS: neither is a sandbox the
   * caller can be given as created.
   */
  private async settledRequest(sandbox: Sandbox): Promise<Sandbox> {
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = { namespace, name: sandbox.metadata.name };
    const request = sandbox.metadata.annotations?.[REQUEST_ID_ANNOTATION] ?? "";
    const deadline = this.clock.now().getTime() + REQUEST_SETTLE_MS;
    let current: Sandbox | undefined = sandbox;
    for (;;) {
      if (!current || current.metadata.uid !== sandbox.metadata.uid) throw new UnavailableError(`the earlier create of request ${request} failed; retry`);
      if (current.metadata.deletionTimestamp) {
        throw new UnavailableError(
          `sandbox ${sandboxKey(namespace, key.name)}, which the earlier create of request ${request} made, is being deleted; retry once it is gone to create it anew`,
        );
      }
      const phase = current.status?.phase ?? "Pending";
      if (phase !== "Pending" && phase !== "Bound") return current;
      if (this.clock.now().getTime() >= deadline) {
        throw new UnavailableError(
          `the earlier create with request id ${request} (sandbox ${sandboxKey(namespace, key.name)}, still ${phase}) has not settled within ${REQUEST_SETTLE_MS / 1000}s; retry later`,
        );
      }
      await sleep(this.clock, 100);
      current = await this.store.get("Sandbox", key);
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

  /**
   * Before shutting down: ends the waits of creates in flight that could hold the stop for minutes
   * (an image's pull from a slow registry, a pool's capacity) — each such create fails, saying the
   * control plane stops, and undoes what it made — then waits for every create and status write in
   * flight. Creates that come later fail the same way at their first wait.
   */
  async drain(): Promise<void> {
    this.stopping ??= new UnavailableError("the control plane is stopping: the create was given up; create it again once the control plane is back");
    for (const pull of this.pulls.values()) pull.abort(this.stopping);
    await Promise.allSettled([...this.creating.values(), ...this.pendingStatus.values(), ...this.finalizing.values()]);
  }

  /**
   * Takes a slot for the sandbox. When the pool has none free but can still grow (below poolMax, or
   * an agent is starting — e.g. scaling from zero), the create waits for one, up to the pool's
   * `wakeTimeoutSeconds`, with its record stored as Pending and a condition saying what it waits for.
   * A pool that cannot grow refuses at once with "no capacity", and so does a placement restricted to
   * `agents` (a restore: an agent that starts now would not hold its checkpoint).
   */
  private async reserve(
    candidate: Sandbox,
    pool: SandboxPool,
    stored: Sandbox | undefined,
    ports: readonly number[],
    agents?: readonly string[],
    avoid?: ReadonlySet<string>,
  ): Promise<{ placement: Placement; stored: Sandbox | undefined }> {
    const namespace = candidate.metadata.namespace ?? DEFAULT_NAMESPACE;
    const poolName = candidate.spec.poolRef;
    const request = {
      sandboxKey: sandboxKey(namespace, candidate.metadata.name),
      namespace,
      pool: poolName,
      // Agents report images under their normalized names too: `busybox` finds docker.io/library/busybox:latest warm.
      image: normalizeImageName(candidate.spec.image),
      // Ports are exclusive on an agent's address only for sandboxes that share it (Shared network).
      ports,
      ...(agents ? { agents } : {}),
      ...(avoid?.size ? { avoid } : {}),
    };
    const attempt = (): Placement | NoCapacityError => {
      try {
        return this.registry.place(request);
      } catch (error) {
        if (error instanceof NoCapacityError) return error;
        throw error;
      }
    };
    const first = attempt();
    if (!(first instanceof NoCapacityError)) return { placement: first, stored };
    // Free slots exist but every one is on an agent whose ports conflict: another agent would not help
    // (embedded agents share the host's ports), so that is an answer now.
    const slotsFree = this.registry.poolUsage(namespace, poolName).free > 0;
    if (slotsFree || agents || !this.capacity?.canGrow(namespace, poolName)) {
      if (slotsFree || agents) throw first;
      const blocked = this.capacity?.blockedReason?.(namespace, poolName);
      throw new NoCapacityError(`${first.message}; ${blocked ?? `the pool is at its poolMax of ${pool.spec.capacity.poolMax} agents`}`);
    }
    const waitSeconds = pool.spec.capacity.wakeTimeoutSeconds ?? DEFAULT_WAKE_TIMEOUT_SECONDS;
    const poolKey = sandboxKey(namespace, poolName);
    this.waiting.set(poolKey, (this.waiting.get(poolKey) ?? 0) + 1);
    try {
      this.capacity.wake(namespace, poolName);
      // Why its agents do not start, when the pool's status says (the API server refused its Pods).
      const notStarting = () => {
        const blocked = this.capacity?.blockedReason?.(namespace, poolName);
        return blocked ? `; ${blocked}` : "";
      };
      const waitingCondition = {
        type: "Scheduled",
        status: "False" as const,
        reason: "WaitingForCapacity",
        message: `pool ${poolKey} is starting an agent (${first.message}); waiting up to ${waitSeconds}s${notStarting()}`,
      };
      if (!stored) stored = await this.store.create("Sandbox", candidate);
      stored = await writeStatus(this.store, stored, { phase: "Pending" }, waitingCondition, this.clock.now());
      const deadline = this.clock.now().getTime() + waitSeconds * 1000;
      for (;;) {
        const next = attempt();
        if (!(next instanceof NoCapacityError)) return { placement: next, stored };
        if (this.stopping) throw this.stopping;
        if (this.clock.now().getTime() >= deadline || !this.capacity.canGrow(namespace, poolName)) {
          throw new NoCapacityError(`${next.message}; no agent of pool ${poolKey} became ready within ${waitSeconds}s (wakeTimeoutSeconds)${notStarting()}`);
        }
        await sleep(this.clock, 25);
      }
    } catch (error) {
      if (stored)
        await this.forget(stored).catch((e: unknown) =>
          this.logger.error({ err: e, sandbox: request.sandboxKey }, "could not remove the record of a failed create"),
        );
      throw error;
    } finally {
      const left = (this.waiting.get(poolKey) ?? 1) - 1;
      if (left > 0) this.waiting.set(poolKey, left);
      else this.waiting.delete(poolKey);
    }
  }

  /**
   * Places the sandbox and creates it on its agent. When the agent turns out to be unreachable (it
   * died after placement), the create is placed again on another agent, a few times, before it
   * fails: the user asked for a sandbox, not for that agent. When the agent refuses it for want of a
   * slot or port (another control-plane replica filled it; this registry did not know), it is placed
   * again after a short pause, a few times; the registry's own "no capacity" answers at once.
   */
  private async place(
    candidate: Sandbox,
    pool: SandboxPool,
    existing?: Sandbox,
    accessTokenHash?: string,
    restore?: CreateSandboxInput["restore"],
  ): Promise<Sandbox> {
    const key = sandboxKey(candidate.metadata.namespace ?? DEFAULT_NAMESPACE, candidate.metadata.name);
    let unreachable = 0;
    let refused = 0;
    // The agents that were unreachable or retired for this create: passed over while another can take it.
    const avoid = new Set<string>();
    for (;;) {
      try {
        return await this.placeOnce(candidate, pool, avoid, existing, accessTokenHash, restore);
      } catch (error) {
        if (error instanceof RefusedByAgentError) {
          // The caller sees the agent's answer as the plain NoCapacityError it is.
          if (++refused >= REFUSED_PLACEMENT_ATTEMPTS) throw new NoCapacityError(error.message);
          this.logger.debug({ sandbox: key, err: error }, "agent refused the create; placing it again");
          await sleep(this.clock, REFUSAL_PAUSE_MS * refused);
        } else if (this.unreachableAgents.has(error as object) && !this.stopping && ++unreachable < PLACEMENT_ATTEMPTS) {
          this.logger.warn({ sandbox: key, err: error }, "agent unreachable during create; placing it again");
          // The lost agent is marked unready within a heartbeat; until then the next try passes it over
          // if another agent can take the sandbox, and the pause leaves a lone agent time to come back.
          await sleep(this.clock, 300 * unreachable);
        } else {
          throw error;
        }
        // placeOnce removed the record of the failed try — or, for a record its user wrote, set it Pending again.
        existing = this.keptOnFailure.has(key)
          ? await this.store.get("Sandbox", { namespace: candidate.metadata.namespace ?? DEFAULT_NAMESPACE, name: candidate.metadata.name })
          : undefined;
        if (this.keptOnFailure.has(key) && !existing) throw new NotFoundError(`sandbox ${key} was deleted while it was being placed`);
        // Placed by another replica meanwhile (the leader before a failover): its instance stands.
        const phase = existing?.status?.phase;
        if (phase !== undefined && phase !== "Pending")
          throw new ConflictError(`sandbox ${key} was placed elsewhere while this replica was placing it (${phase})`);
      }
    }
  }

  /** One try of `place`; an agent that is unreachable, refuses as unavailable (retired) or refuses the create is added to `avoid`. */
  private async placeOnce(
    candidate: Sandbox,
    pool: SandboxPool,
    avoid: Set<string>,
    existing?: Sandbox,
    accessTokenHash?: string,
    restore?: CreateSandboxInput["restore"],
  ): Promise<Sandbox> {
    const namespace = candidate.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, candidate.metadata.name);
    const network = instanceNetwork(candidate.spec, pool);
    const { placement, stored: reserved } = await this.reserve(candidate, pool, existing, portsOnAgent(candidate.spec, network), restore?.agents, avoid);
    let stored = reserved;
    const agent = placement.agent;
    const sandboxId = newInstanceId();
    /** The instance's own address (Isolated network), as its agent answers. */
    let address: string | undefined;
    /** Whether the step that failed was the agent's (its connection, its pull, its create), not the store's. */
    let agentStep = true;
    try {
      const client = this.agents.get(agent.name, namespace);
      if (!client) throw new UnavailableError(`agent ${agent.name} has no connection; retry in a moment`);
      agentStep = false;
      stored ??= await this.store.create("Sandbox", candidate);
      // The wait for capacity rebases its condition writes onto the record as it is: one another
      // replica placed meanwhile shows its instance here, and this try gives way to it.
      const placedAs = existing ? stored.status?.sandboxID : undefined;
      if (placedAs !== undefined) {
        // That rebase set the phase back to Pending over the other placement's: its phase is Bound
        // again (unless the other replica wrote since, e.g. Running), so that the reconciler
        // adopts it or, should it never have been made, places the record anew.
        if (stored.status?.phase === "Pending")
          await this.store.updateStatus("Sandbox", { ...stored, status: { ...stored.status, phase: "Bound" } }).catch(() => undefined);
        throw new ConflictError(`sandbox ${key} was placed elsewhere while this replica was placing it (instance ${placedAs})`);
      }
      const bound: SandboxStatus = {
        ...stored.status,
        phase: "Bound",
        assignedPod: agent.name,
        sandboxID: sandboxId,
        // The proxy lets no one in without it; a sandbox written with kubectl gets one nobody is told ('fsb token' rotates it).
        accessTokenHash: accessTokenHash ?? stored.status?.accessTokenHash ?? hashAccessToken(newAccessToken()),
        ...(agent.nodeName ? { nodeName: agent.nodeName } : {}),
        ...(candidate.spec.resetRevision ? { acceptedResetRevision: candidate.spec.resetRevision } : {}),
      };
      // A record found stored (written with kubectl) is bound only as it was read: another replica
      // that took it meanwhile (the leader before a failover, still placing it) makes this write
      // conflict, and this try gives way instead of making a second instance of it.
      stored = await this.store.updateStatus("Sandbox", { ...stored, status: bound }, existing ? {} : { unconditional: true });
      agentStep = true;
      await this.pullIfMissing(client, agent, candidate.spec.image, key);
      const request = { ...this.agentRequest(stored, sandboxId, pool, network), ...(restore ? { fromCheckpoint: restore.checkpointId } : {}) };
      const created = await client.createSandbox(request).catch((error: unknown) => {
        throw error instanceof NoCapacityError ? new RefusedByAgentError(error.message) : error;
      });
      address = created.address;
    } catch (error) {
      // Undo everything: no half-created sandbox, no leaked slot, no record without a container.
      this.registry.release(key);
      // Passed over at the next try while another agent can take it: one that refused (its own view
      // of its slots and ports, ahead of this registry's) would most likely refuse again.
      // An agent that answered that the image's registry is unreachable is fine itself.
      // A store that cannot be written (a full disk, a locked database, an API server away) is not the agent's fault.
      const agentUnavailable = agentStep && FsbError.from(error) instanceof UnavailableError && !(error instanceof UpstreamUnavailableError);
      if (agentUnavailable || error instanceof RefusedByAgentError) avoid.add(agent.name);
      // The agent may have created the container although the call failed (e.g. a timeout).
      await this.agents
        .get(agent.name, namespace)
        ?.deleteSandbox(sandboxId, 0)
        .catch((e: unknown) => this.logger.warn({ err: e, sandbox: key }, "could not make sure the agent holds nothing of a failed create"));
      if (stored)
        await this.forget(stored, sandboxId).catch((e: unknown) =>
          this.logger.error({ err: e, sandbox: key }, "could not remove the record of a failed create"),
        );
      const failure = FsbError.from(error);
      if (agentUnavailable) this.unreachableAgents.add(failure);
      throw failure;
    }
    const running: Sandbox = { ...stored, status: this.runningStatus(stored, placement, { type: "Ready", status: "True", reason: "Started" }, address) };
    const bound = stored;
    // fast: the write (synchronous in SQLite, and the watchers it wakes) waits for the event loop's next
    // turn, no longer: the sandbox proxy serves an Isolated sandbox once this status (its address) is in
    // its informer, and a caller's first request right behind the answer must find it there. (Held 5 ms,
    // it took ~0.4 ms off a prepared create and let such a request meet a 503.)
    const write =
      candidate.spec.consistencyMode === "strong"
        ? writeStatus(this.store, bound, running.status ?? {})
        : new Promise<void>((resolve) => setImmediate(resolve)).then(() => writeStatus(this.store, bound, running.status ?? {}));
    if (candidate.spec.consistencyMode === "strong") {
      try {
        return await write;
      } catch (error) {
        // The caller is told it failed: leave nothing running that it would have to find and delete.
        this.registry.release(key);
        await this.agents
          .get(agent.name, namespace)
          ?.deleteSandbox(sandboxId, 0)
          .catch(() => undefined);
        await this.forget(stored, sandboxId).catch(() => undefined);
        throw FsbError.from(error);
      }
    }
    // fast: answer now; the status lands right after. Later operations on the key wait for it.
    const tracked = write
      .catch(async (error: unknown) => {
        const now = await this.store.get("Sandbox", { namespace, name: bound.metadata.name }).then(
          (found) => found ?? "gone",
          () => undefined,
        );
        // Still there (or unknown): the write failed for another reason, and the record stays Bound for the reconciler.
        if (now === undefined || (now !== "gone" && now.metadata.uid === bound.metadata.uid)) {
          this.logger.error({ err: error, sandbox: key }, "could not store the Running status");
          return;
        }
        // Deleted meanwhile and cleaned up elsewhere (another replica) before its instance existed:
        // nobody else knows of the instance now.
        this.logger.warn({ sandbox: key, sandboxId }, "the sandbox was deleted while it was being created; its instance is removed");
        // The name's placement is this sandbox's, unless a sandbox of the same name is stored or being created since.
        if (now === "gone" && !this.creating.has(key)) this.registry.release(key);
        await this.agents
          .get(agent.name, namespace)
          ?.deleteSandbox(sandboxId, 0)
          .catch((cause: unknown) => this.logger.warn({ err: cause, sandbox: key }, "could not remove the instance of a sandbox deleted during its create"));
      })
      .finally(() => this.pendingStatus.delete(key));
    this.pendingStatus.set(key, tracked);
    return running;
  }

  /**
   * Pulls the image on the agent first when it does not report it: a pull may take longer than a
   * create's deadline, and a create given up on while its pull runs would finish unaccounted for.
   */
  private async pullIfMissing(client: AgentClient, agent: Placement["agent"], image: string, key: string): Promise<void> {
    if (agent.images.includes(image) || agent.images.includes(normalizeImageName(image))) return;
    // A delete of the sandbox meanwhile ends the wait (a registry that never answers would hold the
    // delete for the pull's minutes): the create fails, and undoes what it made.
    const pull = new AbortController();
    if (this.stopping) pull.abort(this.stopping);
    this.pulls.set(key, pull);
    try {
      for await (const progress of client.pullImage(image, pull.signal)) {
        if (progress.phase === "done") break;
      }
    } catch (error) {
      throw pull.signal.aborted ? FsbError.from(pull.signal.reason) : error;
    } finally {
      if (this.pulls.get(key) === pull) this.pulls.delete(key);
    }
  }

  /** Ends the wait of a create in flight for its image's pull, because the sandbox is being deleted; whether one waited. */
  private stopPullFor(key: string): boolean {
    const pull = this.pulls.get(key);
    pull?.abort(new ConflictError(`sandbox ${key} was deleted while its image was being pulled`));
    return pull !== undefined;
  }

  /** What the agent is asked to create for an instance `sandboxId` of the sandbox (also a resume's restore, checkpoint-pauses.ts). */
  agentRequest(sandbox: Sandbox, sandboxId: string, pool: SandboxPool, network: AgentSandboxNetwork): AgentSandboxSpec {
    const spec = sandbox.spec;
    return {
      sandboxId,
      namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE,
      name: sandbox.metadata.name,
      image: spec.image,
      command: spec.command ?? [],
      args: spec.args ?? [],
      envs: (spec.envs ?? []).map((e) => ({ name: e.name, value: e.value })),
      workingDir: spec.workingDir,
      runtimeType: pool.spec.runtimeType ?? "container",
      ...poolInstanceLimits(pool),
      // The agent decides admission with these: another control plane may have filled it meanwhile.
      slots: pool.spec.maxSandboxesPerPod,
      exposedPorts: spec.exposedPorts ?? [],
      network,
    };
  }

  /** The URL of each exposed port of the sandbox's current instance, through the sandbox proxy. */
  endpointsOf(sandbox: Sandbox): string[] {
    const sandboxId = sandbox.status?.sandboxID;
    if (!sandboxId) return [];
    return (sandbox.spec.exposedPorts ?? []).map((port) => endpointUrl(this.proxyAddress, sandboxId, port));
  }

  /**
   * Gives the sandbox a new access token and returns it (the only time it is told): its hash
   * replaces the old one in the status, and the proxy refuses the old token from then on.
   */
  async rotateAccessToken(namespace: string | undefined, name: string): Promise<{ accessToken: string; sandbox: Sandbox }> {
    await this.ready;
    const sandbox = await this.get(namespace, name);
    if (sandbox.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${name} is being deleted`);
    const accessToken = newAccessToken();
    return { accessToken, sandbox: await writeStatus(this.store, sandbox, { accessTokenHash: hashAccessToken(accessToken) }) };
  }

  /** `address`: the instance's own address (Isolated network), which becomes status.sandboxIP; undefined clears it. */
  private runningStatus(sandbox: Sandbox, placement: Placement, ready: Condition, address: string | undefined): SandboxStatus {
    const now = this.clock.now();
    let conditions = setCondition(sandbox.status?.conditions, ready, now);
    if (conditions.some((c) => c.type === "Scheduled")) conditions = setCondition(conditions, { type: "Scheduled", status: "True", reason: "Placed" }, now);
    return withSandboxIP(
      {
        ...sandbox.status,
        phase: "Running",
        endpoints: this.endpointsOf(sandbox),
        conditions,
        startTime: now.toISOString(),
      },
      address,
    );
  }

  /**
   * Replaces the sandbox's instance with a new one (new sandboxID, same name and spec): its agent
   * was lost for longer than recoveryTimeoutSeconds (AutoRecreate), or its resetRevision changed.
   * The old instance is removed when its agent answers (a lost agent's leftovers are removed when it
   * comes back, or by the janitor). On failure the sandbox is left `Lost` with the reason, and the
   * reconciler tries again later.
   */
  async replaceInstance(seen: Sandbox, reason: ReplaceReason): Promise<Sandbox | undefined> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const name = seen.metadata.name;
    const key = sandboxKey(namespace, name);
    if (this.creating.has(key) || this.finalizing.has(key)) return undefined;
    const attempt = this.replaceOnce(namespace, name, seen, reason);
    this.creating.set(key, attempt);
    try {
      return await attempt;
    } finally {
      this.creating.delete(key);
    }
  }

  private async replaceOnce(namespace: string, name: string, seen: Sandbox, reason: ReplaceReason): Promise<Sandbox | undefined> {
    await this.ready;
    await this.pendingStatus.get(sandboxKey(namespace, name));
    const key = sandboxKey(namespace, name);
    const uid = seen.metadata.uid;
    let sandbox = await this.store.get("Sandbox", { namespace, name });
    if (!sandbox || sandbox.metadata.uid !== uid || sandbox.metadata.deletionTimestamp) return undefined;
    // The decision was made on `seen`: when the instance changed since (another replacement finished
    // meanwhile), or the reset was already accepted, there is nothing left to replace.
    if (sandbox.status?.sandboxID !== seen.status?.sandboxID || sandbox.status?.assignedPod !== seen.status?.assignedPod) return undefined;
    if (reason === "Reset" && sandbox.spec.resetRevision === sandbox.status?.acceptedResetRevision) return undefined;
    const pool = this.pools.get(sandboxKey(namespace, sandbox.spec.poolRef));
    if (!pool) throw new NotFoundError(`pool ${namespace}/${sandbox.spec.poolRef} of sandbox ${key} does not exist`);
    const oldAgent = sandbox.status?.assignedPod;
    const oldId = sandbox.status?.sandboxID;
    const why =
      reason === "Reset"
        ? `resetRevision changed to ${JSON.stringify(sandbox.spec.resetRevision ?? "")}`
        : reason === "InstanceLost"
          ? `its instance on agent ${oldAgent ?? "?"} was lost`
          : `agent ${oldAgent ?? "?"} was unreachable`;
    // The pool's network as it is now: the new instance is networked as a new sandbox would be. A
    // sandbox the pool no longer allows (its egress allows more than the pool's now; the pool went
    // Shared under a sandbox with an egress of its own) is not recreated, and a running instance
    // is kept: the record says why until the sandbox or the pool changes.
    let network: ReturnType<typeof instanceNetwork>;
    try {
      network = instanceNetwork(sandbox.spec, pool);
    } catch (error) {
      const message = `cannot recreate it (${why}): ${error instanceof Error ? error.message : String(error)}; change the sandbox's or the pool's network, or delete the sandbox`;
      const condition: Condition = { type: "Recreated", status: "False", reason: "InvalidSpec", message };
      const had = sandbox.status?.conditions?.find((c) => c.type === "Recreated");
      if (had?.status !== "False" || had.message !== message) await writeStatus(this.store, sandbox, {}, condition, this.clock.now());
      throw FsbError.from(error);
    }
    // The old instance: removed now when its agent answers (reset); a lost agent's is removed when
    // the agent returns (adoption removes containers no record owns) or by the janitor.
    const oldClient = oldAgent ? this.agents.get(oldAgent, namespace) : undefined;
    this.registry.release(key);
    if (oldClient && oldId && (reason === "Reset" || this.registry.getAgent(oldAgent ?? "")?.ready === true)) {
      await oldClient.deleteSandbox(oldId, DEFAULT_GRACE_PERIOD_MS).catch((error: unknown) => {
        this.logger.warn({ err: error, sandbox: key, sandboxId: oldId }, "could not remove the replaced instance; it is removed when its agent next reports");
      });
    }
    const count = (sandbox.status?.recreations ?? 0) + 1;
    const acceptedBefore = sandbox.status?.acceptedResetRevision;
    let placement: Placement | undefined;
    let address: string | undefined;
    const sandboxId = newInstanceId();
    try {
      placement = this.registry.place({
        sandboxKey: key,
        namespace,
        pool: sandbox.spec.poolRef,
        image: normalizeImageName(sandbox.spec.image),
        ports: portsOnAgent(sandbox.spec, network),
      });
      const agent = placement.agent;
      const client = this.agents.get(agent.name, namespace);
      if (!client) throw new UnavailableError(`agent ${agent.name} has no connection`);
      sandbox = await writeStatus(
        this.store,
        sandbox,
        {
          phase: "Bound",
          assignedPod: agent.name,
          sandboxID: sandboxId,
          // The old instance's address went with it.
          sandboxIP: undefined,
          ...(agent.nodeName ? { nodeName: agent.nodeName } : {}),
          ...(sandbox.spec.resetRevision ? { acceptedResetRevision: sandbox.spec.resetRevision } : {}),
          // Facts of the old instance (its command's exit, an OOM kill) are not the new one's.
          conditions: (sandbox.status?.conditions ?? []).filter((c) => !PER_INSTANCE_CONDITIONS.has(c.type)),
        },
        { type: "Recreated", status: "Unknown", reason, message: `recreating (${why})` },
        this.clock.now(),
      );
      address = (await client.createSandbox(this.agentRequest(sandbox, sandboxId, pool, network))).address;
    } catch (error) {
      if (placement) {
        this.registry.release(key);
        await this.agents
          .get(placement.agent.name, namespace)
          ?.deleteSandbox(sandboxId, 0)
          .catch(() => undefined);
      }
      // No slot: the pool sizes itself now (the Lost record counts as waiting), and the next try finds one.
      if (error instanceof NoCapacityError) this.capacity?.wake(namespace, sandbox.spec.poolRef);
      const message = `could not recreate it (${why}): ${error instanceof Error ? error.message : String(error)}; retrying`;
      this.logger.warn({ sandbox: key, reason }, message);
      const current = await this.store.get("Sandbox", { namespace, name });
      if (current && current.metadata.uid === uid && !current.metadata.deletionTimestamp) {
        // A revision is accepted once an instance runs for it: a reset that failed stays pending, so it is tried again.
        // The attempt's reason is kept (Recreated=False): the next one is made for the same reason.
        const attempt: Condition = { type: "Recreated", status: "False", reason, message };
        await writeStatus(
          this.store,
          current,
          {
            phase: "Lost",
            endpoints: [],
            sandboxIP: undefined,
            acceptedResetRevision: acceptedBefore,
            conditions: setCondition(current.status?.conditions, attempt, this.clock.now()),
          },
          { type: "Ready", status: "False", reason: "RecreateFailed", message },
          this.clock.now(),
        );
      }
      throw FsbError.from(error);
    }
    const recreated: Condition = {
      type: "Recreated",
      status: "True",
      reason,
      message: `recreated ${count} time${count === 1 ? "" : "s"}; last: ${why}, new instance ${sandboxId} on agent ${placement.agent.name}`,
    };
    const running = this.runningStatus(sandbox, placement, { type: "Ready", status: "True", reason: "Started" }, address);
    running.recreations = count;
    running.conditions = setCondition(running.conditions, recreated, this.clock.now());
    running.conditions = setCondition(running.conditions, { type: "AgentConnected", status: "True", reason: "AgentReady" }, this.clock.now());
    this.logger.info({ sandbox: key, reason, sandboxId, agent: placement.agent.name }, "sandbox recreated");
    return writeStatus(this.store, sandbox, running);
  }

  /**
   * Finishes the placement of a stored sandbox that nobody is placing: created through the store
   * (not the fast path), or left Pending by a create that did not finish (control-plane crash).
   */
  async placeStored(seen: Sandbox): Promise<Sandbox | undefined> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    if (this.creating.has(key) || this.finalizing.has(key)) return undefined;
    const attempt = (async () => {
      await this.ready;
      const sandbox = await this.store.get("Sandbox", { namespace, name: seen.metadata.name });
      if (!sandbox || sandbox.metadata.uid !== seen.metadata.uid || sandbox.metadata.deletionTimestamp) return undefined;
      if (sandbox.status?.phase && sandbox.status.phase !== "Pending") return undefined;
      const pool = this.pools.get(sandboxKey(namespace, sandbox.spec.poolRef));
      if (!pool) throw new NotFoundError(`pool ${namespace}/${sandbox.spec.poolRef} does not exist; it is placed once the pool exists`);
      // Written by its user (kubectl apply), it lacks the cleanup finalizer the fast path sets: without
      // it, a delete would remove the record at once and leave the container to the janitor.
      const held = sandbox.metadata.finalizers?.includes(CLEANUP_FINALIZER)
        ? sandbox
        : await this.store.update("Sandbox", {
            ...sandbox,
            metadata: { ...sandbox.metadata, finalizers: [...(sandbox.metadata.finalizers ?? []), CLEANUP_FINALIZER] },
          });
      this.keptOnFailure.add(key);
      try {
        return await this.place(held, pool, held);
      } finally {
        this.keptOnFailure.delete(key);
      }
    })();
    this.creating.set(key, attempt);
    try {
      return await attempt;
    } finally {
      this.creating.delete(key);
    }
  }

  /**
   * A Bound sandbox whose agent runs it although its create did not finish here (control-plane
   * crash after the agent answered): the record catches up with the truth. `reported`: the
   * sandbox as its agent reports it (its address on an Isolated network).
   */
  async adoptRunning(seen: Sandbox, reported?: Pick<AgentSandbox, "address">): Promise<Sandbox | undefined> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    if (this.creating.has(key) || this.finalizing.has(key)) return undefined;
    const sandbox = await this.store.get("Sandbox", { namespace, name: seen.metadata.name });
    const agentName = sandbox?.status?.assignedPod;
    if (!sandbox || !agentName || sandbox.metadata.uid !== seen.metadata.uid || sandbox.status?.phase !== "Bound") return undefined;
    const address = reported?.address;
    const placement =
      this.registry.placementOf(key) ??
      this.registry.restore({ sandboxKey: key, agentName, ports: this.portsHeldBy({ ...sandbox, status: withSandboxIP(sandbox.status, address) }) });
    this.logger.info({ sandbox: key, agent: agentName }, "a create cut short by a restart had finished on its agent; the sandbox is Running");
    const status = this.runningStatus(sandbox, placement, { type: "Ready", status: "True", reason: "Started" }, address);
    const recreating = sandbox.status.conditions?.find((c) => c.type === "Recreated" && c.status === "Unknown");
    if (recreating) {
      const count = (sandbox.status.recreations ?? 0) + 1;
      status.recreations = count;
      status.conditions = setCondition(
        status.conditions,
        { type: "Recreated", status: "True", reason: recreating.reason ?? "AgentLost", message: `recreated ${count} time${count === 1 ? "" : "s"}` },
        this.clock.now(),
      );
    }
    return writeStatus(this.store, sandbox, status);
  }

  /**
   * Removes the instance of a Lost sandbox whose process 1 is gone (SandboxStopped) from its agent,
   * which holds its slot and ports until then, while the registry (which counts no Lost sandbox)
   * has given them back. Only while the record is still Lost with that instance; a failure is
   * thrown (the caller tries again on a later report). The record stays Lost until it is deleted.
   */
  async removeLostInstance(seen: Sandbox): Promise<void> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    if (this.creating.has(key) || this.finalizing.has(key)) return;
    const sandbox = await this.store.get("Sandbox", { namespace, name: seen.metadata.name });
    const sandboxId = sandbox?.status?.sandboxID;
    if (!sandbox || sandbox.metadata.uid !== seen.metadata.uid || sandbox.status?.phase !== "Lost" || !sandboxId) return;
    if (sandboxId !== seen.status?.sandboxID || sandbox.status.assignedPod !== seen.status.assignedPod) return;
    const client = sandbox.status.assignedPod ? this.agents.get(sandbox.status.assignedPod, namespace) : undefined;
    if (!client) return;
    this.logger.info({ sandbox: key, sandboxId, agent: sandbox.status.assignedPod }, "removing the stopped instance of a Lost sandbox from its agent");
    await client.deleteSandbox(sandboxId, 0);
  }

  /**
   * Removes what its agent holds of a create that never finished and was never acknowledged (Bound
   * with no running instance after a control-plane crash), and its record when a fast-path create
   * wrote it; a record its user wrote (kubectl apply) is Pending again, to be placed anew. A Pending
   * record a fast-path create wrote (cut short before it was placed, its caller never answered) is
   * removed too, unless a retry of its request waits for it here: that one is to be placed for it.
   */
  async abandon(seen: Sandbox, why: string): Promise<void> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    if (this.creating.has(key) || this.finalizing.has(key)) return;
    const attempt = (async () => {
      const sandbox = await this.store.get("Sandbox", { namespace, name: seen.metadata.name });
      if (!sandbox || sandbox.metadata.uid !== seen.metadata.uid || sandbox.metadata.deletionTimestamp) return;
      const phase = sandbox.status?.phase ?? "Pending";
      const unanswered = phase === "Pending" && sandbox.metadata.annotations?.[FAST_PATH_ANNOTATION] === "true" && !this.retriesWaiting.has(key);
      if (phase !== "Bound" && !unanswered) return;
      const sandboxId = sandbox.status?.sandboxID;
      this.logger.warn({ sandbox: key, sandboxId }, `removing an unfinished create: ${why}`);
      const client = sandbox.status?.assignedPod ? this.agents.get(sandbox.status.assignedPod, namespace) : undefined;
      if (client && sandboxId) await client.deleteSandbox(sandboxId, 0);
      this.registry.release(key);
      await this.forget(sandbox, sandboxId);
    })();
    this.creating.set(key, attempt);
    try {
      await attempt;
    } finally {
      this.creating.delete(key);
    }
  }

  /** Removes a record whose container never started (or is gone), dropping the finalizer first; one its user wrote is Pending again. */
  private async forget(sandbox: Sandbox, attemptSandboxId?: string): Promise<void> {
    const key = { namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, name: sandbox.metadata.name };
    const current = await this.store.get("Sandbox", key);
    // Gone, or another sandbox of the same name (another create's, e.g. a retry's): not ours to remove.
    if (!current || current.metadata.uid !== sandbox.metadata.uid) return;
    // Placed by another try meanwhile (another replica's, e.g. the leader before a failover): its instance, not this one's.
    const placedAs = current.status?.sandboxID;
    if (placedAs !== undefined && placedAs !== attemptSandboxId) return;
    // Written by its user (kubectl apply, not a fast-path create): it stays, waiting to be placed
    // again, with nothing of the failed try — also when the try was cut short by a restart (abandon).
    const userWritten = this.keptOnFailure.has(sandboxKey(key.namespace, key.name)) || current.metadata.annotations?.[FAST_PATH_ANNOTATION] !== "true";
    if (userWritten) {
      const {
        assignedPod: _agent,
        sandboxID: _id,
        sandboxIP: _ip,
        nodeName: _node,
        acceptedResetRevision: _reset,
        startTime: _started,
        ...rest
      } = current.status ?? {};
      // Facts of the failed try's instance (its command exited, an OOM kill) are not the next one's.
      const conditions = rest.conditions?.filter((c) => !PER_INSTANCE_CONDITIONS.has(c.type));
      await this.store.updateStatus("Sandbox", { ...current, status: { ...rest, ...(conditions ? { conditions } : {}), phase: "Pending" } });
      return;
    }
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

  /**
   * One page of `list`: at most `pageSize` sandboxes after where `pageToken` (the previous page's
   * `nextPageToken`) ended, and the token of the next page ("" after the last). A page reads at most
   * `pageSize` records of the store at a time, so thousands of sandboxes never pass through memory
   * at once. ValidationError (page_token) for a token of another list.
   */
  async listPage(
    namespace: string | undefined,
    pool: string | undefined,
    page: { pageSize: number; pageToken?: string },
  ): Promise<{ items: Sandbox[]; nextPageToken: string }> {
    await Promise.all(this.pendingStatus.values());
    const filter = namespace === "*" ? {} : { namespace: namespace || DEFAULT_NAMESPACE };
    const items: Sandbox[] = [];
    let token = page.pageToken || undefined;
    try {
      // A pool's sandboxes are a part of the store's pages: read on until the page is full or the list ends.
      do {
        const result = await this.store.list("Sandbox", { ...filter, limit: page.pageSize - items.length, ...(token ? { continue: token } : {}) });
        for (const sandbox of result.items) if (!pool || sandbox.spec.poolRef === pool) items.push(sandbox);
        token = result.continue;
      } while (token && items.length < page.pageSize);
    } catch (error) {
      if (error instanceof ValidationError && error.field === "continue") throw new ValidationError("page_token", error.message.replace(/^continue: /, ""));
      throw error;
    }
    return { items, nextPageToken: token ?? "" };
  }

  async update(input: { namespace?: string; name: string; spec: SandboxSpec; labels?: Record<string, string>; resourceVersion?: string }): Promise<Sandbox> {
    await this.ready;
    const current = await this.get(input.namespace, input.name);
    // Compared as the wire carries them: an empty list or map is no field there, so a spec read and
    // sent back unchanged is equal to one stored with `command: []` (kubectl).
    const before = sandboxSpecFromMessage(sandboxSpecToMessage(current.spec));
    const after = sandboxSpecFromMessage(sandboxSpecToMessage(input.spec));
    for (const field of Object.keys({ ...before, ...after }) as (keyof SandboxSpec)[]) {
      if (MUTABLE_SPEC_FIELDS.has(field)) continue;
      if (!isDeepStrictEqual(before[field] ?? null, after[field] ?? null)) {
        throw new ValidationError(`spec.${field}`, "is immutable; delete the sandbox and create a new one");
      }
    }
    if (current.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${input.name} is being deleted`);
    // A reset replaces a running instance; a paused one's would wait for its resume and then throw
    // away what the pause kept (memory, processes, files).
    if (current.status?.phase === "Paused" && (after.resetRevision ?? "") !== (before.resetRevision ?? "")) {
      throw new FailedPreconditionError(
        `sandbox ${input.name} is Paused: only a running sandbox can be reset; resume it first ('fsb resume ${input.name}'), or delete it`,
      );
    }
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

  /**
   * Deletes the sandbox and waits until its container, task and snapshot are gone. An agent that
   * must remove them and does not answer is an UnavailableError (the record marked, its cleanup
   * left to the reconciler), unless `waitForAgent` (the API's delete): then the call waits as long
   * as the cleanup does, until it is done or given up.
   */
  async delete(namespace: string | undefined, name: string, gracePeriodMs = DEFAULT_GRACE_PERIOD_MS, options: { waitForAgent?: boolean } = {}): Promise<void> {
    await this.ready;
    const ns = namespace || DEFAULT_NAMESPACE;
    const stopped = this.stopPullFor(sandboxKey(ns, name));
    await this.settled(ns, name);
    // A create whose pull this delete stopped removed its record as it failed: the sandbox is gone, as asked.
    const marked = await this.store.delete("Sandbox", { namespace: ns, name }).catch((error: unknown) => {
      if (stopped && error instanceof NotFoundError) return undefined;
      throw error;
    });
    if (!marked) return;
    for (;;) {
      try {
        await this.finalize(marked, gracePeriodMs);
        return;
      } catch (error) {
        if (!(error instanceof NotFoundError) && !(error instanceof UnavailableError)) throw error;
        const current = await this.store.get("Sandbox", { namespace: ns, name });
        // Another replica (the leader's reconciler) finished the cleanup first: the record is gone,
        // which its finalizer allows only once the container is.
        if (current?.metadata.uid !== marked.metadata.uid) return;
        if (error instanceof NotFoundError || options.waitForAgent !== true) throw error;
        // An agent that must remove something does not answer now (the sandbox's agent; a paused
        // one's checkpoint's node without a ready agent, whose pool this delete wakes): the call
        // waits as the cleanup does, until it is done or given up (the sandbox's recovery timeout,
        // a checkpoint's patience), instead of failing for a delete that finishes later.
        await sleep(this.clock, DELETE_RETRY_MS);
      }
    }
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

  /**
   * Whether the sandbox's agent was given up on: it is Lost, or its agent has not answered for
   * longer than recoveryTimeoutSeconds. Its delete then does not wait for the agent (its leftovers are
   * removed when the agent returns, or by the janitor).
   */
  private givenUp(sandbox: Sandbox): boolean {
    const conditions = sandbox.status?.conditions ?? [];
    if (conditions.some((c) => c.type === "Ready" && c.status === "False" && c.reason === "AgentLost")) return true;
    const timeoutMs = (sandbox.spec.recoveryTimeoutSeconds ?? 30) * 1000;
    const away = conditions.find((c) => c.type === "AgentConnected" && c.status === "False");
    const since = Date.parse(away?.lastTransitionTime ?? "");
    if (Number.isFinite(since) && this.clock.now().getTime() - since > timeoutMs) return true;
    // The conditions are written while the sandbox lives; one deleted before (Bound, or at once) has
    // none: the connection's own record of how long the agent has been away says it.
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const connectivity = sandbox.status?.assignedPod ? this.agents.agentConnectivity?.(sandbox.status.assignedPod, namespace) : undefined;
    return connectivity !== undefined && !connectivity.connected && this.clock.now().getTime() - connectivity.since.getTime() > timeoutMs;
  }

  private async finalizeOnce(seen: Sandbox, gracePeriodMs: number): Promise<void> {
    const namespace = seen.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, seen.metadata.name);
    // A create of it in flight here (its image still pulling, its agent call pending) would make the
    // instance after this cleanup looked: the cleanup starts once it has (the reconciler calls this
    // directly, without the API delete's wait); one waiting for its image's pull stops waiting.
    this.stopPullFor(key);
    await this.creating.get(key)?.catch(() => undefined);
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
      const client = this.agents.get(agentName, namespace);
      // A client whose agent stopped answering (partitioned from this replica while its Pod stays
      // Ready) for longer than the sandbox waits for it is not waited on either.
      const unreachable = client !== undefined && this.agents.agentConnectivity?.(agentName, namespace)?.connected === false && this.givenUp(sandbox);
      if (unreachable) {
        this.logger.warn(
          { sandbox: key, agent: agentName },
          "agent unreachable past the sandbox's recovery timeout; dropping the record, its agent or the janitor removes the rest",
        );
      } else if (client) {
        await client.deleteSandbox(sandboxId, gracePeriodMs);
      } else if (this.agents.exists?.(agentName, namespace) && !this.givenUp(sandbox)) {
        throw new UnavailableError(`agent ${agentName} of sandbox ${key} does not answer right now; the delete finishes once it does`);
      } else {
        // The agent is gone for good; its leftovers are the janitor's to reclaim.
        this.logger.warn({ sandbox: key, agent: agentName }, "agent unknown; dropping the record, the janitor reclaims leftovers");
      }
    }
    await this.savedStateCleanup?.(sandbox);
    this.registry.release(key);
    const current = await this.store.get("Sandbox", { namespace, name: sandbox.metadata.name });
    // Gone already (another replica's cleanup finished), or a new sandbox of the name: not this one's finalizer.
    if (!current || current.metadata.uid !== sandbox.metadata.uid) return;
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
    const namespaceOf = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const client = this.agents.get(agentName, namespaceOf);
    if (!client) {
      // An agent that still exists (restarting, reconnecting) comes back; one that is gone for good does not.
      if (this.agents.exists?.(agentName, namespaceOf) !== false)
        throw new UnavailableError(`agent ${agentName} of sandbox ${name} is not connected; retry shortly`);
      // Still an UnavailableError (retryable): the sandbox's failure policy acts after its recovery timeout.
      const timeout = sandbox.spec.recoveryTimeoutSeconds ?? 30;
      throw new UnavailableError(
        `sandbox ${name} cannot be reached: its agent ${agentName} is gone; ` +
          (sandbox.spec.failurePolicy === "AutoRecreate"
            ? `it is recreated on another agent once its recovery timeout (${timeout}s) has passed: retry then`
            : `it turns Lost once its recovery timeout (${timeout}s) has passed (failurePolicy Manual): reset it ('fsb reset ${name}') for a new instance, or delete it`),
      );
    }
    return { client, sandboxId, sandbox };
  }

  /** The sandbox's output, as its agent reads it (AgentClient's `logs`). */
  async *logs(namespace: string | undefined, name: string, options: AgentLogsOptions, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const { client, sandboxId } = await this.agentOf(namespace, name);
    yield* client.logs(sandboxId, options, signal);
  }

  /** The sandbox's resource use now, as its agent reads it (CPU over 100 ms, memory, processes, disk). */
  async stats(namespace: string | undefined, name: string): Promise<SandboxStats> {
    const { client, sandboxId } = await this.agentOf(namespace, name);
    return client.stats(sandboxId);
  }

  /** The sandbox's resource use as its agent sampled it while it ran, within [sinceMs, untilMs] (0: open), oldest first. */
  async statsHistory(namespace: string | undefined, name: string, sinceMs = 0, untilMs = 0): Promise<SandboxStats[]> {
    const { client, sandboxId } = await this.agentOf(namespace, name);
    return client.statsHistory(sandboxId, sinceMs, untilMs);
  }

  async *exec(input: ExecInput, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
    if (input.command.length === 0) throw new ValidationError("command", "must name the program to run, e.g. ['sh', '-c', 'ls']");
    // The rules of a create's command, envs and working directory: what the process cannot take
    // (a NUL byte, a relative directory, a name with '=' that would set another variable) or too
    // much of it, refused here rather than by containerd or the kernel with an error of their own.
    checkProcess({ command: input.command, envs: input.envs, workingDir: input.workingDir });
    if (input.user) parseExecUser("user", input.user);
    const { client, sandboxId, sandbox } = await this.agentOf(input.namespace, input.name);
    if (sandbox.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${input.name} is being deleted`);
    // An instance that ended (process 1 killed, its container gone) is not there to run it in.
    if (sandbox.status?.phase === "Lost" || sandbox.status?.phase === "Failed") {
      throw new FailedPreconditionError(`sandbox ${input.name} does not run${stateOf(sandbox)}; reset it ('fsb reset ${input.name}') or delete it`);
    }
    yield* client.exec(
      {
        sandboxId,
        command: input.command,
        envs: (input.envs ?? []).map((e) => ({ name: e.name, value: e.value })),
        ...(input.workingDir ? { workingDir: input.workingDir } : {}),
        ...(input.user ? { user: input.user } : {}),
      },
      signal,
    );
  }
}

/** `: phase P (its Ready condition's message)`, for messages about a sandbox that does not run. */
function stateOf(sandbox: Sandbox): string {
  const ready = sandbox.status?.conditions?.find((c) => c.type === "Ready" && c.status !== "True");
  return ` (phase ${sandbox.status?.phase ?? "Pending"}${ready?.message ? `: ${ready.message}` : ""})`;
}
