/**
 * The agent's port to checkpoints of sandboxes: a sandbox's memory, processes and root file system
 * changes saved on the node (gVisor only), from which new sandboxes are restored (`fromCheckpoint`
 * of RuntimeSandboxSpec). The containerd adapter implements it with runsc (containerd/checkpoints.ts).
 */
import type { NetworkMode, RuntimeSandbox, RuntimeSandboxSpec, RuntimeType } from "./runtime.js";

/** A checkpoint as its agent keeps it. */
export interface RuntimeCheckpoint {
  /** Unique id (the control plane's choice, shaped like a sandbox id); names its directory on the node. */
  checkpointId: string;
  /** Fast Sandbox namespace and name of the checkpoint (the control plane's names). */
  namespace: string;
  name: string;
  /** The pool of the sandbox it was taken of: restores run in that pool's agents on this node. */
  pool: string;
  /** The sandbox it was taken of: its instance id and name. */
  sourceSandboxId: string;
  sourceName: string;
  image: string;
  runtimeType: RuntimeType;
  /** A restore must be networked alike: runsc cannot restore a checkpoint in another network mode. */
  networkMode: NetworkMode;
  /** The checkpointed sandbox's command (the image's entrypoint and cmd resolved) and working directory. */
  command: string[];
  workingDir: string;
  /** RFC 3339. */
  createdAt: string;
  /** Bytes on disk: the memory image and the copied run directory. */
  sizeBytes: number;
}

export interface CheckpointRequest {
  /** The running gVisor sandbox to checkpoint. */
  sandboxId: string;
  /** Id of the new checkpoint (see RuntimeCheckpoint). */
  checkpointId: string;
  namespace: string;
  name: string;
  /**
   * Leave the sandbox stopped afterwards (its container, files and network stay; no process runs)
   * instead of restoring it in place at once. @default false: it runs on, under the same id
   */
  leaveStopped?: boolean;
}

/** Durations of a checkpoint's steps, in milliseconds (logs, benchmarks). */
export interface CheckpointTimings {
  /** Closing the in-sandbox daemon's sockets (0 without it). */
  quiesceMs: number;
  /** runsc checkpoint: the sandbox is saved and stops. */
  checkpointMs: number;
  /** Restoring the sandbox in place (0 when it is left stopped). */
  resumeMs: number;
  totalMs: number;
}

export interface RuntimeCheckpoints {
  /** Saves a running sandbox. FailedPreconditionError when it is not a running gVisor sandbox or runsc refuses its state. */
  checkpoint(request: CheckpointRequest): Promise<RuntimeCheckpoint>;
  /**
   * Creates and starts a new sandbox from the checkpoint `spec.fromCheckpoint`: the spec gives its
   * identity (id, namespace, name, log, network); image, command, environment and memory are the
   * checkpoint's. NotFoundError for an unknown checkpoint; every step is undone on failure.
   */
  restore(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox>;
  /** Restores a sandbox left stopped by `checkpoint({ leaveStopped: true })` in place, from that checkpoint. */
  resume(sandboxId: string, checkpointId: string): Promise<void>;
  /** Every complete checkpoint this agent can restore from. */
  list(): Promise<RuntimeCheckpoint[]>;
  get(checkpointId: string): Promise<RuntimeCheckpoint | undefined>;
  /** Removes the checkpoint's files (after the restores in flight from it); a missing one is not an error. */
  delete(checkpointId: string): Promise<void>;
}
