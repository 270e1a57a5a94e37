/**
 * Level-triggered lifecycle of sandboxes, one sandbox per `reconcile(key)`: it reads the sandbox
 * from the informer's cache, compares desired and observed state, makes one step of progress, and
 * asks to look again when time alone will change the answer, so a crash or a missed event only
 * delays a step:
 * - deletion: the cleanup finalizer;
 * - expiry: a sandbox whose `expireTime` has passed is deleted (a timed requeue at that moment);
 * - placement: `Pending` sandboxes nobody is placing are placed: those created through the store,
 *   and those a fast-path create left unfinished when a retry of its request waits for them or when
 *   several replicas place (after another replica's grace). With one placer, a fast-path create's
 *   Pending record that nobody creates or waits for is removed (its caller was never answered);
 * - unfinished creates: `Bound` sandboxes nobody is creating become `Running` when their agent runs
 *   them, and are removed (never acknowledged) when it does not;
 * - agent connectivity: the `AgentConnected` condition follows the agent (the AgentObserver says
 *   when an agent changed; its sandboxes are found through the informer's index by agent);
 * - a vanished instance: a Running sandbox its answering agent no longer reports (its container was
 *   removed behind the agent's back), or reports with its process 1 gone (its task killed outside
 *   Fast Sandbox, or its host restarted), becomes `Lost`, as adoption makes it when an agent reconnects —
 *   counted only on reports asked for after the record was last seen changing (every step that
 *   removes an instance — delete, pause, reset — writes the record first or runs here), over 10 s;
 * - failure policy: `recoveryTimeoutSeconds` after the agent went away (a timed requeue), `Manual`
 *   sandboxes become `Lost` (kept, deletable, slot released) and `AutoRecreate` ones get a new
 *   instance elsewhere;
 * - reset: a changed `resetRevision` replaces the running instance (or a Failed sandbox's).
 * A step that fails is retried with the work queue's back-off.
 */
import type { Logger } from "pino";
import { FsbError, NoCapacityError, NotFoundError, type Condition, type Sandbox, type SandboxStatus } from "@fast-sandbox/api";
import { processOneGone, type AgentSandbox } from "../agent-client/agent-client.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { FAST_PATH_ANNOTATION, type SandboxManager } from "../fastpath/sandbox-manager.js";
import type { ReplicaLiveness } from "../leader/replica-liveness.js";
import { setCondition } from "../fastpath/sandbox-status.js";
import { systemClock, type Clock } from "../controller/clock.js";
import { Controller, type ReconcileResult, type Reconciler } from "../controller/controller.js";
import type { Informer } from "../controller/informer.js";
import { objectKey, parseObjectKey } from "../controller/object-key.js";
import { LOST_INSTANCE_REASONS, lostInstanceCondition } from "./lost-instance.js";
import { RECREATE_BACK_OFF_RESET_MS, RecreateBackOff } from "./recreate-back-off.js";
import { SANDBOXES_BY_AGENT, sandboxInformer, sandboxesByAgent } from "./sandbox-informer.js";

/** @default 30 */
export const DEFAULT_RECOVERY_TIMEOUT_SECONDS = 30;
/** How soon to look again at a sandbox this process is busy with (a create, delete or status write in flight). */
const BUSY_RECHECK_MS = 1000;
/** How soon to look again at a Bound sandbox whose agent has not reported on it since it was first seen. */
const REPORT_RECHECK_MS = 1000;
/** How long the reports of a Running sandbox's answering agent must lack it before it counts as vanished. */
const MISSING_CONFIRM_MS = 10_000;
/** Where the note of AutoRecreate's back-off starts in a Lost sandbox's Ready message (after the loss's own message). */
const BACK_OFF_NOTE = "; AutoRecreate backs off: ";
/** How soon a sandbox that could not be placed is tried again. */
const PLACEMENT_RETRY_MS = 3000;
/**
 * The longest wait between tries of a sandbox whose create its agent failed (an image that cannot be
 * pulled, a command that cannot start): the wait doubles from PLACEMENT_RETRY_MS with each failure
 * in a row, as a crash-looping Pod's does. One waiting for a pool or a slot is tried every
 * PLACEMENT_RETRY_MS: capacity comes back by itself.
 */
const PLACEMENT_BACKOFF_MAX_MS = 60_000;
/**
 * What the deployment mode knows about its agents: connectivity, their last reported sandboxes, and
 * when either changes. Asked for a sandbox's agent, with the sandbox's `namespace`: an agent of
 * another namespace under that name (a Pod's name is unique only within its namespace) is not its
 * agent, and is answered as one that does not exist (AgentClients).
 */
export interface AgentObserver {
  /** Whether the agent answers and since when; undefined when the agent does not exist (any more), or is not of `namespace`. */
  agentConnectivity(name: string, namespace?: string): { connected: boolean; since: Date } | undefined;
  /** The agent's last status, when it arrived, and when it was asked for; undefined as well for an agent not of `namespace`. */
  observedStatus(
    name: string,
    namespace?: string,
  ):
    | {
        status: { sandboxes: readonly Pick<AgentSandbox, "sandboxId" | "state" | "exitCode" | "address" | "checkpointing" | "evicted">[] };
        at: Date;
        askedAt: Date;
      }
    | undefined;
  /** Calls `listener` with an agent's name when its connectivity changes (it answers, is lost, is removed); returns the unsubscribe function. */
  onAgentChanged(listener: (agentName: string) => void): () => void;
  /** Calls `listener` with an agent's name after each status it reports while connected; returns the unsubscribe function. */
  onAgentReported(listener: (agentName: string) => void): () => void;
}

export interface SandboxReconcilerOptions {
  store: ResourceStore;
  manager: SandboxManager;
  registry: AgentRegistry;
  agents: AgentObserver;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** The Sandbox informer shared with the control plane's other controllers. @default one of its own */
  informer?: Informer<"Sandbox">;
  /** Sandboxes reconciled at the same time (a placement may wait for capacity). @default 8 */
  workers?: number;
  /** The longest pause between retries of a failing step. @default 5000 */
  maxRetryDelayMs?: number;
  /**
   * How long a Bound record its agent does not report, or a Pending one a fast path wrote, may be a
   * create in flight on another replica (several replicas place: Kubernetes mode) before it counts
   * as cut short. @default 0 (one process places)
   */
  foreignCreateGraceMs?: number;
  /**
   * Ends that grace early when no other replica's process that could have written the record still
   * runs (they all crashed and restarted since, or are gone). @default none: the whole grace
   */
  replicas?: ReplicaLiveness;
}

export class SandboxReconciler implements Reconciler {
  private readonly options: SandboxReconcilerOptions;
  private readonly clock: Clock;
  private readonly informer: Informer<"Sandbox">;
  private readonly controller: Controller;
  private unsubscribe: (() => void)[] = [];
  /** When a sandbox was first seen Bound with nobody creating it (unfinished create), by key. */
  private readonly boundSince = new Map<string, Date>();
  /** When the last try to place a Pending sandbox failed, how long until the next, and how many of its agents' creates failed in a row, by key. */
  private readonly placementFailedAt = new Map<string, { at: Date; retryMs: number; createFailures: number }>();
  /** When an agent was first seen missing altogether, by name; only while a sandbox in the cache still names it (pruneGoneAgents). */
  private readonly goneSince = new Map<string, Date>();
  /** Running sandboxes: the resourceVersion last seen, since when it has been seen, and since when (a report asked for then) its agent has not reported it, by key. */
  private readonly runningSeen = new Map<string, { resourceVersion: string; since: Date; missingSince?: Date }>();
  /** AutoRecreate's back-off for sandboxes whose instances keep being lost. */
  private readonly recreateBackOff = new RecreateBackOff();

  constructor(options: SandboxReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.informer = options.informer ?? sandboxInformer({ store: options.store, logger: options.logger, clock: this.clock });
    this.informer.addIndexes({ [SANDBOXES_BY_AGENT]: sandboxesByAgent });
    this.controller = new Controller({
      name: "sandbox",
      reconciler: this,
      logger: options.logger,
      clock: this.clock,
      workers: options.workers ?? 8,
      maxBackoffMs: options.maxRetryDelayMs ?? 5000,
    });
    this.controller.watch(this.informer);
  }

  /** Lists the sandboxes, reconciles each, and from then on every change and every agent that changed. */
  async start(): Promise<void> {
    this.unsubscribe = [
      this.options.agents.onAgentChanged((agentName) => this.agentChanged(agentName)),
      this.options.agents.onAgentReported((agentName) => this.agentReported(agentName)),
    ];
    await this.controller.start();
  }

  async stop(): Promise<void> {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    this.unsubscribe = [];
    await this.controller.stop();
  }

  /** Resolves when every change seen so far is reconciled (timed requeues still pending do not count); for tests. */
  whenIdle(): Promise<void> {
    return this.controller.whenIdle();
  }

  /** The sandboxes in the informer's cache (what the control plane last saw; no store read). */
  cachedSandboxes(): Sandbox[] {
    return this.informer.list();
  }

  /** The agent's connectivity changed: its sandboxes are reconciled. */
  private agentChanged(agentName: string): void {
    for (const sandbox of this.informer.byIndex(SANDBOXES_BY_AGENT, agentName)) this.controller.enqueue(objectKey(sandbox));
  }

  /** A report of the agent: its Running sandboxes the report lacks, or has with process 1 gone, are looked at (checkInstance). */
  private agentReported(agentName: string): void {
    const sandboxes = this.options.agents.observedStatus(agentName)?.status.sandboxes ?? [];
    const reported = new Set(sandboxes.filter((s) => !processOneGone(s)).map((s) => s.sandboxId));
    for (const sandbox of this.informer.byIndex(SANDBOXES_BY_AGENT, agentName)) {
      if (sandbox.status?.phase !== "Running") continue;
      const key = objectKey(sandbox);
      const seen = this.runningSeen.get(key);
      if (!reported.has(sandbox.status.sandboxID ?? "")) this.controller.enqueue(key);
      else if (seen) delete seen.missingSince;
    }
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const sandbox = this.informer.get(key);
    this.pruneGoneAgents();
    if (!sandbox) {
      this.boundSince.delete(key);
      this.placementFailedAt.delete(key);
      this.runningSeen.delete(key);
      this.recreateBackOff.forget(key);
      return;
    }
    const { manager } = this.options;
    const { namespace, name } = parseObjectKey(key);
    if (sandbox.metadata.deletionTimestamp) {
      await manager.finalize(sandbox);
      return;
    }
    const now = this.clock.now();
    // A Paused sandbox does not expire; an end it carries is the one a resume in flight (or cut short) wrote with its
    // intent, or the one an undecided pause keeps until it is decided.
    const expires = sandbox.spec.expireTime && sandbox.status?.phase !== "Paused";
    const expiresInMs = expires && sandbox.spec.expireTime ? Date.parse(sandbox.spec.expireTime) - now.getTime() : Number.NaN;
    if (expiresInMs <= 0) {
      this.options.logger.info({ sandbox: key }, "sandbox expired; deleting it");
      await this.writeStatus(sandbox, { phase: "Expired" });
      await manager.delete(namespace, name);
      return;
    }
    const next = await this.progress(sandbox, key, now);
    const requeueAfterMs = Math.min(next?.requeueAfterMs ?? Number.POSITIVE_INFINITY, Number.isFinite(expiresInMs) ? expiresInMs : Number.POSITIVE_INFINITY);
    return Number.isFinite(requeueAfterMs) ? { requeueAfterMs } : undefined;
  }

  /** One step for a sandbox that is neither being deleted nor expired. */
  private async progress(sandbox: Sandbox, key: string, now: Date): Promise<ReconcileResult | void> {
    const { manager } = this.options;
    const { namespace, name } = parseObjectKey(key);
    const phase = sandbox.status?.phase ?? "Pending";
    if (phase !== "Bound") this.boundSince.delete(key);
    if (phase !== "Running") this.runningSeen.delete(key);
    // The fast path is creating, replacing or deleting it right now; its writes will tell the outcome.
    if (manager.isBusy(namespace, name)) return { requeueAfterMs: BUSY_RECHECK_MS };
    if (phase === "Pending") {
      const foreign = await this.foreignCreateInFlight(sandbox, now);
      if (foreign) return foreign;
      if (this.unansweredCreate(sandbox)) {
        // As a Bound record's unfinished create is (finishBound): its caller was never answered.
        await manager.abandon(sandbox, "its create was cut short before it was placed, and no retry of its request waits for it");
        return { requeueAfterMs: BUSY_RECHECK_MS };
      }
      return this.place(sandbox, now);
    }
    if (phase === "Bound") return this.finishBound(sandbox, key, now);
    // A Failed sandbox (stopped by a checkpoint or pause that could not be saved) is left as it is,
    // unless it is reset: a new instance from its image and command, as for a running one.
    if (phase === "Failed" && sandbox.spec.resetRevision && sandbox.spec.resetRevision !== sandbox.status?.acceptedResetRevision) {
      return this.unlessBusy(await manager.replaceInstance(sandbox, "Reset"));
    }
    if (phase !== "Running" && phase !== "Lost") return;
    return this.followAgent(sandbox, key, now);
  }

  /**
   * Forgets when agents went missing once no sandbox in the cache names them any more (deleted, or
   * placed elsewhere): Kubernetes gives every agent Pod a name of its own, so entries of agents that
   * are gone for good would otherwise pile up for the life of the process.
   */
  private pruneGoneAgents(): void {
    for (const agentName of this.goneSince.keys()) {
      if (this.informer.byIndex(SANDBOXES_BY_AGENT, agentName).length === 0) this.goneSince.delete(agentName);
    }
  }

  /**
   * A Pending record a fast-path create wrote, with one placer (`foreignCreateGraceMs` 0: this
   * process) that is not creating it: that create was cut short (the control plane died while it
   * waited for capacity), so its caller never got an answer, and placing it now would run a sandbox
   * nobody was told of, for ever. It goes, as a Bound one whose create did not finish does — unless a
   * retry of its request waits for it here, for which it is placed.
   */
  private unansweredCreate(sandbox: Sandbox): boolean {
    if ((this.options.foreignCreateGraceMs ?? 0) > 0 || sandbox.metadata.annotations?.[FAST_PATH_ANNOTATION] !== "true") return false;
    return !this.options.manager.awaitedByRetry(sandbox.metadata.namespace ?? "default", sandbox.metadata.name);
  }

  /**
   * A Pending record a fast path wrote (FAST_PATH_ANNOTATION; kubectl-written ones have none) that
   * this process is not busy with is another replica's create, placing it or waiting for capacity.
   * It is that replica's until `foreignCreateGraceMs` plus the pool's wakeTimeoutSeconds after its
   * creation, or until no replica that ran when it was written runs any more: placing it here too
   * would create a second instance. Undefined: place it.
   */
  private async foreignCreateInFlight(sandbox: Sandbox, now: Date): Promise<ReconcileResult | undefined> {
    const extraMs = this.options.foreignCreateGraceMs ?? 0;
    if (extraMs <= 0 || sandbox.metadata.annotations?.[FAST_PATH_ANNOTATION] !== "true") return undefined;
    const graceMs = extraMs + this.options.manager.wakeTimeoutMs(sandbox.metadata.namespace ?? "default", sandbox.spec.poolRef);
    const createdMs = Date.parse(sandbox.metadata.creationTimestamp ?? "") || now.getTime();
    const ageMs = now.getTime() - createdMs;
    if (ageMs >= graceMs) return undefined;
    // creationTimestamp is in whole seconds: the record was written before the next one began.
    if (!(await this.writerMayRun(new Date(createdMs + 1000)))) return undefined;
    return { requeueAfterMs: Math.min(graceMs - ageMs, this.graceRecheckMs()) };
  }

  /** Whether another replica's process that ran at `at` may still run (and so still be creating what it wrote then). */
  private async writerMayRun(at: Date): Promise<boolean> {
    return this.options.replicas ? this.options.replicas.othersMayRunSince(at) : true;
  }

  /** How often a record another replica may be creating is looked at again: the replicas' liveness can end the wait sooner than the grace. */
  private graceRecheckMs(): number {
    return this.options.replicas ? 2 * REPORT_RECHECK_MS : 5 * REPORT_RECHECK_MS;
  }

  /**
   * Places a Pending sandbox written to the store (kubectl apply), or left by a fast-path create that
   * a retry of its request waits for or another replica did not finish. When it cannot be placed now
   * (no pool yet, no capacity) it stays Pending with `Scheduled=False` saying why, and is tried again.
   */
  private async place(sandbox: Sandbox, now: Date): Promise<ReconcileResult | void> {
    const key = objectKey(sandbox);
    // The failed try's own writes come back as changes: the next try waits for its time.
    const failed = this.placementFailedAt.get(key);
    const waitMs = failed ? failed.at.getTime() + failed.retryMs - now.getTime() : 0;
    if (waitMs > 0) return { requeueAfterMs: waitMs };
    try {
      const placed = await this.options.manager.placeStored(sandbox);
      this.placementFailedAt.delete(key);
      return this.unlessBusy(placed);
    } catch (error) {
      const failure = FsbError.from(error);
      const reason = failure instanceof NotFoundError ? "PoolNotFound" : failure instanceof NoCapacityError ? "NoCapacity" : "PlacementFailed";
      const createFailures = reason === "PlacementFailed" ? (failed?.createFailures ?? 0) + 1 : 0;
      const retryMs = createFailures > 0 ? Math.min(PLACEMENT_RETRY_MS * 2 ** (createFailures - 1), PLACEMENT_BACKOFF_MAX_MS) : PLACEMENT_RETRY_MS;
      this.placementFailedAt.set(key, { at: this.clock.now(), retryMs, createFailures });
      const current = await this.options.store.get("Sandbox", { namespace: sandbox.metadata.namespace ?? "default", name: sandbox.metadata.name });
      if (!current || current.metadata.uid !== sandbox.metadata.uid || (current.status?.phase ?? "Pending") !== "Pending") return;
      const previous = current.status?.conditions?.find((c) => c.type === "Scheduled");
      if (previous?.status !== "False" || previous.reason !== reason || previous.message !== failure.message) {
        this.options.logger.info({ sandbox: objectKey(sandbox), reason, err: failure }, "cannot place the sandbox yet");
        await this.writeStatus(current, { phase: "Pending" }, { type: "Scheduled", status: "False", reason, message: failure.message }, now);
      }
      return { requeueAfterMs: retryMs };
    }
  }

  /** A Bound sandbox nobody here is creating: its create was cut short (crash). The agent's report decides. */
  private async finishBound(sandbox: Sandbox, key: string, now: Date): Promise<ReconcileResult | void> {
    const { manager, agents } = this.options;
    const since = this.boundSince.get(key) ?? now;
    this.boundSince.set(key, since);
    const agentName = sandbox.status?.assignedPod ?? "";
    const sandboxId = sandbox.status?.sandboxID ?? "";
    const namespace = sandbox.metadata.namespace ?? "default";
    const observed = agents.observedStatus(agentName, namespace);
    const connectivity = agents.agentConnectivity(agentName, namespace);
    const waitForReport = { requeueAfterMs: REPORT_RECHECK_MS };
    // Only a report asked for after we saw the record Bound counts: one asked for earlier may predate
    // the create, even if it arrived later.
    if (connectivity?.connected && (!observed || observed.askedAt <= since)) return waitForReport;
    const reported = connectivity?.connected ? observed?.status.sandboxes.find((s) => s.sandboxId === sandboxId) : undefined;
    if (reported?.state === "creating") return waitForReport;
    if (reported && !processOneGone(reported) && (reported.state === "running" || reported.exitCode !== undefined)) {
      return this.unlessBusy(await manager.adoptRunning(sandbox, reported));
    }
    const graceMs = this.options.foreignCreateGraceMs ?? 0;
    const boundForMs = now.getTime() - since.getTime();
    // Whoever bound it wrote that before we saw it Bound: once no other replica that ran then runs, nobody is creating it.
    if (!reported && connectivity?.connected && boundForMs < graceMs && (await this.writerMayRun(since))) {
      return { requeueAfterMs: Math.min(graceMs - boundForMs, this.graceRecheckMs()) };
    }
    if (!connectivity?.connected) {
      // The agent is away: the failure policy's clock decides, as for a running sandbox.
      const waitedMs = now.getTime() - since.getTime();
      if (waitedMs < recoveryTimeoutMs(sandbox)) return { requeueAfterMs: recoveryTimeoutMs(sandbox) - waitedMs };
    }
    const recreating = sandbox.status?.conditions?.some((c) => c.type === "Recreated" && c.status === "Unknown") === true;
    if (recreating || sandbox.status?.recreations) return this.unlessBusy(await manager.replaceInstance(sandbox, "AgentLost"));
    await manager.abandon(sandbox, reported ? `its task is ${reported.state}` : `agent ${agentName} does not run it`);
    return waitForReport;
  }

  private async followAgent(sandbox: Sandbox, key: string, now: Date): Promise<ReconcileResult | void> {
    const { manager, agents } = this.options;
    const agentName = sandbox.status?.assignedPod;
    if (!agentName) return;
    const namespace = sandbox.metadata.namespace ?? "default";
    const connectivity = agents.agentConnectivity(agentName, namespace);
    let connected = connectivity?.connected === true;
    if (connectivity) this.goneSince.delete(agentName);
    else if (!this.goneSince.has(agentName)) this.goneSince.set(agentName, now);
    const phase = sandbox.status?.phase;
    const previous = sandbox.status?.conditions?.find((c) => c.type === "AgentConnected");
    const timeoutMs = recoveryTimeoutMs(sandbox);

    if (sandbox.spec.resetRevision && sandbox.spec.resetRevision !== sandbox.status?.acceptedResetRevision) {
      return this.unlessBusy(await manager.replaceInstance(sandbox, "Reset"));
    }
    if (connected && phase === "Lost") {
      // An instance its agent still holds with process 1 gone (SandboxStopped, a removal that failed) goes.
      const sandboxId = sandbox.status?.sandboxID;
      const held = this.options.agents.observedStatus(agentName, namespace)?.status.sandboxes.find((reported) => reported.sandboxId === sandboxId);
      if (held && processOneGone(held)) {
        const retry = await this.removeLostInstance(sandbox, key);
        if (retry) return retry;
      }
      // The agent is back; adoption turns the sandbox Running again when the agent still runs it.
      connected = false;
    }
    if (connected) {
      if (previous && previous.status !== "True") {
        // The write comes back as a change: the instance is checked then.
        await this.writeStatus(sandbox, {}, { type: "AgentConnected", status: "True", reason: "AgentReady", message: `agent ${agentName} answers again` }, now);
        return;
      }
      return phase === "Running" ? this.checkInstance(sandbox, key, agentName, now) : undefined;
    }
    if (connectivity?.connected === false && agents.observedStatus(agentName, namespace)) {
      // It answers, and is being set up again (adoption, the pool's prewarmed images): not away. The
      // failure policy's clock must not run out meanwhile — a sandbox made Lost then would stay Lost
      // on an agent that runs it, its adoption already past. Its connection's change requeues it.
      return { requeueAfterMs: REPORT_RECHECK_MS };
    }
    if (phase === "Running" && previous?.status !== "False") {
      const policy = `failurePolicy ${sandbox.spec.failurePolicy ?? "Manual"} acts after ${timeoutMs / 1000}s`;
      const condition: Condition = connectivity
        ? { type: "AgentConnected", status: "False", reason: "AgentNotResponding", message: `agent ${agentName} does not answer; ${policy}` }
        : { type: "AgentConnected", status: "False", reason: "AgentGone", message: `agent ${agentName} no longer exists; ${policy}` };
      await this.writeStatus(sandbox, {}, condition, now);
      return { requeueAfterMs: timeoutMs };
    }
    // From the condition's time, or from the start of this outage when the agent came back and went
    // again before the condition was written True (a reconnection this reconciler did not see).
    const outageSince = connectivity?.connected === false ? connectivity.since.getTime() : 0;
    const lostSince = Math.max(
      Date.parse(previous?.lastTransitionTime ?? "") || (connectivity?.since ?? this.goneSince.get(agentName) ?? now).getTime(),
      outageSince,
    );
    const waitedMs = now.getTime() - lostSince;
    if (waitedMs < timeoutMs) return { requeueAfterMs: timeoutMs - waitedMs };
    if (sandbox.spec.failurePolicy === "AutoRecreate") {
      const ready = sandbox.status?.conditions?.find((c) => c.type === "Ready");
      // After a failed recreate, Ready says RecreateFailed; the failed attempt's Recreated=False keeps why it was made.
      const failedAttempt = sandbox.status?.conditions?.find((c) => c.type === "Recreated" && c.status === "False");
      const instanceLost =
        phase === "Lost" &&
        connectivity?.connected === true &&
        (LOST_INSTANCE_REASONS.has(ready?.reason ?? "") || (ready?.reason === "RecreateFailed" && failedAttempt?.reason === "InstanceLost"));
      if (instanceLost) {
        const backOffMs = await this.recreateBackOffMs(sandbox, key, now);
        if (backOffMs > 0) return { requeueAfterMs: backOffMs };
      }
      return this.unlessBusy(await manager.replaceInstance(sandbox, instanceLost ? "InstanceLost" : "AgentLost"));
    }
    if (phase === "Running") {
      this.options.logger.warn(
        { sandbox: key, agent: agentName },
        "agent unreachable beyond recoveryTimeoutSeconds; marking the sandbox Lost (failurePolicy Manual)",
      );
      this.options.registry.release(key);
      await this.writeStatus(
        sandbox,
        { phase: "Lost", endpoints: [], sandboxIP: undefined },
        {
          type: "Ready",
          status: "False",
          reason: "AgentLost",
          message: `agent ${agentName} was unreachable for ${Math.round(waitedMs / 1000)}s (recoveryTimeoutSeconds ${timeoutMs / 1000}); failurePolicy Manual: delete the sandbox, or set failurePolicy AutoRecreate`,
        },
        now,
      );
    }
  }

  /**
   * A Running sandbox whose agent answers: when a report asked for after the record was last seen
   * changing has no instance of it, the instance vanished (removed behind the agent's back: `ctr`, a
   * restore of containerd's state). Every step that removes an instance either writes the record
   * first (a delete's deletionTimestamp, a pause's Paused) or runs in this process (a reset, a
   * recreation: `isBusy`), so an unchanged record means nothing of ours removed it. It becomes Lost,
   * as adoption makes it when the agent reconnects; the write is conditional on the record seen.
   */
  private async checkInstance(sandbox: Sandbox, key: string, agentName: string, now: Date): Promise<ReconcileResult | void> {
    const resourceVersion = sandbox.metadata.resourceVersion ?? "";
    let seen = this.runningSeen.get(key);
    if (seen?.resourceVersion !== resourceVersion) {
      seen = { resourceVersion, since: now };
      this.runningSeen.set(key, seen);
    }
    const observed = this.options.agents.observedStatus(agentName, sandbox.metadata.namespace ?? "default");
    const sandboxId = sandbox.status?.sandboxID ?? "";
    const reported = observed?.status.sandboxes.find((candidate) => candidate.sandboxId === sandboxId);
    if (!observed || (reported && !processOneGone(reported))) {
      delete seen.missingSince;
      return;
    }
    // A report asked for before then may predate the instance (another replica's create).
    if (observed.askedAt <= seen.since) return { requeueAfterMs: REPORT_RECHECK_MS };
    // Missing (or stopped) for a while, not from one report: an agent's listing can miss an instance
    // for a moment (a claimed prepared instance containerd has not recorded as its sandbox yet after
    // an outage), and a pause's end reaches the record after the agent has let its task go.
    seen.missingSince ??= observed.askedAt;
    const missingForMs = observed.askedAt.getTime() - seen.missingSince.getTime();
    // One its agent says it stopped itself (evicted past its disk limit) is no listing's blink.
    if (!reported?.evicted && missingForMs < MISSING_CONFIRM_MS) return { requeueAfterMs: Math.max(REPORT_RECHECK_MS, MISSING_CONFIRM_MS - missingForMs) };
    const lost = reported ? lostInstanceCondition(agentName, "stopped", reported.evicted) : lostInstanceCondition(agentName, "missing");
    this.options.logger.warn({ sandbox: key, agent: agentName, sandboxId, reason: lost.reason }, `${lost.message}; marking it Lost`);
    const written = await this.writeStatus(sandbox, { phase: "Lost", endpoints: [], sandboxIP: undefined }, lost, now);
    this.options.registry.release(key);
    // A stopped instance still holds its slot and ports on the agent: it goes (or the next report tries again).
    if (reported) return this.removeLostInstance(written, key);
  }

  /**
   * How long a Lost sandbox whose own instance was lost still waits before AutoRecreate replaces it
   * (RecreateBackOff: 0 for the first loss; more for an instance lost soon after it was made). While
   * it waits, its Ready condition says so (the reason of the loss kept).
   */
  private async recreateBackOffMs(sandbox: Sandbox, key: string, now: Date): Promise<number> {
    const ready = sandbox.status?.conditions?.find((c) => c.type === "Ready");
    const made = sandbox.status?.conditions?.find((c) => c.type === "Recreated" && c.status === "True");
    const { delayMs, untilMs, inARow } = this.recreateBackOff.delay({
      key,
      sandboxId: sandbox.status?.sandboxID ?? "",
      madeAtMs: Date.parse(made?.lastTransitionTime ?? "") || undefined,
      lostAtMs: Date.parse(ready?.lastTransitionTime ?? "") || now.getTime(),
    });
    const remainingMs = untilMs - now.getTime();
    if (remainingMs <= 0 || !ready) return 0;
    const base = (ready.message ?? "").split(BACK_OFF_NOTE)[0] ?? "";
    const quickly = `lost within ${RECREATE_BACK_OFF_RESET_MS / 60_000} minutes of being made`;
    const which = inARow === 1 ? `its new instance was ${quickly}` : `its last ${inARow} new instances were each ${quickly}`;
    const message = `${base}${BACK_OFF_NOTE}a new instance at ${new Date(untilMs).toISOString()}, ${delayMs / 1000}s after the loss (${which})`;
    if (ready.message !== message) {
      this.options.logger.warn(
        { sandbox: key, sandboxId: sandbox.status?.sandboxID, delayMs, newInstancesLostInARow: inARow },
        "AutoRecreate backs off: the sandbox's instances keep being lost",
      );
      await this.writeStatus(sandbox, {}, { ...ready, message }, now);
    }
    return remainingMs;
  }

  /** Removes a Lost sandbox's stopped instance from its agent; a failure is logged and tried again soon. */
  private async removeLostInstance(sandbox: Sandbox, key: string): Promise<ReconcileResult | void> {
    try {
      await this.options.manager.removeLostInstance(sandbox);
    } catch (error) {
      this.options.logger.warn({ sandbox: key, err: error }, "could not remove the stopped instance of a Lost sandbox; trying again");
      return { requeueAfterMs: 5 * REPORT_RECHECK_MS };
    }
  }

  /** A manager step answers undefined when it did nothing (someone else is at it, or the sandbox changed): look again soon. */
  private unlessBusy(result: Sandbox | undefined): ReconcileResult | void {
    return result ? undefined : { requeueAfterMs: BUSY_RECHECK_MS };
  }

  /**
   * Writes `patch` (and `condition`) over the status of the cached sandbox, on the condition that
   * the cache is current: a stale copy fails with ConflictError and is reconciled again, never
   * merged onto a newer status.
   */
  private writeStatus(sandbox: Sandbox, patch: SandboxStatus, condition?: Condition, now = this.clock.now()): Promise<Sandbox> {
    const status: SandboxStatus = { ...sandbox.status, ...patch };
    if (condition) status.conditions = setCondition(status.conditions, condition, now);
    return this.options.store.updateStatus("Sandbox", { ...sandbox, status });
  }
}

function recoveryTimeoutMs(sandbox: Sandbox): number {
  return (sandbox.spec.recoveryTimeoutSeconds ?? DEFAULT_RECOVERY_TIMEOUT_SECONDS) * 1000;
}
