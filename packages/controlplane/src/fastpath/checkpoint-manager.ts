/**
 * Checkpoints of gVisor sandboxes, restores from them and forks, on the fast path.
 *
 * A checkpoint lives on one node, in its pool's checkpoint directory there (the agent's
 * FSB_CHECKPOINT_DIR/<namespace>/<pool>; embedded: `<dataDir>/checkpoints/...`), and is known by
 * the agents that report it (ListCheckpoints): there is no record of it in the store. So every
 * lookup asks the namespace's ready agents, and a restore is placed on one of the agents that
 * reported the checkpoint — the registry restricts the placement to them (PlacementRequest.agents).
 *
 * - checkpoint: the sandbox runs on (its agent restores it in place), under its name, id and address.
 * - create from a checkpoint: a new sandbox of the checkpoint's pool and image, whose spec records the
 *   checkpointed command; its instance is restored, not started. A later replacement of that instance
 *   (reset, AutoRecreate) starts fresh from the image and that command: it does not restore again.
 * - fork: one checkpoint of a running sandbox, then `count` restores in parallel; the checkpoint is
 *   deleted once the copies run unless the request names it. All or nothing: a fork that cannot
 *   make every copy deletes those it made. One the fork could not delete (a crash or a restart
 *   meanwhile, a failed delete) is removed later by the checkpoint collector (its name says whose it
 *   is: `isForkCheckpointName`; reconcile/checkpoint-collector.ts). Until the fork answers, each copy
 *   names that checkpoint (FORK_IN_PROGRESS_ANNOTATION): copies of a fork cut short by a crash or a
 *   restart, which nobody was told of, go with its checkpoint (`deleteUnfinishedForkCopies`). A fork
 *   that keeps its checkpoint under the caller's name leaves such copies marked: that checkpoint is
 *   the caller's, and the collector never removes it.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import {
  API_VERSION,
  AlreadyExistsError,
  ConflictError,
  FailedPreconditionError,
  FsbError,
  NAME_MAX_LENGTH,
  NAME_PATTERN,
  NotFoundError,
  UnavailableError,
  ValidationError,
  normalizeImageName,
  validateSandbox,
  type Sandbox,
  type SandboxSpec,
} from "@fast-sandbox/api";
import { systemClock } from "../controller/clock.js";
import { gotNoAnswer, type AgentClient } from "../agent-client/agent-client.js";
import { canCheckpoint, type AgentCheckpoint, type AgentCheckpointClient } from "../agent-client/agent-checkpoints.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { hashAccessToken, newAccessToken } from "../proxy/access-token.js";
import { isPauseCheckpointName, PAUSED_CHECKPOINT_ANNOTATION } from "./checkpoint-pauses.js";
import { newInstanceId } from "./instance-id.js";
import { setCondition } from "./sandbox-status.js";
import { DEFAULT_NAMESPACE, type AgentClients, type CreateSandboxInput, type SandboxManager } from "./sandbox-manager.js";

/** On a sandbox restored from a checkpoint: the checkpoint's name. */
export const RESTORED_FROM_ANNOTATION = "sandbox.fast.io/restored-from";
/**
 * On each copy of a fork while the fork runs: the name of the fork's checkpoint. The fork removes it
 * before it answers, so a copy that has it once its fork is over was never handed to anyone.
 */
export const FORK_IN_PROGRESS_ANNOTATION = "sandbox.fast.io/fork-in-progress";
/** The most copies one fork makes. */
export const MAX_FORK_COUNT = 32;
/** How long a lookup waits for each agent's list of checkpoints. */
const LIST_TIMEOUT_MS = 5_000;
/** `removeWhenSaved`: how often it looks for the checkpoint, and for how long. */
const UNANSWERED_POLL_MS = 5_000;
const UNANSWERED_PATIENCE_MS = 10 * 60_000;
/** A copy's metadata write at the end of its fork, tried this many times when other writers keep changing it first. */
const HAND_OVER_ATTEMPTS = 5;
/** `failIfStopped`'s conditional write, tried this many times when other writers keep changing the record first. */
const FAIL_IF_STOPPED_ATTEMPTS = 5;
/** A fork's own checkpoint ends in `-fork-` and 10 hex digits: 16 characters. */
const FORK_SUFFIX_LENGTH = 16;

/**
 * The name of the checkpoint a fork of `source` makes for itself and deletes once its copies run:
 * `<source>-fork-<10 hex digits>`, the source's name cut to fit.
 */
export function forkCheckpointName(source: string): string {
  return `${source.slice(0, NAME_MAX_LENGTH - FORK_SUFFIX_LENGTH)}-fork-${randomBytes(5).toString("hex")}`;
}

/**
 * Whether `name` is one `forkCheckpointName` makes for a checkpoint of sandbox `source`: a fork's own,
 * which the checkpoint collector removes when its fork could not (reconcile/checkpoint-collector.ts).
 * The source is part of the test, so a user's checkpoint of a sandbox named `x-fork`, unnamed
 * (`x-fork-<10 hex digits>`), is not taken for a fork's of `x`.
 */
export function isForkCheckpointName(name: string, source: string): boolean {
  const prefix = `${source.slice(0, NAME_MAX_LENGTH - FORK_SUFFIX_LENGTH)}-fork-`;
  return source !== "" && name.startsWith(prefix) && /^[0-9a-f]{10}$/.test(name.slice(prefix.length));
}

/**
 * The name a checkpoint of sandbox `source` gets when its user names none: `<source>-<10 hex digits>`,
 * the source's name cut to fit. Cut so, the name of a source of 52 characters or more with `-fork` as
 * its 48th to 52nd reads as a fork's checkpoint (`isForkCheckpointName`), which the checkpoint
 * collector would remove: such a source's name is cut one character shorter. That name has 62
 * characters, and a fork's or a pause's checkpoint of that source has 63, so neither predicate takes it.
 */
export function defaultCheckpointName(source: string): string {
  const suffix = randomBytes(5).toString("hex");
  const name = `${source.slice(0, NAME_MAX_LENGTH - 11)}-${suffix}`;
  if (!isForkCheckpointName(name, source) && !isPauseCheckpointName(name, source)) return name;
  return `${source.slice(0, NAME_MAX_LENGTH - 12)}-${suffix}`;
}

/** A checkpoint, as the API shows it. */
export interface Checkpoint {
  namespace: string;
  name: string;
  /** Its id on its node. */
  id: string;
  /** The sandbox it was taken of: its name and instance id. */
  sandbox: string;
  sandboxId: string;
  pool: string;
  image: string;
  /** The checkpointed command and working directory (restored copies run on from where it was). */
  command: string[];
  workingDir: string;
  /** `shared` or `isolated`. */
  networkMode: string;
  /** RFC 3339. */
  createTime: string;
  sizeBytes: number;
  /** The node that holds it and the agents there that reported it (restores go to one of them). */
  nodeName: string;
  agents: string[];
}

export interface CheckpointManagerOptions {
  manager: SandboxManager;
  store: ResourceStore;
  registry: AgentRegistry;
  agents: AgentClients;
  logger: Logger;
  /** `removeWhenSaved`'s polling: how often, and for how long. @default { pollMs: 5 s, patienceMs: 10 min } */
  unansweredCheckpoints?: { pollMs: number; patienceMs: number };
}

export interface CheckpointDeleteOptions {
  /**
   * The node the checkpoint is known to be on (a paused sandbox's): when none of the answers has it
   * and an agent of that node did not answer, the delete fails with UnavailableError rather than
   * NotFoundError.
   */
  node?: string;
}

export interface CreateFromCheckpointInput extends Omit<CreateSandboxInput, "restore" | "spec"> {
  /** The checkpoint's name in the input's namespace. */
  fromCheckpoint: string;
  /** May leave out image and poolRef (they are the checkpoint's); command, args, envs and workingDir must be empty. */
  spec?: Partial<SandboxSpec>;
}

export interface ForkInput {
  namespace?: string;
  /** The running sandbox to copy. */
  name: string;
  count: number;
  /** Keep the checkpoint under this name; empty: it is deleted once the copies run. */
  checkpoint?: string;
  labels?: Record<string, string>;
  /** Stored with every copy (e.g. who made it, CREATED_BY_ANNOTATION). */
  annotations?: Record<string, string>;
}

export interface ForkResult {
  sandboxes: { sandbox: Sandbox; accessToken: string }[];
  /** The checkpoint, when the input named one to keep. */
  checkpoint?: Checkpoint;
}

export class CheckpointManager {
  private readonly options: CheckpointManagerOptions;
  private readonly logger: Logger;
  /** Checkpoint names being created now (namespace/name): a second one of a name fails fast. */
  private readonly creating = new Set<string>();
  /** Checkpoints (namespace/name) that forks and restores of this control plane use now, with how many use each. */
  private readonly using = new Map<string, number>();
  /** Stops the background removals of `removeWhenSaved`. */
  private readonly closing = new AbortController();

  constructor(options: CheckpointManagerOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: "checkpoints" });
  }

  /**
   * Checkpoints a running sandbox of a gVisor pool; it runs on, unless `leaveStopped` (a pause,
   * checkpoint-pauses.ts): then its agent leaves it without a task, its container and address kept.
   * `current`: the sandbox as read by a caller that holds it (SandboxManager.exclusively), not read again.
   */
  async checkpoint(input: { namespace?: string; sandbox: string; checkpoint?: string; leaveStopped?: boolean; current?: Sandbox }): Promise<Checkpoint> {
    const namespace = input.namespace || DEFAULT_NAMESPACE;
    const name = input.checkpoint || defaultCheckpointName(input.sandbox);
    checkName(name, input.checkpoint ? "checkpoint" : "name");
    const key = `${namespace}/${name}`;
    if (this.creating.has(key)) throw new AlreadyExistsError(`checkpoint ${key} is being created; choose another name`);
    this.creating.add(key);
    try {
      const { sandbox, client } = await this.checkpointable(namespace, input.sandbox, input.current);
      if (await this.find(namespace, name))
        throw new AlreadyExistsError(`checkpoint ${key} already exists; choose another name or delete it first ('fsb checkpoint rm ${name}')`);
      const agentName = sandbox.status?.assignedPod ?? "";
      const made = await client
        .checkpointSandbox({
          sandboxId: sandbox.status?.sandboxID ?? "",
          checkpointId: newInstanceId(),
          namespace,
          name,
          ...(input.leaveStopped ? { leaveStopped: true } : {}),
        })
        .catch(async (error: unknown) => {
          // A pause answers for its own sandbox (checkpoint-pauses.ts); one that got no answer may still be saving.
          if (!input.leaveStopped && !gotNoAnswer(error)) await this.failIfStopped(sandbox, client, name, error);
          throw error;
        });
      this.logger.info({ checkpoint: key, sandbox: sandbox.metadata.name, agent: agentName, sizeBytes: made.sizeBytes }, "sandbox checkpointed");
      return this.view(made, [agentName]);
    } finally {
      this.creating.delete(key);
    }
  }

  /**
   * A checkpoint that failed after runsc stopped its sandbox (saved, but the sandbox could not run
   * on from it): the sandbox is Failed, not Running over an instance without a task. One that still
   * runs, or whose agent cannot be asked, is left as it is; so is one that is no longer that Running
   * sandbox: a pause of it (which does not wait for this checkpoint) may have overtaken it — its
   * intent named its checkpoint, or the record is Paused — and removed its instance, which is why the
   * call found none. The write is conditional on the record as read: a record that changed meanwhile
   * is read and judged again, never overwritten.
   */
  private async failIfStopped(sandbox: Sandbox, client: AgentClient, checkpoint: string, cause: unknown): Promise<void> {
    const sandboxId = sandbox.status?.sandboxID ?? "";
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const key = `${namespace}/${sandbox.metadata.name}`;
    try {
      const state = await client
        .listSandboxes()
        .then((sandboxes) => sandboxes.find((s) => s.sandboxId === sandboxId)?.state ?? "gone")
        .catch(() => undefined);
      if (state === undefined || state === "running") return;
      const reason = FsbError.from(cause).message;
      for (let attempt = 1; ; attempt++) {
        const fresh = await this.options.store.get("Sandbox", { namespace, name: sandbox.metadata.name });
        if (
          !fresh ||
          fresh.metadata.uid !== sandbox.metadata.uid ||
          fresh.status?.sandboxID !== sandboxId ||
          fresh.metadata.deletionTimestamp ||
          fresh.status.phase !== "Running" ||
          fresh.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION]
        )
          return;
        const now = systemClock.now();
        const conditions = setCondition(
          fresh.status.conditions,
          {
            type: "Ready",
            status: "False",
            reason: "CheckpointFailed",
            message: `it stopped in checkpoint ${checkpoint} and could not run on (${reason}); reset it to start it afresh from its image ('fsb reset'), delete it, or restore a copy from the checkpoint if it was saved ('fsb checkpoint ls')`,
          },
          now,
        );
        try {
          await this.options.store.updateStatus("Sandbox", { ...fresh, status: { ...fresh.status, phase: "Failed", conditions } });
          this.logger.error(
            { sandbox: key, sandboxId, checkpoint, err: cause },
            "a checkpoint stopped its sandbox, which could not run on; the sandbox is Failed",
          );
          return;
        } catch (error) {
          if (!(error instanceof ConflictError) || attempt >= FAIL_IF_STOPPED_ATTEMPTS) throw error;
        }
      }
    } catch (error) {
      this.logger.error({ sandbox: key, err: error }, "could not record the outcome of a failed checkpoint");
    }
  }

  /**
   * Removes what a failed checkpoint of a fork (whose name only the fork knew) may have left: one
   * saved before the failure (its sandbox could not run on) now; one that got no answer once it is
   * listed (removeWhenSaved).
   */
  async discardFailed(namespace: string, name: string, cause: unknown): Promise<void> {
    if (gotNoAnswer(cause)) {
      this.removeWhenSaved(namespace, name);
      return;
    }
    try {
      await this.delete(namespace, name);
      this.logger.info({ checkpoint: `${namespace}/${name}` }, "a fork's checkpoint was saved before the fork failed; it is removed");
    } catch (error) {
      if (!(error instanceof NotFoundError))
        this.logger.warn({ checkpoint: `${namespace}/${name}`, err: error }, "could not remove a failed fork's checkpoint");
    }
  }

  /**
   * Whether an operation of this control plane uses the checkpoint now: it is being created, a fork
   * made it and has not finished, or a sandbox is being restored from it. The checkpoint collector
   * leaves such a one alone. Another replica's operations are not known here (its grace periods cover them).
   */
  inUse(namespace: string, name: string): boolean {
    const key = `${namespace}/${name}`;
    return this.creating.has(key) || this.using.has(key);
  }

  /** Runs `work` with the checkpoint marked in use (`inUse`). */
  private async use<T>(namespace: string, name: string, work: () => Promise<T>): Promise<T> {
    const key = `${namespace}/${name}`;
    this.using.set(key, (this.using.get(key) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = (this.using.get(key) ?? 1) - 1;
      if (left > 0) this.using.set(key, left);
      else this.using.delete(key);
    }
  }

  /** Every checkpoint of the namespace (`*`: of every namespace) that a ready agent reports. */
  async list(namespace?: string): Promise<Checkpoint[]> {
    const all = namespace === "*";
    const checkpoints = await this.lookup(all ? undefined : namespace || DEFAULT_NAMESPACE);
    return checkpoints.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.createTime.localeCompare(b.createTime) || a.name.localeCompare(b.name));
  }

  async get(namespace: string | undefined, name: string): Promise<Checkpoint> {
    const ns = namespace || DEFAULT_NAMESPACE;
    if (!name) throw new ValidationError("name", "name the checkpoint");
    const found = await this.find(ns, name);
    if (!found) throw new NotFoundError(`checkpoint ${ns}/${name} not found; 'fsb checkpoint ls' lists the checkpoints`);
    return found;
  }

  /**
   * Removes the checkpoint's files from its node; sandboxes restored from it run on. A checkpoint that
   * holds a paused sandbox (checkpoint-pauses.ts) goes with that sandbox, not before: FailedPreconditionError.
   */
  async delete(namespace: string | undefined, name: string, options: CheckpointDeleteOptions = {}): Promise<void> {
    const checkpoint = options.node ? await this.getFromNode(namespace || DEFAULT_NAMESPACE, name, options.node) : await this.get(namespace, name);
    const { items } = await this.options.store.list("Sandbox", { namespace: checkpoint.namespace });
    const paused = items.find((sandbox) => !sandbox.metadata.deletionTimestamp && sandbox.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] === name);
    if (paused) {
      throw new FailedPreconditionError(
        `checkpoint ${checkpoint.namespace}/${name} holds paused sandbox ${paused.metadata.name} (its memory and files): resume or delete that sandbox instead, which removes it`,
      );
    }
    // The pool's agents on a node share its directory: the first removes it, the others find nothing.
    for (const agentName of checkpoint.agents) await this.client(agentName, checkpoint.namespace).deleteCheckpoint(checkpoint.id);
    this.logger.info({ checkpoint: `${checkpoint.namespace}/${checkpoint.name}` }, "checkpoint deleted");
  }

  /**
   * Removes, in the background, a checkpoint whose creation got no answer (the call's deadline passed
   * or its connection broke) and whose name only the caller knew (a fork's): its agent may still be
   * saving it, and nobody would ever delete it. Looks for it every little while and deletes it once
   * it is listed; gives up (logged) after a while.
   */
  removeWhenSaved(namespace: string, name: string): void {
    const { pollMs, patienceMs } = this.options.unansweredCheckpoints ?? { pollMs: UNANSWERED_POLL_MS, patienceMs: UNANSWERED_PATIENCE_MS };
    const key = `${namespace}/${name}`;
    const signal = this.closing.signal;
    const remove = async () => {
      for (let waited = 0; waited < patienceMs; waited += pollMs) {
        await sleep(pollMs, undefined, { signal, ref: false });
        try {
          await this.delete(namespace, name);
          this.logger.info({ checkpoint: key }, "a checkpoint whose creation got no answer was saved after all; it is removed");
          return;
        } catch (error) {
          if (!(error instanceof NotFoundError))
            this.logger.debug({ checkpoint: key, err: error }, "a checkpoint whose creation got no answer is not removed yet");
        }
      }
      this.logger.warn(
        { checkpoint: key },
        "a checkpoint whose creation got no answer was not found to remove; if it appears, the checkpoint collector or 'fsb checkpoint rm' removes it",
      );
    };
    remove().catch((error: unknown) => {
      if (!signal.aborted) this.logger.warn({ checkpoint: key, err: error }, "could not remove a checkpoint whose creation got no answer");
    });
  }

  /** Stops the background work (`removeWhenSaved`). */
  close(): void {
    this.closing.abort();
  }

  /** Removes every checkpoint of a pool that its ready agents report (the pool is being deleted). */
  async deletePoolCheckpoints(namespace: string, pool: string): Promise<number> {
    const checkpoints = (await this.lookup(namespace)).filter((checkpoint) => checkpoint.pool === pool);
    for (const checkpoint of checkpoints) {
      for (const agentName of checkpoint.agents) await this.client(agentName, checkpoint.namespace).deleteCheckpoint(checkpoint.id);
    }
    if (checkpoints.length > 0)
      this.logger.info({ pool: `${namespace}/${pool}`, checkpoints: checkpoints.map((c) => c.name) }, "pool deleted: its checkpoints are removed");
    return checkpoints.length;
  }

  /**
   * Creates a sandbox restored from a checkpoint, on an agent that holds it. Only ready agents report
   * checkpoints: when the caller names the pool and it has none ready (scaled to zero), the restore
   * wakes it and waits for an agent (`wakeTimeoutSeconds`) before it looks again. On Kubernetes that
   * agent holds the checkpoint only if it lands on the checkpoint's node.
   */
  async createFrom(input: CreateFromCheckpointInput): Promise<Sandbox> {
    const namespace = input.namespace || DEFAULT_NAMESPACE;
    const given = input.spec ?? {};
    const checkpoint = await this.get(namespace, input.fromCheckpoint).catch(async (error: unknown) => {
      if (!(error instanceof NotFoundError) || !given.poolRef || !input.fromCheckpoint) throw error;
      const anyReady = this.options.registry.listAgents({ namespace, pool: given.poolRef }).some((agent) => agent.ready);
      if (anyReady || !(await this.options.manager.awaitReadyAgent(namespace, given.poolRef))) throw error;
      return this.get(namespace, input.fromCheckpoint);
    });
    if (given.image && normalizeImageName(given.image) !== normalizeImageName(checkpoint.image)) {
      throw new ValidationError(
        "spec.image",
        `a sandbox restored from checkpoint ${checkpoint.name} runs its image ${checkpoint.image}; leave the image empty`,
      );
    }
    if (given.poolRef && given.poolRef !== checkpoint.pool) {
      throw new ValidationError(
        "spec.poolRef",
        `checkpoint ${checkpoint.name} is in pool ${checkpoint.pool} (on node ${checkpoint.nodeName}); restore it there (leave the pool empty)`,
      );
    }
    for (const field of ["command", "args", "envs", "workingDir"] as const) {
      const value = given[field];
      if (value !== undefined && value !== "" && !(Array.isArray(value) && value.length === 0)) {
        throw new ValidationError(`spec.${field}`, `a restored sandbox runs on the checkpoint's processes, with their environment: leave ${field} empty`);
      }
    }
    const spec: SandboxSpec = {
      ...given,
      image: checkpoint.image,
      poolRef: checkpoint.pool,
      // What runs is the checkpoint's command: the record says so (and a replacement starts it afresh).
      command: checkpoint.command,
      ...(checkpoint.workingDir && checkpoint.workingDir !== "/" ? { workingDir: checkpoint.workingDir } : {}),
    };
    const { fromCheckpoint: _name, spec: _spec, ...rest } = input;
    return this.use(namespace, checkpoint.name, () =>
      this.options.manager.create({
        ...rest,
        spec,
        annotations: { ...input.annotations, [RESTORED_FROM_ANNOTATION]: checkpoint.name },
        restore: { checkpointId: checkpoint.id, agents: checkpoint.agents },
      }),
    );
  }

  /** `count` running copies of a running gVisor sandbox, from one checkpoint of it. */
  async fork(input: ForkInput): Promise<ForkResult> {
    const namespace = input.namespace || DEFAULT_NAMESPACE;
    if (!Number.isInteger(input.count) || input.count < 1 || input.count > MAX_FORK_COUNT) {
      throw new ValidationError("count", `${input.count} copies: give a number from 1 to ${MAX_FORK_COUNT}`);
    }
    // Each copy's create refuses a bad label (validateSandbox), but only once the source has been
    // checkpointed (stopped meanwhile) and the checkpoint saved: checked as it checks them, first. The
    // name is a stand-in, so that only the labels are judged here.
    if (input.labels) validateSandbox({ apiVersion: API_VERSION, kind: "Sandbox", metadata: { name: "copy", labels: input.labels } }, { parts: ["metadata"] });
    const keep = Boolean(input.checkpoint);
    const name = input.checkpoint || forkCheckpointName(input.name);
    // In use from before it exists until the fork has deleted it (or failed to): not the collector's yet.
    return this.use(namespace, name, () => this.forkFrom(input, namespace, name, keep));
  }

  /** `fork`, under the name of its checkpoint. */
  private async forkFrom(input: ForkInput, namespace: string, name: string, keep: boolean): Promise<ForkResult> {
    // The copies run on the source's processes, under the source's network policy: an egress it
    // narrowed from its pool's is theirs too (not the pool's, which may allow more).
    const source = await this.options.manager.get(namespace, input.name);
    let checkpoint: Checkpoint;
    try {
      checkpoint = await this.checkpoint({ namespace, sandbox: input.name, checkpoint: name, current: source });
    } catch (error) {
      if (!keep) await this.discardFailed(namespace, name, error);
      throw error;
    }
    const base = input.name.slice(0, NAME_MAX_LENGTH - 11);
    const results = await Promise.allSettled(
      Array.from({ length: input.count }, async () => {
        const accessToken = newAccessToken();
        const sandbox = await this.createFrom({
          namespace,
          name: `${base}-${randomBytes(5).toString("hex")}`,
          fromCheckpoint: checkpoint.name,
          ...(source.spec.egress ? { spec: { egress: source.spec.egress } } : {}),
          ...(input.labels ? { labels: input.labels } : {}),
          // Should this process stop before the fork answers, nobody learns of the copy: the
          // checkpoint collector deletes it with the fork's checkpoint (deleteUnfinishedForkCopies).
          annotations: { ...input.annotations, [FORK_IN_PROGRESS_ANNOTATION]: checkpoint.name },
          accessTokenHash: hashAccessToken(accessToken),
        });
        return { sandbox, accessToken };
      }),
    );
    let made = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    let failed = results.find((result): result is PromiseRejectedResult => result.status === "rejected");
    let what = `${made.length} of ${input.count} copies ran before one failed`;
    if (!failed) {
      // Before the checkpoint is deleted: a copy still marked when the collector finds the
      // checkpoint (its delete below failed) would be deleted after the caller got it.
      const handed = await Promise.allSettled(made.map(async ({ sandbox, accessToken }) => ({ sandbox: await this.handOver(sandbox), accessToken })));
      failed = handed.find((result): result is PromiseRejectedResult => result.status === "rejected");
      if (failed) what = `its ${input.count} copies ran but one could not be handed over`;
      else made = handed.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    }
    /** Copies of a failed fork that could not be deleted: still marked with the fork's checkpoint. */
    let left: string[] = [];
    if (failed) {
      // All or nothing: the caller learns of no sandbox it would have to find and delete.
      const deletes = await Promise.allSettled(
        made.map(({ sandbox }) =>
          this.options.manager.delete(namespace, sandbox.metadata.name, 0).catch((error: unknown) => {
            if (!(error instanceof NotFoundError)) throw error;
          }),
        ),
      );
      left = made.flatMap(({ sandbox }, index) => (deletes[index]?.status === "rejected" ? [sandbox.metadata.name] : []));
    }
    if (left.length > 0) {
      // The collector finds the copies a fork left only through its checkpoint (deleteUnfinishedForkCopies):
      // it stays, and goes with them (a named one is the caller's, which the collector never removes).
      this.logger.warn(
        { checkpoint: checkpoint.name, sandboxes: left },
        keep
          ? "a failed fork could not delete some of its copies, nor is its checkpoint deleted; delete them ('fsb rm') and the checkpoint ('fsb checkpoint rm')"
          : "a failed fork could not delete some of its copies; they go with its checkpoint, which the checkpoint collector removes",
      );
    } else if (!keep || failed) {
      await this.delete(namespace, checkpoint.name).catch((error: unknown) =>
        this.logger.warn({ err: error, checkpoint: checkpoint.name }, "could not delete a fork's checkpoint; 'fsb checkpoint rm' removes it"),
      );
    }
    if (failed) {
      const error = FsbError.from(failed.reason);
      const removed =
        left.length === 0
          ? "all removed"
          : keep
            ? `copies ${left.join(", ")} and checkpoint ${checkpoint.name} could not be removed: delete them`
            : `copies ${left.join(", ")} could not be removed yet: they go with checkpoint ${checkpoint.name}, which the checkpoint collector removes`;
      throw new FsbError(error.code, `fork of ${namespace}/${input.name}: ${what} (${removed}): ${error.message}`, { cause: error });
    }
    return { sandboxes: made, ...(keep ? { checkpoint } : {}) };
  }

  /**
   * A copy of a fork that is about to answer, without FORK_IN_PROGRESS_ANNOTATION: the caller's from
   * now on, never deleted with the fork's checkpoint. Its status is the one its create answered (a
   * copy of fast consistency may not have it stored yet); only its metadata is written.
   */
  private async handOver(copy: Sandbox): Promise<Sandbox> {
    const key = { namespace: copy.metadata.namespace ?? DEFAULT_NAMESPACE, name: copy.metadata.name };
    let current = copy;
    for (let attempt = 1; ; attempt++) {
      const { [FORK_IN_PROGRESS_ANNOTATION]: _fork, ...annotations } = current.metadata.annotations ?? {};
      try {
        const written = await this.options.store.update("Sandbox", { ...current, metadata: { ...current.metadata, annotations } });
        return { ...copy, metadata: written.metadata };
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= HAND_OVER_ATTEMPTS) throw error;
        const fresh = await this.options.store.get("Sandbox", key);
        if (!fresh || fresh.metadata.uid !== copy.metadata.uid) throw new NotFoundError(`sandbox ${key.namespace}/${key.name}, a copy of the fork, is gone`);
        current = fresh;
      }
    }
  }

  /**
   * Deletes the copies that an unfinished fork made from checkpoint `name` (they still have
   * FORK_IN_PROGRESS_ANNOTATION): a crash or a restart of the control plane stopped the fork before
   * it answered, so nobody has their names or access tokens, and without an end they would run on
   * for good. The checkpoint collector calls it when it finds that fork's checkpoint abandoned; a
   * fork that answered has removed the annotation from its copies. Returns the names of those deleted.
   */
  async deleteUnfinishedForkCopies(namespace: string, name: string): Promise<string[]> {
    const { items } = await this.options.store.list("Sandbox", { namespace });
    const copies = items
      .filter((sandbox) => !sandbox.metadata.deletionTimestamp && sandbox.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION] === name)
      .map((sandbox) => sandbox.metadata.name);
    for (const copy of copies) {
      await this.options.manager.delete(namespace, copy, 0).catch((error: unknown) => {
        if (!(error instanceof NotFoundError)) throw error;
      });
    }
    if (copies.length > 0)
      this.logger.info({ checkpoint: `${namespace}/${name}`, sandboxes: copies }, "deleted the copies of a fork that did not finish, which nobody was told of");
    return copies;
  }

  /** The sandbox, if it can be checkpointed now, and its agent's client. */
  private async checkpointable(namespace: string, name: string, current?: Sandbox): Promise<{ sandbox: Sandbox; client: AgentClient & AgentCheckpointClient }> {
    const sandbox = current ?? (await this.options.manager.get(namespace, name));
    const pool = await this.options.store.get("SandboxPool", { namespace, name: sandbox.spec.poolRef });
    const runtimeType = pool?.spec.runtimeType ?? "container";
    if (runtimeType !== "gvisor") {
      throw new FailedPreconditionError(
        `checkpoint needs runtimeType gvisor: sandbox ${namespace}/${name} is in pool ${sandbox.spec.poolRef}, whose runtimeType is ${runtimeType}`,
      );
    }
    if (sandbox.metadata.deletionTimestamp) throw new FailedPreconditionError(`sandbox ${namespace}/${name} is being deleted`);
    const agentName = sandbox.status?.assignedPod;
    if (sandbox.status?.phase !== "Running" || !agentName || !sandbox.status.sandboxID) {
      throw new FailedPreconditionError(`sandbox ${namespace}/${name} is ${sandbox.status?.phase ?? "Pending"}: only a Running sandbox can be checkpointed`);
    }
    return { sandbox, client: this.client(agentName, namespace) };
  }

  /** The client of an agent, for a call about a sandbox or checkpoint of `namespace`: an agent of another namespace is not there. */
  private client(agentName: string, namespace: string): AgentClient & AgentCheckpointClient {
    const client = this.options.agents.get(agentName, namespace);
    if (!client) throw new UnavailableError(`agent ${agentName} is not connected; retry shortly`);
    if (!canCheckpoint(client)) throw new FailedPreconditionError(`agent ${agentName} cannot checkpoint (it predates checkpoints)`);
    return client;
  }

  private async find(namespace: string, name: string): Promise<Checkpoint | undefined> {
    return (await this.lookup(namespace)).find((checkpoint) => checkpoint.name === name);
  }

  /**
   * The checkpoint, known to be on `node`: not found only when every ready agent of that node said
   * so. One that did not answer may hold it: UnavailableError, not a NotFoundError a caller would
   * take for "already gone".
   */
  async getFromNode(namespace: string, name: string, node: string): Promise<Checkpoint> {
    const { checkpoints, unanswered } = await this.lookupReport(namespace);
    const found = checkpoints.find((checkpoint) => checkpoint.name === name);
    if (found) return found;
    const silent = unanswered.filter((agent) => this.options.registry.getAgent(agent)?.nodeName === node);
    if (silent.length > 0) {
      throw new UnavailableError(
        `checkpoint ${namespace}/${name} is on node ${node}, whose agent ${silent.join(", ")} did not list its checkpoints in time; retry shortly`,
      );
    }
    throw new NotFoundError(`checkpoint ${namespace}/${name} not found; 'fsb checkpoint ls' lists the checkpoints`);
  }

  /**
   * The checkpoints the ready agents (of `namespace`, or all) report, merged by id: each with the
   * agents that reported it. An agent that does not answer in time is left out.
   */
  private async lookup(namespace: string | undefined): Promise<Checkpoint[]> {
    return (await this.lookupReport(namespace)).checkpoints;
  }

  /** `lookup`, and the ready agents that did not answer in time (or are not connected). */
  private async lookupReport(namespace: string | undefined): Promise<{ checkpoints: Checkpoint[]; unanswered: string[] }> {
    const agents = this.options.registry.listAgents(namespace === undefined ? {} : { namespace }).filter((agent) => agent.ready);
    const unanswered: string[] = [];
    const reports = await Promise.all(
      agents.map(async (agent) => {
        const client = this.options.agents.get(agent.name, agent.namespace);
        // Ready but not connected: it cannot answer now (one that predates checkpoints holds none).
        if (!client) unanswered.push(agent.name);
        if (!client || !canCheckpoint(client)) return [];
        try {
          const listed = await withTimeout(client.listCheckpoints(), LIST_TIMEOUT_MS, `agent ${agent.name} did not list its checkpoints in time`);
          return listed.map((checkpoint) => ({ agent: agent.name, checkpoint }));
        } catch (error) {
          this.logger.debug({ err: error, agent: agent.name }, "an agent's checkpoints are left out of a lookup");
          unanswered.push(agent.name);
          return [];
        }
      }),
    );
    const byId = new Map<string, { checkpoint: AgentCheckpoint; agents: string[] }>();
    for (const { agent, checkpoint } of reports.flat()) {
      if (namespace !== undefined && checkpoint.namespace !== namespace) continue;
      const entry = byId.get(checkpoint.checkpointId);
      if (entry) entry.agents.push(agent);
      else byId.set(checkpoint.checkpointId, { checkpoint, agents: [agent] });
    }
    return { checkpoints: [...byId.values()].map(({ checkpoint, agents: holders }) => this.view(checkpoint, holders.sort())), unanswered: unanswered.sort() };
  }

  private view(checkpoint: AgentCheckpoint, agents: string[]): Checkpoint {
    const nodeName = agents.map((name) => this.options.registry.getAgent(name)?.nodeName).find(Boolean) ?? "";
    return {
      namespace: checkpoint.namespace,
      name: checkpoint.name,
      id: checkpoint.checkpointId,
      sandbox: checkpoint.sourceName,
      sandboxId: checkpoint.sourceSandboxId,
      pool: checkpoint.pool,
      image: checkpoint.image,
      command: checkpoint.command,
      workingDir: checkpoint.workingDir,
      networkMode: checkpoint.networkMode,
      createTime: checkpoint.createdAt,
      sizeBytes: checkpoint.sizeBytes,
      nodeName,
      agents,
    };
  }
}

function checkName(name: string, field: string): void {
  if (name.length > NAME_MAX_LENGTH || !new RegExp(NAME_PATTERN).test(name)) {
    throw new ValidationError(
      field,
      `${JSON.stringify(name)} is not a valid checkpoint name: lower-case letters, digits and '-', at most ${NAME_MAX_LENGTH} characters`,
    );
  }
}

async function withTimeout<T>(work: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new UnavailableError(message)), timeoutMs)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
