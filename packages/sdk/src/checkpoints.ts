/**
 * Checkpoints of sandboxes in gVisor pools: save a running sandbox (memory, processes, root file
 * system changes), restore new sandboxes from it, fork a sandbox into several running copies.
 * `client.checkpoints` of FastSandboxClient.
 */
import type { Client } from "@connectrpc/connect";
import type { pb } from "@fast-sandbox/api/core";
import { FsbError, sandboxFromMessage, sandboxSpecToMessage, type EgressPolicy, type SandboxSpec } from "@fast-sandbox/api/core";
import { createError, createRequestIdentity, createSandboxWithRequestId, undoAbandonedCreate } from "./create-request.js";
import { callError, type CallContext } from "./errors.js";
import type { ClientCallOptions, CreatedSandbox } from "./fast-sandbox-client.js";
import { duration } from "./request-options.js";

/** A checkpoint: it lives on one node, where restores from it run. */
export interface CheckpointInfo {
  namespace: string;
  name: string;
  /** Its id on its node. */
  id: string;
  /** The sandbox it was taken of. */
  sandbox: string;
  pool: string;
  image: string;
  /** RFC 3339. */
  createTime: string;
  sizeBytes: number;
  nodeName: string;
  /** The agents on that node that restore from it. */
  agents: string[];
}

export interface RestoreOptions extends ClientCallOptions {
  /** @default "default" */
  namespace?: string;
  /** The new sandbox's name. @default generated */
  name?: string;
  labels?: Record<string, string>;
  /**
   * The checkpoint's pool, when known: a restore then wakes that pool if it is scaled to zero (only a
   * running agent reports its node's checkpoints) and waits for an agent, up to its wakeTimeoutSeconds.
   * Another pool than the checkpoint's is refused. @default the checkpoint's
   */
  pool?: string;
  /** Ports it exposes through the sandbox proxy (what its restored processes listen on). */
  exposedPorts?: number[];
  /** Where the copy may connect to, within its pool's egress policy (an Isolated network). @default the pool's */
  egress?: EgressPolicy;
  /** Absolute time or a time-to-live in milliseconds from now. */
  expireTime?: Date | string;
  ttlMs?: number;
  /**
   * Makes retries idempotent: the same id returns the sandbox the first attempt created. The SDK
   * retries once itself, with the same id, when an attempt's answer was lost (deadline, connection).
   * @default a new id for each call of restore
   */
  requestId?: string;
}

export interface ForkOptions extends ClientCallOptions {
  /** @default "default" */
  namespace?: string;
  /** How many copies (1–32). */
  count: number;
  /** Keep the checkpoint the copies come from under this name. @default it is deleted once they run */
  checkpoint?: string;
  /** Labels of every copy. */
  labels?: Record<string, string>;
}

export interface ForkResult {
  /** The copies, each with its access token. */
  sandboxes: CreatedSandbox[];
  /** The checkpoint kept (when `checkpoint` named one). */
  checkpoint?: CheckpointInfo;
}

function checkpointFromMessage(message: pb.Checkpoint): CheckpointInfo {
  return {
    namespace: message.namespace,
    name: message.name,
    id: message.id,
    sandbox: message.sandbox,
    pool: message.pool,
    image: message.image,
    createTime: message.createTime,
    sizeBytes: Number(message.sizeBytes),
    nodeName: message.nodeName,
    agents: [...message.agents],
  };
}

/** Checkpoints, restores and forks (sandboxes of pools whose runtimeType is gvisor). */
export class Checkpoints {
  constructor(
    private readonly client: Client<typeof pb.SandboxService>,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Saves the running sandbox `sandbox` as a checkpoint (named `options.name`, else generated). The
   * sandbox runs on under its name, id and address; it is stopped for about half a second meanwhile.
   */
  async create(sandbox: string, options: { namespace?: string; name?: string } & ClientCallOptions = {}): Promise<CheckpointInfo> {
    const { call, context } = this.callOptions(`CheckpointSandbox ${sandbox}`, options);
    return checkpointFromMessage(
      await this.translate(
        () => this.client.checkpointSandbox({ namespace: options.namespace ?? "", name: sandbox, checkpoint: options.name ?? "" }, call),
        context,
      ),
    );
  }

  /** `namespace: "*"` lists every namespace. */
  async list(options: { namespace?: string } & ClientCallOptions = {}): Promise<CheckpointInfo[]> {
    const { call, context } = this.callOptions("ListCheckpoints", options);
    return (await this.translate(() => this.client.listCheckpoints({ namespace: options.namespace ?? "" }, call), context)).checkpoints.map(
      checkpointFromMessage,
    );
  }

  /** Removes the checkpoint's files; sandboxes restored from it run on. */
  async delete(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<void> {
    const { call, context } = this.callOptions(`DeleteCheckpoint ${name}`, options);
    await this.translate(() => this.client.deleteCheckpoint({ namespace: options.namespace ?? "", name }, call), context);
  }

  /** A new sandbox restored from the checkpoint, in its pool on its node, with its access token. */
  async restore(checkpoint: string, options: RestoreOptions = {}): Promise<CreatedSandbox> {
    const expireTime =
      options.ttlMs !== undefined
        ? new Date(Date.now() + options.ttlMs).toISOString()
        : options.expireTime instanceof Date
          ? options.expireTime.toISOString()
          : options.expireTime;
    // image and poolRef are the checkpoint's: the control plane fills them in.
    const spec = {
      image: "",
      poolRef: options.pool ?? "",
      ...(options.exposedPorts ? { exposedPorts: options.exposedPorts } : {}),
      ...(options.egress ? { egress: options.egress } : {}),
      ...(expireTime ? { expireTime } : {}),
    } satisfies SandboxSpec;
    const { call, context } = this.callOptions(`CreateSandbox from checkpoint ${checkpoint}`, options);
    const namespace = options.namespace ?? "";
    const { requestId, name } = createRequestIdentity(namespace, options.name ?? "", options.requestId);
    try {
      const { message, accessToken } = await createSandboxWithRequestId(
        this.client,
        { namespace, name: options.name ?? "", spec: sandboxSpecToMessage(spec), labels: options.labels ?? {}, requestId, fromCheckpoint: checkpoint },
        call,
      );
      return { ...sandboxFromMessage(message), accessToken };
    } catch (error) {
      // Aborted by its caller, who could not name what it may still make: that is undone.
      if (context.signal?.aborted && !options.name && !options.requestId)
        void undoAbandonedCreate((sandbox) => this.client.deleteSandbox({ name: sandbox, namespace }, { timeoutMs: this.timeoutMs }), name);
      throw createError(error, context, { namespace, name, requestId });
    }
  }

  /** `count` running copies of the running sandbox `sandbox`, from one checkpoint of it; all or none. */
  async fork(sandbox: string, options: ForkOptions): Promise<ForkResult> {
    const { call, context } = this.callOptions(`ForkSandbox ${sandbox}`, options);
    const response = await this.translate(
      () =>
        this.client.forkSandbox(
          { namespace: options.namespace ?? "", name: sandbox, count: options.count, checkpoint: options.checkpoint ?? "", labels: options.labels ?? {} },
          call,
        ),
      context,
    );
    return {
      sandboxes: response.sandboxes.map((forked) => {
        if (!forked.sandbox) throw new FsbError("internal", "ForkSandbox answered a copy without its sandbox");
        return { ...sandboxFromMessage(forked.sandbox), accessToken: forked.accessToken };
      }),
      ...(response.checkpoint ? { checkpoint: checkpointFromMessage(response.checkpoint) } : {}),
    };
  }

  private callOptions(what: string, options: ClientCallOptions): { call: { timeoutMs?: number; signal?: AbortSignal }; context: CallContext } {
    const timeoutMs = duration(options.requestTimeoutMs ?? this.timeoutMs, "requestTimeoutMs");
    return {
      call: { ...(timeoutMs > 0 ? { timeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) },
      context: { what, signal: options.signal, timeoutMs },
    };
  }

  private async translate<T>(fn: () => Promise<T>, context: CallContext): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw callError(error, context);
    }
  }
}
