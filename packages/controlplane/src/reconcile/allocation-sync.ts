/**
 * Keeps a replica's registry in step with the allocations the store records, when several replicas
 * place sandboxes (Kubernetes mode: the fast path answers on every controller replica, each with its
 * own in-memory registry). A sandbox record assigned to an agent (`status.assignedPod`) in phase
 * Bound or Running — also while it is being deleted, and Expired or Terminating while its cleanup
 * finalizer is on it: its container is there until its cleanup finished — holds a slot and its ports on that agent (the ports of an instance in its agent's
 * network, `portsHeldBy`); so does a Paused one whose pause is undecided (under way, or its outcome
 * not known yet: its instance may run on); any other record, or none, holds nothing.
 *
 * Paused sandboxes otherwise hold no slot, but one whose checkpoint must be reached — a resume in flight, a
 * delete (its checkpoint goes with it) — needs a ready agent of its pool on the checkpoint's node:
 * while its pool has none there (scaled down while the sandbox was paused), it counts as waiting
 * (`pendingIn`) and wakes the pool (`onPending`), as a create does.
 *
 * One `reconcile(key)` per sandbox on the controller kit: the registry's placement of the key is
 * made to match the record. Keys this replica's fast path is working on are left to it (looked at
 * again shortly): its own bookkeeping is ahead of the store. A record whose agent is not registered
 * yet is looked at again when the agent is (`agentRegistered`), and after a while anyway.
 *
 * The registry is a proposal, not the authority: the agent admits a sandbox atomically (its slots
 * and ports), so a registry that lags the store for a moment costs a refused create that is placed
 * again, never an over-committed agent.
 */
import type { Logger } from "pino";
import type { Sandbox } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import { Controller, type ReconcileResult, type Reconciler } from "../controller/controller.js";
import type { Informer } from "../controller/informer.js";
import { objectKey, parseObjectKey } from "../controller/object-key.js";
import { PAUSED_CHECKPOINT_ANNOTATION, RESUMING_ANNOTATION, isPauseUndecided } from "../fastpath/checkpoint-pauses.js";
import { CLEANUP_FINALIZER } from "../fastpath/sandbox-manager.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { SANDBOXES_BY_AGENT, sandboxInformer, sandboxesByAgent } from "./sandbox-informer.js";

/** How soon to look again at a key the local fast path is busy with, or whose agent is not registered. */
const RECHECK_MS = 500;
/**
 * How soon to try again to record a slot or port that a create in flight here holds on the same
 * agent: the agent admits one of the two, and the refused one is placed again within
 * tens of milliseconds (SandboxManager), which must find this record by then, not the same agent.
 */
const CONFLICT_RECHECK_MS = 50;
/**
 * How long a resume's intent (RESUMING_ANNOTATION) counts as demand at least: longer than a resume
 * takes — its wait for an agent (the pool's wakeTimeoutSeconds, 30 s by default: `resumeDemandMs`
 * makes it longer for a pool that waits longer) and its restore (a 60 s create call) — so that one
 * left by a control plane that died mid-resume does not hold the pool up for ever.
 */
export const RESUME_DEMAND_MS = 5 * 60_000;
export interface AllocationSyncOptions {
  /**
   * How long the intent of a resume of this sandbox counts as demand: as long as the resume may be
   * under way (checkpoint-pauses.ts: its pool's wake timeout and the restore). @default RESUME_DEMAND_MS
   */
  resumeDemandMs?(sandbox: Sandbox): number;
  store: ResourceStore;
  registry: AgentRegistry;
  /** True while this replica's fast path creates, replaces or deletes the sandbox. */
  isBusy(namespace: string, name: string): boolean;
  logger: Logger;
  /** Only this namespace (when it makes its own informer). @default all namespaces */
  namespace?: string;
  /** The Sandbox informer shared with the control plane's other controllers. @default one of its own */
  informer?: Informer<"Sandbox">;
  /**
   * Called for records waiting to be placed (phase Pending), and for paused sandboxes that need an
   * agent of their checkpoint's node (`needsCheckpointAgent`): demand the pool controller counts.
   */
  onPending?(sandbox: Sandbox): void;
  /**
   * The ports a record's instance holds on its agent's address (SandboxManager.portsHeldBy: none for
   * one with an Isolated network). @default its exposed ports
   */
  portsHeldBy?(sandbox: Sandbox): readonly number[];
  /** @default systemClock */
  clock?: Clock;
}

/** The agent a record's sandbox holds a slot on, or undefined. */
export function heldOn(sandbox: Sandbox | undefined): string | undefined {
  const phase = sandbox?.status?.phase;
  const agent = sandbox?.status?.assignedPod;
  if (!agent) return undefined;
  if (phase === "Bound" || phase === "Running") return agent;
  // Its pause under way or its outcome not known (checkpoint-pauses.ts): its instance is there, maybe running, until it is decided.
  if (sandbox && isPauseUndecided(sandbox)) return agent;
  // Expired or Terminating before its cleanup ran (or while a failed one is retried): its container
  // is still there, listening on its ports, until the cleanup drops the finalizer.
  const cleanupPending = sandbox?.metadata.finalizers?.includes(CLEANUP_FINALIZER) === true;
  return cleanupPending && (phase === "Expired" || phase === "Terminating") ? agent : undefined;
}

/**
 * Whether the record is a paused sandbox whose checkpoint must be reached now, through a ready agent
 * of its pool on the checkpoint's node (`status.nodeName`): a resume is under way (its intent is less
 * than RESUME_DEMAND_MS old), or the sandbox is being deleted (checkpoint-pauses.ts removes its
 * checkpoint first). A paused sandbox left alone needs none: its pool may go down to zero agents.
 */
export function needsCheckpointAgent(sandbox: Sandbox, nowMs: number, resumeDemandMs = RESUME_DEMAND_MS): boolean {
  const annotations = sandbox.metadata.annotations ?? {};
  // A record held on an agent (Running, its pause only beginning) needs that agent, whose slot it holds;
  // one whose pause is undecided may be paused already: its checkpoint's node is what it needs.
  if (!annotations[PAUSED_CHECKPOINT_ANNOTATION] || (heldOn(sandbox) && !isPauseUndecided(sandbox))) return false;
  if (sandbox.metadata.deletionTimestamp) return true;
  const resumingSince = Date.parse(annotations[RESUMING_ANNOTATION] ?? "");
  return sandbox.status?.phase === "Paused" && nowMs - resumingSince < Math.max(RESUME_DEMAND_MS, resumeDemandMs);
}

/** Phases in which a record that names an agent no longer needs it. */
const ENDED_ON_AGENT: ReadonlySet<string> = new Set(["Expired", "Failed", "Terminating"]);

export class AllocationSync implements Reconciler {
  private readonly options: AllocationSyncOptions;
  private readonly informer: Informer<"Sandbox">;
  private readonly controller: Controller;
  private readonly clock: Clock;

  constructor(options: AllocationSyncOptions) {
    this.options = options;
    const clock = options.clock ?? systemClock;
    this.clock = clock;
    this.informer =
      options.informer ??
      sandboxInformer({ store: options.store, logger: options.logger, clock, ...(options.namespace !== undefined ? { namespace: options.namespace } : {}) });
    this.informer.addIndexes({ [SANDBOXES_BY_AGENT]: sandboxesByAgent });
    this.controller = new Controller({ name: "allocation-sync", reconciler: this, logger: options.logger, clock, workers: 2, maxBackoffMs: 5000 });
    this.controller.watch(this.informer);
  }

  /** Lists the sandboxes and follows them; resolves once the first list is in the registry's queue. */
  start(): Promise<void> {
    return this.controller.start();
  }

  stop(): Promise<void> {
    return this.controller.stop();
  }

  /** Resolves when every change seen so far is reconciled; for tests. */
  whenIdle(): Promise<void> {
    return this.controller.whenIdle();
  }

  /** The sandboxes in the cache (no store read). */
  cachedSandboxes(): Sandbox[] {
    return this.informer.list();
  }

  /**
   * Records of the pool waiting to be placed, from the cache: Pending ones and Lost ones whose
   * failurePolicy recreates them or whose reset is still to be done (it removed the old instance and
   * found no slot for the new one), not being deleted — they hold no slot, and in a pool sized to what
   * it holds (poolMin 0, or full) nothing else asks for the one they need. And paused sandboxes that
   * need an agent of their checkpoint's node (`needsCheckpointAgent`: a resume, a delete) where the
   * pool has no ready one: a pool scaled down to zero while they were paused starts one for them.
   */
  pendingIn(namespace: string, pool: string): number {
    const nowMs = this.clock.now().getTime();
    let count = 0;
    for (const sandbox of this.informer.list()) {
      if (sandbox.metadata.namespace !== namespace || sandbox.spec.poolRef !== pool) continue;
      if (needsCheckpointAgent(sandbox, nowMs, this.resumeDemandMs(sandbox))) {
        if (!this.readyAgentOnNode(namespace, pool, sandbox.status?.nodeName)) count += 1;
        continue;
      }
      if (sandbox.metadata.deletionTimestamp) continue;
      const phase = sandbox.status?.phase ?? "Pending";
      if (phase === "Pending" || (phase === "Lost" && (sandbox.spec.failurePolicy === "AutoRecreate" || resetPending(sandbox)))) count += 1;
    }
    return count;
  }

  /** Whether a ready agent of the pool runs on `node` (any node when it is not known). */
  private readyAgentOnNode(namespace: string, pool: string, node: string | undefined): boolean {
    return this.options.registry.listAgents({ namespace, pool }).some((agent) => agent.ready && (!node || agent.nodeName === node));
  }

  /**
   * Whether records in the cache name the agent (`status.assignedPod`) in a phase it may serve again
   * (Bound, Running, Lost, Paused): an agent away too long is kept while it holds any.
   */
  holdsSandboxes(agentName: string): boolean {
    return this.informer.byIndex(SANDBOXES_BY_AGENT, agentName).some((sandbox) => !ENDED_ON_AGENT.has(sandbox.status?.phase ?? "Pending"));
  }

  private resumeDemandMs(sandbox: Sandbox): number {
    return this.options.resumeDemandMs?.(sandbox) ?? RESUME_DEMAND_MS;
  }

  /** The agent was (re)registered in the registry: the records assigned to it get their slots back. */
  agentRegistered(agentName: string): void {
    for (const sandbox of this.informer.byIndex(SANDBOXES_BY_AGENT, agentName)) this.controller.enqueue(objectKey(sandbox));
  }

  reconcile(key: string): Promise<ReconcileResult | void> {
    return Promise.resolve(this.step(key));
  }

  private step(key: string): ReconcileResult | void {
    const { registry } = this.options;
    const { namespace, name } = parseObjectKey(key);
    const sandbox = this.informer.get(key);
    // Before the busy check: the fast path is busy with it exactly while it resumes it or deletes it.
    if (
      sandbox &&
      needsCheckpointAgent(sandbox, this.clock.now().getTime(), this.resumeDemandMs(sandbox)) &&
      !this.readyAgentOnNode(namespace, sandbox.spec.poolRef, sandbox.status?.nodeName)
    ) {
      this.options.onPending?.(sandbox);
    }
    if (this.options.isBusy(namespace, name)) return { requeueAfterMs: RECHECK_MS };
    if (sandbox && (sandbox.status?.phase ?? "Pending") === "Pending" && !sandbox.metadata.deletionTimestamp) this.options.onPending?.(sandbox);
    const agentName = heldOn(sandbox);
    const current = registry.placementOf(key);
    if (current && current.agent.name !== agentName) registry.release(key);
    if (!agentName || !sandbox || (current && current.agent.name === agentName)) return;
    // An agent of another namespace under the name (a Pod named as this sandbox's agent, gone since:
    // a Pod's name is unique only within its namespace) is not its agent: no slot is taken on it.
    if (registry.getAgent(agentName)?.namespace !== namespace) return { requeueAfterMs: RECHECK_MS * 10 };
    try {
      registry.restore({ sandboxKey: key, agentName, ports: this.options.portsHeldBy?.(sandbox) ?? sandbox.spec.exposedPorts ?? [] });
    } catch (error) {
      // A port held by a record this replica has not caught up with yet: the next change settles it.
      this.options.logger.warn({ err: error, sandbox: key, agent: agentName }, "could not record the sandbox's slot yet");
      return { requeueAfterMs: CONFLICT_RECHECK_MS };
    }
  }
}

/** Whether the sandbox's reset was asked for (resetRevision) and its new instance is not placed yet. */
function resetPending(sandbox: Sandbox): boolean {
  return Boolean(sandbox.spec.resetRevision) && sandbox.spec.resetRevision !== sandbox.status?.acceptedResetRevision;
}
