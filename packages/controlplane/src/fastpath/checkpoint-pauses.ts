/**
 * Pausing a sandbox and resuming it, over checkpoints of gVisor sandboxes (checkpoint-manager.ts):
 * what E2B's `pause()` and its `connect()` of a paused sandbox map onto (e2b/e2b-sandboxes.ts).
 *
 * - pause: the sandbox is checkpointed and left stopped — its memory, processes and file changes saved
 *   as a checkpoint on its node — then its instance is removed: nothing of it runs, its slot and
 *   address are free. The record stays, phase `Paused`, with its sandbox id, the node of its checkpoint
 *   (`status.nodeName`) and the checkpoint's name (PAUSED_CHECKPOINT_ANNOTATION); it has no end while
 *   paused (`spec.expireTime` is removed once the pause is decided; a Paused record never expires)
 *   and the condition `Paused` dates the pause.
 * - resume: an instance is restored from that checkpoint under the same sandbox id, name (hostname)
 *   and access token, on an agent of the pool that holds the checkpoint (with an address of its own),
 *   with the end it is given; the checkpoint is then deleted. A pool that has no ready agent on the
 *   checkpoint's node (scaled down to zero while the sandbox was paused) is woken by the resume's
 *   intent (AllocationSync counts it as waiting), and the resume waits for one up to the pool's
 *   `wakeTimeoutSeconds`, as a create waits for capacity. Deleting a paused sandbox wakes it likewise.
 * - deleting a paused sandbox deletes its checkpoint (`removeSavedState`, the manager's cleanup hook).
 *
 * Crash-safety: the record says Paused (condition Paused=Unknown) before anything is saved, with the
 * end it had (END_BEFORE_PAUSE_ANNOTATION), and the checkpoint is deleted only after the resumed
 * instance is recorded Running, so the store always knows a paused sandbox as one. A resume works
 * from whatever a pause or a resume cut short left: it first removes any instance of the sandbox id
 * on the agents that hold the checkpoint; and when there is no checkpoint but the instance still runs
 * (the pause never saved it), the sandbox is Running again.
 *
 * A pause whose outcome is not known — its checkpoint call got no answer (the agent may still be
 * saving, then stop the sandbox), or a crash or another replica's end cut it short — stays Paused=Unknown
 * and keeps its slot on its agent (AllocationSync's `heldOn`: its instance may run on). It is not left
 * so: once the pause cannot still be under way (`settleDueInMs`: a while after its call went
 * unanswered, PAUSE_UNANSWERED_ANNOTATION; PAUSE_TAKES_AT_MOST_MS after it began, whatever became of
 * it), `settle` (reconcile/pause-settler.ts, the leader's) finds out from its agent what happened:
 * the checkpoint saved → the pause is finished (its stopped instance removed, Paused=True, slot
 * released); nothing saved and the instance runs → Running again, with its end back and its slot
 * held; nothing saved and no instance left → Lost, as a vanished instance is (reconcile/lost-instance.ts:
 * its failurePolicy acts). An agent that cannot be asked leaves it undecided until it can be, or until it
 * has been away (not connected, or gone for good: its Pod deleted, the embedded agent gone) for the
 * sandbox's recoveryTimeoutSeconds, as a Running sandbox's failure policy waits: then a checkpoint of
 * the pause that an agent lists → Paused from it; none → the pause failed, and the sandbox is Lost
 * (AgentLost), as a Running sandbox whose agent is lost, for its failurePolicy to act on.
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
import { gotNoAnswer, processOneGone, type AgentClient, type AgentSandbox } from "../agent-client/agent-client.js";
import { CHECKPOINT_CALL_TIMEOUT_MS, canCheckpoint } from "../agent-client/agent-checkpoints.js";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import { lostInstanceCondition } from "../reconcile/lost-instance.js";
import { DEFAULT_RECOVERY_TIMEOUT_SECONDS } from "../reconcile/sandbox-reconciler.js";
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
/**
 * On a sandbox being paused: the end (`spec.expireTime`, RFC 3339) it had when its pause began; none
 * when it had none. Written with the pause's intent; the end itself is removed only once the pause is
 * decided (a Paused sandbox does not expire), and a pause found not to have happened gives the
 * sandbox this end back, after a crash too.
 */
export const END_BEFORE_PAUSE_ANNOTATION = "sandbox.fast.io/end-before-pause";
/** On a sandbox being paused: when its checkpoint call came back without an answer (RFC 3339). */
export const PAUSE_UNANSWERED_ANNOTATION = "sandbox.fast.io/pause-unanswered-at";
/** On a sandbox being paused: when a replica began to act on what it found out of the pause (`settle`; RFC 3339). */
export const SETTLING_ANNOTATION = "sandbox.fast.io/pause-settling-since";
/** The condition that dates a pause (True: paused since its lastTransitionTime; Unknown: being paused; False: resumed). */
export const CONDITION_PAUSED = "Paused";
/** Writes of a sandbox's saved state tried this many times when other writers keep changing it first. */
const SAVED_STATE_WRITE_ATTEMPTS = 5;
/** How often a resume looks for a ready agent of its checkpoint's node while its pool starts one. */
const AGENT_POLL_MS = 100;
/**
 * How long after a pause's checkpoint call came back without an answer its outcome is found out: its
 * agent reports a save still going on (`checkpointing`), and this covers a call that reached it late.
 */
export const DEFAULT_SETTLE_AFTER_NO_ANSWER_MS = 60_000;
/** How soon `settle` looks again at a pause whose agent could not tell its outcome (not connected, still saving). */
const SETTLE_RECHECK_MS = 15_000;
/** How soon `settle` tries again when the record changed between its read and its first write. */
const SETTLE_CONFLICT_RECHECK_MS = 1000;
/**
 * The longest a pause can take: its checkpoint call's deadline, and a minute for what comes around
 * it (the lookups of the checkpoint before and after the call, the removal of the stopped instance,
 * the store's writes). Another replica's pause is left to it for at least this long.
 */
export const PAUSE_TAKES_AT_MOST_MS = CHECKPOINT_CALL_TIMEOUT_MS + 60_000;
/**
 * What a resume takes at most once it has an agent of its checkpoint's node: its restore call's
 * deadline (the agent client's CREATE_TIMEOUT_MS, 60 s, agent-client/rpc-agent-client.ts) and a
 * minute for what comes around it (the checkpoint's lookup, the removal of what an earlier attempt
 * left, the store's writes). Before that it may wait for such an agent up to its pool's
 * `wakeTimeoutSeconds` (`resumeInFlightMs`). Raise it with the restore call's deadline.
 */
export const RESUME_AFTER_WAKE_TAKES_AT_MOST_MS = 120_000;
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
   * a pause, resume or settle (`settle`) another replica started (the record says when) is left to
   * it — a resume meanwhile is refused, a settle waits — before it counts as cut short. A pause is
   * left to it for at least PAUSE_TAKES_AT_MOST_MS (its checkpoint call is given
   * CHECKPOINT_CALL_TIMEOUT_MS), a resume for at least its pool's `wakeTimeoutSeconds` (its wait
   * for an agent of its checkpoint's node) and RESUME_AFTER_WAKE_TAKES_AT_MOST_MS. @default 0: one
   * control plane, whose own operations on a sandbox run one at a time, so an unfinished one it is
   * not running was cut short
   */
  inFlightElsewhereMs?: number;
  /**
   * How long after a pause's checkpoint call came back without an answer its outcome is found out
   * (`settleDueInMs`). @default DEFAULT_SETTLE_AFTER_NO_ANSWER_MS (1 minute)
   */
  settleAfterNoAnswerMs?: number;
}

export interface ResumeOptions {
  /** The resumed sandbox's `spec.expireTime` (RFC 3339). @default none: it does not end by itself */
  expireTime?: string;
  /**
   * A sandbox running already gets `expireTime` as its end too (`fsb resume --expire`: the end the
   * user asked for). @default false: its end stays (E2B's connect moves it only later, itself)
   */
  endRunning?: boolean;
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

/**
 * Whether the sandbox's pause is undecided: Paused with its Paused condition Unknown — under way, or
 * cut short or unanswered, its outcome not known yet. Its instance may still be on its agent
 * (`status.assignedPod`), running or left stopped.
 */
export function isPauseUndecided(sandbox: Sandbox): boolean {
  return isPaused(sandbox) && pausingSince(sandbox) !== undefined;
}

/** When the sandbox's undecided pause began (its Paused=Unknown condition's transition time; "" when it has none); undefined: no pause is undecided. */
function pausingSince(sandbox: Sandbox): string | undefined {
  const condition = sandbox.status?.conditions?.find((c) => c.type === CONDITION_PAUSED && c.status === "Unknown");
  return condition ? (condition.lastTransitionTime ?? "") : undefined;
}

/** What `settle` did with a sandbox's undecided pause. */
export type PauseSettlement =
  /** Found out and recorded: the checkpoint was saved (Paused), the sandbox ran on (Running), or nothing of it is left (Lost). */
  | { outcome: "paused" | "running" | "lost" }
  /** Nothing to settle: its pause is decided, or the sandbox is gone or being deleted. */
  | { outcome: "none" }
  /** Not now: the pause may still be under way, or its agent cannot tell yet; `why`, and when to look again. */
  | { outcome: "waiting"; retryInMs: number; why: string };

/**
 * What the agent of an undecided pause says became of it; `agentLost`: its agent has been away since
 * then, for the sandbox's recoveryTimeoutSeconds, and no agent lists the pause's checkpoint.
 */
type PauseOutcome = { saved: Checkpoint } | { instance: "running" | "stopped" | "missing" } | { agentLost: Date } | { unknown: string; retryInMs?: number };

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
  /**
   * When `settle` first found the agent of an undecided pause gone with no record of since when (no
   * connectivity: unregistered), by sandbox key and agent; until its pause is decided or the agent is back.
   */
  private readonly agentGoneSince = new Map<string, { agent: string; since: Date }>();

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
   * How long until the outcome of the sandbox's undecided pause is to be found out (`settle`): 0 when
   * due now, undefined when no pause of it is undecided (or it is being deleted). Due once the pause
   * cannot still be under way: `settleAfterNoAnswerMs` after its checkpoint call came back without an
   * answer (PAUSE_UNANSWERED_ANNOTATION), and PAUSE_TAKES_AT_MOST_MS after it began, whatever became of
   * it (a crash, another replica's end); later while another replica may be resuming or settling it.
   */
  settleDueInMs(sandbox: Sandbox): number | undefined {
    if (!isPauseUndecided(sandbox) || sandbox.metadata.deletionTimestamp) return undefined;
    const since = pausingSince(sandbox);
    const annotations = sandbox.metadata.annotations ?? {};
    const dated = (time: string | undefined) => Date.parse(time ?? "");
    // A date that cannot be read is no date: the pause counts as long over.
    let dueAt = (dated(since) || 0) + PAUSE_TAKES_AT_MOST_MS;
    const unansweredAt = dated(annotations[PAUSE_UNANSWERED_ANNOTATION]);
    if (Number.isFinite(unansweredAt)) dueAt = Math.min(dueAt, unansweredAt + (this.options.settleAfterNoAnswerMs ?? DEFAULT_SETTLE_AFTER_NO_ANSWER_MS));
    const graceMs = this.options.inFlightElsewhereMs ?? 0;
    if (graceMs > 0) {
      const resumingAt = dated(annotations[RESUMING_ANNOTATION]);
      if (Number.isFinite(resumingAt)) dueAt = Math.max(dueAt, resumingAt + this.resumeInFlightMs(sandbox));
      const settlingAt = dated(annotations[SETTLING_ANNOTATION]);
      if (Number.isFinite(settlingAt)) dueAt = Math.max(dueAt, settlingAt + graceMs);
    }
    return Math.max(0, dueAt - this.clock.now().getTime());
  }

  /**
   * Finds out what became of the sandbox's undecided pause, once it is due (`settleDueInMs`), and
   * records it: its checkpoint saved → the pause is finished; nothing saved and its instance runs →
   * Running again with its end back (END_BEFORE_PAUSE_ANNOTATION) and its slot held; nothing saved and
   * no instance left → Lost. Its agent is asked first (a save still going on, or an agent that cannot
   * be asked, leaves it `waiting`), then the checkpoint is looked up: once the agent no longer saves,
   * the checkpoint is listed for good or never. Runs as a pause or resume of the sandbox does (one at
   * a time, `exclusively`): FailedPreconditionError when it is being created or deleted here.
   */
  settle(namespace: string | undefined, name: string): Promise<PauseSettlement> {
    const ns = namespace || DEFAULT_NAMESPACE;
    return this.serially(ns, name, () => this.options.manager.exclusively(ns, name, () => this.settleNow(ns, name)));
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
      await this.client(agent.name, agent.namespace)
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
    if (!this.client(agentName, namespace)) throw new UnavailableError(`agent ${agentName} of sandbox ${key} is not connected; retry shortly`);
    const checkpointName = pauseCheckpointName(name);
    // The intent first (crash-safety, see the top of this file): the checkpoint to come and the end it
    // has, kept aside; then phase Paused. The end itself stays until the pause is decided (a Paused
    // sandbox does not expire; `finishPause` removes it): a pause cut short between the two writes
    // leaves a Running sandbox that still ends.
    let record = await this.updateRecord(
      running,
      (current) => withSavedState(current, { checkpoint: checkpointName, end: current.spec.expireTime, endBeforePause: current.spec.expireTime }),
      (fresh) => {
        // Changed meanwhile (a status write of its own, another replica): the pause still applies only to this running sandbox.
        if (isPaused(fresh)) throw new ConflictError(`sandbox ${key} is paused already`);
        // Another replica's pause wrote its intent first (its status is still Running): that pause goes on, this one yields.
        if (fresh.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] !== running.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION]) {
          throw new ConflictError(`sandbox ${key} is being paused: another pause of it began meanwhile`);
        }
        if (fresh.status?.phase !== "Running" || fresh.status.sandboxID !== sandboxId || fresh.status.assignedPod !== agentName) {
          throw new FailedPreconditionError(`sandbox ${key} changed while its pause began (now ${fresh.status?.phase ?? "Pending"}); retry`);
        }
      },
    );
    const previousEnd = record.spec.expireTime;
    try {
      record = await writeStatus(
        this.options.store,
        record,
        { phase: "Paused" },
        { type: CONDITION_PAUSED, status: "Unknown", reason: "Pausing", message: `saving its memory and files as checkpoint ${checkpointName}` },
        this.clock.now(),
      );
    } catch (error) {
      // Nothing was saved: the intent goes (best effort; a record that changed from this Running one is left as it is).
      await this.updateRecord(
        record,
        (current) => withSavedState(current, { end: current.spec.expireTime }),
        (fresh) => {
          if (fresh.status?.phase !== "Running" || fresh.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] !== checkpointName) {
            throw new ConflictError(`sandbox ${key} changed after its pause's intent`);
          }
        },
      ).catch((cause: unknown) =>
        this.logger.warn({ sandbox: key, err: cause }, "could not remove the intent of a pause that did not begin; it is left unused"),
      );
      throw error;
    }
    let checkpoint: Checkpoint;
    try {
      checkpoint = await this.options.checkpoints.checkpoint({ namespace, sandbox: name, checkpoint: checkpointName, leaveStopped: true, current: running });
    } catch (error) {
      const saved = await this.findCheckpoint(namespace, checkpointName).catch(() => undefined);
      const failure = FsbError.from(error);
      if (!saved && gotNoAnswer(failure)) {
        // No answer: the agent may still be saving it (a checkpoint is listed only once complete) and
        // then stop the sandbox. Undone now, the record would say Running over a stopped sandbox and
        // an orphaned checkpoint. It stays Paused=Unknown, as after a crash mid-pause, and keeps its
        // slot (its instance may run on); the record says when the call came back, from which its
        // outcome is found out (`settle`) — or by a resume before that.
        await this.markUnanswered(record);
        this.logger.warn(
          { sandbox: key, sandboxId, checkpoint: checkpointName, err: error },
          "a pause's checkpoint call did not answer; its outcome is found out once its agent can no longer be saving it",
        );
        throw new UnavailableError(
          `the pause of sandbox ${key} got no answer from agent ${agentName} (${failure.message}); it stays Paused until the control plane finds out whether checkpoint ${checkpointName} was saved (it is then paused) or the sandbox ran on (it then runs again, with its end)`,
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
    const paused = await this.finishPause(record, checkpoint, agentName, sandboxId);
    this.logger.info({ sandbox: key, sandboxId, checkpoint: checkpoint.name, sizeBytes: checkpoint.sizeBytes }, "sandbox paused");
    return paused;
  }

  /**
   * The end of a pause whose checkpoint is saved: the stopped instance goes (its slot, address and
   * container are free; a leftover is removed by the resume), and the record says Paused=True, with
   * the node of its checkpoint; what it kept while its outcome could be unknown goes.
   */
  private async finishPause(record: Sandbox, checkpoint: Checkpoint, agentName: string, sandboxId: string): Promise<Sandbox> {
    const namespace = record.metadata.namespace ?? DEFAULT_NAMESPACE;
    const name = record.metadata.name;
    const key = sandboxKey(namespace, name);
    await this.client(agentName, namespace)
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
    const annotations = paused.metadata.annotations ?? {};
    if (!paused.spec.expireTime && !PAUSE_BOOKKEEPING_ANNOTATIONS.some((annotation) => annotation in annotations)) return paused;
    // Its end, kept while the pause was undecided, goes: a paused sandbox has none (a Paused one does
    // not expire, and its resume gives it one). What the pause kept aside is read only while it is
    // undecided: one left behind changes nothing.
    return this.saveState(paused, { checkpoint: checkpoint.name }).catch((error: unknown) => {
      this.logger.warn(
        { sandbox: key, err: error },
        "could not remove a paused sandbox's end and what it kept while its pause was under way; they are left unused (a Paused sandbox does not expire)",
      );
      return paused;
    });
  }

  /** Dates on the record the return of its pause's checkpoint call without an answer: its outcome is found out from then on. */
  private async markUnanswered(record: Sandbox): Promise<void> {
    const key = sandboxKey(record.metadata.namespace ?? DEFAULT_NAMESPACE, record.metadata.name);
    const checkpointName = record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
    const at = this.clock.now().toISOString();
    try {
      await this.updateRecord(
        record,
        (current) => withAnnotation(current, PAUSE_UNANSWERED_ANNOTATION, at),
        (fresh) => {
          if (!isPauseUndecided(fresh) || fresh.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] !== checkpointName) {
            throw new ConflictError(`sandbox ${key}'s pause was decided meanwhile`);
          }
        },
      );
    } catch (error) {
      // Its outcome is then found out PAUSE_TAKES_AT_MOST_MS after the pause began, as after a crash.
      this.logger.warn({ sandbox: key, err: error }, "could not record that a pause's checkpoint call got no answer");
    }
  }

  private async settleNow(namespace: string, name: string): Promise<PauseSettlement> {
    const key = sandboxKey(namespace, name);
    const record = await this.options.store.get("Sandbox", { namespace, name });
    const dueInMs = record ? this.settleDueInMs(record) : undefined;
    if (!record || dueInMs === undefined) {
      this.agentGoneSince.delete(key);
      return { outcome: "none" };
    }
    if (dueInMs > 0) return { outcome: "waiting", retryInMs: dueInMs, why: "its pause may still be under way" };
    const agentName = record.status?.assignedPod ?? "";
    const sandboxId = record.status?.sandboxID ?? "";
    const found = await this.pauseOutcome(record);
    if ("unknown" in found) return { outcome: "waiting", retryInMs: Math.min(SETTLE_RECHECK_MS, found.retryInMs ?? SETTLE_RECHECK_MS), why: found.unknown };
    this.agentGoneSince.delete(key);
    const now = this.clock.now();
    const end = record.metadata.annotations?.[END_BEFORE_PAUSE_ANNOTATION];
    // First a write on the condition that the record did not change since it was read: of this and a
    // resume another replica begins meanwhile (its intent), one goes on and the other stops. Unless
    // the pause is finished, the end goes back with it, while the record still says Paused (which
    // does not expire): the sandbox never runs, nor is it Lost, without it.
    let claimed: Sandbox;
    try {
      const marked = withAnnotation(record, SETTLING_ANNOTATION, now.toISOString());
      claimed = await this.options.store.update("Sandbox", "saved" in found ? marked : { ...marked, spec: withEnd(marked.spec, end) });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      return { outcome: "waiting", retryInMs: SETTLE_CONFLICT_RECHECK_MS, why: "its record changed while its outcome was found out" };
    }
    const unanswered = claimed.metadata.annotations?.[PAUSE_UNANSWERED_ANNOTATION] ? "went unanswered" : "was cut short";
    if ("saved" in found) {
      await this.finishPause(claimed, found.saved, agentName, sandboxId);
      this.logger.info({ sandbox: key, sandboxId, checkpoint: found.saved.name }, `a pause that ${unanswered} had saved its checkpoint: the sandbox is paused`);
      return { outcome: "paused" };
    }
    if ("agentLost" in found) {
      await this.failWithAgentLost(claimed, found.agentLost, unanswered, now);
      return { outcome: "lost" };
    }
    if (found.instance === "running") {
      this.logger.warn({ sandbox: key, sandboxId }, `a pause that ${unanswered} saved nothing and the sandbox ran on: it is Running again, with its end`);
      await this.runOn(claimed, agentName, end, {
        type: CONDITION_PAUSED,
        status: "False",
        reason: "PauseInterrupted",
        message: `its pause ${unanswered} and saved nothing; it ran on`,
      });
      return { outcome: "running" };
    }
    // Neither saved nor running: as an instance that vanished under a Running record (reconcile/lost-instance.ts).
    const lost = lostInstanceCondition(agentName, found.instance);
    this.logger.warn(
      { sandbox: key, sandboxId, agent: agentName, reason: lost.reason },
      `a pause that ${unanswered} saved nothing and left no instance that runs; the sandbox is Lost`,
    );
    this.options.registry.release(key);
    const conditions = setCondition(
      claimed.status?.conditions,
      { type: CONDITION_PAUSED, status: "False", reason: "PauseFailed", message: `its pause ${unanswered} and saved nothing, and its instance does not run` },
      now,
    );
    const written = await writeStatus(this.options.store, claimed, { phase: "Lost", endpoints: [], sandboxIP: undefined, conditions }, lost, now);
    await this.saveState(written, { end });
    if (found.instance === "stopped") {
      // It holds its slot and ports on its agent: it goes, as the reconciler removes a Lost sandbox's stopped instance.
      await this.client(agentName, namespace)
        ?.deleteSandbox(sandboxId, 0)
        .catch((error: unknown) =>
          this.logger.warn({ sandbox: key, sandboxId, err: error }, "could not remove the stopped instance of a Lost sandbox; the reconciler does"),
        );
    }
    return { outcome: "lost" };
  }

  /**
   * What the agent of an undecided pause says became of it. The instance first: while its agent
   * still saves it (`checkpointing`) nothing is known; once it no longer does, the checkpoint is
   * listed for good or never. Its absence is taken only from the agent that was saving it.
   */
  private async pauseOutcome(paused: Sandbox): Promise<PauseOutcome> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const agentName = paused.status?.assignedPod;
    const sandboxId = paused.status?.sandboxID;
    const checkpointName = paused.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
    if (!agentName || !sandboxId || !checkpointName) return { unknown: "its record names no agent, instance or checkpoint of the pause" };
    const client = this.client(agentName, namespace);
    if (!client) return this.withoutAgent(paused, agentName, checkpointName);
    // Back: an absence later counts from then.
    this.agentGoneSince.delete(sandboxKey(namespace, paused.metadata.name));
    if (!canCheckpoint(client)) return { unknown: `agent ${agentName} cannot list checkpoints (it predates them)` };
    let reported: AgentSandbox | undefined;
    try {
      reported = (await client.listSandboxes()).find((s) => s.sandboxId === sandboxId);
    } catch (error) {
      return { unknown: `agent ${agentName} did not list its sandboxes (${FsbError.from(error).message})` };
    }
    if (reported?.checkpointing) return { unknown: `agent ${agentName} is still saving checkpoint ${checkpointName}` };
    const saved = await this.findCheckpoint(namespace, checkpointName);
    if (saved) return { saved };
    // The lookup leaves out an agent that did not answer in time: its own list says it is not there.
    try {
      const listed = await client.listCheckpoints();
      if (listed.some((checkpoint) => checkpoint.namespace === namespace && checkpoint.name === checkpointName)) {
        return { unknown: `agent ${agentName} lists checkpoint ${checkpointName}, which the lookup of the ready agents missed` };
      }
    } catch (error) {
      return { unknown: `agent ${agentName} did not list its checkpoints (${FsbError.from(error).message})` };
    }
    if (!reported) return { instance: "missing" };
    if (reported.state === "running") return { instance: "running" };
    if (processOneGone(reported)) return { instance: "stopped" };
    return { unknown: `its instance is ${reported.state} on agent ${agentName}` };
  }

  /**
   * The outcome of an undecided pause whose agent cannot be asked: unknown while it has been away for
   * less than the sandbox's recoveryTimeoutSeconds (it may come back and tell), as a Running
   * sandbox's failure policy waits for its agent (reconcile/sandbox-reconciler.ts). After that the
   * agent counts as lost: a checkpoint of the pause that an agent lists (one of its node, sharing
   * the checkpoints' directory) is the pause's; none, and the pause saved nothing that can be resumed.
   */
  private async withoutAgent(paused: Sandbox, agentName: string, checkpointName: string): Promise<PauseOutcome> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, paused.metadata.name);
    const now = this.clock.now();
    const connectivity = this.options.agents.agentConnectivity?.(agentName, namespace);
    let awaySince: Date;
    if (connectivity && !connectivity.connected) {
      awaySince = connectivity.since;
    } else {
      // Gone (unregistered: no record of since when) or unknown: from when it was first found so here.
      const gone = this.agentGoneSince.get(key);
      awaySince = gone?.agent === agentName ? gone.since : now;
      this.agentGoneSince.set(key, { agent: agentName, since: awaySince });
    }
    const timeoutMs = (paused.spec.recoveryTimeoutSeconds ?? DEFAULT_RECOVERY_TIMEOUT_SECONDS) * 1000;
    const awayMs = now.getTime() - awaySince.getTime();
    if (awayMs < timeoutMs) return { unknown: `agent ${agentName} is not connected`, retryInMs: timeoutMs - awayMs };
    let saved: Checkpoint | undefined;
    try {
      saved = await this.findCheckpoint(namespace, checkpointName, paused.status?.nodeName);
    } catch (error) {
      return { unknown: `agent ${agentName} is lost, and checkpoint ${checkpointName} could not be looked for (${FsbError.from(error).message})` };
    }
    return saved ? { saved } : { agentLost: awaySince };
  }

  /**
   * An undecided pause whose agent is lost and whose checkpoint no agent lists: the pause failed, and
   * the sandbox goes the way a Running sandbox whose agent is lost goes — Lost (AgentLost), its slot
   * released, its end back, its agent still named. AgentConnected=False is dated from when the agent
   * was found away: the reconciler's failure policy (AutoRecreate) acts on it at once.
   */
  private async failWithAgentLost(claimed: Sandbox, awaySince: Date, unanswered: string, now: Date): Promise<void> {
    const namespace = claimed.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, claimed.metadata.name);
    const agentName = claimed.status?.assignedPod ?? "";
    const checkpointName = claimed.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? "";
    const end = claimed.metadata.annotations?.[END_BEFORE_PAUSE_ANNOTATION];
    const timeoutSeconds = claimed.spec.recoveryTimeoutSeconds ?? DEFAULT_RECOVERY_TIMEOUT_SECONDS;
    const awaySeconds = Math.round((now.getTime() - awaySince.getTime()) / 1000);
    const policy = claimed.spec.failurePolicy ?? "Manual";
    this.logger.warn(
      { sandbox: key, agent: agentName, checkpoint: checkpointName },
      `a pause that ${unanswered} lost its agent and no agent lists its checkpoint; the sandbox is Lost (failurePolicy ${policy})`,
    );
    this.options.registry.release(key);
    let conditions = setCondition(
      claimed.status?.conditions,
      { type: "AgentConnected", status: "False", reason: "AgentGone", message: `agent ${agentName} went away while the sandbox was being paused` },
      awaySince,
    );
    conditions = setCondition(
      conditions,
      {
        type: CONDITION_PAUSED,
        status: "False",
        reason: "PauseFailed",
        message: `its pause ${unanswered}, its agent ${agentName} is lost, and no agent lists checkpoint ${checkpointName}`,
      },
      now,
    );
    const lost: Condition = {
      type: "Ready",
      status: "False",
      reason: "AgentLost",
      message: `agent ${agentName} was away for ${awaySeconds}s (recoveryTimeoutSeconds ${timeoutSeconds}) while the sandbox was being paused, and no agent lists checkpoint ${checkpointName}: nothing of it can be resumed; ${policy === "AutoRecreate" ? "failurePolicy AutoRecreate replaces it" : "failurePolicy Manual: delete the sandbox, or set failurePolicy AutoRecreate"}`,
    };
    const written = await writeStatus(this.options.store, claimed, { phase: "Lost", endpoints: [], sandboxIP: undefined, conditions }, lost, now);
    await this.saveState(written, { end });
  }

  /**
   * A paused record whose instance runs on (its pause saved nothing): Running again, its slot held,
   * with `expireTime` as its end — which `paused` carries already (an intent's), so it never runs
   * without it — and without what its pause wrote.
   */
  private async runOn(paused: Sandbox, agentName: string, expireTime: string | undefined, condition: Condition): Promise<Sandbox> {
    const key = sandboxKey(paused.metadata.namespace ?? DEFAULT_NAMESPACE, paused.metadata.name);
    this.options.registry.restore({ sandboxKey: key, agentName, ports: this.options.manager.portsHeldBy(paused) });
    const running = await writeStatus(this.options.store, paused, { phase: "Running" }, condition, this.clock.now());
    return this.saveState(running, { end: expireTime });
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
      const client = this.client(agentName, namespace);
      /** Whether the agent still runs it; undefined when the agent could not be asked. */
      const runs = client
        ? await client
            .listSandboxes()
            .then((sandboxes) => sandboxes.find((s) => s.sandboxId === sandboxId)?.state === "running")
            .catch(() => undefined)
        : undefined;
      const fresh = (await this.options.store.get("Sandbox", { namespace, name: record.metadata.name })) ?? record;
      const restored = await this.options.store.update("Sandbox", withSavedState(fresh, { end: previousEnd }));
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
        {
          type: "Ready",
          status: "False",
          reason: "PauseFailed",
          message: `it stopped in a pause whose checkpoint could not be saved (${reason}); reset it to start it afresh from its image ('fsb reset'), or delete it`,
        },
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
      if (found.status?.phase === "Running") {
        const { expireTime } = options;
        if (!options.endRunning || !expireTime || found.spec.expireTime === expireTime) return { sandbox: found, resumed: false };
        const ended = await this.updateRecord(
          found,
          (current) => ({ ...current, spec: { ...current.spec, expireTime } }),
          (fresh) => {
            if (fresh.status?.phase !== "Running")
              throw new ConflictError(`sandbox ${key} changed while its end was set (now ${fresh.status?.phase ?? "Pending"}); retry`);
          },
        );
        return { sandbox: ended, resumed: false };
      }
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
    // Never less than a resume can take: one still waiting for an agent of its checkpoint's node, or for its restore call, is not cut short.
    if (recent(resuming, this.resumeInFlightMs(sandbox))) return { what: "resumed", since: resuming ?? "" };
    const pausing = sandbox.status?.conditions?.find((c) => c.type === CONDITION_PAUSED && c.status === "Unknown")?.lastTransitionTime;
    // Never less than a pause can take: one still waiting for its checkpoint call's answer is not cut short.
    if (recent(pausing, Math.max(graceMs, PAUSE_TAKES_AT_MOST_MS))) return { what: "paused", since: pausing ?? "" };
    // The leader finishing an undecided pause (`settle`): read only while the pause is undecided.
    const settling = pausing !== undefined ? sandbox.metadata.annotations?.[SETTLING_ANNOTATION] : undefined;
    if (recent(settling, graceMs)) return { what: "paused", since: settling ?? "" };
    return undefined;
  }

  /**
   * How long after it began a resume of the sandbox another replica started is left to it: at least
   * `inFlightElsewhereMs`, and as long as a resume can take — its wait for an agent of its
   * checkpoint's node (its pool's `wakeTimeoutSeconds`, `waitForAgentOfNode`) and what follows.
   */
  private resumeInFlightMs(sandbox: Sandbox): number {
    const wakeMs = this.options.manager.wakeTimeoutMs(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.spec.poolRef);
    return Math.max(this.options.inFlightElsewhereMs ?? 0, wakeMs + RESUME_AFTER_WAKE_TAKES_AT_MOST_MS);
  }

  private async resumeFrom(paused: Sandbox, options: ResumeOptions): Promise<{ sandbox: Sandbox; resumed: boolean }> {
    const namespace = paused.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = sandboxKey(namespace, paused.metadata.name);
    const sandboxId = paused.status?.sandboxID;
    const checkpointName = paused.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
    if (!sandboxId || !checkpointName) throw new FailedPreconditionError(`sandbox ${key} is Paused but names no checkpoint to resume from; delete it`);
    const pool = await this.poolOf(paused);
    await this.waitForAgentOfNode(paused);
    // Absent only when every ready agent of its node says so: one that did not answer in time may
    // hold it (UnavailableError, to retry), and `withoutCheckpoint` takes absence for a lost checkpoint.
    const checkpoint = await this.findCheckpoint(namespace, checkpointName, paused.status?.nodeName);
    if (!checkpoint) return { sandbox: await this.withoutCheckpoint(paused, pool, checkpointName, options), resumed: true };
    // Whatever a pause or resume cut short left of the instance on the checkpoint's node.
    for (const agentName of checkpoint.agents) {
      await this.client(agentName, namespace)
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
      const client = this.client(agent.name, namespace);
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
      await this.client(agent.name, namespace)
        ?.deleteSandbox(sandboxId, 0)
        .catch(() => undefined);
      throw FsbError.from(error);
    }
    running = await this.saveState(running, { end: options.expireTime });
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
      ? await this.client(agentName, namespace)
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
      return this.runOn(paused, agentName, options.expireTime, {
        type: CONDITION_PAUSED,
        status: "False",
        reason: "PauseInterrupted",
        message: "its pause was cut short before anything was saved; it ran on",
      });
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
   * Writes the record with its saved state (`withSavedState`). The write is conditional on the record's
   * resourceVersion: after a conflict (another writer, such as a status update of the sandbox, came
   * first) the same change is applied to a fresh read, which `check` may refuse; the uid check of the
   * write refuses another object of the same name.
   */
  private saveState(sandbox: Sandbox, state: SavedState, check?: (fresh: Sandbox) => void): Promise<Sandbox> {
    return this.updateRecord(sandbox, (current) => withSavedState(current, state), check);
  }

  /** Writes `change` of the record (its spec and metadata), applied again to a fresh read after a conflict (see `saveState`). */
  private async updateRecord(sandbox: Sandbox, change: (current: Sandbox) => Sandbox, check?: (fresh: Sandbox) => void): Promise<Sandbox> {
    let current = sandbox;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.options.store.update("Sandbox", change(current));
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= SAVED_STATE_WRITE_ATTEMPTS) throw error;
        const fresh = await this.options.store.get("Sandbox", { namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, name: sandbox.metadata.name });
        if (!fresh || fresh.metadata.uid !== sandbox.metadata.uid) throw error;
        check?.(fresh);
        current = fresh;
      }
    }
  }

  /**
   * The checkpoint, undefined when not found. With `node` (the one it is known to be on): not found
   * only when every ready agent of that node answered without it, UnavailableError when one did not answer.
   */
  private async findCheckpoint(namespace: string, name: string, node?: string): Promise<Checkpoint | undefined> {
    try {
      return await (node ? this.options.checkpoints.getFromNode(namespace, name, node) : this.options.checkpoints.get(namespace, name));
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  /** The client of an agent, for a call about a sandbox of `namespace`: an agent of another namespace is not there (AgentClients). */
  private client(agentName: string, namespace: string): AgentClient | undefined {
    return this.options.agents.get(agentName, namespace);
  }
}

/** What a record keeps of its pause (`withSavedState`). */
interface SavedState {
  /** The checkpoint that holds it (PAUSED_CHECKPOINT_ANNOTATION). @default none */
  checkpoint?: string;
  /** Its end (`spec.expireTime`). @default none */
  end?: string | undefined;
  /** With `checkpoint`, a pause beginning: the end it had, kept aside (END_BEFORE_PAUSE_ANNOTATION). @default none */
  endBeforePause?: string | undefined;
}

/** What a pause writes on the record to find out its outcome, read only while the pause is undecided. */
const PAUSE_BOOKKEEPING_ANNOTATIONS = [END_BEFORE_PAUSE_ANNOTATION, PAUSE_UNANSWERED_ANNOTATION, SETTLING_ANNOTATION];

/**
 * The record with its saved state named (or no longer) and its end set (or removed), without any
 * intent of a resume or what a pause wrote to find out its outcome: a spec and metadata write.
 */
function withSavedState(sandbox: Sandbox, state: SavedState): Sandbox {
  const annotations = { ...sandbox.metadata.annotations };
  for (const annotation of [PAUSED_CHECKPOINT_ANNOTATION, RESUMING_ANNOTATION, ...PAUSE_BOOKKEEPING_ANNOTATIONS]) delete annotations[annotation];
  if (state.checkpoint) annotations[PAUSED_CHECKPOINT_ANNOTATION] = state.checkpoint;
  if (state.checkpoint && state.endBeforePause) annotations[END_BEFORE_PAUSE_ANNOTATION] = state.endBeforePause;
  return { ...sandbox, metadata: { ...sandbox.metadata, annotations }, spec: withEnd(sandbox.spec, state.end) };
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
