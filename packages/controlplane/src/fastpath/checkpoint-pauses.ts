/**
 * Pausing a sandbox and resuming it, over checkpoints of gVisor sandboxes (checkpoint-manager.ts):
 * what E2B's `pause()` and its `connect()` of a paused sandbox map onto (e2b/e2b-sandboxes.ts).
 *
 * - pause: the sandbox is checkpointed and left stopped — its memory, processes and file changes saved
 *   as a checkpoint on its node — then its instance is removed: nothing of it runs, its slot and
 *   address are free. The record stays, phase `Paused`, with its sandbox id, the node of its checkpoint
 *   (`status.nodeName`) and the checkpoint's name (PAUSED_CHECKPOINT_ANNOTATION); it has no end while
 *   paused (`spec.expireTime` is removed) and the condition `Paused` dates the pause.
 * - resume: an instance is restored from that checkpoint under the same sandbox id, name (hostname)
 *   and access token, on an agent of the pool that holds the checkpoint (with an address of its own),
 *   with the end it is given; the checkpoint is then deleted. A pool that has no ready agent on the
 *   checkpoint's node (scaled down to zero while the sandbox was paused) is woken by the resume's
 *   intent (AllocationSync counts it as waiting), and the resume waits for one up to the pool's
 *   `wakeTimeoutSeconds`, as a create waits for capacity. Deleting a paused sandbox wakes it likewise.
 * - deleting a paused sandbox deletes its checkpoint (`removeSavedState`, the manager's cleanup hook).
 *
 * Crash-safety: the record says Paused (condition Paused=Unknown) before anything is saved, and the
 * checkpoint is deleted only after the resumed instance is recorded Running, so the store always
 * knows a paused sandbox as one. A resume works from whatever a pause or a resume cut short left: it
 * first removes any instance of the sandbox id on the agents that hold the checkpoint; and when there
 * is no checkpoint but the instance still runs (the pause never saved it), the sandbox is Running again.
 * Operations on one sandbox run one at a time (a second waits for the first).
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import {
  ConflictError,
  FailedPreconditionError,
  FsbError,
  NAME_MAX_LENGTH,
  NotFoundError,
  UnavailableError,
  normalizeImageName,
  type Condition,
  type Sandbox,
  type SandboxPool,
} from "@fast-sandbox/api";
import { gotNoAnswer, type AgentClient } from "../agent-client/agent-client.js";
import { CHECKPOINT_CALL_TIMEOUT_MS } from "../agent-client/agent-checkpoints.js";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import type { AgentRegistry, AgentSnapshot } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import type { Checkpoint, CheckpointManager } from "./checkpoint-manager.js";
import { DEFAULT_NAMESPACE, sandboxKey, type AgentClients, type SandboxManager } from "./sandbox-manager.js";
import { instanceNetwork, portsOnAgent, withSandboxIP } from "./sandbox-network.js";
import { setCondition, writeStatus } from "./sandbox-status.js";

/** On a paused sandbox (and while it is being paused or resumed): the name of the checkpoint that holds it. */
export const PAUSED_CHECKPOINT_ANNOTATION = "sandbox.fast.io/paused-checkpoint";
/** On a paused sandbox being resumed: when the resume started (RFC 3339). */
export const RESUMING_ANNOTATION = "sandbox.fast.io/resuming-since";
/** The condition that dates a pause (True: paused since its lastTransitionTime; Unknown: being paused; False: resumed). */
export const CONDITION_PAUSED = "Paused";
/** Writes of a sandbox's saved state tried this many times when other writers keep changing it first. */
const SAVED_STATE_WRITE_ATTEMPTS = 5;
/** How often a resume looks for a ready agent of its checkpoint's node while its pool starts one. */
const AGENT_POLL_MS = 100;
/**
 * The longest a pause can take: its checkpoint call's deadline, and a minute for what comes around
 * it (the lookups of the checkpoint before and after the call, the removal of the stopped instance,
 * the store's writes). Another replica's pause is left to it for at least this long.
 */
export const PAUSE_TAKES_AT_MOST_MS = CHECKPOINT_CALL_TIMEOUT_MS + 60_000;
/** How long a deleted paused sandbox waits for an agent of its checkpoint's node before its checkpoint is left there. */
const SAVED_STATE_PATIENCE_MS = 10 * 60_000;

export interface SandboxPausesOptions {
  manager: SandboxManager;
  store: ResourceStore;
  registry: AgentRegistry;
  agents: AgentClients;
  checkpoints: CheckpointManager;
  logger: Logger;
  /** Dates the conditions. @default systemClock */
  clock?: Clock;
  /**
   * Several control planes over one store (Kubernetes: every replica serves the fast path): how long
   * a pause or resume another replica started (the record says when) is left to it — a resume
   * meanwhile is refused — before it counts as cut short. Longer than a resume can take; a pause is
   * left to it for at least PAUSE_TAKES_AT_MOST_MS (its checkpoint call is given
   * CHECKPOINT_CALL_TIMEOUT_MS). @default 0: one
   * control plane, whose own operations on a sandbox run one at a time, so an unfinished one it is
   * not running was cut short
   */
  inFlightElsewhereMs?: number;
}

export interface ResumeOptions {
  /** The resumed sandbox's `spec.expireTime` (RFC 3339). @default none: it does not end by itself */
  expireTime?: string;
}

/** A pause's checkpoint ends in `-pause-` and 6 hex digits: 13 characters. */
const PAUSE_SUFFIX_LENGTH = 13;

/** The name of the checkpoint a pause of sandbox `name` saves it as: `<name>-pause-<6 hex digits>`, the name cut to fit. */
export function pauseCheckpointName(name: string): string {
  return `${name.slice(0, NAME_MAX_LENGTH - PAUSE_SUFFIX_LENGTH)}-pause-${randomBytes(3).toString("hex")}`;
}

/**
 * Whether `name` is one `pauseCheckpointName` makes for a checkpoint of sandbox `source`: a pause's,
 * which the checkpoint collector removes once no record names it (reconcile/checkpoint-collector.ts).
 */
export function isPauseCheckpointName(name: string, source: string): boolean {
  const prefix = `${source.slice(0, NAME_MAX_LENGTH - PAUSE_SUFFIX_LENGTH)}-pause-`;
  return source !== "" && name.startsWith(prefix) && /^[0-9a-f]{6}$/.test(name.slice(prefix.length));
}

/** Whether the sandbox is paused (or being paused): no instance of it runs. */
export function isPaused(sandbox: Sandbox): boolean {
  return sandbox.status?.phase === "Paused";
}

/** When the sandbox was paused (RFC 3339): the transition time of its Paused condition. */
export function pausedAtOf(sandbox: Sandbox): string | undefined {
  return sandbox.status?.conditions?.find((condition) => condition.type === CONDITION_PAUSED && condition.status !== "False")?.lastTransitionTime;
}

export class SandboxPauses {
  private readonly options: SandboxPausesOptions;
  private readonly clock: Clock;
  private readonly logger: Logger;
  /** The last operation started on each sandbox (namespace/name): the next one waits for it. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(options: SandboxPausesOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ component: "pauses" });
  }

  /**
   * Pauses a Running sandbox of a gVisor pool and returns its Paused record. ConflictError when it is
   * paused already; FailedPreconditionError when it cannot be (another runtime, another phase, state
   * runsc cannot save — it then runs on).
   */
  pause(namespace: string | undefined, name: string): Promise<Sandbox> {
    const ns = namespace || DEFAULT_NAMESPACE;
    return this.serially(ns, name, () => this.options.manager.exclusively(ns, name, () => this.pauseNow(ns, name)));
  }

  /**
   * Resumes a Paused sandbox from its checkpoint and returns its Running record; a sandbox that runs
   * already is returned as it is (`resumed: false`).
   */
  resume(namespace: string | undefined, name: string, options: ResumeOptions = {}): Promise<{ sandbox: Sandbox; resumed: boolean }> {
    const ns = namespace || DEFAULT_NAMESPACE;
    return this.serially(ns, name, () => this.options.manager.exclusively(ns, name, () => this.resumeNow(ns, name, options)));
  }

  /**
   * Deletes the checkpoint a deleted sandbox was paused into (the manager's cleanup hook, through
   * `setSavedStateCleanup`); nothing for a sandbox that holds none. Safe to repeat.
   */
  async removeSavedState(sandbox: Sandbox): Promise<void> {
    const checkpointName = sandbox.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
    if (!checkpointName) return;
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    await this.removeLeftoverInstance(sandbox);
    const key = `${namespace}/${sandbox.metadata.name}`;
    const node = sandbox.status?.nodeName;
    try {
      await this.options.checkpoints.delete(namespace, checkpointName, node ? { node } : {});
      this.logger.info({ sandbox: key, checkpoint: checkpointName }, "a deleted paused sandbox's checkpoint is removed");
    } catch (error) {
      // Not found can mean out of reach: no agent of its pool on its node is ready to remove it.
      // Unavailable: one there is, but it did not answer (or is not connected).
      if (!(error instanceof NotFoundError) && !(error instanceof UnavailableError)) throw error;
      if (error instanceof NotFoundError && (!node || this.readyOnNode(sandbox, node).length > 0)) return;
      const deletedAt = Date.parse(sandbox.metadata.deletionTimestamp ?? "");
      if (error instanceof UnavailableError && !Number.isFinite(deletedAt)) throw error;
      if (Number.isFinite(deletedAt) && this.clock.now().getTime() - deletedAt < SAVED_STATE_PATIENCE_MS) {
        if (error instanceof UnavailableError) throw error;
        throw new UnavailableError(
          `checkpoint ${checkpointName} of paused sandbox ${key} is on node ${node}, where no agent of pool ${sandbox.spec.poolRef} is ready to remove it; the delete finishes once one is`,
        );
      }
      this.logger.warn(
        { sandbox: key, checkpoint: checkpointName, node },
        "a deleted paused sandbox's checkpoint stayed out of reach; its files are left on its node",
      );
    }
  }

  /** The ready agents of the sandbox's pool on `node` (where its checkpoint is). */
  private readyOnNode(sandbox: Sandbox, node: string): AgentSnapshot[] {
    return this.options.registry
      .listAgents({ namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, pool: sandbox.spec.poolRef })
      .filter((agent) => agent.ready && agent.nodeName === node);
  }

  /**
   * A paused sandbox is on no agent, but a pause whose instance could not be removed, or a resume cut
   * short after its restore, may have left one on the checkpoint's node: removed (best effort) with
   * the sandbox, rather than holding an agent's slot until that agent reconnects.
   */
  private async removeLeftoverInstance(sandbox: Sandbox): Promise<void> {
    const sandboxId = sandbox.status?.sandboxID;
    const node = sandbox.status?.nodeName;
    if (!sandboxId || !node || sandbox.status?.assignedPod) return;
    for (const agent of this.readyOnNode(sandbox, node)) {
      await this.client(agent.name)
        ?.deleteSandbox(sandboxId, 0)
        .catch((error: unknown) =>
          this.logger.warn(
            { sandbox: `${sandbox.metadata.namespace}/${sandbox.metadata.name}`, agent: agent.name, err: error },
            "could not make sure a deleted paused sandbox left no instance",
          ),
        );
    }
  }

  private async serially<T>(namespace: string, name: string, work: () => Promise<T>): Promise<T> {
    const key = sandboxKey(namespace, name);
    const before = this.queues.get(key) ?? Promise.resolve();
    const next = before.catch(() => undefined).then(work);
    this.queues.set(key, next);
    try {
      return await next;
    } finally {
      if (this.queues.get(key) === next) this.queues.delete(key);
    }
  }

  private async current(namespace: string, name: string): Promise<Sandbox> {
    const sandbox = await this.options.store.get("Sandbox", { namespace, name });
    if (!sandbox) throw new NotFoundError(`sandbox ${namespace}/${name} not found; 'fsb ls' lists the sandboxes`);
    if (sandbox.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${namespace}/${name} is being deleted`);
    return sandbox;
  }

  private async poolOf(sandbox: Sandbox): Promise<SandboxPool> {
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const pool = await this.options.store.get("SandboxPool", { namespace, name: sandbox.spec.poolRef });
    if (!pool) throw new NotFoundError(`pool ${namespace}/${sandbox.spec.poolRef} of sandbox ${namespace}/${sandbox.metadata.name} does not exist`);
    return pool;
  }

  private async pauseNow(namespace: string, name: string): Promise<Sandbox> {
    const key = sandboxKey(namespace, name);
    const running = await this.current(namespace, name);
    if (isPaused(running)) throw new ConflictError(`sandbox ${key} is paused already`);
    const pool = await this.poolOf(running);
    const runtimeType = pool.spec.runtimeType ?? "container";
    if (runtimeType !== "gvisor") {
      throw new FailedPreconditionError(
        `pause needs runtimeType gvisor: sandbox ${key} is in pool ${pool.metadata.name}, whose runtimeType is ${runtimeType}; only sandboxes of gVisor pools can be paused (their memory and files saved as a checkpoint)`,
      );
    }
    const agentName = running.status?.assignedPod;
    const sandboxId = running.status?.sandboxID;
    if (running.status?.phase !== "Running" || !agentName || !sandboxId) {
      throw new FailedPreconditionError(`sandbox ${key} is ${running.status?.phase ?? "Pending"}: only a Running sandbox can be paused`);
    }
    if (!this.client(agentName)) throw new UnavailableError(`agent ${agentName} of sandbox ${key} is not connected; retry shortly`);
    const checkpointName = pauseCheckpointName(name);
    const previousEnd = running.spec.expireTime;
    // The intent first (crash-safety, see the top of this file): the checkpoint to come, no end while paused, phase Paused.
    let record = await this.saveState(running, checkpointName, undefined, (fresh) => {
      // Changed meanwhile (a status write of its own, another replica): the pause still applies only to this running sandbox.
      if (isPaused(fresh)) throw new ConflictError(`sandbox ${key} is paused already`);
      // Another replica's pause wrote its intent first (its status is still Running): that pause goes on, this one yields.
      if (fresh.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] !== running.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION]) {
        throw new ConflictError(`sandbox ${key} is being paused: another pause of it began meanwhile`);
      }
      if (fresh.status?.phase !== "Running" || fresh.status.sandboxID !== sandboxId || fresh.status.assignedPod !== agentName) {
        throw new FailedPreconditionError(`sandbox ${key} changed while its pause began (now ${fresh.status?.phase ?? "Pending"}); retry`);
      }
    });
    record = await writeStatus(
      this.options.store,
      record,
      { phase: "Paused" },
      { type: CONDITION_PAUSED, status: "Unknown", reason: "Pausing", message: `saving its memory and files as checkpoint ${checkpointName}` },
      this.clock.now(),
    );
    let checkpoint: Checkpoint;
    try {
      checkpoint = await this.options.checkpoints.checkpoint({ namespace, sandbox: name, checkpoint: checkpointName, leaveStopped: true, current: running });
    } catch (error) {
      const saved = await this.findCheckpoint(namespace, checkpointName).catch(() => undefined);
      const failure = FsbError.from(error);
      if (!saved && gotNoAnswer(failure)) {
        // No answer: the agent may still be saving it (a checkpoint is listed only once complete) and
        // then stop the sandbox. Undone now, the record would say Running over a stopped sandbox and
        // an orphaned checkpoint. It stays Paused, as after a crash mid-pause: a resume finds out
        // which it was (the checkpoint saved, or the sandbox running on).
        this.options.registry.release(key);
        this.logger.warn(
          { sandbox: key, sandboxId, checkpoint: checkpointName, err: error },
          "a pause's checkpoint call did not answer; its outcome is left to the resume",
        );
        throw new UnavailableError(
          `the pause of sandbox ${key} got no answer from agent ${agentName} (${failure.message}); it stays Paused, and a resume finds out whether checkpoint ${checkpointName} was saved or the sandbox ran on`,
          { cause: error },
        );
      }
      if (!saved) {
        await this.undoPause(record, previousEnd, agentName, sandboxId, error);
        throw failure;
      }
      // Saved although the call failed (it timed out, say): the pause goes on.
      this.logger.warn({ sandbox: key, err: error }, "the pause's checkpoint call failed, but the checkpoint is saved; pausing on");
      checkpoint = saved;
    }
    // The stopped instance goes: its slot, address and container are free (a leftover is removed by the resume).
    await this.client(agentName)
      ?.deleteSandbox(sandboxId, 0)
      .catch((error: unknown) =>
        this.logger.warn({ sandbox: key, sandboxId, err: error }, "could not remove a paused sandbox's stopped instance; its resume does"),
      );
    this.options.registry.release(key);
    const fresh = (await this.options.store.get("Sandbox", { namespace, name })) ?? record;
    const paused = await writeStatus(
      this.options.store,
      fresh,
      {
        phase: "Paused",
        assignedPod: undefined,
        sandboxIP: undefined,
        endpoints: [],
        ...(checkpoint.nodeName ? { nodeName: checkpoint.nodeName } : {}),
      },
      {
        type: CONDITION_PAUSED,
        status: "True",
        reason: "Paused",
        message: `its memory and files are checkpoint ${checkpoint.name}${checkpoint.nodeName ? ` on node ${checkpoint.nodeName}` : ""}; resuming restores it there`,
      },
      this.clock.now(),
    );
    this.logger.info({ sandbox: key, sandboxId, checkpoint: checkpoint.name, sizeBytes: checkpoint.sizeBytes }, "sandbox paused");
    return paused;
  }

  /**
   * A pause whose checkpoint was not saved: the sandbox is Running again with its end back, unless its
   * agent reports it stopped or gone — then it is Failed (runsc stopped it before the save failed:
   * nothing of it is left). An agent that cannot be asked leaves it Running (adoption corrects that).
   */
  private async undoPause(record: Sandbox, previousEnd: string | undefined, agentName: string, sandboxId: string, cause: unknown): Promise<void> {
    const namespace = record.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, record.metadata.name);
    const reason = FsbError.from(cause).message;
    try {
      const client = this.client(agentName);
      /** Whether the agent still runs it; undefined when the agent could not be asked. */
      const runs = client
        ? await client
            .listSandboxes()
            .then((sandboxes) => sandboxes.find((s) => s.sandboxId === sandboxId)?.state === "running")
            .catch(() => undefined)
        : undefined;
      const fresh = (await this.options.store.get("Sandbox", { namespace, name: record.metadata.name })) ?? record;
      const restored = await this.options.store.update("Sandbox", this.withSavedState(fresh, undefined, previousEnd));
      const now = this.clock.now();
      if (runs !== false) {
        await writeStatus(
          this.options.store,
          restored,
          { phase: "Running" },
          { type: CONDITION_PAUSED, status: "False", reason: "PauseFailed", message: `the pause failed and the sandbox runs on: ${reason}` },
          now,
        );
        return;
      }
      this.logger.error({ sandbox: key, sandboxId, err: cause }, "a pause failed after its sandbox stopped; the sandbox is Failed");
      const conditions = setCondition(
        restored.status?.conditions,
        { type: CONDITION_PAUSED, status: "False", reason: "PauseFailed", message: `the pause failed: ${reason}` },
        now,
      );
      await writeStatus(
        this.options.store,
        restored,
        { phase: "Failed", conditions },
        { type: "Ready", status: "False", reason: "PauseFailed", message: `it stopped in a pause whose checkpoint could not be saved (${reason}); delete it` },
        now,
      );
    } catch (error) {
      this.logger.error({ sandbox: key, err: error }, "could not record the outcome of a failed pause");
    }
  }

  private async resumeNow(namespace: string, name: string, options: ResumeOptions): Promise<{ sandbox: Sandbox; resumed: boolean }> {
    const key = sandboxKey(namespace, name);
    const found = await this.current(namespace, name);
    if (!isPaused(found)) {
      if (found.status?.phase === "Running") return { sandbox: found, resumed: false };
      throw new FailedPreconditionError(`sandbox ${key} is ${found.status?.phase ?? "Pending"}: only a Paused sandbox can be resumed`);
    }
    const elsewhere = this.inFlightElsewhere(found);
    if (elsewhere) {
      throw new FailedPreconditionError(
        `sandbox ${key} is being ${elsewhere.what} by another replica of the control plane (since ${elsewhere.since}); retry in a moment`,
      );
    }
    // The resume's intent, written on the condition that the record did not change: of two resumes
    // racing on different replicas, one writes it and the other stops here. It carries the end the
    // sandbox gets (a Paused sandbox does not expire), so the sandbox never runs without it.
    let paused: Sandbox;
    try {
      const intent = withAnnotation(found, RESUMING_ANNOTATION, this.clock.now().toISOString());
      paused = await this.options.store.update("Sandbox", { ...intent, spec: withEnd(intent.spec, options.expireTime) });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      const now = await this.current(namespace, name);
      if (now.status?.phase === "Running") return { sandbox: now, resumed: false };
      throw new FailedPreconditionError(`sandbox ${key} changed while its resume started (another resume or pause of it is under way); retry in a moment`);
    }
    try {
      return await this.resumeFrom(paused, options);
    } catch (error) {
      // A resume that failed leaves the sandbox Paused, without its intent.
      const fresh = await this.options.store.get("Sandbox", { namespace, name }).catch(() => undefined);
      if (fresh && isPaused(fresh) && fresh.metadata.annotations?.[RESUMING_ANNOTATION]) {
        const withoutIntent = withAnnotation(fresh, RESUMING_ANNOTATION, undefined);
        await this.options.store
          .update("Sandbox", { ...withoutIntent, spec: withEnd(withoutIntent.spec, undefined) })
          .catch((cause: unknown) => this.logger.warn({ sandbox: key, err: cause }, "could not remove a failed resume's intent; it expires by itself"));
      }
      throw error;
    }
  }

  /**
   * A pause or resume of the sandbox that another replica may be running now: the record says it
   * started (Paused condition Unknown, or RESUMING_ANNOTATION) less than `inFlightElsewhereMs` ago.
   * This process's own operations on the sandbox are over by now (they run one at a time).
   */
  private inFlightElsewhere(sandbox: Sandbox): { what: string; since: string } | undefined {
    const graceMs = this.options.inFlightElsewhereMs ?? 0;
    if (graceMs <= 0) return undefined;
    const now = this.clock.now().getTime();
    const recent = (time: string | undefined, withinMs: number) => time !== undefined && now - (Date.parse(time) || 0) < withinMs;
    const resuming = sandbox.metadata.annotations?.[RESUMING_ANNOTATION];
    if (recent(resuming, graceMs)) return { what: "resumed", since: resuming ?? "" };
    const pausing = sandbox.status?.conditions?.find((c) => c.type === CONDITION_PAUSED && c.status === "Unknown")?.lastTransitionTime;
    // Never less than a pause can take: one still waiting for its checkpoint call's answer is not cut short.
    if (recent(pausing, Math.max(graceMs, PAUSE_TAKES_AT_MOST_MS))) return { what: "paused", since: pausing ?? "" };
    return undefined;
  }

  private async resumeFrom(paused: Sandbox, options: ResumeOptions): Promise<{ sandbox: Sandbox; resumed: boolean }> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, paused.metadata.name);
    const sandboxId = paused.status?.sandboxID;
    const checkpointName = paused.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
    if (!sandboxId || !checkpointName) throw new FailedPreconditionError(`sandbox ${key} is Paused but names no checkpoint to resume from; delete it`);
    const pool = await this.poolOf(paused);
    await this.waitForAgentOfNode(paused);
    const checkpoint = await this.findCheckpoint(namespace, checkpointName);
    if (!checkpoint) return { sandbox: await this.withoutCheckpoint(paused, pool, checkpointName, options), resumed: true };
    // Whatever a pause or resume cut short left of the instance on the checkpoint's node.
    for (const agentName of checkpoint.agents) {
      await this.client(agentName)
        ?.deleteSandbox(sandboxId, 0)
        .catch((error: unknown) => this.logger.warn({ sandbox: key, agent: agentName, err: error }, "could not make sure no earlier instance is left"));
    }
    const network = instanceNetwork(paused.spec, pool);
    // A paused sandbox holds no slot; one the registry still knows of (e.g. restored by an adoption) is not where the checkpoint is.
    this.options.registry.release(key);
    const placement = this.options.registry.place({
      sandboxKey: key,
      namespace,
      pool: paused.spec.poolRef,
      image: normalizeImageName(paused.spec.image),
      ports: portsOnAgent(paused.spec, network),
      agents: checkpoint.agents,
    });
    const agent = placement.agent;
    let address: string | undefined;
    let running: Sandbox;
    try {
      const client = this.client(agent.name);
      if (!client) throw new UnavailableError(`agent ${agent.name} has no connection; retry in a moment`);
      const request = { ...this.options.manager.agentRequest(paused, sandboxId, pool, network), fromCheckpoint: checkpoint.id };
      address = (await client.createSandbox(request)).address;
      const now = this.clock.now();
      const resumed: Condition = { type: CONDITION_PAUSED, status: "False", reason: "Resumed", message: `resumed from checkpoint ${checkpoint.name}` };
      running = await writeStatus(
        this.options.store,
        paused,
        withSandboxIP(
          {
            phase: "Running",
            assignedPod: agent.name,
            ...(agent.nodeName ? { nodeName: agent.nodeName } : {}),
            endpoints: this.options.manager.endpointsOf(paused),
            startTime: now.toISOString(),
            conditions: setCondition(paused.status?.conditions, { type: "Ready", status: "True", reason: "Resumed" }, now),
          },
          address,
        ),
        resumed,
        now,
      );
    } catch (error) {
      // Undo: no slot or instance is left of a resume that failed; the sandbox stays Paused.
      this.options.registry.release(key);
      await this.client(agent.name)
        ?.deleteSandbox(sandboxId, 0)
        .catch(() => undefined);
      throw FsbError.from(error);
    }
    running = await this.saveState(running, undefined, options.expireTime);
    await this.options.checkpoints
      .delete(namespace, checkpoint.name)
      .catch((error: unknown) =>
        this.logger.warn(
          { sandbox: key, checkpoint: checkpoint.name, err: error },
          "could not delete a resumed sandbox's checkpoint; 'fsb checkpoint rm' removes it",
        ),
      );
    this.logger.info({ sandbox: key, sandboxId, agent: agent.name, checkpoint: checkpoint.name }, "sandbox resumed");
    return { sandbox: running, resumed: true };
  }

  /**
   * Waits, up to the pool's `wakeTimeoutSeconds`, until an agent of the sandbox's pool is ready on its
   * checkpoint's node (any node when the record names none): only such an agent lists the checkpoint.
   * The pool controller starts one for a pool that has none (the resume's intent is its demand,
   * AllocationSync.pendingIn); an agent of the node ready already ends the wait at once. When none
   * comes, the lookup that follows says so.
   */
  private async waitForAgentOfNode(paused: Sandbox): Promise<void> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const node = paused.status?.nodeName;
    const ready = () =>
      this.options.registry.listAgents({ namespace, pool: paused.spec.poolRef }).some((agent) => agent.ready && (!node || agent.nodeName === node));
    if (ready()) return;
    const deadline = this.clock.now().getTime() + this.options.manager.wakeTimeoutMs(namespace, paused.spec.poolRef);
    this.logger.info({ sandbox: sandboxKey(namespace, paused.metadata.name), node }, "resume waits for an agent of its checkpoint's node to start");
    while (!ready() && this.clock.now().getTime() < deadline) await sleep(this.clock, AGENT_POLL_MS);
  }

  /**
   * A Paused sandbox whose checkpoint no ready agent reports: its pause was cut short before the save
   * (its agent still runs it: Running again), or the checkpoint is out of reach or gone.
   */
  private async withoutCheckpoint(paused: Sandbox, pool: SandboxPool, checkpointName: string, options: ResumeOptions): Promise<Sandbox> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, paused.metadata.name);
    const agentName = paused.status?.assignedPod;
    const reported = agentName
      ? await this.client(agentName)
          ?.listSandboxes()
          .then((sandboxes) => sandboxes.find((s) => s.sandboxId === paused.status?.sandboxID))
          .catch(() => undefined)
      : undefined;
    // Its agent is still saving the pause (the call got no answer, the save goes on): what the sandbox
    // is after — paused, or running on — is known only once it is done.
    if (agentName && reported?.checkpointing) {
      throw new UnavailableError(`sandbox ${key} is still being paused on agent ${agentName} (its checkpoint is being saved); retry shortly`);
    }
    if (agentName && reported?.state === "running") {
      this.logger.warn({ sandbox: key }, "a pause was cut short before its checkpoint was saved; the sandbox runs on");
      this.options.registry.restore({ sandboxKey: key, agentName, ports: this.options.manager.portsHeldBy(paused) });
      const running = await writeStatus(
        this.options.store,
        paused,
        { phase: "Running" },
        { type: CONDITION_PAUSED, status: "False", reason: "PauseInterrupted", message: "its pause was cut short before anything was saved; it ran on" },
        this.clock.now(),
      );
      return this.saveState(running, undefined, options.expireTime);
    }
    const node = paused.status?.nodeName;
    const holders = this.options.registry
      .listAgents({ namespace, pool: pool.metadata.name })
      .filter((agent) => agent.ready && (!node || agent.nodeName === node));
    if (holders.length === 0) {
      throw new UnavailableError(
        `sandbox ${key} is paused as checkpoint ${checkpointName}${node ? ` on node ${node}` : ""}, where no agent of pool ${pool.metadata.name} is ready now; retry once one is`,
      );
    }
    throw new FailedPreconditionError(
      `sandbox ${key} is paused as checkpoint ${checkpointName}, which no agent of pool ${pool.metadata.name} holds any more (was it deleted with 'fsb checkpoint rm'?): its memory and files cannot be restored; delete the sandbox`,
    );
  }

  /**
   * Writes the record with its saved state named (or no longer) and its end set (or removed). The
   * write is conditional on the record's resourceVersion: after a conflict (another writer, such as a
   * status update of the sandbox, came first) the same change is applied to a fresh read, which
   * `check` may refuse; the uid check of the write refuses another object of the same name.
   */
  private async saveState(
    sandbox: Sandbox,
    checkpointName: string | undefined,
    expireTime: string | undefined,
    check?: (fresh: Sandbox) => void,
  ): Promise<Sandbox> {
    let current = sandbox;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.options.store.update("Sandbox", this.withSavedState(current, checkpointName, expireTime));
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= SAVED_STATE_WRITE_ATTEMPTS) throw error;
        const fresh = await this.options.store.get("Sandbox", { namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, name: sandbox.metadata.name });
        if (!fresh || fresh.metadata.uid !== sandbox.metadata.uid) throw error;
        check?.(fresh);
        current = fresh;
      }
    }
  }

  /** The record with its saved state named (or no longer) and its end set (or removed): a spec and metadata write. */
  private withSavedState(sandbox: Sandbox, checkpointName: string | undefined, expireTime: string | undefined): Sandbox {
    const { [PAUSED_CHECKPOINT_ANNOTATION]: _previous, [RESUMING_ANNOTATION]: _resuming, ...annotations } = sandbox.metadata.annotations ?? {};
    return {
      ...sandbox,
      metadata: { ...sandbox.metadata, annotations: { ...annotations, ...(checkpointName ? { [PAUSED_CHECKPOINT_ANNOTATION]: checkpointName } : {}) } },
      spec: withEnd(sandbox.spec, expireTime),
    };
  }

  private async findCheckpoint(namespace: string, name: string): Promise<Checkpoint | undefined> {
    try {
      return await this.options.checkpoints.get(namespace, name);
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  private client(agentName: string): AgentClient | undefined {
    return this.options.agents.get(agentName);
  }
}

/** The sandbox with the annotation set to `value`, or without it. */
function withAnnotation(sandbox: Sandbox, annotation: string, value: string | undefined): Sandbox {
  const { [annotation]: _previous, ...annotations } = sandbox.metadata.annotations ?? {};
  return { ...sandbox, metadata: { ...sandbox.metadata, annotations: { ...annotations, ...(value === undefined ? {} : { [annotation]: value }) } } };
}

/** The spec with its end set to `expireTime`, or without one. */
function withEnd(spec: Sandbox["spec"], expireTime: string | undefined): Sandbox["spec"] {
  const { expireTime: _end, ...rest } = spec;
  return expireTime ? { ...rest, expireTime } : rest;
}
