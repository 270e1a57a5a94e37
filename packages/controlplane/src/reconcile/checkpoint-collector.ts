/**
 * Removes the checkpoints the control plane made for itself and could not remove when it meant to,
 * in both deployment modes (on Kubernetes, on the leader only). Each is several GB on its node, and
 * nothing else would ever delete it:
 *
 * - a fork's own checkpoint (`isForkCheckpointName`): the fork deletes it once its copies run, but a
 *   crash or restart of the control plane meanwhile, a delete that failed, or a checkpoint whose
 *   creation got no answer and was saved only after `removeWhenSaved` gave up, leaves it behind.
 *   Removed once older than `forkGraceMs`, longer than a fork takes. The copies its fork made and
 *   never handed out (they still name it: FORK_IN_PROGRESS_ANNOTATION) are deleted first
 *   (CheckpointManager.deleteUnfinishedForkCopies): nobody has their names or access tokens.
 * - a pause's checkpoint (`isPauseCheckpointName`) that no Sandbox record names any more
 *   (PAUSED_CHECKPOINT_ANNOTATION): a resume whose final delete failed, or a paused sandbox deleted
 *   while no agent of its checkpoint's node was there to remove it. Removed once older than
 *   `pauseGraceMs`; one a record names — Paused, being paused or resumed, being deleted — never is.
 *
 * Level-triggered: every `intervalMs` it lists the checkpoints the ready agents report
 * (CheckpointManager.list) and then the records of their namespaces, so a record written before a
 * checkpoint was saved (a pause names its checkpoint first) is always seen. Checkpoints that users
 * named, or that `fsb checkpoint` named for them, do not match the predicates and are never touched;
 * nor is one an operation of this control plane uses now (CheckpointManager.inUse). A checkpoint
 * whose agent fails to delete it is tried again at the next pass; the pass goes on with the others.
 */
import type { Logger } from "pino";
import { NotFoundError } from "@fast-sandbox/api";
import { every, systemClock, type Clock, type Timer } from "../controller/clock.js";
import type { ResourceStore } from "../store/resource-store.js";
import { isForkCheckpointName, type Checkpoint, type CheckpointManager } from "../fastpath/checkpoint-manager.js";
import { isPauseCheckpointName, PAUSED_CHECKPOINT_ANNOTATION } from "../fastpath/checkpoint-pauses.js";

/** How often a pass runs. */
export const DEFAULT_CHECKPOINT_COLLECTION_INTERVAL_MS = 10 * 60_000;
/** How old a fork's checkpoint must be to be removed: far longer than a fork takes (its checkpoint call and restores). */
export const DEFAULT_FORK_CHECKPOINT_GRACE_MS = 60 * 60_000;
/**
 * How old an unnamed pause's checkpoint must be to be removed: longer than a pause takes
 * (PAUSE_TAKES_AT_MOST_MS), though a pause names its checkpoint on the record before saving it.
 */
export const DEFAULT_PAUSE_CHECKPOINT_GRACE_MS = 10 * 60_000;

/** When passes run and what they wait for; each field as in CheckpointCollectorOptions. */
export interface CheckpointCollectionTiming {
  /** How often a pass runs. @default DEFAULT_CHECKPOINT_COLLECTION_INTERVAL_MS (10 minutes) */
  intervalMs?: number;
  /** A fork's checkpoint younger than this is left alone. @default DEFAULT_FORK_CHECKPOINT_GRACE_MS (1 hour) */
  forkGraceMs?: number;
  /** A pause's checkpoint younger than this is left alone, named or not. @default DEFAULT_PAUSE_CHECKPOINT_GRACE_MS (10 minutes) */
  pauseGraceMs?: number;
}

export interface CheckpointCollectorOptions extends CheckpointCollectionTiming {
  /**
   * The checkpoints the ready agents report, removed through it (its delete refuses one a paused
   * sandbox holds), and the copies of the forks that did not finish.
   */
  checkpoints: Pick<CheckpointManager, "list" | "delete" | "inUse" | "deleteUnfinishedForkCopies">;
  /** Where the Sandbox records that name pauses' checkpoints are. */
  store: ResourceStore;
  logger: Logger;
  /** Times the passes and dates the checkpoints' ages. @default systemClock */
  clock?: Clock;
}

/** A checkpoint a pass removed, and why. */
export interface CollectedCheckpoint {
  namespace: string;
  name: string;
  /** The agents that reported it (and were asked to remove it). */
  agents: string[];
  reason: string;
  /** A fork's: the copies its fork made and never handed out, deleted with it. */
  forkCopies?: string[];
}

export class CheckpointCollector {
  private readonly options: CheckpointCollectorOptions;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private timer: Timer | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(options: CheckpointCollectorOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ component: "checkpoint-collector" });
  }

  /** Runs a pass every `intervalMs`, the first one interval from now. */
  start(): void {
    if (this.stopped || this.timer) return;
    this.timer = every(this.clock, this.options.intervalMs ?? DEFAULT_CHECKPOINT_COLLECTION_INTERVAL_MS, () => this.trigger());
  }

  /** Runs a pass unless one is running. */
  trigger(): void {
    if (this.stopped || this.running) return;
    this.running = this.pass()
      .catch((error: unknown) => this.logger.warn({ err: error }, "checkpoint collection failed; retrying at the next pass"))
      .finally(() => (this.running = undefined));
  }

  /** One pass (tests call it directly): removes what it may and returns what it removed. */
  async pass(): Promise<CollectedCheckpoint[]> {
    const nowMs = this.clock.now().getTime();
    const candidates = (await this.options.checkpoints.list("*")).flatMap((checkpoint) => {
      const found = this.reasonToCollect(checkpoint, nowMs);
      return found ? [{ checkpoint, ...found }] : [];
    });
    if (candidates.length === 0) return [];
    // Read after the checkpoints were listed: a record that names one of them is seen.
    const named = await this.namedByRecords(new Set(candidates.map(({ checkpoint }) => checkpoint.namespace)));
    const collected: CollectedCheckpoint[] = [];
    for (const { checkpoint, reason, fork } of candidates) {
      if (this.stopped) break;
      const key = `${checkpoint.namespace}/${checkpoint.name}`;
      if (named.has(key) || this.options.checkpoints.inUse(checkpoint.namespace, checkpoint.name)) continue;
      let forkCopies: string[] | undefined;
      try {
        // The copies first: once the checkpoint is gone, nothing would lead a later pass to them.
        if (fork) forkCopies = await this.options.checkpoints.deleteUnfinishedForkCopies(checkpoint.namespace, checkpoint.name);
        await this.options.checkpoints.delete(checkpoint.namespace, checkpoint.name, checkpoint.nodeName ? { node: checkpoint.nodeName } : {});
      } catch (error) {
        if (error instanceof NotFoundError) continue;
        this.logger.warn(
          { checkpoint: key, agents: checkpoint.agents, err: error },
          "could not remove a checkpoint the control plane made for itself; the next pass tries again",
        );
        continue;
      }
      this.logger.info(
        { checkpoint: key, agents: checkpoint.agents, node: checkpoint.nodeName, reason, ...(forkCopies?.length ? { forkCopies } : {}) },
        "removed a checkpoint the control plane made for itself",
      );
      collected.push({
        namespace: checkpoint.namespace,
        name: checkpoint.name,
        agents: checkpoint.agents,
        reason,
        ...(forkCopies?.length ? { forkCopies } : {}),
      });
    }
    return collected;
  }

  /** Stops the passes and waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.running;
  }

  /**
   * Why the checkpoint may go, if it is the control plane's own and old enough, and whether it is a
   * fork's (whose unfinished copies go with it); undefined: it stays.
   */
  private reasonToCollect(checkpoint: Checkpoint, nowMs: number): { reason: string; fork: boolean } | undefined {
    // An age that cannot be read is no age: the checkpoint stays.
    const ageMs = nowMs - Date.parse(checkpoint.createTime);
    if (isForkCheckpointName(checkpoint.name, checkpoint.sandbox)) {
      const graceMs = this.options.forkGraceMs ?? DEFAULT_FORK_CHECKPOINT_GRACE_MS;
      return ageMs >= graceMs ? { reason: `a fork's checkpoint older than ${minutes(graceMs)}, whose fork did not remove it`, fork: true } : undefined;
    }
    if (isPauseCheckpointName(checkpoint.name, checkpoint.sandbox)) {
      const graceMs = this.options.pauseGraceMs ?? DEFAULT_PAUSE_CHECKPOINT_GRACE_MS;
      return ageMs >= graceMs ? { reason: `a pause's checkpoint older than ${minutes(graceMs)} that no sandbox record names`, fork: false } : undefined;
    }
    return undefined;
  }

  /** The checkpoints (namespace/name) that Sandbox records of the namespaces name as their pause's. */
  private async namedByRecords(namespaces: Set<string>): Promise<Set<string>> {
    const named = new Set<string>();
    for (const namespace of namespaces) {
      const { items } = await this.options.store.list("Sandbox", { namespace });
      for (const sandbox of items) {
        const checkpoint = sandbox.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION];
        if (checkpoint) named.add(`${namespace}/${checkpoint}`);
      }
    }
    return named;
  }
}

function minutes(ms: number): string {
  return `${Math.round(ms / 60_000)} min`;
}
