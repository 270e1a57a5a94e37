/**
 * The agent API's checkpoint calls — CheckpointSandbox, ResumeSandbox, ListCheckpoints,
 * DeleteCheckpoint — over the runtime's `checkpoints` (runtime/checkpoint.ts), and the guard that
 * keeps the rest of the API truthful while a sandbox is being checkpointed.
 *
 * A checkpoint stops the sandbox's task (runsc saves it and exits) and, unless it is left stopped,
 * restores it in place about half a second later. In between, containerd reports a stopped task with
 * an exit status, which is not the command exiting: the guarded runtime reports such a sandbox as
 * running, lets a `wait` (logs -f) go on waiting for the restored task, and makes a delete or an
 * exec wait until the checkpoint is over; a checkpoint of a sandbox being deleted is refused. A
 * create with `fromCheckpoint` goes to the checkpoints.
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, isSandboxId, pb, toConnectError } from "@fast-sandbox/api/core";
import type { Runtime, RuntimeSandbox } from "../runtime/runtime.js";
import type { RuntimeCheckpoint, RuntimeCheckpoints } from "../runtime/checkpoint.js";

/**
 * The checkpoint (or in-place resume) running for each sandbox: at most one at a time, and none
 * while the sandbox is being deleted. A checkpoint restores the sandbox in place after its save, so
 * one that started under a delete would make a task again beside (or after) the delete's teardown.
 */
export class CheckpointsInFlight {
  private readonly running = new Map<string, Promise<unknown>>();
  /** Per sandbox: how many checkpoints of it started (a waiter tells its task's exit from one). */
  private readonly started = new Map<string, number>();
  /** Per sandbox: how many deletes of it are in progress (waiting for a checkpoint to settle included). */
  private readonly deletes = new Map<string, number>();

  /** Runs `work` for the sandbox; FailedPreconditionError when one already runs for it, or the sandbox is being deleted. */
  async run<T>(sandboxId: string, work: () => Promise<T>): Promise<T> {
    if (this.deletes.has(sandboxId)) throw new FailedPreconditionError(`sandbox ${sandboxId} is being deleted`);
    if (this.running.has(sandboxId)) throw new FailedPreconditionError(`sandbox ${sandboxId} is being checkpointed already; retry once that is done`);
    this.started.set(sandboxId, this.startedFor(sandboxId) + 1);
    const running = work();
    this.running.set(sandboxId, running);
    try {
      return await running;
    } finally {
      this.running.delete(sandboxId);
    }
  }

  has(sandboxId: string): boolean {
    return this.running.has(sandboxId);
  }

  /**
   * Runs a delete of the sandbox: it first waits for the checkpoint in flight to settle, and from
   * its start until it settles no checkpoint of the sandbox starts (`run` refuses).
   */
  async deleting<T>(sandboxId: string, work: () => Promise<T>): Promise<T> {
    this.deletes.set(sandboxId, (this.deletes.get(sandboxId) ?? 0) + 1);
    try {
      await this.settled(sandboxId);
      return await work();
    } finally {
      const left = (this.deletes.get(sandboxId) ?? 1) - 1;
      if (left > 0) this.deletes.set(sandboxId, left);
      else this.deletes.delete(sandboxId);
    }
  }

  startedFor(sandboxId: string): number {
    return this.started.get(sandboxId) ?? 0;
  }

  /** Resolves once no checkpoint of the sandbox runs, whatever its outcome. */
  async settled(sandboxId: string): Promise<void> {
    await this.running.get(sandboxId)?.catch(() => undefined);
  }

  /**
   * Resolves when no checkpoint runs any more (one started meanwhile included), whatever their
   * outcomes, or after `timeoutMs`; true when none is left. A stopping agent waits here: a
   * checkpoint cut short leaves its sandbox stopped.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.running.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      while (this.running.size > 0) {
        const settled = Promise.allSettled([...this.running.values()]).then(() => true);
        if (!(await Promise.race([settled, timeout]))) return false;
      }
      return true;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * The runtime as the agent API sees it while checkpoints happen (see the top of this file). Every
 * other member is the runtime's own.
 */
export function guardCheckpoints(runtime: Runtime, inFlight: CheckpointsInFlight): Runtime {
  const truthful = (sandbox: RuntimeSandbox): RuntimeSandbox => {
    if (!inFlight.has(sandbox.sandboxId)) return sandbox;
    const { exitCode: _exitCode, ...running } = sandbox;
    return { ...running, state: "running", checkpointing: true };
  };
  const overrides: Partial<Runtime> = {
    create: (spec) => (spec.fromCheckpoint ? requireCheckpoints(runtime).restore(spec) : runtime.create(spec)),
    get: async (sandboxId) => {
      const sandbox = await runtime.get(sandboxId);
      return sandbox && truthful(sandbox);
    },
    list: async () => (await runtime.list()).map(truthful),
    delete: (sandboxId, options) => inFlight.deleting(sandboxId, () => runtime.delete(sandboxId, options)),
    exec: async (sandboxId, request, io) => {
      await inFlight.settled(sandboxId);
      return runtime.exec(sandboxId, request, io);
    },
    wait: async (sandboxId, signal) => {
      for (;;) {
        const before = inFlight.startedFor(sandboxId);
        const code = await runtime.wait(sandboxId, signal);
        // The task exited because a checkpoint saved it: wait for the restored one instead.
        if (inFlight.startedFor(sandboxId) === before && !inFlight.has(sandboxId)) return code;
        await inFlight.settled(sandboxId);
        if ((await runtime.get(sandboxId))?.state !== "running") return code;
      }
    },
  };
  return new Proxy(runtime, {
    get(target, property, receiver) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof Runtime];
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export interface CheckpointMethodsOptions {
  /** The agent's name, for messages. */
  agentName: string;
  runtime: Runtime;
  inFlight: CheckpointsInFlight;
  /**
   * Told of each sandbox whose task a checkpoint call may have made anew in place (a checkpoint that
   * runs on, one whose save failed after runsc stopped it, a resume): it writes to its log again.
   */
  restarted?: (sandboxId: string) => void;
}

type CheckpointMethods = Pick<ServiceImpl<typeof pb.AgentService>, "checkpointSandbox" | "resumeSandbox" | "listCheckpoints" | "deleteCheckpoint">;

/** The agent API's checkpoint calls; every error leaves as a ConnectError. */
export function checkpointMethods({ agentName, runtime, inFlight, restarted }: CheckpointMethodsOptions): CheckpointMethods {
  const checkpoints = () => requireCheckpoints(runtime, agentName);
  return {
    checkpointSandbox: (request) =>
      edge(async () => {
        checkId(request.sandboxId, "sandboxId");
        checkId(request.checkpointId, "checkpointId");
        const checkpoint = await inFlight
          .run(request.sandboxId, () =>
            checkpoints().checkpoint({
              sandboxId: request.sandboxId,
              checkpointId: request.checkpointId,
              namespace: request.namespace,
              name: request.name,
              leaveStopped: request.leaveStopped,
            }),
          )
          // Whatever the outcome: a failed save runs the sandbox on too (one left stopped costs a few needless checks).
          .finally(() => restarted?.(request.sandboxId));
        return toAgentCheckpoint(checkpoint);
      }),
    resumeSandbox: (request) =>
      edge(async () => {
        checkId(request.sandboxId, "sandboxId");
        checkId(request.checkpointId, "checkpointId");
        await inFlight
          .run(request.sandboxId, () => checkpoints().resume(request.sandboxId, request.checkpointId))
          .finally(() => restarted?.(request.sandboxId));
        return create(pb.AgentResumeSandboxResponseSchema, {});
      }),
    listCheckpoints: () =>
      edge(async () =>
        create(pb.AgentListCheckpointsResponseSchema, { checkpoints: runtime.checkpoints ? (await runtime.checkpoints.list()).map(toAgentCheckpoint) : [] }),
      ),
    deleteCheckpoint: (request) =>
      edge(async () => {
        checkId(request.checkpointId, "checkpointId");
        await checkpoints().delete(request.checkpointId);
        return create(pb.AgentDeleteCheckpointResponseSchema, {});
      }),
  };
}

export function toAgentCheckpoint(checkpoint: RuntimeCheckpoint): pb.AgentCheckpoint {
  return create(pb.AgentCheckpointSchema, { ...checkpoint, command: [...checkpoint.command], sizeBytes: BigInt(checkpoint.sizeBytes) });
}

function requireCheckpoints(runtime: Runtime, agentName?: string): RuntimeCheckpoints {
  if (!runtime.checkpoints) throw new FailedPreconditionError(`the runtime of agent ${agentName ?? "?"} cannot checkpoint or restore sandboxes`);
  return runtime.checkpoints;
}

function checkId(id: string, field: string): void {
  if (!isSandboxId(id)) {
    throw new ValidationError(
      field,
      `${JSON.stringify(id)} is not a valid id: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit`,
    );
  }
}

async function edge<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toConnectError(error);
  }
}
