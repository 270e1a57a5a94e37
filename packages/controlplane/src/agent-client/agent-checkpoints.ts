/**
 * The control plane's port to an agent's checkpoints (gVisor sandboxes saved on the agent's node),
 * beside AgentClient: the Connect adapter implements both (rpc-agent-client.ts); a client that does not
 * (a fake, an agent built before checkpoints) is told apart by `canCheckpoint`.
 */
import type { Client } from "@connectrpc/connect";
import type { pb } from "@fast-sandbox/api";
import type { AgentClient } from "./agent-client.js";

/** A checkpoint as its agent reports it. */
export interface AgentCheckpoint {
  /** Its id on the node (the control plane's choice). */
  checkpointId: string;
  namespace: string;
  name: string;
  pool: string;
  sourceSandboxId: string;
  sourceName: string;
  image: string;
  runtimeType: string;
  /** `shared` or `isolated`: restores must be networked alike. */
  networkMode: string;
  /** The checkpointed command (entrypoint and arguments resolved) and working directory. */
  command: string[];
  workingDir: string;
  /** RFC 3339. */
  createdAt: string;
  sizeBytes: number;
}

export interface AgentCheckpointRequest {
  sandboxId: string;
  checkpointId: string;
  namespace: string;
  name: string;
  /** Leave the sandbox stopped instead of restoring it in place. @default false */
  leaveStopped?: boolean;
}

export interface AgentCheckpointClient {
  /** Checkpoints a running gVisor sandbox of the agent. */
  checkpointSandbox(request: AgentCheckpointRequest): Promise<AgentCheckpoint>;
  /** Restores a sandbox left stopped by a checkpoint in place. */
  resumeSandbox(sandboxId: string, checkpointId: string): Promise<void>;
  listCheckpoints(): Promise<AgentCheckpoint[]>;
  /** Removes the checkpoint's files; a missing one is not an error. */
  deleteCheckpoint(checkpointId: string): Promise<void>;
}

/** Whether the client can reach the agent's checkpoints. */
export function canCheckpoint(client: AgentClient): client is AgentClient & AgentCheckpointClient {
  return typeof (client as Partial<AgentCheckpointClient>).checkpointSandbox === "function";
}

/**
 * The deadline of a checkpoint call: longer than the agent may take to answer it
 * (packages/agent/src/containerd/checkpoints.ts: up to 10 s to quiesce the in-sandbox daemon, 120 s
 * for runsc's save, up to 60 s to restore the sandbox in place — 190 s), so that a slow save is
 * answered, not given up on here while the agent goes on (a fork would then remove a good
 * checkpoint, a pause be left undecided until the control plane settles it, reconcile/pause-settler.ts). Raise it with any of those. A checkpoint of
 * a small sandbox and its restore in place take a few seconds.
 */
export const CHECKPOINT_CALL_TIMEOUT_MS = 240_000;
/** The in-place restore of a sandbox left stopped, and a checkpoint's removal (which waits for its restores). */
const CHECKPOINT_TIMEOUT_MS = 120_000;
const LIST_TIMEOUT_MS = 10_000;

/** The checkpoint calls over the agent's Connect client; `unary` translates errors (the adapter's). */
export function agentCheckpointCalls(client: Client<typeof pb.AgentService>, unary: <T>(fn: () => Promise<T>) => Promise<T>): AgentCheckpointClient {
  return {
    checkpointSandbox: async (request) =>
      agentCheckpointFromMessage(
        await unary(() =>
          client.checkpointSandbox(
            {
              sandboxId: request.sandboxId,
              checkpointId: request.checkpointId,
              namespace: request.namespace,
              name: request.name,
              leaveStopped: request.leaveStopped ?? false,
            },
            { timeoutMs: CHECKPOINT_CALL_TIMEOUT_MS },
          ),
        ),
      ),
    resumeSandbox: async (sandboxId, checkpointId) => {
      await unary(() => client.resumeSandbox({ sandboxId, checkpointId }, { timeoutMs: CHECKPOINT_TIMEOUT_MS }));
    },
    listCheckpoints: async () => (await unary(() => client.listCheckpoints({}, { timeoutMs: LIST_TIMEOUT_MS }))).checkpoints.map(agentCheckpointFromMessage),
    deleteCheckpoint: async (checkpointId) => {
      await unary(() => client.deleteCheckpoint({ checkpointId }, { timeoutMs: CHECKPOINT_TIMEOUT_MS }));
    },
  };
}

function agentCheckpointFromMessage(message: pb.AgentCheckpoint): AgentCheckpoint {
  return {
    checkpointId: message.checkpointId,
    namespace: message.namespace,
    name: message.name,
    pool: message.pool,
    sourceSandboxId: message.sourceSandboxId,
    sourceName: message.sourceName,
    image: message.image,
    runtimeType: message.runtimeType,
    networkMode: message.networkMode,
    command: [...message.command],
    workingDir: message.workingDir,
    createdAt: message.createdAt,
    sizeBytes: Number(message.sizeBytes),
  };
}
