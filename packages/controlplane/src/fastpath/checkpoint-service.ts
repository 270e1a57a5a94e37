/**
 * The fast-path API's checkpoint calls (CheckpointSandbox, ListCheckpoints, DeleteCheckpoint,
 * ForkSandbox) over the CheckpointManager; CreateSandbox with `from_checkpoint` is in
 * sandbox-service.ts. A control plane without checkpoints answers FailedPrecondition.
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { FailedPreconditionError, pb, sandboxToMessage } from "@fast-sandbox/api";
import type { Checkpoint, CheckpointManager } from "./checkpoint-manager.js";
import { edge } from "./sandbox-service.js";

type CheckpointMethods = Pick<ServiceImpl<typeof pb.SandboxService>, "checkpointSandbox" | "listCheckpoints" | "deleteCheckpoint" | "forkSandbox">;

export function checkpointToMessage(checkpoint: Checkpoint): pb.Checkpoint {
  return create(pb.CheckpointSchema, {
    namespace: checkpoint.namespace,
    name: checkpoint.name,
    sandbox: checkpoint.sandbox,
    pool: checkpoint.pool,
    image: checkpoint.image,
    createTime: checkpoint.createTime,
    sizeBytes: BigInt(checkpoint.sizeBytes),
    nodeName: checkpoint.nodeName,
    agents: checkpoint.agents,
    id: checkpoint.id,
  });
}

export function checkpointServiceMethods(checkpoints: CheckpointManager | undefined): CheckpointMethods {
  const required = (): CheckpointManager => {
    if (!checkpoints) throw new FailedPreconditionError("this control plane does not offer checkpoints");
    return checkpoints;
  };
  return {
    checkpointSandbox: (request) =>
      edge(async () =>
        checkpointToMessage(
          await required().checkpoint({
            namespace: request.namespace,
            sandbox: request.name,
            ...(request.checkpoint ? { checkpoint: request.checkpoint } : {}),
          }),
        ),
      ),
    listCheckpoints: (request) =>
      edge(async () => create(pb.ListCheckpointsResponseSchema, { checkpoints: (await required().list(request.namespace)).map(checkpointToMessage) })),
    deleteCheckpoint: (request) =>
      edge(async () => {
        await required().delete(request.namespace, request.name);
        return create(pb.DeleteCheckpointResponseSchema, {});
      }),
    forkSandbox: (request) =>
      edge(async () => {
        const result = await required().fork({
          namespace: request.namespace,
          name: request.name,
          count: request.count,
          ...(request.checkpoint ? { checkpoint: request.checkpoint } : {}),
          ...(Object.keys(request.labels).length > 0 ? { labels: request.labels } : {}),
        });
        return create(pb.ForkSandboxResponseSchema, {
          sandboxes: result.sandboxes.map(({ sandbox, accessToken }) => ({ sandbox: sandboxToMessage(sandbox), accessToken })),
          ...(result.checkpoint ? { checkpoint: checkpointToMessage(result.checkpoint) } : {}),
        });
      }),
  };
}
