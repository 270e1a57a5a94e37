/**
 * The fast-path API's checkpoint calls (CheckpointSandbox, ListCheckpoints, DeleteCheckpoint,
 * ForkSandbox) over the CheckpointManager, and PauseSandbox / ResumeSandbox over SandboxPauses;
 * CreateSandbox with `from_checkpoint` is in sandbox-service.ts. A control plane without checkpoints
 * (or pauses) answers FailedPrecondition.
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, pb, sandboxToMessage } from "@fast-sandbox/api";
import { isForkCheckpointName, type Checkpoint, type CheckpointManager } from "./checkpoint-manager.js";
import { isPauseCheckpointName, type SandboxPauses } from "./checkpoint-pauses.js";
import { edge } from "./sandbox-service.js";
import { creatorAnnotations } from "./kubernetes-caller.js";

type CheckpointMethods = Pick<
  ServiceImpl<typeof pb.SandboxService>,
  "checkpointSandbox" | "listCheckpoints" | "deleteCheckpoint" | "forkSandbox" | "pauseSandbox" | "resumeSandbox"
>;

/** A resume's `expire_time`: empty (no end) or an RFC 3339 time in the future. */
function resumeExpireTime(value: string, now = Date.now()): string | undefined {
  if (!value) return undefined;
  const at = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(at)) {
    throw new ValidationError("expireTime", `${JSON.stringify(value)} is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z); leave it empty for no end`);
  }
  if (at <= now) throw new ValidationError("expireTime", `${value} has passed; give a time in the future, or leave it empty for no end`);
  return new Date(at).toISOString();
}

/**
 * A checkpoint name a caller chose for a checkpoint of sandbox `sandbox`. The names this control
 * plane gives its own temporaries of that sandbox (a fork's, a pause's) are refused: the checkpoint
 * collector removes checkpoints so named once no operation or record holds them.
 */
function userCheckpointName(name: string, sandbox: string): string {
  if (isForkCheckpointName(name, sandbox) || isPauseCheckpointName(name, sandbox)) {
    throw new ValidationError(
      "checkpoint",
      `${JSON.stringify(name)} is reserved: names of the form '${sandbox}-fork-<10 hex digits>' and '${sandbox}-pause-<6 hex digits>' are the control plane's own temporaries of this sandbox, removed when unused; choose another name`,
    );
  }
  return name;
}

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

export function checkpointServiceMethods(checkpoints: CheckpointManager | undefined, pauses?: SandboxPauses): CheckpointMethods {
  const required = (): CheckpointManager => {
    if (!checkpoints) throw new FailedPreconditionError("this control plane does not offer checkpoints");
    return checkpoints;
  };
  const pausing = (): SandboxPauses => {
    if (!pauses) throw new FailedPreconditionError("this control plane does not pause sandboxes (it was started without them)");
    return pauses;
  };
  return {
    pauseSandbox: (request) => edge(async () => sandboxToMessage(await pausing().pause(request.namespace, request.name))),
    resumeSandbox: (request) =>
      edge(async () => {
        const expireTime = resumeExpireTime(request.expireTime);
        // A sandbox running already gets the end asked for too, as a paused one does when it resumes.
        const { sandbox } = await pausing().resume(request.namespace, request.name, expireTime ? { expireTime, endRunning: true } : {});
        return sandboxToMessage(sandbox);
      }),
    checkpointSandbox: (request) =>
      edge(async () =>
        checkpointToMessage(
          await required().checkpoint({
            namespace: request.namespace,
            sandbox: request.name,
            ...(request.checkpoint ? { checkpoint: userCheckpointName(request.checkpoint, request.name) } : {}),
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
    forkSandbox: (request, context) =>
      edge(async () => {
        const creator = creatorAnnotations(context);
        const result = await required().fork({
          namespace: request.namespace,
          name: request.name,
          count: request.count,
          ...(request.checkpoint ? { checkpoint: userCheckpointName(request.checkpoint, request.name) } : {}),
          ...(Object.keys(request.labels).length > 0 ? { labels: request.labels } : {}),
          ...(creator ? { annotations: creator } : {}),
        });
        return create(pb.ForkSandboxResponseSchema, {
          sandboxes: result.sandboxes.map(({ sandbox, accessToken }) => ({ sandbox: sandboxToMessage(sandbox), accessToken })),
          ...(result.checkpoint ? { checkpoint: checkpointToMessage(result.checkpoint) } : {}),
        });
      }),
  };
}
