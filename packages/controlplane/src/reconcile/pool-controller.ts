/**
 * The SandboxPool controller of both deployment modes: one `reconcile(key)` per pool on the
 * controller kit. It sizes the pool's agents (reconcile/pool-sizer.ts), starts and stops them
 * through the `AgentFleet` port (agent Pods in the Kubernetes mode, supervised local processes in
 * the embedded one), keeps the `AgentRegistry` in step with what the fleet observes, and writes the
 * pool's status.
 *
 * Level-triggered: every reconcile reads the pool (informer cache) and the fleet's agents of the pool,
 * and makes one step of progress:
 * - the registry follows the fleet: a ready agent is registered (capacity = maxSandboxesPerPod, hostIP
 *   = its Pod IP), an agent that is not ready any more is marked unready (its placements stay), an
 *   agent gone from the fleet is removed;
 * - agents that exist but are not ready yet count as capacity that is coming, and so do Pods this
 *   controller requested that the fleet has not reported yet: no more are started for them. One not
 *   reported for `startExpectationMs` is looked for at the source (`fleet.fetchAgents`: the API
 *   server's list of the pool's Pods) before it is forgotten, so a blind Pod watch does not make the
 *   pool create its Pods again and again, past poolMax; one found there but left out by the fleet
 *   because another namespace's Pod holds its name (`nameTakenBy`: a chance collision of drawn names)
 *   is deleted once it stays so past `nameTakenGraceMs`, so that one of another name replaces it;
 * - agents are started one at a time; a refusal (a PodSecurity-enforcing namespace, a full
 *   ResourceQuota, an admission webhook) sets the status condition `AgentPodsCreated=False` (reason
 *   Forbidden, QuotaExceeded, Invalid, Unavailable or CreateFailed; the API server's message), the
 *   status is still written, and the pool is tried again after a back-off; the next create that
 *   succeeds sets it True;
 * - the leader's work stops as soon as it is not the leader any more: before each agent it starts
 *   and before any it stops, it checks again that it still leads;
 * - an idle agent leaves by draining: marked unready in the registry (no placement reaches it), its
 *   allocation checked again (placement is synchronous, so a sandbox placed first shows now), retired
 *   at the agent itself (retireAgent: another replica may have placed on it), and only then stopped.
 *   A busy agent is never stopped;
 * - a pool with capacity.dynamicBuffer keeps the free slots its recent create rate asks for
 *   (create-rate.ts), the agents' start time measured here from request to serving;
 * - the status (agents, readyAgents, sandboxes, freeSlots, desiredAgents, buffer, updatedAgents, observedGeneration) is
 *   written conditionally on the resourceVersion read, again from a fresh read on conflict;
 * - while spare capacity waits for `scaleDownDelaySeconds`, the key is requeued for when it falls due.
 *
 * - a change of the pool's spec that reaches its agents only when they start (agentTemplate, agent
 *   limits, prepared instances: the fleet's `templateHash`) replaces them, one at a time and only
 *   when idle: a replacement starts first, and the outdated agent is drained and stopped once it is
 *   ready (status.updatedAgents counts the agents of the current spec);
 * - an agentTemplate that makes no agent Pod (the CRD keeps its fields unchecked: `env` written as a
 *   map, `containers` as a string) sets the status condition `AgentTemplateValid=False` (reason
 *   InvalidAgentTemplate, the error as its message; removed once the template is fixed): no agent
 *   starts from it and none is replaced for it, while the agents already running serve on, scale
 *   down as usual, and the status is written. One the deployment's policy refuses (the fleet's
 *   templateHash throws a PermissionDeniedError: Kubernetes' FSB_AGENT_TEMPLATE_POLICY) goes the
 *   same way, with reason AgentTemplateNotAllowed and the policy's message;
 * - a pool in a namespace `poolNamespaces` leaves out (Kubernetes' FSB_POOL_NAMESPACES) gets no
 *   agent either: the status condition `NamespaceAllowed=False` (reason NamespaceNotAllowed) says
 *   which namespaces run pools, and `canGrow` is false, so a create in it fails at once;
 * - agents belong to the pool by its uid (the fleet's `poolUid`, when the mode has one): those of an
 *   earlier pool of the same name (deleted, then created again) are stopped and never placed on;
 * - every pool holds the finalizer `sandbox.fast.io/pool-cleanup`: deleting a pool (kubectl) deletes
 *   its sandboxes first, while its agents still run, then lets the pool go; the agents of a pool
 *   that is gone are stopped (Kubernetes would also garbage-collect the Pods by their owner
 *   reference; local processes have no owner but this controller).
 *
 * Fleet events (ready, lost, removed) enqueue the agent's pool. Placements do not produce events:
 * `wake(namespace, pool)` reconciles a pool at once (a create waits for capacity), and every pool is
 * looked at again every `resyncIntervalMs`.
 */
import type { Logger } from "pino";
import { isDeepStrictEqual } from "node:util";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  FsbError,
  PermissionDeniedError,
  UnavailableError,
  ValidationError,
  preparedInstancesOf,
  type Condition,
  type SandboxPool,
  type SandboxPoolStatus,
} from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import { Controller, type ReconcileResult, type Reconciler } from "../controller/controller.js";
import { Informer } from "../controller/informer.js";
import { parseObjectKey } from "../controller/object-key.js";
import type { PreparedInstancesReport } from "../agent-client/agent-client.js";
import { setCondition } from "../fastpath/sandbox-status.js";
import { AgentsNotStoppedError, type AgentFleet, type AgentFleetEvent, type FleetAgent, type PoolRef } from "../fleet/agent-fleet.js";
import { poolNamespaceRefusal } from "../fleet/pool-namespaces.js";
import { AgentStartTimes, flowBuffer } from "./create-rate.js";
import { DEFAULT_SCALE_DOWN_DELAY_SECONDS, planPoolSize, type PoolAgentState } from "./pool-sizer.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { updateWithRetry } from "../store/retry-on-conflict.js";

export interface PoolControllerOptions {
  store: ResourceStore;
  fleet: AgentFleet;
  registry: AgentRegistry;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** Only the pools of this namespace. @default all namespaces */
  namespace?: string;
  /**
   * The namespaces whose pools get agents (pool-namespaces.ts); a pool elsewhere is kept (finalizer,
   * status, deletion) but starts none, and its status says why. @default every namespace
   */
  poolNamespaces?: readonly string[];
  /** Creates waiting for a free slot in the pool (they make it grow). @default none wait */
  waitingFor?(namespace: string, pool: string): number;
  /** The pool's recent creates per second (create-rate.ts), for pools with capacity.dynamicBuffer. @default none */
  createsPerSecond?(namespace: string, pool: string): number;
  /**
   * Whether this replica sizes pools and writes their status (the leader); the others only keep
   * their registry in step with the fleet. @default always
   */
  isLeader?(): boolean;
  /** Whether a ready agent may be placed on (e.g. it answers its heartbeats and was adopted). @default when the fleet says ready */
  agentUsable?(name: string): boolean;
  /** The agent's stock of prepared instances as it last reported it (its heartbeat's status); undefined: not known. @default none known */
  preparedInstancesOf?(name: string): PreparedInstancesReport | undefined;
  /** Called when an agent is registered (anew, or with a new endpoint): its sandboxes' slots can be recorded. */
  onAgentRegistered?(name: string): void;
  /**
   * Retires an idle agent at the agent itself, atomically with its admission, before it is stopped
   * (AgentClient.retire): false when it holds sandboxes after all — another control-plane replica,
   * whose registry did not know it was draining, placed one on it — or could not be asked, and it is
   * kept. With `cancel`, undoes a retirement whose stop failed. @default every drained agent is stopped
   */
  retireAgent?: (name: string, cancel?: boolean) => Promise<boolean>;
  /**
   * Called when a pool being deleted has no sandbox left, while its agents still run, before it goes
   * (its checkpoints' files are removed); a failure is retried like any reconcile. @default nothing
   */
  onPoolEmptied?(namespace: string, pool: string): Promise<void>;
  /**
   * Runs a deleted pool's last look for sandboxes (and the removal of its finalizer) while this
   * replica's fast path takes no create in the pool and its creates in flight have finished
   * (SandboxManager.withPoolClosed): a create that passed its pool check just before the deletion
   * cannot store a sandbox after that look. @default runs it as it is
   */
  closingPool?<T>(namespace: string, pool: string, work: () => Promise<T>): Promise<T>;
  /** How often every pool is reconciled even when nothing it watches changed (placements, releases). @default 5000 */
  resyncIntervalMs?: number;
  /**
   * How long a requested agent that the fleet has not reported yet still counts as starting. After
   * that it is looked for at the source (`fleet.fetchAgents`): one that exists (the fleet's watch is
   * behind) counts as starting for as long again, and so does every one while the list fails; one
   * that does not (its Pod was deleted before it was ever seen) is forgotten, and so is every one
   * when the fleet has no fetchAgents (what it lists is current).
   * @default 60000
   */
  startExpectationMs?: number;
  /**
   * How long a requested agent whose Pod the fleet leaves out because another namespace's Pod holds
   * its name (fetchAgents' `nameTakenBy`: two pools of one name in two namespaces drew the same
   * name) may stay so before it is deleted, so that one of another drawn name replaces it: while
   * that other Pod exists it would count as starting for ever. @default 30000
   */
  nameTakenGraceMs?: number;
  /**
   * How long an agent may be away (its Pod not Ready, or not answering; one that never became ready
   * too) before the pool stops counting on it: it is left out of the sizing, so a replacement
   * starts, out of `canGrow`, so creates stop waiting for it, and out of a rollout's wait. One that
   * holds sandboxes is not stopped: back, it serves again, and scale-down trims what the pool no
   * longer needs. One that holds none (a Pod that never became Ready: a bad image, a missing Secret)
   * is stopped, so that a pool that cannot start agents replaces them one for one instead of
   * piling up a new set every `awayLimitMs`.
   * @default 300000 (5 minutes, as long as Kubernetes waits before evicting a NotReady node's Pods)
   */
  awayLimitMs?: number;
  /**
   * The same for an agent never seen up (a Pod still starting: a large image pulling, a node being
   * added for it), which counts as starting meanwhile. @default 900000 (15 minutes)
   */
  startLimitMs?: number;
  /**
   * Whether records still name the agent (`status.assignedPod`) in a phase it may serve again (Bound,
   * Running, Lost, Paused): an away agent holding any is kept. Its registry slots count too.
   * @default its registry slots alone
   */
  holdsSandboxes?(agentName: string): boolean;
  /** Pools reconciled at the same time. @default 2 */
  workers?: number;
  /** The longest pause between retries of a failing reconcile. @default 10000 */
  maxRetryDelayMs?: number;
}

/** A requested agent the fleet has not reported yet. */
interface ExpectedStart {
  name: string;
  requestedAt: Date;
  /** Since when fetchAgents has found its Pod left out, another namespace's Pod holding its name (`nameTakenBy`). */
  nameTakenSince?: Date;
}

/** One step of a pool's rolling replacement of outdated agents (PoolController.rolloutStep). */
interface Rollout {
  /** The `templateHash` of the pool's spec now; undefined when no agent starts for the pool (`blocked` says why). */
  wanted?: string;
  /** Why no agent starts for the pool (its agentTemplate, its namespace): nothing starts, nothing is replaced. */
  blocked?: Blocked;
  /** Agents of the pool started from an earlier spec. */
  outdated: number;
  /** An agent of the current spec is requested or not serving yet. */
  starting: boolean;
  /** The idle outdated agent being replaced now. */
  replacing?: string;
}

/** Held by every pool (Kubernetes mode) until its sandboxes are gone: deleting a pool deletes them first. */
export const POOL_CLEANUP_FINALIZER = "sandbox.fast.io/pool-cleanup";

/** The pool's status condition set (False) while its agentTemplate makes no agent Pod, or one the deployment does not allow. */
export const AGENT_TEMPLATE_CONDITION = "AgentTemplateValid";

/** The pool's status condition set (False) while its namespace is not one whose pools get agents (`poolNamespaces`). */
export const POOL_NAMESPACE_CONDITION = "NamespaceAllowed";

/** The conditions that say why no agent starts for a pool (Blocked); at most one is set at a time. */
const BLOCKING_CONDITIONS: readonly string[] = [AGENT_TEMPLATE_CONDITION, POOL_NAMESPACE_CONDITION];

/** Why no agent starts for a pool: the False condition its status carries meanwhile. */
interface Blocked {
  type: typeof AGENT_TEMPLATE_CONDITION | typeof POOL_NAMESPACE_CONDITION;
  reason: "InvalidAgentTemplate" | "AgentTemplateNotAllowed" | "NamespaceNotAllowed";
  message: string;
}

/** The pool's status condition set False while an agent of the pool cannot make its prepared instances (an image that cannot be pulled…), True again once none fails. */
export const INSTANCES_PREPARED_CONDITION = "InstancesPrepared";

/** The pool's status condition set False when the API server (or the fleet) refuses to create an agent, True again once one is created. */
export const AGENT_PODS_CREATED_CONDITION = "AgentPodsCreated";

/** What is logged (once per cause) when no agent starts for a pool, by Blocked's reason. */
const BLOCKED_LOG: Record<Blocked["reason"], string> = {
  InvalidAgentTemplate: "the pool's agentTemplate makes no agent Pod: no agent starts",
  AgentTemplateNotAllowed: "the pool's agentTemplate is not allowed by the deployment's agent template policy: no agent starts",
  NamespaceNotAllowed: "the pool's namespace is not one FSB_POOL_NAMESPACES runs pools in: no agent starts",
};

/**
 * The reason of `AgentPodsCreated=False`, from the refusal's error class: a full ResourceQuota and
 * PodSecurity admission or RBAC both answer 403 (PermissionDeniedError); the quota's message says so.
 */
function agentCreateRefusalReason(error: FsbError): string {
  if (error instanceof PermissionDeniedError) return /exceeded quota/i.test(error.message) ? "QuotaExceeded" : "Forbidden";
  if (error instanceof ValidationError) return "Invalid";
  // A Secret of the name of the pool's token Secret that is not the pool's (Kubernetes mode).
  if (error instanceof AlreadyExistsError) return "TokenSecretTaken";
  if (error instanceof UnavailableError) return "Unavailable";
  return "CreateFailed";
}

/** The status conditions a reconcile writes. */
interface PoolConditions {
  /** Why no agent starts (one of BLOCKING_CONDITIONS, False): set, the others of them removed; all of them removed when undefined. */
  blocked: Condition | undefined;
  /** Whether agents could be created: set when False; when True, only over a condition the status has (a pool that was never refused carries none). Undefined: left as it is. */
  podsCreated?: Condition;
  /** Whether the agents can make their prepared instances: as podsCreated; null removes it (the pool keeps none). */
  prepared?: Condition | null;
}

/**
 * Whether the agent is the pool's own: started for this pool, not for an earlier pool of its name
 * (deleted, then created again). An agent or a pool without a uid (a mode that has none) is.
 */
function ownedBy(agent: FleetAgent, pool: SandboxPool): boolean {
  return agent.poolUid === undefined || pool.metadata.uid === undefined || agent.poolUid === pool.metadata.uid;
}

/** The agents a failed stopAgents left running: those its error names, else every one it was given. */
function notStoppedBy(error: unknown, names: readonly string[]): string[] {
  return error instanceof AgentsNotStoppedError ? names.filter((name) => error.notStopped.includes(name)) : [...names];
}

/** The status's conditions with those of `changes` applied (PoolConditions); undefined when none is left. */
function withConditions(status: SandboxPoolStatus | undefined, changes: PoolConditions, now: Date): Condition[] | undefined {
  const { blocked } = changes;
  let conditions = (status?.conditions ?? []).filter((c) => !BLOCKING_CONDITIONS.includes(c.type) || c.type === blocked?.type);
  if (blocked) conditions = setCondition(conditions, blocked, now);
  for (const change of [changes.podsCreated, changes.prepared]) {
    if (change && (change.status !== "True" || conditions.some((c) => c.type === change.type))) conditions = setCondition(conditions, change, now);
  }
  if (changes.prepared === null) conditions = conditions.filter((c) => c.type !== INSTANCES_PREPARED_CONDITION);
  return conditions.length > 0 ? conditions : undefined;
}

/**
 * The pool's prepared instances, from what its ready agents last reported: how many are ready
 * (undefined when the pool keeps none), and the condition InstancesPrepared — False (PrepareFailed)
 * while an agent's prepares fail, naming the agents and the first one's error; True once none does
 * (set only over a False one); null when the pool keeps none.
 */
function preparedOf(
  pool: SandboxPool,
  reports: readonly { agent: string; report: PreparedInstancesReport | undefined }[],
): { ready: number | undefined; condition: Condition | null } {
  if (preparedInstancesOf(pool.spec) === 0) return { ready: undefined, condition: null };
  let ready = 0;
  const failing: { agent: string; error: string }[] = [];
  for (const { agent, report } of reports) {
    ready += report?.ready ?? 0;
    if (report?.error) failing.push({ agent, error: report.error });
  }
  const generation = pool.metadata.generation !== undefined ? { observedGeneration: pool.metadata.generation } : {};
  const first = failing[0];
  if (!first) {
    return {
      ready,
      condition: { type: INSTANCES_PREPARED_CONDITION, status: "True", reason: "Prepared", message: "the agents make their prepared instances", ...generation },
    };
  }
  const names = failing.map(({ agent }) => agent).join(", ");
  return {
    ready,
    condition: {
      type: INSTANCES_PREPARED_CONDITION,
      status: "False",
      reason: "PrepareFailed",
      message: `${failing.length === 1 ? "agent" : "agents"} ${names} cannot make prepared instances (creates take the slower path meanwhile; the agents keep trying): ${first.error}`,
      ...generation,
    },
  };
}

function poolRefOf(key: string): PoolRef {
  const { namespace, name } = parseObjectKey(key);
  return { namespace, pool: name };
}

/** The host part of `host:port` (an IPv6 host is bracketed). */
function hostOf(endpoint: string): string {
  const colon = endpoint.lastIndexOf(":");
  const host = colon === -1 ? endpoint : endpoint.slice(0, colon);
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

export class PoolController implements Reconciler {
  private readonly options: PoolControllerOptions;
  private readonly clock: Clock;
  private readonly informer: Informer<"SandboxPool">;
  private readonly controller: Controller;
  /** Per pool key: since when it has had spare capacity (the sizer's scale-down delay). */
  private readonly spareSince = new Map<string, Date>();
  /**
   * When each agent was first seen away (not up), by this replica, and its pool's key; gone once it
   * is up again, or once the fleet no longer has it (an agent that never came up and was deleted:
   * a later agent of the same name — the embedded fleet's names come back — starts afresh).
   */
  private readonly awaySince = new Map<string, { key: string; since: number }>();
  /** Agents already logged as away too long. */
  private readonly awayWarned = new Set<string>();
  /** Agents this replica saw up (ready and registered) at least once, until the fleet no longer has them. */
  private readonly seenUp = new Map<string, string>();
  /** Per pool key: agents requested and not yet reported by the fleet. */
  private readonly expectedStarts = new Map<string, ExpectedStart[]>();
  /** Agents asked to stop (drained) → their pool key, until the fleet no longer reports them: never ready again. */
  private readonly stopping = new Map<string, string>();
  /** Agents requested and not serving yet → their pool key and when: how long a pool's agents take to start. */
  private readonly startRequested = new Map<string, { key: string; at: number }>();
  private readonly startTimes = new AgentStartTimes();
  private unsubscribe: (() => void) | undefined;

  constructor(options: PoolControllerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.informer = new Informer({
      store: options.store,
      kind: "SandboxPool",
      logger: options.logger,
      clock: this.clock,
      ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
    });
    this.controller = new Controller({
      name: "sandbox-pool",
      reconciler: this,
      logger: options.logger,
      clock: this.clock,
      workers: options.workers ?? 2,
      maxBackoffMs: options.maxRetryDelayMs ?? 10_000,
    });
    this.controller.watch(this.informer);
  }

  /**
   * Subscribes to the fleet's events and starts reconciling every pool. The fleet is started (and
   * stopped) by whoever composes the two, after this: its first `ready` events then reach us.
   */
  async start(): Promise<void> {
    this.unsubscribe = this.options.fleet.subscribe((event) => this.fleetChanged(event));
    await this.controller.start();
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    await this.controller.stop();
  }

  /** Reconciles the pool soon (a create waits for capacity in it). */
  wake(namespace: string, pool: string): void {
    this.controller.enqueue(`${namespace}/${pool}`);
  }

  /**
   * True while the pool may still gain a slot: it has fewer agents than poolMax, or one of its agents
   * (or one requested) is not ready yet — for placement: its Pod may be Ready before this replica's
   * registry takes it (it answers and is adopted) — and agents may start for it: not from an
   * agentTemplate that makes no agent Pod or that the deployment refuses, nor in a namespace
   * `poolNamespaces` leaves out. Any replica can tell: it reads the fleet, the pool and its registry.
   */
  canGrow(namespace: string, pool: string): boolean {
    const key = `${namespace}/${pool}`;
    const spec = this.informer.get(key);
    if (!spec || spec.metadata.deletionTimestamp) return false;
    const now = this.clock.now().getTime();
    // An agent away too long is not coming soon: nothing waits for it, nor counts it against poolMax.
    const agents = this.options.fleet
      .listAgents({ namespace, pool })
      .filter((agent) => ownedBy(agent, spec) && !this.stopping.has(agent.name) && !this.awayTooLong(agent, now));
    if ((this.expectedStarts.get(key)?.length ?? 0) > 0) return true;
    if (agents.some((agent) => !this.isUp(agent))) return true;
    return agents.length < spec.spec.capacity.poolMax && this.wantedTemplate(spec).hash !== undefined;
  }

  /**
   * Why no agent starts for the pool, as its status conditions say (its agentTemplate, its
   * namespace, the API server's refusal of its Pods); undefined when agents may start, or the pool
   * is not known here. For a create's
   * refusal: "no ready agents" alone would not say why none comes.
   */
  blockedReason(namespace: string, pool: string): string | undefined {
    const spec = this.informer.get(`${namespace}/${pool}`);
    if (!spec) return undefined;
    const blocked = this.wantedTemplate(spec).blocked?.message;
    if (blocked) return blocked;
    // The API server refused its agent Pods (a missing ServiceAccount, PodSecurity, a full quota): tried again after a back-off.
    const refused = spec.status?.conditions?.find((c) => c.type === AGENT_PODS_CREATED_CONDITION && c.status === "False");
    return refused?.message ? `its agent Pods are refused (${refused.reason ?? "Refused"}, tried again): ${refused.message}` : undefined;
  }

  /** The pool as last seen (informer cache). */
  getPool(namespace: string, pool: string): SandboxPool | undefined {
    return this.informer.get(`${namespace}/${pool}`);
  }

  /** Calls `listener` with every pool added, changed or deleted (a deleted one with `deleted` true). Before start(). */
  onPoolChanged(listener: (pool: SandboxPool, deleted: boolean) => void): void {
    this.informer.addHandlers({
      onAdd: (pool) => listener(pool, false),
      onUpdate: (_previous, pool) => listener(pool, false),
      onDelete: (pool) => listener(pool, true),
    });
  }

  /** Resolves when every change seen so far is reconciled (timed requeues do not count); for tests. */
  whenIdle(): Promise<void> {
    return this.controller.whenIdle();
  }

  private fleetChanged(event: AgentFleetEvent): void {
    const { agent } = event;
    // Unready at once: placements must not wait for the reconcile to stop reaching a lost agent.
    if (event.type !== "ready" && this.options.registry.getAgent(agent.name)?.ready === true) this.options.registry.setAgentReady(agent.name, false);
    this.controller.enqueue(`${agent.namespace}/${agent.pool}`);
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const ref = poolRefOf(key);
    const pool = this.informer.get(key);
    const listed = this.options.fleet.listAgents(ref);
    // Agents of an earlier pool of this name are not this one's: never registered, and stopped below.
    const agents = pool ? listed.filter((agent) => ownedBy(agent, pool)) : listed;
    this.syncRegistry(ref, pool, agents, listed);
    if (!this.leading()) {
      // A follower keeps its registry and its view of who is away in step (for when it leads); a
      // pool gone with its agents has nothing left to follow.
      const nowMs = this.clock.now().getTime();
      for (const agent of agents) if (!this.stopping.has(agent.name)) this.awayTooLong(agent, nowMs);
      return !pool && agents.length === 0 ? undefined : { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
    }
    if (!pool || pool.metadata.deletionTimestamp) {
      this.spareSince.delete(key);
      this.expectedStarts.delete(key);
      this.startTimes.forget(key);
      if (pool) return this.cascade(pool);
      // Gone, so are its sandboxes (the cascade above ran first): its agents go; the registry follows as the fleet reports them removed.
      const leftover = agents.map((agent) => agent.name).filter((name) => !this.stopping.has(name));
      if (leftover.length === 0) return;
      if (!this.leading()) return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
      this.options.logger.info({ pool: key, agents: leftover }, "pool deleted: stopping its agents");
      for (const name of leftover) this.stopping.set(name, key);
      try {
        await this.options.fleet.stopAgents(ref, leftover);
      } catch (error) {
        // Tried again by the retry of this reconcile.
        for (const name of notStoppedBy(error, leftover)) this.stopping.delete(name);
        throw error;
      }
      return;
    }
    if (!pool.metadata.finalizers?.includes(POOL_CLEANUP_FINALIZER)) {
      await updateWithRetry(
        this.options.store,
        "SandboxPool",
        { namespace: ref.namespace, name: ref.pool },
        (current) =>
          current.metadata.deletionTimestamp || current.metadata.finalizers?.includes(POOL_CLEANUP_FINALIZER)
            ? undefined
            : { ...current, metadata: { ...current.metadata, finalizers: [...(current.metadata.finalizers ?? []), POOL_CLEANUP_FINALIZER] } },
        pool.metadata.uid !== undefined ? { uid: pool.metadata.uid } : {},
      );
    }

    const earlier = listed.filter((agent) => !agents.includes(agent) && !this.stopping.has(agent.name));
    if (earlier.length > 0) {
      this.options.logger.info({ pool: key, agents: earlier.map((agent) => agent.name) }, "stopping the agents of an earlier pool of this name");
      await this.stopNow(key, ref, earlier);
    }

    // An agent whose Pod ended for good (evicted, its node shut down) holds its place in the pool
    // and would never serve again: it goes (its sandboxes follow their failure policy), and the
    // sizing below starts its replacement.
    const ended = agents.filter((agent) => agent.terminated && !this.stopping.has(agent.name));
    if (ended.length > 0) {
      this.options.logger.warn(
        { pool: key, agents: ended.map((agent) => `${agent.name}: ${agent.terminated ?? ""}`) },
        "removing agents that will never run again; they are replaced",
      );
      await this.stopNow(key, ref, ended);
    }

    const now = this.clock.now();
    const expected = await this.pendingStarts(key, ref, agents, now);
    // Away too long (its node partitioned, its Pod never Ready): the pool stops counting on it, and
    // one that holds nothing goes (its replacement, started below, takes its place).
    const away = agents.filter((agent) => !this.stopping.has(agent.name) && this.awayTooLong(agent, now.getTime()));
    await this.stopAwayAndEmpty(key, ref, away);
    // Those kept (they hold sandboxes, or could not be retired) are not counted on.
    const gone = away.filter((agent) => !this.stopping.has(agent.name));
    const newlyGone = gone.filter((agent) => !this.awayWarned.has(agent.name));
    for (const agent of newlyGone) this.awayWarned.add(agent.name);
    if (newlyGone.length > 0) {
      this.options.logger.warn(
        { pool: key, agents: newlyGone.map((agent) => agent.name), ...this.awayLimits() },
        "agents away too long are no longer counted; replacements start as the pool needs them",
      );
    }
    const live = agents.filter((agent) => !this.stopping.has(agent.name) && !gone.includes(agent));
    const rollout = this.rolloutStep(pool, agents, live, expected);
    const flow = pool.spec.capacity.dynamicBuffer
      ? flowBuffer(this.options.createsPerSecond?.(ref.namespace, ref.pool) ?? 0, this.startTimes.of(key))
      : undefined;
    const plan = planPoolSize({
      pool,
      ...(flow !== undefined ? { flowBuffer: flow } : {}),
      agents: [
        ...live.filter((agent) => agent.name !== rollout.replacing).map((agent) => this.sizingState(agent)),
        ...expected.map(({ name }) => ({ name, allocated: 0, ready: false })),
      ],
      waiting: this.options.waitingFor?.(ref.namespace, ref.pool) ?? 0,
      now,
      spareSince: this.spareSince.get(key),
    });
    if (plan.spareSince) this.spareSince.set(key, plan.spareSince);
    else this.spareSince.delete(key);

    let podsCreated: Condition | undefined;
    let refused: FsbError | undefined;
    const { blocked } = rollout;
    if (blocked !== undefined) {
      // Once per cause: the status keeps it meanwhile.
      const known = pool.status?.conditions?.some((c) => c.type === blocked.type && c.status === "False" && c.message === blocked.message);
      if (!known) this.options.logger.warn({ pool: key, reason: blocked.message }, BLOCKED_LOG[blocked.reason]);
    } else if (plan.add > 0) {
      const started = await this.startAgents(key, pool, plan.add);
      if (started.names.length > 0) this.options.logger.info({ pool: key, agents: started.names, desired: plan.desired }, "starting agents");
      refused = started.refused;
      if (refused instanceof FailedPreconditionError) {
        // Its namespace is going away, the pool with it: nothing to retry soon.
        this.options.logger.info({ pool: key, reason: refused.message }, "not starting agents");
        return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
      }
      const generation = pool.metadata.generation !== undefined ? { observedGeneration: pool.metadata.generation } : {};
      if (refused !== undefined) {
        podsCreated = {
          type: AGENT_PODS_CREATED_CONDITION,
          status: "False",
          reason: agentCreateRefusalReason(refused),
          message: refused.message,
          ...generation,
        };
      } else if (started.names.length > 0) {
        podsCreated = { type: AGENT_PODS_CREATED_CONDITION, status: "True", reason: "Created", message: "agents were created", ...generation };
      }
      // No longer the leader: the new one sizes the pool, stops its agents and writes its status.
      if (!this.leading()) return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
    }
    const expectedNames = new Set(expected.map(({ name }) => name));
    const drained = plan.remove.filter((name) => !expectedNames.has(name) && this.drain(name));
    // The outdated agent goes once nothing of the pool is starting: its replacement serves (or the pool needs none).
    const retired = rollout.replacing !== undefined && plan.add === 0 && !rollout.starting && this.drain(rollout.replacing) ? rollout.replacing : undefined;
    if (retired) {
      this.options.logger.info({ pool: key, agent: retired, outdated: rollout.outdated }, "replacing an idle agent started from an earlier pool spec");
      drained.push(retired);
    } else if (drained.length > 0) {
      this.options.logger.info({ pool: key, agents: drained, desired: plan.desired }, "releasing idle agents (scale-down)");
    }
    if (drained.length > 0) {
      for (const name of drained) this.stopping.set(name, key);
      const stopped = await this.retire(key, drained);
      if (!this.leading()) {
        // Lost the lease while the agents answered: none is stopped (the new leader decides), each serves again.
        await this.unretire(stopped);
        for (const name of drained) this.serveAgain(name);
        return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
      }
      try {
        if (stopped.length > 0) await this.options.fleet.stopAgents(ref, stopped);
      } catch (error) {
        // Those not stopped serve again, and the next attempt drains them anew; those stopped are gone.
        const notStopped = notStoppedBy(error, stopped);
        await this.unretire(notStopped);
        for (const name of notStopped) this.serveAgain(name);
        throw error;
      }
    }

    await this.writeStatus(
      pool,
      {
        desiredAgents: plan.desired,
        buffer: plan.buffer,
        updatedAgents: rollout.wanted === undefined ? 0 : agents.filter((agent) => agent.templateHash === rollout.wanted).length,
      },
      {
        blocked:
          blocked === undefined
            ? undefined
            : {
                ...blocked,
                status: "False",
                ...(pool.metadata.generation !== undefined ? { observedGeneration: pool.metadata.generation } : {}),
              },
        ...(podsCreated ? { podsCreated } : {}),
      },
    );
    // The refusal, now in the status, is retried after the work queue's back-off (and logged by it).
    if (refused !== undefined) throw refused;
    return { requeueAfterMs: this.requeueAfterMs(pool, plan.spareSince, now) };
  }

  /**
   * A pool's agents follow its spec (a rolling replacement, one agent at a time, never a busy one):
   * an agent started from an earlier spec (its fleet's `templateHash` differs) is `replacing` once
   * idle. It is left out of the sizing, so a replacement starts when the pool needs one; and it is
   * stopped, drained like any idle agent, once no agent of the pool is `starting` — the
   * replacement is ready. A busy outdated agent keeps its sandboxes and serves on until it is idle.
   * The pool has at most one agent above its size (or poolMax) while one is replaced.
   */
  private rolloutStep(pool: SandboxPool, agents: readonly FleetAgent[], live: readonly FleetAgent[], expected: readonly ExpectedStart[]): Rollout {
    const { hash: wanted, blocked } = this.wantedTemplate(pool);
    // No agent starts from the spec: no agent is outdated by it, none is replaced.
    if (wanted === undefined) return { outdated: 0, starting: expected.length > 0, blocked };
    const outdated = live.filter((agent) => agent.templateHash !== wanted);
    const starting =
      expected.length > 0 ||
      live.some((agent) => agent.templateHash === wanted && (!agent.ready || this.options.registry.getAgent(agent.name)?.ready !== true));
    // One at a time: the next waits until the one stopped before is gone.
    const leaving = agents.some((agent) => this.stopping.has(agent.name) && agent.templateHash !== wanted);
    const idle = outdated.filter((agent) => this.sizingState(agent).allocated === 0).sort((a, b) => b.name.localeCompare(a.name, undefined, { numeric: true }));
    return { wanted, outdated: outdated.length, starting, ...(idle[0] && !leaving ? { replacing: idle[0].name } : {}) };
  }

  /**
   * The fleet's `templateHash` of the pool's spec, or why no agent starts for the pool: its namespace
   * is not one whose pools get agents, the deployment's policy refuses its agentTemplate (the fleet
   * throws a PermissionDeniedError), or no agent Pod can be built from it (an agentTemplate the CRD
   * lets through, written with kubectl: a container's env as a map, `containers` as a string).
   */
  private wantedTemplate(pool: SandboxPool): { hash: string; blocked?: undefined } | { hash?: undefined; blocked: Blocked } {
    const outside = poolNamespaceRefusal(this.options.poolNamespaces, pool.metadata.namespace ?? "default");
    if (outside !== undefined) return { blocked: { type: POOL_NAMESPACE_CONDITION, reason: "NamespaceNotAllowed", message: outside } };
    try {
      return { hash: this.options.fleet.templateHash(pool) };
    } catch (error) {
      if (error instanceof PermissionDeniedError) {
        return { blocked: { type: AGENT_TEMPLATE_CONDITION, reason: "AgentTemplateNotAllowed", message: error.message } };
      }
      const message = `cannot build the agent Pod from spec.agentTemplate: ${error instanceof Error ? error.message : String(error)}`;
      return { blocked: { type: AGENT_TEMPLATE_CONDITION, reason: "InvalidAgentTemplate", message } };
    }
  }

  /**
   * A pool being deleted (e.g. `kubectl delete sandboxpool`) takes its sandboxes with it: each is
   * deleted (its cleanup runs while the pool's agents still run — they are only garbage-collected
   * once the pool is gone), and the pool's finalizer is removed once none is left.
   */
  private async cascade(pool: SandboxPool): Promise<ReconcileResult | void> {
    if (!pool.metadata.finalizers?.includes(POOL_CLEANUP_FINALIZER)) return;
    const namespace = pool.metadata.namespace ?? "default";
    const closing = this.options.closingPool?.bind(this.options) ?? (<T>(_namespace: string, _pool: string, work: () => Promise<T>) => work());
    return closing(namespace, pool.metadata.name, () => this.cascadeClosed(pool, namespace));
  }

  private async cascadeClosed(pool: SandboxPool, namespace: string): Promise<ReconcileResult | void> {
    const { items } = await this.options.store.list("Sandbox", { namespace });
    const left = items.filter((sandbox) => sandbox.spec.poolRef === pool.metadata.name);
    if (left.length > 0) {
      for (const sandbox of left.filter((s) => !s.metadata.deletionTimestamp)) {
        // A replica that lost the Lease midway deletes no more: the new leader carries the cascade on.
        if (!this.leading()) return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
        this.options.logger.info({ pool: `${namespace}/${pool.metadata.name}`, sandbox: sandbox.metadata.name }, "pool deleted: deleting its sandbox");
        await this.options.store.delete("Sandbox", { namespace, name: sandbox.metadata.name });
      }
      return { requeueAfterMs: 1000 };
    }
    if (!this.leading()) return { requeueAfterMs: this.options.resyncIntervalMs ?? 5000 };
    await this.options.onPoolEmptied?.(namespace, pool.metadata.name);
    await updateWithRetry(
      this.options.store,
      "SandboxPool",
      { namespace, name: pool.metadata.name },
      (current) =>
        current.metadata.finalizers?.includes(POOL_CLEANUP_FINALIZER)
          ? { ...current, metadata: { ...current.metadata, finalizers: current.metadata.finalizers.filter((f) => f !== POOL_CLEANUP_FINALIZER) } }
          : undefined,
      pool.metadata.uid !== undefined ? { uid: pool.metadata.uid } : {},
    );
  }

  /**
   * The registry follows the fleet's view of the pool's agents (`agents`, the pool's own); what this
   * replica remembers of an agent is forgotten once the fleet no longer has it (`listed`).
   */
  private syncRegistry(ref: PoolRef, pool: SandboxPool | undefined, agents: readonly FleetAgent[], listed: readonly FleetAgent[]): void {
    const { registry } = this.options;
    const own = new Set(agents.map((agent) => agent.name));
    const present = new Set(listed.map((agent) => agent.name));
    const key = `${ref.namespace}/${ref.pool}`;
    for (const [name, poolKey] of this.stopping) if (poolKey === key && !present.has(name)) this.stopping.delete(name);
    for (const [name, away] of this.awaySince) {
      if (away.key !== key || present.has(name)) continue;
      this.awaySince.delete(name);
      this.awayWarned.delete(name);
    }
    for (const [name, poolKey] of this.seenUp) if (poolKey === key && !present.has(name)) this.seenUp.delete(name);
    for (const registered of registry.listAgents({ namespace: ref.namespace, pool: ref.pool })) {
      if (own.has(registered.name)) continue;
      const lost = registry.removeAgent(registered.name);
      this.options.logger.info({ agent: registered.name, pool: key, sandboxes: lost.length }, "agent removed from the registry");
    }
    for (const agent of agents) {
      const registered = registry.getAgent(agent.name);
      if (!agent.ready || !agent.endpoint || !pool) {
        if (registered?.ready === true) registry.setAgentReady(agent.name, false);
        continue;
      }
      const capacity = pool.spec.maxSandboxesPerPod;
      const hostIP = hostOf(agent.endpoint);
      const usable = this.options.agentUsable?.(agent.name) ?? true;
      const renewed = !registered || registered.endpoint !== agent.endpoint;
      if (renewed || registered.capacity !== capacity || registered.hostIP !== hostIP || registered.pid !== agent.pid) {
        registry.upsertAgent({
          name: agent.name,
          namespace: agent.namespace,
          pool: agent.pool,
          endpoint: agent.endpoint,
          capacity,
          hostIP,
          ...(agent.nodeName ? { nodeName: agent.nodeName } : {}),
          ...(agent.pid !== undefined ? { pid: agent.pid } : {}),
          images: registered?.images ?? [],
        });
        if (renewed) this.options.onAgentRegistered?.(agent.name);
      }
      // A new registration is ready; one that comes back after being lost serves again — unless it
      // is draining, or not usable yet (not answering, not adopted).
      const ready = !this.stopping.has(agent.name) && usable;
      if (registry.getAgent(agent.name)?.ready !== ready) registry.setAgentReady(agent.name, ready);
      const requested = this.startRequested.get(agent.name);
      if (ready && requested) {
        this.startTimes.sample(requested.key, this.clock.now().getTime() - requested.at);
        this.startRequested.delete(agent.name);
      }
    }
  }

  /** An agent's Pod is Ready and this replica's registry takes it. */
  private isUp(agent: FleetAgent): boolean {
    return agent.ready && this.options.registry.getAgent(agent.name)?.ready === true;
  }

  /** Whether this replica sizes pools (the leader); asked again before each agent started or stopped. */
  private leading(): boolean {
    return this.options.isLeader?.() ?? true;
  }

  /**
   * Starts `count` agents one at a time, each counted as starting as soon as it is requested. Before
   * each it checks that this replica still leads: one that lost the Lease creates no more (the new
   * leader sizes the pool). A refusal (a PodSecurity-enforcing namespace, a full ResourceQuota, an
   * admission webhook, the namespace going away) ends the batch and is answered as `refused`, with
   * the agents started before it.
   */
  private async startAgents(key: string, pool: SandboxPool, count: number): Promise<{ names: string[]; refused?: FsbError }> {
    const names: string[] = [];
    for (let i = 0; i < count && this.leading(); i++) {
      const requestedAt = this.clock.now();
      let started: string[];
      try {
        started = await this.options.fleet.startAgents(pool, 1);
      } catch (error) {
        return { names, refused: FsbError.from(error) };
      }
      this.expectedStarts.set(key, [...(this.expectedStarts.get(key) ?? []), ...started.map((name) => ({ name, requestedAt }))]);
      for (const name of started) this.startRequested.set(name, { key, at: requestedAt.getTime() });
      names.push(...started);
    }
    return { names };
  }

  /**
   * Stops the agents away too long that hold no sandbox. One whose Pod is still Ready may serve the
   * other replicas although this one cannot reach it (its heartbeats to it fail): it is retired at
   * the agent first, as a scale-down does, and kept when it does not answer retired. One whose Pod
   * is not Ready takes no placement from any replica. Whether they hold sandboxes is checked again
   * right before they are stopped: records may have arrived while the agents were asked.
   */
  private async stopAwayAndEmpty(key: string, ref: PoolRef, away: readonly FleetAgent[]): Promise<void> {
    const empty = away.filter((agent) => !this.holdsSandboxes(agent.name));
    if (empty.length === 0) return;
    const podReady = empty.filter((agent) => agent.ready).map((agent) => agent.name);
    for (const name of podReady) this.stopping.set(name, key);
    const retired = podReady.length > 0 ? await this.retire(key, podReady) : [];
    const leaving = empty.filter((agent) => (!agent.ready || retired.includes(agent.name)) && !this.holdsSandboxes(agent.name));
    const keptAfterAll = retired.filter((name) => !leaving.some((agent) => agent.name === name));
    if (keptAfterAll.length > 0) {
      await this.unretire(keptAfterAll);
      for (const name of keptAfterAll) this.serveAgain(name);
    }
    if (leaving.length === 0) return;
    if (!this.leading()) {
      // Lost the lease while the agents answered: none is stopped (the new leader decides).
      await this.unretire(leaving.map((agent) => agent.name).filter((name) => retired.includes(name)));
      for (const agent of leaving) this.serveAgain(agent.name);
      return;
    }
    this.options.logger.warn(
      { pool: key, agents: leaving.map((agent) => agent.name), ...this.awayLimits() },
      "stopping agents away too long that hold no sandbox; they are replaced",
    );
    await this.stopNow(key, ref, leaving);
  }

  /** Undoes the retirement of agents that are not stopped after all (best effort: a retirement lapses by itself after a minute). */
  private async unretire(names: readonly string[]): Promise<void> {
    const { retireAgent } = this.options;
    if (retireAgent) await Promise.all(names.map((name) => retireAgent(name, true).catch(() => false)));
  }

  /**
   * Stops agents that will not serve (ended, or away and empty): unready at once, stopped now; on
   * failure tried again by the next reconcile. Nothing is stopped once this replica no longer leads.
   */
  private async stopNow(key: string, ref: PoolRef, agents: readonly FleetAgent[]): Promise<void> {
    if (!this.leading()) return;
    for (const agent of agents) {
      this.stopping.set(agent.name, key);
      if (this.options.registry.getAgent(agent.name)?.ready) this.options.registry.setAgentReady(agent.name, false);
    }
    const names = agents.map((agent) => agent.name);
    try {
      await this.options.fleet.stopAgents(ref, names);
    } catch (error) {
      for (const name of notStoppedBy(error, names)) this.stopping.delete(name);
      throw error;
    }
  }

  /** The limits of awayTooLong, for the log (which one applied depends on whether the agent was ever seen up). */
  private awayLimits(): { awayLimitMs: number; startLimitMs: number } {
    return { awayLimitMs: this.options.awayLimitMs ?? 300_000, startLimitMs: this.options.startLimitMs ?? 900_000 };
  }

  /** Whether an agent holds sandboxes: slots in the registry, or records that name it (holdsSandboxes). */
  private holdsSandboxes(name: string): boolean {
    return (this.options.registry.getAgent(name)?.allocated ?? 0) > 0 || this.options.holdsSandboxes?.(name) === true;
  }

  /**
   * True once the agent has been away (not up) for longer than awayLimitMs — startLimitMs for one
   * this replica never saw up (still starting: its image pulling, its node being added) — counted
   * from the first time this replica saw it away (kept up to date by every reconcile, the
   * followers' too, and every `canGrow`).
   */
  private awayTooLong(agent: FleetAgent, nowMs: number): boolean {
    if (this.isUp(agent)) {
      this.awaySince.delete(agent.name);
      this.awayWarned.delete(agent.name);
      this.seenUp.set(agent.name, `${agent.namespace}/${agent.pool}`);
      return false;
    }
    const since = this.awaySince.get(agent.name)?.since ?? nowMs;
    this.awaySince.set(agent.name, { key: `${agent.namespace}/${agent.pool}`, since });
    const limitMs = this.seenUp.has(agent.name) ? (this.options.awayLimitMs ?? 300_000) : (this.options.startLimitMs ?? 900_000);
    return nowMs - since > limitMs;
  }

  /** What the sizer needs of an agent: a registered agent that is not ready is away, not idle, and counts as busy. */
  private sizingState(agent: FleetAgent): PoolAgentState {
    const registered = this.options.registry.getAgent(agent.name);
    if (!registered) return { name: agent.name, allocated: 0, ready: false };
    const away = !agent.ready;
    return { name: agent.name, allocated: away ? Math.max(1, registered.allocated) : registered.allocated, ready: registered.ready };
  }

  /**
   * Requested agents the fleet has not reported yet. Those requested startExpectationMs ago or more
   * are looked for at the source first (stillStarting): the fleet's Pod watch may be blind for
   * minutes (a connection gone silent is ended only at its deadline), and a Pod taken for never
   * created would be created again every startExpectationMs, past poolMax.
   */
  private async pendingStarts(key: string, ref: PoolRef, agents: readonly FleetAgent[], now: Date): Promise<ExpectedStart[]> {
    const reported = new Set(agents.map((agent) => agent.name));
    const limitMs = this.options.startExpectationMs ?? 60_000;
    // An agent that never served (deleted while starting) is not a start time.
    for (const [name, requested] of this.startRequested) if (now.getTime() - requested.at > 10 * limitMs) this.startRequested.delete(name);
    const unreported = (this.expectedStarts.get(key) ?? []).filter((expected) => !reported.has(expected.name));
    const pending = unreported.filter((expected) => now.getTime() - expected.requestedAt.getTime() < limitMs);
    const overdue = unreported.filter((expected) => !pending.includes(expected));
    if (overdue.length > 0) pending.push(...(await this.stillStarting(key, ref, overdue, now)));
    if (pending.length > 0) this.expectedStarts.set(key, pending);
    else this.expectedStarts.delete(key);
    return pending;
  }

  /**
   * Of agents requested long ago and never reported, those whose Pod exists at the source (the
   * fleet's fetchAgents: the API server's list of the pool's Pods), counted as starting from `now`
   * for another startExpectationMs; one that is not there was deleted before it was ever seen, and
   * is forgotten (the pool starts another if it needs it). When the list fails they all count on
   * (none is created twice while the API server cannot tell), and are looked for again next time.
   * A fleet without fetchAgents observes its agents as they are: none is.
   */
  private async stillStarting(key: string, ref: PoolRef, overdue: readonly ExpectedStart[], now: Date): Promise<ExpectedStart[]> {
    const { fleet } = this.options;
    if (!fleet.fetchAgents) return [];
    let existing: Map<string, FleetAgent>;
    try {
      existing = new Map((await fleet.fetchAgents(ref)).map((agent) => [agent.name, agent]));
    } catch (error) {
      this.options.logger.warn(
        { pool: key, agents: overdue.map(({ name }) => name), err: error },
        "cannot list the pool's agents; those requested and not reported yet still count as starting",
      );
      return overdue.map(({ name }) => ({ name, requestedAt: now }));
    }
    const found = overdue.flatMap((expected) => {
      const takenBy = existing.get(expected.name)?.nameTakenBy;
      if (!existing.has(expected.name)) return [];
      return [{ name: expected.name, requestedAt: now, ...(takenBy ? { nameTakenSince: expected.nameTakenSince ?? now, takenBy } : {}) }];
    });
    const replaced = await this.replaceNameTaken(key, ref, found, now);
    const still = found.filter(({ name }) => !replaced.includes(name));
    const behind = still.filter(({ nameTakenSince }) => !nameTakenSince);
    if (behind.length > 0) {
      this.options.logger.warn(
        { pool: key, agents: behind.map(({ name }) => name) },
        "agents exist that the fleet has not reported yet (its watch is behind); they still count as starting",
      );
    }
    return still.map(({ name, requestedAt, nameTakenSince }) => ({ name, requestedAt, ...(nameTakenSince ? { nameTakenSince } : {}) }));
  }

  /**
   * Deletes the requested Pods the fleet has left out for longer than `nameTakenGraceMs` because
   * another namespace's Pod holds their name (a chance collision of drawn names): while that one
   * exists they would count as starting for ever and the pool would never replace them. Those
   * deleted are answered (forgotten: the pool starts others, of other names); one whose deletion
   * failed counts on and is tried again next time.
   */
  private async replaceNameTaken(key: string, ref: PoolRef, found: readonly (ExpectedStart & { takenBy?: string })[], now: Date): Promise<string[]> {
    const graceMs = this.options.nameTakenGraceMs ?? 30_000;
    const due = found.filter(({ nameTakenSince }) => nameTakenSince && now.getTime() - nameTakenSince.getTime() >= graceMs);
    if (due.length === 0 || !this.leading()) return [];
    const names = due.map(({ name }) => name);
    this.options.logger.warn(
      { pool: key, agents: names, heldBy: due.map(({ takenBy }) => takenBy) },
      "agent Pods left out because another namespace's Pod holds their name (a chance collision of drawn names); deleting them so that others, of other names, start",
    );
    let notStopped: string[] = [];
    try {
      await this.options.fleet.stopAgents(ref, names);
    } catch (error) {
      notStopped = notStoppedBy(error, names);
      this.options.logger.warn({ pool: key, agents: notStopped, err: error }, "could not delete agent Pods whose name is taken; tried again next time");
    }
    const deleted = names.filter((name) => !notStopped.includes(name));
    for (const name of deleted) this.startRequested.delete(name);
    return deleted;
  }

  /**
   * Retires the drained agents at the agents themselves; those that hold sandboxes after all
   * (placed by another replica), and those whose retirement failed (tried again next time: a
   * timeout under load must not delete a sandbox with its agent), serve again. Answers the agents to stop.
   */
  private async retire(key: string, drained: readonly string[]): Promise<string[]> {
    const { retireAgent } = this.options;
    if (!retireAgent) return [...drained];
    const answers = await Promise.all(
      drained.map((name) =>
        retireAgent(name).catch((error: unknown) => {
          this.options.logger.warn({ agent: name, pool: key, err: error }, "could not retire the agent; it serves on and is tried again");
          return false;
        }),
      ),
    );
    const kept = drained.filter((_, index) => !answers[index]);
    if (kept.length > 0) {
      this.options.logger.info(
        { pool: key, agents: kept },
        "agents not retired (they hold sandboxes another replica placed, or did not answer); they serve on",
      );
      for (const name of kept) this.serveAgain(name);
    }
    return drained.filter((_, index) => answers[index]);
  }

  /**
   * A drained agent that is not stopped after all takes placements again — if this replica may place
   * on it (its Pod Ready, and agentUsable: one whose heartbeats fail stays unready).
   */
  private serveAgain(name: string): void {
    this.stopping.delete(name);
    const registered = this.options.registry.getAgent(name);
    if (!registered) return;
    const podReady = this.options.fleet
      .listAgents({ namespace: registered.namespace, pool: registered.pool })
      .some((agent) => agent.name === name && agent.ready);
    const ready = podReady && (this.options.agentUsable?.(name) ?? true);
    if (registered.ready !== ready) this.options.registry.setAgentReady(name, ready);
  }

  /** Marks the agent unready, then checks it is still idle; false (and ready again) when a sandbox got there first. */
  private drain(name: string): boolean {
    const { registry } = this.options;
    if (!registry.getAgent(name)) return true; // never registered: it has not served a placement
    registry.setAgentReady(name, false);
    if ((registry.getAgent(name)?.allocated ?? 0) === 0) return true;
    registry.setAgentReady(name, true);
    return false;
  }

  /** Writes the pool's counts, and its conditions as `conditions` says (PoolConditions). */
  private async writeStatus(
    pool: SandboxPool,
    sized: Pick<SandboxPoolStatus, "desiredAgents" | "buffer" | "updatedAgents">,
    conditions: PoolConditions,
  ): Promise<void> {
    const namespace = pool.metadata.namespace ?? "";
    const usage = this.options.registry.poolUsage(namespace, pool.metadata.name);
    const now = this.clock.now();
    const owned = this.options.fleet.listAgents({ namespace, pool: pool.metadata.name }).filter((agent) => ownedBy(agent, pool));
    const prepared = preparedOf(
      pool,
      owned
        .filter((agent) => this.options.registry.getAgent(agent.name)?.ready === true)
        .map((agent) => ({ agent: agent.name, report: this.options.preparedInstancesOf?.(agent.name) })),
    );
    const observed: SandboxPoolStatus = {
      agents: owned.length,
      readyAgents: usage.readyAgents,
      sandboxes: usage.allocated,
      freeSlots: usage.free,
      ...(prepared.ready !== undefined ? { preparedInstances: prepared.ready } : {}),
      ...sized,
      ...(pool.metadata.generation !== undefined ? { observedGeneration: pool.metadata.generation } : {}),
    };
    const changes: PoolConditions = { ...conditions, prepared: prepared.condition };
    const unchanged = (status: SandboxPoolStatus | undefined): boolean =>
      (Object.keys(observed) as (keyof SandboxPoolStatus)[]).every((field) => status?.[field] === observed[field]) &&
      (prepared.ready !== undefined || status?.preparedInstances === undefined) &&
      isDeepStrictEqual(status?.conditions, withConditions(status, changes, now));
    if (unchanged(pool.status)) return;
    await updateWithRetry(
      this.options.store,
      "SandboxPool",
      { namespace, name: pool.metadata.name },
      (current) => {
        if (unchanged(current.status)) return undefined;
        const { conditions: _conditions, preparedInstances: _prepared, ...rest } = current.status ?? {};
        const next = withConditions(current.status, changes, now);
        return { ...current, status: { ...rest, ...observed, ...(next ? { conditions: next } : {}) } };
      },
      { status: true, ...(pool.metadata.uid !== undefined ? { uid: pool.metadata.uid } : {}) },
    );
  }

  /** When to look again: when waiting spare capacity falls due for release, and at the latest at the next resync. */
  private requeueAfterMs(pool: SandboxPool, spareSince: Date | undefined, now: Date): number {
    const resyncMs = this.options.resyncIntervalMs ?? 5000;
    if (!spareSince) return resyncMs;
    const delayMs = (pool.spec.capacity.scaleDownDelaySeconds ?? DEFAULT_SCALE_DOWN_DELAY_SECONDS) * 1000;
    return Math.max(0, Math.min(resyncMs, spareSince.getTime() + delayMs - now.getTime()));
  }
}
