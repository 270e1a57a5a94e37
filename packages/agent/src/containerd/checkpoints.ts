/**
 * Checkpoints of gVisor sandboxes through containerd (the runtime's `checkpoints` sub-service, the
 * port in runtime/checkpoint.ts), and restores from them into new sandboxes.
 *
 * The data path is containerd's own, on the runc v2 shim that already runs gVisor sandboxes with
 * the runsc wrapper as `BinaryName` (gvisor-binary.ts):
 * - checkpoint: `Tasks.Checkpoint` with runc `CheckpointOptions{image_path, exit}` → `runsc
 *   checkpoint --image-path <dir>/image`. The image stays a directory on the node (nothing goes
 *   through the content store). Every gVisor sandbox runs with `--overlay2=root:memory`, so its
 *   root file system changes are in its memory and travel in the image; restores need only the
 *   snapshot the sandbox ran on (its image's layers then, `snapshotParent`).
 * - restore: a new container (new id, snapshot, cgroup, run directory, network namespace) with the
 *   checkpointed OCI spec, only the copy's own paths rewritten, then `Tasks.Create` with task
 *   options repeating `binary_name` and setting `criu_image_path` (containerd sends task options
 *   instead of the container's runtime options) and `Tasks.Start` → `runsc restore`. The wrapper
 *   is the restoring agent's own for the network mode: a checkpoint outlives the agent that took
 *   it, and that agent's wrappers are gone with its state directory.
 *
 * What runsc 20221219 (Debian 12's) decides here:
 * - `--leave-running` there destroys, recreates and then blocks until the container exits, so a
 *   checkpoint always stops the sandbox (`exit: true`), and — unless asked to leave it stopped —
 *   the agent restores it in place at once from the image it just wrote: the source runs on under
 *   the same id, address and files, after about 0.5 s without any process running.
 * - it refuses to save TCP sockets that are connected, in TIME-WAIT (60 s after a close) or waited on
 *   through epoll. The in-sandbox daemon (Go, epoll) is therefore quiesced first (`fsb-envd
 *   -control quiesce`: it closes its listener and connections) and resumed after every restore;
 *   any other such socket fails the checkpoint with FailedPrecondition and leaves the sandbox running.
 * - a restored kernel keeps the checkpointed container id on its processes, so signals addressed
 *   to "every process of container <new id>" reach none: the runtime stops a restored sandbox by
 *   signalling its process 1 (`LABEL_RESTORED_FROM`).
 * - runsc takes the IPv4 address off its namespace's interface for its own network stack (the
 *   routes go with it), so a sandbox restored in place would come up without network: the agent
 *   puts the address and default route back from the namespace's record first.
 * - the hostname is kernel state: it is set again in every copy by an exec that alone holds
 *   CAP_SYS_ADMIN (the in-sandbox daemon's `-hostname`, else the helper's `--sethostname`, best
 *   effort): always a binary of the agent's, by its absolute path in its read-only mount, never one
 *   found through the copy's PATH in a root file system the sandbox may have changed.
 *
 * A current runsc (runsc-features.ts: `hostnameOnRestore`) gives a restored kernel the hostname of
 * the copy's OCI spec itself, so a copy needs no exec at all: its quiesced daemon, which watches its
 * hostname, serves again as soon as it sees the new one (run/envd.resume-watch says it does), and
 * the agent answers once the daemon accepts connections on the copy's address. Under an unchanged
 * name (in place), or when the daemon does not serve within a second, the helper (process 1) is
 * signalled and passes a resume on (fsb-helper.c, run/daemon-resume-signal); checkpoints of
 * sandboxes whose helper and daemon predate both, and a daemon still silent, resume through the
 * exec. A sandbox that set its own hostname keeps it in its copies (gVisor's rule).
 *
 * A copy shares nothing writable with its checkpoint or its siblings: its own snapshot (the memory
 * overlay is private to its sandbox), run directory (a copy of the checkpoint's), /etc files,
 * network namespace and address, cgroup and log. What stays the checkpoint's, being memory: the
 * processes (same pids), their environment, and anything the sandbox had generated (random seeds,
 * the daemon's access token, the HOSTNAME variable of processes already running).
 *
 * On the node: `<directory>/<checkpoint id>/` holds `image/` (runsc's), `run/` (the helper's run
 * directory as it was, RUN_DIR_MAX_BYTES at most) and `checkpoint.json` (written last: a directory without it is incomplete
 * and is removed when listed), where `<directory>` is per pool (FSB_CHECKPOINT_DIR/<ns>/<pool>),
 * shared by the pool's agents on the node; and, across those agents, the markers of the restores
 * reading it (`readers/`) and a delete's tombstone (`deleting`), checkpoint-readers.ts.
 */
import { execFile } from "node:child_process";
import { connect } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { chownSync, cpSync, existsSync, lchownSync, lstatSync, opendirSync, readdirSync, realpathSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  SANDBOX_DAEMON_PORT,
  ValidationError,
  isSandboxId,
} from "@fast-sandbox/api/core";
import {
  LABEL_AGENT,
  LABEL_EXPOSED_PORTS,
  LABEL_NAME,
  LABEL_NAMESPACE,
  LABEL_POOL,
  LABEL_SANDBOX_ID,
  type NetworkMode,
  type RuntimeSandbox,
  type RuntimeSandboxSpec,
} from "../runtime/runtime.js";
import type { CheckpointRequest, CheckpointTimings, RuntimeCheckpoint, RuntimeCheckpoints } from "../runtime/checkpoint.js";
import type { ClaimedNetwork } from "../network/sandbox-networks.js";
import { AttachmentStore } from "../network/attachment-store.js";
import { SANDBOX_INTERFACE } from "../network/cni-conflist.js";
import type { ContainerdClient } from "./containerd-client.js";
import { containerIdOf, sandboxIdOfContainer } from "./container-id.js";
import { CheckpointOptionsSchema, OptionsSchema as RuncOptionsSchema } from "./gen/github.com/containerd/containerd/runtime/v2/runc/options/oci_pb.js";
import { Status as TaskStatus } from "./gen/github.com/containerd/containerd/api/types/task/task_pb.js";
import type { Container } from "./gen/github.com/containerd/containerd/api/services/containers/v1/containers_pb.js";
import { isNotFound, isTransient } from "./grpc-errors.js";
import { readRunFile } from "./run-file.js";
import { controlOutputName, type ExecFiles } from "./exec-files.js";
import { CheckpointReaders } from "./checkpoint-readers.js";
import type { RunscFeatures } from "./runsc-features.js";
import { ENVD_BINARY, HELPER_BINARY, HELPER_RUN_DIR, SHIM_GROUP_ANNOTATION, sandboxHostname, type OciSpec, type OciUser } from "./oci-spec.js";
// Read at call time only (the runtime module imports this one to build its sub-service).
import { LABEL_HELPER, LABEL_HELPER_EXEC_AS, LABEL_IMAGE, LABEL_ROLE, LABEL_RUNTIME_TYPE } from "./containerd-runtime.js";
import { diskLimitLabels } from "./disk-limit-labels.js";
import { removeTree } from "../disk-usage.js";

/** On a sandbox restored from a checkpoint: the checkpoint's id. */
export const LABEL_RESTORED_FROM = "fast-sandbox.io/restored-from";
/** On gVisor sandboxes whose root file system changes live in their memory (and so in their checkpoints). */
export const LABEL_ROOTFS_OVERLAY = "fast-sandbox.io/rootfs-overlay";
export const ROOTFS_OVERLAY_MEMORY = "memory";

const run = promisify(execFile);
const RUNC_V2 = "io.containerd.runc.v2";
const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options";
const CHECKPOINT_OPTIONS_TYPE_URL = "containerd.runc.v1.CheckpointOptions";
const GC_ROOT_LABEL = "containerd.io/gc.root";

const METADATA_FILE = "checkpoint.json";
const IMAGE_DIR = "image";
const RUN_COPY_DIR = "run";
/** A checkpoint directory without its metadata this much older than now is a leftover of a crash. */
const INCOMPLETE_LEFTOVER_MS = 10 * 60_000;
/** How long a delete waits for the restores reading the checkpoint (the control plane's call waits 120 s). */
const DELETE_WAIT_MS = 60_000;
/** The control execs (quiesce, resume, hostname) get this long. */
const CONTROL_EXEC_TIMEOUT_MS = 10_000;
/** How long a daemon resumed by signal may take to accept connections before the exec resumes it. */
const DAEMON_RESUME_TIMEOUT_MS = 3_000;
/** What the in-sandbox daemon resumes on by itself while quiesced (packages/envd/internal/quiesce). */
const DAEMON_RESUME_WATCH_FILE = "envd.resume-watch";
/** How long a copy's daemon, which resumes by itself on its new hostname, may take before the agent signals it. */
const DAEMON_SELF_RESUME_TIMEOUT_MS = 1_000;
/** What the helper writes when it takes the daemon's resume signal (fsb-helper.c). */
const DAEMON_RESUME_SIGNAL_FILE = "daemon-resume-signal";
/**
 * What a checkpoint saves of a sandbox's run directory at most, and what a restore copies: the
 * helper and the daemon write a few small files there, but the directory is the sandbox's to
 * write, and its copy is synchronous and made again for every copy restored.
 */
const RUN_DIR_MAX_BYTES = 4 * 1024 * 1024;
const RUN_DIR_MAX_ENTRIES = 1_000;
const RUN_DIR_LIMITS = `${RUN_DIR_MAX_BYTES} bytes in ${RUN_DIR_MAX_ENTRIES} files and directories`;
/** The names of the runsc wrappers (gvisor-binary.ts), which say a sandbox's network mode. */
const OWN_NETNS_WRAPPER = "runsc-own-netns";
const NETWORK_NONE_WRAPPER = "runsc-network-none";

/** What the checkpoint directory keeps besides the port's fields: everything a restore needs. */
interface CheckpointRecord extends RuntimeCheckpoint {
  version: 1;
  /** The container's OCI spec at checkpoint time; restores rewrite only the copy's own paths. */
  ociSpec: OciSpec;
  /** The checkpointed sandbox's run directory (as it appears in ociSpec's mounts). */
  runDir: string;
  /**
   * The runsc wrapper the checkpointed sandbox ran under: a file of the agent that took the
   * checkpoint, whose state directory goes with that agent, while the checkpoint stays on the
   * node. Kept for agents of earlier versions, which restore under it; restores here run under
   * this agent's own wrapper for the network mode (`runscBinary`), and read it only to tell the
   * mode of a record that should lack one.
   */
  binaryName?: string;
  /**
   * The snapshot the checkpointed sandbox's root file system was prepared on (its image's chain id
   * then): restores put the copy's overlay on the same layers, whatever the image's name points
   * to now. Absent in checkpoints of earlier versions: restores resolve the image by name.
   */
  snapshotParent?: string;
  /** The in-sandbox daemon is mounted: it is quiesced in the image, and resumed after a restore. */
  envd: boolean;
  /** Where the checkpointed task's output went (its log): a resume in place writes there again. */
  stdout: string;
  stderr: string;
  /** The signal that makes the checkpointed helper resume its daemon (run/daemon-resume-signal); absent: older helper, resume by exec. */
  daemonResumeSignal?: number;
  /** The quiesced daemon serves again by itself once its hostname changes (run/envd.resume-watch: `hostname`). */
  daemonResumesOnHostname?: boolean;
  /** The checkpointed sandbox's helper runs execs as the image's user (LABEL_HELPER_EXEC_AS): so do its copies'. */
  helperExecAs?: boolean;
}

type UndoStep = { step: string; run: () => Promise<unknown> };
/**
 * How a restored copy got its identity: an exec in it (hostname and daemon), or runsc set the
 * hostname and the daemon resumed on it (`hostname`), on the helper's signal (`signal`), or there is
 * no daemon (`none`).
 */
type IdentityStep = "exec" | "hostname" | "signal" | "none";

export interface GvisorCheckpointsOptions {
  client: ContainerdClient;
  snapshotter: string;
  /** This pool's checkpoints on the node: `<directory>/<checkpoint id>/`. */
  directory: string;
  /** The agent's name: other agents sharing `directory` see it on the restores their deletes wait for. */
  agentName: string;
  /** The exec files in the agent's state directory (where the control execs write their output). */
  execFiles: ExecFiles;
  /** The helper's run directory of a sandbox. */
  runDir(sandboxId: string): string;
  /** A sandbox's log file (its task's output). */
  logPath(sandboxId: string): string;
  /** The cgroups path of a container. */
  cgroupsPath(containerId: string): string;
  /** Removes a container's cgroup (a restore undone: Tasks.Create may leave it); rejects while processes are in it. */
  removeCgroup(containerId: string): Promise<void>;
  /** SIGKILLs the host processes of a container's cgroup (the last resort of a task that does not end); how many. */
  killCgroup(containerId: string): Promise<number>;
  /** The image's chain id (its snapshot parent), pulling nothing: a checkpoint's image is on the node. */
  resolveImage(image: string): Promise<{ chainId: string }>;
  /**
   * Claims an Isolated sandbox's network namespace, writes its /etc files into `runDir/etc`, labels
   * the container with its address and registers the teardown in `undo` (the runtime's create step).
   */
  claimNetwork(spec: RuntimeSandboxSpec, runDir: string, labels: Record<string, string>, undo: UndoStep[]): Promise<ClaimedNetwork>;
  /** Makes prepared network namespaces again after a claim. */
  refillNetworks(): void;
  /** Labels of every container the agent makes (managed, agent, its UID). */
  ownerLabels(): Record<string, string>;
  /** Whether a container is this agent's. */
  owns(labels: Readonly<Record<string, string>>): boolean;
  /** Waits up to `timeoutMs` for the task's process 1 to exit; true when it has (or is gone). */
  exitedWithin(containerId: string, timeoutMs: number): Promise<boolean>;
  /**
   * Throws AlreadyExistsError when a sandbox of that id runs on this agent (the runtime's check
   * before a create): a restore checks it first, so a retried restore of a sandbox that exists
   * fails as a duplicate — whose log the agent keeps — even once its checkpoint is gone. @default none
   */
  refuseDuplicate?: (sandboxId: string) => Promise<void>;
  /** Counts a restore as a create in flight until the returned function is called (background refills yield to creates). @default none */
  createStarted?: () => () => void;
  /** One of the agent's shim groups for a restore (done() when it is made); undefined: a shim of its own. */
  shimGroup(): { name: string; done(): void } | undefined;
  /** What the agent's runsc can do (probed once). */
  runscFeatures(): Promise<RunscFeatures>;
  /**
   * This agent's runsc wrapper for a sandbox of that network mode (gvisor-binary.ts): restores run
   * under it, never under the one a checkpoint names, which is its agent's and may be gone.
   */
  runscBinary(networkMode: NetworkMode): string;
  /** The sandbox network's state directory (its namespaces' records), for Isolated sandboxes restored in place. @default none */
  networkStateDir?: string;
  /** Called after each checkpoint with its steps' durations. */
  onCheckpointTimings?: (timings: CheckpointTimings) => void;
  /**
   * Hands a copy restored ahead of time (a pre-restored instance of the pool) over to a restore of
   * the same checkpoint; undefined: none is ready, the restore runs. @default none
   */
  claimRestored?: (spec: RuntimeSandboxSpec) => Promise<RuntimeSandbox | undefined>;
  /**
   * containerd's id of a sandbox's container, once containerd has recorded any claim of it: a
   * sandbox that claimed a copy restored ahead runs in that copy's container. @default containerIdOf
   */
  containerIdFor?: (sandboxId: string) => Promise<string>;
  /** Called once a checkpoint's files are removed. @default none */
  onDeleted?: (checkpointId: string) => void;
  logger: Logger;
}

/** A restore that makes a pre-restored instance (labelled with `role`, no sandbox of its own yet), not a sandbox. */
export interface RestoreAhead {
  /** LABEL_ROLE's value on the instance's container. */
  role: string;
}

export class GvisorCheckpoints implements RuntimeCheckpoints {
  private readonly options: GvisorCheckpointsOptions;
  private readonly client: ContainerdClient;
  private readonly logger: Logger;
  /** The records read so far, by checkpoint id (readRecord). */
  private readonly records = new Map<string, CheckpointRecord>();
  /** Restores running now, in any process of the node: a checkpoint's delete waits for them. */
  private readonly readers: CheckpointReaders;

  constructor(options: GvisorCheckpointsOptions) {
    this.options = options;
    this.client = options.client;
    this.logger = options.logger.child({ component: "gvisor-checkpoints" });
    this.readers = new CheckpointReaders({ owner: options.agentName });
  }

  async checkpoint(request: CheckpointRequest): Promise<RuntimeCheckpoint> {
    checkId(request.checkpointId, "checkpointId");
    const started = performance.now();
    const containerId = await this.containerIdFor(request.sandboxId);
    const container = await this.sandboxContainer(request.sandboxId, containerId);
    if (container.labels[LABEL_RUNTIME_TYPE] !== "gvisor") {
      throw new FailedPreconditionError(`sandbox ${request.sandboxId} runs on runc: checkpoint needs runtimeType gvisor`);
    }
    if (container.labels[LABEL_ROOTFS_OVERLAY] !== ROOTFS_OVERLAY_MEMORY) {
      throw new FailedPreconditionError(
        `sandbox ${request.sandboxId} was created before checkpoints existed: its root file system changes are not in its memory and would be lost; recreate it`,
      );
    }
    const { process: task } = await this.client.tasks.get({ containerId }).catch((error: unknown) => {
      if (isNotFound(error)) throw new FailedPreconditionError(`sandbox ${request.sandboxId} has no running task to checkpoint`);
      throw error;
    });
    if (task?.status !== TaskStatus.RUNNING) {
      throw new FailedPreconditionError(
        `sandbox ${request.sandboxId} is not running (task ${TaskStatus[task?.status ?? TaskStatus.UNKNOWN]}): only a running sandbox can be checkpointed`,
      );
    }
    const ociSpec = JSON.parse(Buffer.from(container.spec?.value ?? []).toString("utf8")) as OciSpec;
    const binaryName = this.binaryNameOf(container);
    const snapshotParent = await this.snapshotParentOf(container);
    const envd = ociSpec.mounts.some((mount) => mount.destination === ENVD_BINARY);
    const runDir = this.options.runDir(request.sandboxId);
    // Refused while the sandbox runs untouched: every restore copies what its run directory holds.
    const excess = runDirectoryExcess(runDir);
    if (excess) {
      throw new FailedPreconditionError(
        `sandbox ${request.sandboxId}'s ${HELPER_RUN_DIR} holds ${excess}; at most ${RUN_DIR_LIMITS} are saved with a checkpoint: remove the files the sandbox wrote there, then retry; the sandbox runs on`,
      );
    }
    // The sandbox's log, which its task may have opened under another name: a prepared instance's
    // (the claim renamed the file, the task's record kept the name).
    const output = `file://${this.options.logPath(request.sandboxId)}`;

    const target = this.checkpointDir(request.checkpointId);
    if (await exists(target)) throw new AlreadyExistsError(`checkpoint ${request.checkpointId} already exists on this node`);
    const partial = `${target}.partial-${randomBytes(4).toString("hex")}`;
    await mkdir(join(partial, IMAGE_DIR), { recursive: true, mode: 0o700 });
    let quiesceMs = 0;
    let checkpointMs = 0;
    let resumeMs = 0;
    let resumeSteps: Record<string, number> = {};
    /** runsc may still be writing into `partial` (a save the agent stopped waiting for): list() removes it later. */
    let partialInUse = false;
    // Read once the sandbox has stopped: its run directory is what the checkpointed helper last wrote.
    const stoppedRecord = (): CheckpointRecord => {
      const daemonResumeSignal = envd ? readResumeSignal(runDir) : undefined;
      const daemonResumesOnHostname = envd && (readRunFile(join(runDir, DAEMON_RESUME_WATCH_FILE)) ?? "").trim() === "hostname";
      return {
        version: 1,
        checkpointId: request.checkpointId,
        namespace: request.namespace,
        name: request.name,
        pool: container.labels[LABEL_POOL] ?? "",
        sourceSandboxId: request.sandboxId,
        sourceName: container.labels[LABEL_NAME] ?? "",
        image: container.labels[LABEL_IMAGE] ?? container.image,
        runtimeType: "gvisor",
        networkMode: ociSpec.linux.namespaces.some((ns) => ns.type === "network" && ns.path) ? "isolated" : "shared",
        ...userCommandOf(ociSpec),
        createdAt: new Date().toISOString(),
        sizeBytes: 0,
        ociSpec,
        runDir,
        binaryName,
        ...(snapshotParent ? { snapshotParent } : {}),
        envd,
        stdout: output,
        stderr: output,
        ...(daemonResumeSignal ? { daemonResumeSignal } : {}),
        ...(daemonResumesOnHostname ? { daemonResumesOnHostname } : {}),
        ...(container.labels[LABEL_HELPER_EXEC_AS] === "true" ? { helperExecAs: true } : {}),
      };
    };
    try {
      let mark = performance.now();
      if (envd) {
        await this.control(containerId, ociSpec, ["-control", "quiesce"], "quiesce the in-sandbox daemon").catch(async (error: unknown) => {
          // The daemon may have quiesced before the exec failed (its report lost, the exec's wait timed out): it serves again.
          await this.control(containerId, ociSpec, ["-control", "resume"], "resume the in-sandbox daemon").catch(() => undefined);
          throw error;
        });
        quiesceMs = performance.now() - mark;
        mark = performance.now();
      }
      try {
        await this.client.tasks.checkpoint(
          {
            containerId,
            options: {
              typeUrl: CHECKPOINT_OPTIONS_TYPE_URL,
              value: toBinary(CheckpointOptionsSchema, create(CheckpointOptionsSchema, { exit: true, imagePath: join(partial, IMAGE_DIR) })),
            },
          },
          { timeoutMs: 120_000 },
        );
      } catch (error) {
        const failure = checkpointError(error, request.sandboxId);
        // Whether runsc stopped the sandbox is its task's to tell, not the error's: a call cut short
        // by the agent's deadline (or containerd gone) leaves runsc saving, and the sandbox stops as it ends.
        // A refusal of the save itself (TCP state): Debian 12's runsc stops the sandbox as it refuses,
        // a moment after its answer.
        const refused = failure instanceof FailedPreconditionError;
        if (await this.taskStopped(containerId, refused ? REFUSAL_STOP_WAIT_MS : 0)) {
          if (refused) {
            // runsc refused the save midway (Debian 12's runsc stops a sandbox whose save fails):
            // what it wrote is incomplete, so there is nothing to run on from.
            this.logger.error(
              { sandboxId: request.sandboxId, checkpointId: request.checkpointId, err: error },
              "runsc refused a checkpoint and stopped the sandbox with it; its memory was not saved",
            );
            throw new FailedPreconditionError(
              `checkpoint ${request.name} of sandbox ${request.sandboxId} was refused: ${failure.message}; this runsc stops a sandbox whose save it refuses, so the sandbox stopped (its memory was not saved)`,
            );
          }
          // runsc is done with it: the sandbox runs on from what runsc wrote, as after a save that failed later.
          throw await this.runOnAfterFailedSave(containerId, stoppedRecord(), join(partial, IMAGE_DIR), failure);
        }
        if (envd) await this.control(containerId, ociSpec, ["-control", "resume"], "resume the in-sandbox daemon").catch(() => undefined);
        if (isTransient(error)) {
          partialInUse = true;
          this.logger.warn(
            { sandboxId: request.sandboxId, checkpointId: request.checkpointId, partial, err: error },
            "a checkpoint did not answer in time; runsc may still be saving the sandbox (which then stops): its partial image is left for a later list to remove",
          );
          throw new FsbError(
            failure.code,
            `checkpoint ${request.name} of sandbox ${request.sandboxId} did not finish (${failure.message}); runsc may still be saving the sandbox, which then stops`,
            { cause: error },
          );
        }
        // runsc refused before it stopped anything: the sandbox runs on, its daemon serves again.
        throw failure instanceof FailedPreconditionError ? new FailedPreconditionError(`${failure.message}; the sandbox runs on`) : failure;
      }
      checkpointMs = performance.now() - mark;
      const record = stoppedRecord();
      try {
        copyRunDirectory(runDir, join(partial, RUN_COPY_DIR));
        record.sizeBytes = await directorySize(partial);
        await writeFile(join(partial, METADATA_FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
        await rename(partial, target);
      } catch (error) {
        throw await this.runOnAfterFailedSave(containerId, record, join(partial, IMAGE_DIR), error);
      }
      if (!request.leaveStopped) {
        mark = performance.now();
        // Tracked as a restore of the checkpoint: a delete of it (listed from the rename on) waits for it.
        resumeSteps = await this.track(request.checkpointId, () => this.restoreInPlace(containerId, output, output, record)).catch((error: unknown) => {
          throw new FsbError(
            FsbError.from(error).code,
            `checkpoint ${request.name} of sandbox ${request.sandboxId} is saved, but the sandbox could not run on: ${FsbError.from(error).message}`,
            { cause: error },
          );
        });
        resumeMs = performance.now() - mark;
      } else {
        // Left stopped: no task at all (a stopped one would read as the command's exit), until resume().
        await this.options.exitedWithin(containerId, 10_000);
        await this.client.tasks.delete({ containerId }).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      }
      const timings = { quiesceMs, checkpointMs, resumeMs, totalMs: performance.now() - started };
      this.logger.info(
        { sandboxId: request.sandboxId, checkpointId: request.checkpointId, sizeBytes: record.sizeBytes, timings, resumeSteps },
        "sandbox checkpointed",
      );
      this.options.onCheckpointTimings?.(timings);
      return publicView(record);
    } finally {
      if (!partialInUse) await rm(partial, { recursive: true, force: true });
    }
  }

  async resume(sandboxId: string, checkpointId: string): Promise<void> {
    const record = await this.record(checkpointId);
    if (record.sourceSandboxId !== sandboxId) {
      throw new FailedPreconditionError(
        `checkpoint ${record.name} is of sandbox ${record.sourceSandboxId}, not ${sandboxId}: restore it into a new sandbox instead`,
      );
    }
    const containerId = await this.containerIdFor(sandboxId);
    await this.sandboxContainer(sandboxId, containerId);
    const { process: task } = await this.client.tasks.get({ containerId }).catch((error: unknown) => {
      if (isNotFound(error)) return { process: undefined };
      throw error;
    });
    if (task?.status === TaskStatus.RUNNING) throw new FailedPreconditionError(`sandbox ${sandboxId} is running: there is nothing to resume`);
    await this.track(checkpointId, () => this.restoreInPlace(containerId, record.stdout, record.stderr, record));
  }

  async list(): Promise<RuntimeCheckpoint[]> {
    let names: string[];
    try {
      names = await readdir(this.options.directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    const checkpoints: RuntimeCheckpoint[] = [];
    for (const id of this.records.keys()) if (!names.includes(id)) this.records.delete(id);
    for (const name of names) {
      const path = join(this.options.directory, name);
      if (name.includes(".partial-")) {
        // A checkpoint cut short by a crash (a live one is younger): its files are nobody's.
        const since = await stat(path).then(
          (info) => Date.now() - info.mtimeMs,
          () => 0,
        );
        if (since > INCOMPLETE_LEFTOVER_MS) await rm(path, { recursive: true, force: true });
        continue;
      }
      if (this.readers.deleting(path)) {
        // Being deleted; or a delete cut short by a crash, long ago, that no restore reads from.
        if (this.readers.tombstoneOlderThan(path, INCOMPLETE_LEFTOVER_MS) && this.readers.liveReaders(path).length === 0) {
          await this.removeAside(name);
        }
        continue;
      }
      const record = await this.readRecord(name);
      if (record) checkpoints.push(publicView(record));
    }
    return checkpoints.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.checkpointId.localeCompare(b.checkpointId));
  }

  async get(checkpointId: string): Promise<RuntimeCheckpoint | undefined> {
    checkId(checkpointId, "checkpointId");
    const record = await this.readRecord(checkpointId);
    return record ? publicView(record) : undefined;
  }

  async delete(checkpointId: string): Promise<void> {
    checkId(checkpointId, "checkpointId");
    const directory = this.checkpointDir(checkpointId);
    // A restore reads the image until its sandbox runs; deleting waits for those in flight, in
    // this agent or another of the node, and no new one starts meanwhile.
    if (await this.readers.beginDelete(directory, checkpointId, DELETE_WAIT_MS)) await this.removeAside(checkpointId);
    this.records.delete(checkpointId);
    this.logger.info({ checkpointId }, "checkpoint deleted");
    this.options.onDeleted?.(checkpointId);
  }

  /**
   * Removes the checkpoint directory `name`, out of its name first: a removal cut short by a crash
   * (one that took its tombstone before its metadata) leaves a leftover list() removes, never a
   * directory that reads as a complete checkpoint again.
   */
  private async removeAside(name: string): Promise<void> {
    const doomed = join(this.options.directory, `${name}.partial-deleted-${randomBytes(4).toString("hex")}`);
    const moved = await rename(join(this.options.directory, name), doomed).then(
      () => true,
      (error: unknown) => {
        // Another delete or list of the node removed it meanwhile.
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw error;
      },
    );
    if (moved) await rm(doomed, { recursive: true, force: true });
  }

  /** Whether the checkpoint's files are on the node (another agent of the pool may have deleted them, or be deleting them). */
  exists(checkpointId: string): boolean {
    const directory = this.checkpointDir(checkpointId);
    return existsSync(directory) && !this.readers.deleting(directory);
  }

  /**
   * Creates and starts a new sandbox from a checkpoint (`spec.fromCheckpoint`): the spec gives its
   * identity (id, namespace, name, log, network policy); image, command and resources are the
   * checkpoint's. On any failure every step taken is undone.
   */
  async restore(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox> {
    const done = this.options.createStarted?.();
    try {
      const checkpointId = spec.fromCheckpoint ?? "";
      await this.options.refuseDuplicate?.(spec.sandboxId);
      const record = await this.record(checkpointId);
      const claimed = await this.options.claimRestored?.(spec);
      if (claimed) return claimed;
      return await this.track(checkpointId, () => this.restoreInto(spec, record));
    } finally {
      done?.();
    }
  }

  /**
   * Restores an instance of the pool ahead of need from checkpoint `spec.fromCheckpoint` (spec.sandboxId
   * and name: the instance's id): a complete copy, its hostname the instance's, labelled with
   * `ahead.role` instead of a sandbox id, so list() and get() leave it out until it is claimed.
   */
  async restoreAhead(spec: RuntimeSandboxSpec, ahead: RestoreAhead): Promise<RuntimeSandbox> {
    const checkpointId = spec.fromCheckpoint ?? "";
    const record = await this.record(checkpointId);
    return this.track(checkpointId, () => this.restoreInto(spec, record, ahead));
  }

  private async restoreInto(spec: RuntimeSandboxSpec, record: CheckpointRecord, ahead?: RestoreAhead): Promise<RuntimeSandbox> {
    const started = performance.now();
    const sandboxId = spec.sandboxId;
    const containerId = containerIdOf(sandboxId);
    const isolated = spec.network?.mode === "isolated";
    if ((isolated ? "isolated" : "shared") !== record.networkMode) {
      throw new FailedPreconditionError(
        `checkpoint ${record.name} is of a sandbox with a ${record.networkMode} network: restore it in a pool whose network mode is ${record.networkMode === "isolated" ? "Isolated" : "Shared"}`,
      );
    }
    const labels: Record<string, string> = {
      ...this.options.ownerLabels(),
      [LABEL_SANDBOX_ID]: sandboxId,
      [LABEL_NAMESPACE]: spec.namespace,
      [LABEL_NAME]: spec.name,
      [LABEL_POOL]: spec.pool,
      [LABEL_IMAGE]: record.image,
      [LABEL_RUNTIME_TYPE]: "gvisor",
      [LABEL_ROOTFS_OVERLAY]: ROOTFS_OVERLAY_MEMORY,
      [LABEL_RESTORED_FROM]: record.checkpointId,
      ...(spec.exposedPorts?.length ? { [LABEL_EXPOSED_PORTS]: spec.exposedPorts.join(",") } : {}),
      ...(record.ociSpec.process.args[0] === HELPER_BINARY ? { [LABEL_HELPER]: "true" } : {}),
      ...(record.helperExecAs ? { [LABEL_HELPER_EXEC_AS]: "true" } : {}),
      ...diskLimitLabels(spec.resources),
    };
    if (ahead) {
      delete labels[LABEL_SANDBOX_ID];
      delete labels[LABEL_NAME];
      labels[LABEL_ROLE] = ahead.role;
    }
    const runDir = this.options.runDir(sandboxId);
    const undo: UndoStep[] = [];
    const group = this.options.shimGroup();
    const timings = { network: 0, snapshot: 0, container: 0, task: 0, policy: 0, start: 0, identity: 0 };
    let mark = performance.now();
    const lap = () => {
      const now = performance.now();
      const elapsed = now - mark;
      mark = now;
      return elapsed;
    };
    try {
      if (await exists(runDir)) throw new AlreadyExistsError(`sandbox ${sandboxId} already exists (its run directory is present)`);
      undo.push({ step: "run directory", run: () => removeTree(runDir) });
      // Two independent steps at once: the copy's run directory (what the checkpointed helper had
      // written) and network namespace (its own /etc files), and its snapshot (labelled before the
      // network is known: the namespace has its own record).
      const since = performance.now();
      let network: ClaimedNetwork | undefined;
      let mounts: Awaited<ReturnType<ContainerdClient["snapshots"]["prepare"]>>["mounts"] = [];
      const steps = await Promise.allSettled([
        (async () => {
          try {
            copyRunDirectory(join(this.checkpointDir(record.checkpointId), RUN_COPY_DIR), runDir, runDirOwner(record.ociSpec));
          } catch (error) {
            // A checkpoint saved before run directories had a bound, with more than a restore copies.
            if (!(error instanceof RunDirectoryTooLargeError)) throw error;
            throw new FailedPreconditionError(
              `checkpoint ${record.name} cannot be restored: its saved ${HELPER_RUN_DIR} holds ${error.excess}, and at most ${RUN_DIR_LIMITS} are copied into a restored sandbox`,
            );
          }
          if (isolated) {
            network = await this.options.claimNetwork(spec, runDir, labels, undo);
            timings.network = performance.now() - since;
          }
        })(),
        (async () => {
          const snapshotLabels = { ...labels, [GC_ROOT_LABEL]: new Date().toISOString() };
          const prepare = async (parent: string) => {
            try {
              ({ mounts } = await this.client.snapshots.prepare({
                snapshotter: this.options.snapshotter,
                key: containerId,
                parent,
                labels: snapshotLabels,
              }));
            } catch (error) {
              if (error instanceof AlreadyExistsError) throw new AlreadyExistsError(`sandbox ${sandboxId} already exists (snapshot ${containerId} is present)`);
              throw error;
            }
          };
          if (!record.snapshotParent) {
            await prepare((await this.options.resolveImage(record.image)).chainId);
          } else {
            // The layers the checkpoint was taken on, whatever the image's name points to now: the
            // copy's memory overlay is their changes.
            try {
              await prepare(record.snapshotParent);
            } catch (error) {
              // A new key is missing nothing but its parent: those layers are gone from the node
              // (the image removed, or pulled anew under its name and theirs collected). The image
              // by its name serves only when it is still made of the same layers.
              if (!isNotFound(error)) throw error;
              const { chainId } = await this.options.resolveImage(record.image);
              if (chainId !== record.snapshotParent) {
                throw new FailedPreconditionError(
                  `checkpoint ${record.name} cannot be restored: image ${record.image} has changed since the checkpoint (its layers were ${record.snapshotParent}, they are ${chainId} now), and the checkpoint's memory holds changes to the old layers`,
                );
              }
              await prepare(chainId);
            }
          }
          undo.push({ step: "snapshot", run: () => this.client.snapshots.remove({ snapshotter: this.options.snapshotter, key: containerId }) });
          timings.snapshot = performance.now() - since;
        })(),
      ]);
      for (const step of steps) if (step.status === "rejected") throw step.reason;
      lap();
      const ociSpec = copySpec(record, {
        runDir,
        cgroupsPath: this.options.cgroupsPath(containerId),
        hostname: sandboxHostname(spec),
        ...(network ? { netnsPath: network.netnsPath } : {}),
        ...(group ? { shimGroup: group.name } : {}),
      });
      // This agent's wrapper: the checkpointing agent's, whose state directory may be gone, would fail
      // this restore, and the kills, execs and delete of the copy later on.
      const binaryName = this.options.runscBinary(record.networkMode);
      const runtimeOptions = runcOptions(binaryName);
      try {
        await this.client.containers.create({
          container: {
            id: containerId,
            labels,
            image: record.image,
            runtime: { name: RUNC_V2, options: runtimeOptions },
            spec: { typeUrl: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(ociSpec)) },
            snapshotter: this.options.snapshotter,
            snapshotKey: containerId,
          },
        });
      } catch (error) {
        if (error instanceof AlreadyExistsError) throw new AlreadyExistsError(`sandbox ${sandboxId} already exists in containerd (container ${containerId})`);
        throw error;
      }
      undo.push({ step: "container", run: () => this.client.containers.delete({ id: containerId }) });
      // Runs after the task's undo: a Tasks.Create that failed half-way may have left the cgroup.
      undo.push({ step: "cgroup", run: () => this.options.removeCgroup(containerId) });
      timings.container = lap();
      await this.client.tasks.create({
        containerId,
        rootfs: mounts,
        stdout: `file://${spec.logPath}`,
        stderr: `file://${spec.logPath}`,
        // Task options replace the container's runtime options wholesale: the wrapper is repeated.
        options: runcOptions(binaryName, join(this.checkpointDir(record.checkpointId), IMAGE_DIR)),
      });
      undo.push({ step: "task", run: () => this.killTask(containerId) });
      timings.task = lap();
      if (network) {
        // Nothing of the copy runs before its egress policy is in force.
        await network.policyApplied;
        timings.policy = lap();
      }
      await this.client.tasks.start({ containerId }, { timeoutMs: 60_000 });
      timings.start = lap();
      const identityBy = await this.giveIdentity(containerId, ociSpec, record, sandboxHostname(spec), network?.address);
      timings.identity = lap();
      const { process: task } = await this.client.tasks.get({ containerId });
      this.logger.info(
        {
          sandboxId,
          checkpointId: record.checkpointId,
          timings,
          identityBy,
          ...(network ? { networkPrepared: network.prepared } : {}),
          totalMs: performance.now() - started,
        },
        "sandbox restored",
      );
      return {
        sandboxId,
        namespace: spec.namespace,
        name: spec.name,
        pool: spec.pool,
        image: record.image,
        state: "running",
        ...(task?.pid ? { pid: task.pid } : {}),
        ...(spec.exposedPorts?.length ? { exposedPorts: [...spec.exposedPorts] } : {}),
        ...(network ? { address: network.address } : {}),
        labels,
      };
    } catch (error) {
      for (const { step, run } of undo.reverse()) {
        try {
          await run();
        } catch (undoError) {
          if (!isNotFound(undoError))
            this.logger.warn({ sandboxId, containerId, step, err: undoError }, "could not undo a restore step; the janitor must remove it");
        }
      }
      throw FsbError.from(error);
    } finally {
      group?.done();
      if (isolated) this.options.refillNetworks();
    }
  }

  /**
   * runsc saved the sandbox and stopped it, but the checkpoint could not be completed (a full disk…):
   * the sandbox runs on from the image runsc saved (still in the partial directory), so a failed
   * checkpoint or pause costs it nothing. Returns the error to throw, saying which it was.
   */
  private async runOnAfterFailedSave(containerId: string, record: CheckpointRecord, imageDir: string, error: unknown): Promise<FsbError> {
    const failure = FsbError.from(error);
    const what = `checkpoint ${record.name} of sandbox ${record.sourceSandboxId} could not be saved after runsc stopped the sandbox (${failure.message})`;
    try {
      await this.restoreInPlace(containerId, record.stdout, record.stderr, record, imageDir);
      this.logger.warn(
        { sandboxId: record.sourceSandboxId, checkpointId: record.checkpointId, err: error },
        "a checkpoint could not be saved; the sandbox runs on",
      );
      return new FsbError(failure.code, `${what}; the sandbox runs on`, { cause: error });
    } catch (restoreError) {
      this.logger.error({ sandboxId: record.sourceSandboxId, err: restoreError }, "a sandbox whose checkpoint could not be saved could not run on");
      return new FsbError(failure.code, `${what}, and it could not run on (${withoutGoTrace(FsbError.from(restoreError).message)})`, { cause: error });
    }
  }

  /**
   * Whether the sandbox's task has stopped (or is gone), looking again for up to `waitMs`; one whose
   * status containerd does not give counts as not stopped.
   */
  private async taskStopped(containerId: string, waitMs = 0): Promise<boolean> {
    const deadline = performance.now() + waitMs;
    for (;;) {
      try {
        const { process: task } = await this.client.tasks.get({ containerId });
        if (!task || task.status === TaskStatus.STOPPED) return true;
      } catch (error) {
        if (isNotFound(error)) return true;
        return false;
      }
      if (performance.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Replaces the checkpointed (stopped) task of the sandbox by one restored from `record` (its image in `imageDir`). */
  private async restoreInPlace(
    containerId: string,
    stdout: string,
    stderr: string,
    record: CheckpointRecord,
    imageDir = join(this.checkpointDir(record.checkpointId), IMAGE_DIR),
  ): Promise<Record<string, number>> {
    const steps: Record<string, number> = {};
    let mark = performance.now();
    const lap = (step: string) => {
      const now = performance.now();
      steps[step] = now - mark;
      mark = now;
    };
    // runsc's checkpoint returns as the sandbox exits; the shim reports the exit a moment later (a missing task counts as exited).
    if (!(await this.options.exitedWithin(containerId, 10_000))) throw new FsbError("internal", `the checkpointed task of ${containerId} did not stop`);
    lap("exitMs");
    await this.client.tasks.delete({ containerId }).catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
    lap("deleteMs");
    // The run directory is the sandbox's to write: a mount source in it that became a link would
    // show the sandbox a file of the host once mounted again.
    const { linked, gone } = unsafeRunDirMounts(record.ociSpec, record.runDir);
    if (linked.length > 0) {
      throw new FailedPreconditionError(
        `the sandbox replaced the source of its mount ${linked.join(", ")} with a link; it is not resumed, as a mount through a link would show it a file of the host`,
      );
    }
    if (gone.length > 0) throw new FailedPreconditionError(`the source of the sandbox's mount ${gone.join(", ")} is gone; it cannot be resumed`);
    const address = record.networkMode === "isolated" ? await this.readdress(record.sourceSandboxId) : undefined;
    const { mounts } = await this.client.snapshots.mounts({ snapshotter: this.options.snapshotter, key: containerId });
    await this.client.tasks.create({
      containerId,
      rootfs: mounts,
      stdout,
      stderr,
      options: runcOptions(this.options.runscBinary(record.networkMode), imageDir),
    });
    lap("createMs");
    try {
      await this.client.tasks.start({ containerId }, { timeoutMs: 60_000 });
    } catch (error) {
      await this.killTask(containerId).catch(() => undefined);
      throw error;
    }
    lap("startMs");
    const resumedBy = record.envd ? await this.resumeDaemon(containerId, record.ociSpec, record, address) : "none";
    lap("daemonMs");
    this.logger.info({ containerId, checkpointId: record.checkpointId, resumedBy, steps }, "sandbox restored in place");
    return steps;
  }

  /**
   * Gives the sandbox's network namespace its IPv4 address and default route back: runsc took them
   * for its own stack when the checkpointed sandbox started, and a restore reads them from there.
   */
  private async readdress(sandboxId: string): Promise<string> {
    const directory = this.options.networkStateDir;
    const record = directory ? new AttachmentStore(directory).list().find(({ record: r }) => r.sandboxId === sandboxId)?.record : undefined;
    if (!record?.address) throw new FsbError("internal", `sandbox ${sandboxId} has no network namespace record to restore it into`);
    const { address, prefixLength, gateway } = record.address;
    await run("ip", ["-n", record.netnsName, "addr", "replace", `${address}/${prefixLength}`, "dev", SANDBOX_INTERFACE]);
    await run("ip", ["-n", record.netnsName, "route", "replace", "default", "via", gateway, "dev", SANDBOX_INTERFACE]);
    return address;
  }

  /** A copy's own hostname (kernel state, the checkpoint's until set), and its daemon serving in its own network. */
  private async giveIdentity(
    containerId: string,
    ociSpec: OciSpec,
    record: CheckpointRecord,
    hostname: string,
    address: string | undefined,
  ): Promise<IdentityStep> {
    if ((await this.options.runscFeatures()).hostnameOnRestore) {
      // runsc gave the copy the hostname of its spec; a daemon that watches its hostname sees it.
      if (!record.envd) return "none";
      const selfResuming = record.daemonResumesOnHostname && hostname !== record.ociSpec.hostname;
      return this.resumeDaemon(containerId, ociSpec, record, address, selfResuming);
    }
    if (record.envd) {
      await this.control(containerId, ociSpec, ["-hostname", hostname, "-control", "resume"], "give the copy its hostname and resume its daemon", true);
      return "exec";
    }
    // Without the daemon: the helper's `--sethostname`.
    const args = hostnameExecArgs(ociSpec, hostname);
    if (!args) {
      this.logger.info({ containerId, hostname }, "the restored sandbox keeps its checkpoint's hostname (it runs without the helper)");
      return "none";
    }
    await this.run(containerId, ociSpec, args, true).catch((error: unknown) =>
      this.logger.info({ containerId, hostname, err: error }, "the restored sandbox keeps its checkpoint's hostname (the helper could not set it)"),
    );
    return "exec";
  }

  /**
   * Resumes the restored sandbox's quiesced daemon: by the helper's signal when the checkpointed
   * helper takes one and the daemon's address is known (then done once the daemon accepts a
   * connection), else — or when it does not serve within DAEMON_RESUME_TIMEOUT_MS — by the exec.
   */
  private async resumeDaemon(
    containerId: string,
    ociSpec: OciSpec,
    record: CheckpointRecord,
    address: string | undefined,
    selfResuming = false,
  ): Promise<IdentityStep> {
    if (selfResuming && address) {
      if (await acceptsConnections(address, SANDBOX_DAEMON_PORT, DAEMON_SELF_RESUME_TIMEOUT_MS)) return "hostname";
      this.logger.warn({ containerId, address }, "the in-sandbox daemon did not serve on its new hostname; signalling it");
    }
    if (record.daemonResumeSignal && address) {
      await this.client.tasks.kill({ containerId, signal: record.daemonResumeSignal, all: false });
      if (await acceptsConnections(address, SANDBOX_DAEMON_PORT, DAEMON_RESUME_TIMEOUT_MS)) return "signal";
      this.logger.warn({ containerId, address }, "the in-sandbox daemon did not serve after the resume signal; resuming it by exec");
    }
    await this.control(containerId, ociSpec, ["-control", "resume"], "resume the in-sandbox daemon");
    return "exec";
  }

  /** Runs the in-sandbox daemon's control client (`fsb-envd -control …`) in the sandbox. */
  private async control(containerId: string, ociSpec: OciSpec, args: string[], what: string, setsHostname = false): Promise<void> {
    try {
      await this.run(containerId, ociSpec, [ENVD_BINARY, ...args], setsHostname);
    } catch (error) {
      throw new FailedPreconditionError(`could not ${what}: ${FsbError.from(error).message}`);
    }
  }

  /**
   * Runs a short process in the sandbox as root, with CAP_KILL and CAP_DAC_OVERRIDE (to signal and
   * read whatever user the sandbox runs as) and, to set the hostname, CAP_SYS_ADMIN — that process
   * alone; fails with its output when it exits non-zero.
   */
  private async run(containerId: string, ociSpec: OciSpec, args: string[], sysAdmin: boolean): Promise<void> {
    const execId = `fsb-control-${randomBytes(4).toString("hex")}`;
    const { execFiles } = this.options;
    const output = join(execFiles.stateDir, controlOutputName(containerId, execId));
    const capabilities = ["CAP_KILL", "CAP_DAC_OVERRIDE", ...(sysAdmin ? ["CAP_SYS_ADMIN"] : [])];
    const process = {
      ...ociSpec.process,
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      cwd: "/",
      capabilities: { bounding: capabilities, effective: capabilities, permitted: capabilities, inheritable: [], ambient: [] },
    };
    // Kept from a sweep of leftovers (a sandbox's deletion) while the exec runs.
    const release = execFiles.hold(`${containerId}.${execId}`);
    try {
      await this.client.tasks.exec({
        containerId,
        execId,
        stdout: `file://${output}`,
        stderr: `file://${output}`,
        terminal: false,
        spec: { typeUrl: PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify(process)) },
      });
      try {
        await this.client.tasks.start({ containerId, execId });
        const { exitStatus } = await this.client.tasks.wait({ containerId, execId }, { timeoutMs: CONTROL_EXEC_TIMEOUT_MS });
        if (exitStatus !== 0) {
          const text = await readFile(output, "utf8").catch(() => "");
          throw new FsbError("internal", `${args.join(" ")} exited with ${exitStatus}${text.trim() ? `: ${text.trim()}` : ""}`);
        }
      } finally {
        await this.client.tasks.deleteProcess({ containerId, execId }).catch(() => undefined);
      }
    } finally {
      await rm(output, { force: true });
      release();
    }
  }

  /**
   * SIGKILL to process 1 (which ends a gVisor sandbox, restored or not), then Tasks.Delete; a task
   * that has not ended 5 s later has its cgroup's host processes killed first (a Sentry stuck in
   * the open of a host FIFO outlives its SIGKILL), as the runtime's delete does.
   */
  private async killTask(containerId: string): Promise<void> {
    await this.client.tasks.kill({ containerId, signal: 9, all: false }).catch(() => undefined);
    if (!(await this.options.exitedWithin(containerId, 5_000))) {
      const killed = await this.options.killCgroup(containerId);
      this.logger.warn({ containerId, processes: killed }, "a restored task did not end on SIGKILL; its cgroup's processes were killed");
      await this.options.exitedWithin(containerId, 5_000);
    }
    await this.client.tasks.delete({ containerId });
  }

  /** Runs a restore from the checkpoint as one of its readers: its files stay until the restore is done (checkpoint-readers.ts). */
  private track<T>(checkpointId: string, work: () => Promise<T>): Promise<T> {
    return this.readers.read(this.checkpointDir(checkpointId), checkpointId, work);
  }

  private checkpointDir(checkpointId: string): string {
    return join(this.options.directory, checkpointId);
  }

  private async record(checkpointId: string): Promise<CheckpointRecord> {
    checkId(checkpointId, "fromCheckpoint");
    const record = await this.readRecord(checkpointId);
    if (!record) throw new NotFoundError(`checkpoint ${checkpointId} does not exist on this node`);
    return record;
  }

  /**
   * A checkpoint's record. Records are written once (last, by a rename) and never change, so they
   * are read once and kept while their file exists (another agent of the node may delete it).
   */
  private async readRecord(checkpointId: string): Promise<CheckpointRecord | undefined> {
    const path = join(this.checkpointDir(checkpointId), METADATA_FILE);
    // A checkpoint being deleted is gone already for anything that would read it.
    if (this.readers.deleting(this.checkpointDir(checkpointId))) return undefined;
    const known = this.records.get(checkpointId);
    if (known) {
      if (existsSync(path)) return known;
      this.records.delete(checkpointId);
      return undefined;
    }
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ENOTDIR") return undefined;
      throw error;
    }
    const record = JSON.parse(text) as CheckpointRecord;
    if (record.version !== 1 || record.checkpointId !== checkpointId) return undefined;
    record.networkMode = networkModeOf(record);
    this.records.set(checkpointId, record);
    return record;
  }

  private containerIdFor(sandboxId: string): Promise<string> {
    return this.options.containerIdFor?.(sandboxId) ?? Promise.resolve(containerIdOf(sandboxId));
  }

  private async sandboxContainer(sandboxId: string, containerId: string): Promise<Container> {
    let container: Container | undefined;
    try {
      ({ container } = await this.client.containers.get({ id: containerId }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    if (!container || sandboxIdOfContainer(container) !== sandboxId || !this.options.owns(container.labels) || !container.labels[LABEL_AGENT]) {
      throw new NotFoundError(`sandbox ${sandboxId} does not exist on this agent`);
    }
    return container;
  }

  /** The snapshot a container's root file system was prepared on (its image's chain id then); undefined: none known. */
  private async snapshotParentOf(container: Container): Promise<string | undefined> {
    if (!container.snapshotKey) return undefined;
    try {
      const { info } = await this.client.snapshots.stat({ snapshotter: container.snapshotter || this.options.snapshotter, key: container.snapshotKey });
      return info?.parent || undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  private binaryNameOf(container: Container): string {
    const options = container.runtime?.options;
    const binaryName = options?.typeUrl === RUNC_OPTIONS_TYPE_URL ? fromBinary(RuncOptionsSchema, options.value).binaryName : "";
    if (!binaryName) throw new FailedPreconditionError(`container ${container.id} names no runsc binary in its runtime options`);
    return binaryName;
  }
}

/**
 * A record's network mode. Every record written so far has one; should one lack it, the name of the
 * wrapper it ran under tells, else its OCI spec (a network namespace by path is its own), as at
 * checkpoint time.
 */
export function networkModeOf(record: Pick<CheckpointRecord, "ociSpec" | "binaryName"> & { networkMode?: unknown }): NetworkMode {
  if (record.networkMode === "isolated" || record.networkMode === "shared") return record.networkMode;
  const wrapper = record.binaryName?.split("/").pop();
  if (wrapper === OWN_NETNS_WRAPPER) return "isolated";
  if (wrapper === NETWORK_NONE_WRAPPER) return "shared";
  return record.ociSpec.linux.namespaces.some((ns) => ns.type === "network" && ns.path) ? "isolated" : "shared";
}

/** The signal the sandbox's helper takes to resume its daemon, from its run directory; undefined: none (an older helper). */
function readResumeSignal(runDir: string): number | undefined {
  const text = readRunFile(join(runDir, DAEMON_RESUME_SIGNAL_FILE)) ?? "";
  const signal = Number.parseInt(text.trim(), 10);
  return Number.isInteger(signal) && signal > 0 && signal < 65 ? signal : undefined;
}

/** Polls a TCP connect to address:port every few ms until one is accepted (true) or `timeoutMs` passed (false). */
async function acceptsConnections(address: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: address, port });
      socket.setTimeout(Math.max(1, deadline - performance.now()));
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
      socket.once("timeout", () => {
        socket.destroy();
        resolve(false);
      });
    });
    if (accepted) return true;
    if (performance.now() >= deadline) return false;
    await delay(2);
  }
}

function runcOptions(binaryName: string, criuImagePath?: string): { typeUrl: string; value: Uint8Array } {
  return {
    typeUrl: RUNC_OPTIONS_TYPE_URL,
    value: toBinary(RuncOptionsSchema, create(RuncOptionsSchema, { binaryName, ...(criuImagePath ? { criuImagePath } : {}) })),
  };
}

/** A run directory holds more than its copy takes (`excess`: how much, as runDirectoryExcess says it). */
export class RunDirectoryTooLargeError extends FailedPreconditionError {
  readonly excess: string;

  constructor(excess: string) {
    super(`the run directory holds ${excess}; at most ${RUN_DIR_LIMITS} are copied`);
    this.excess = excess;
  }
}

/**
 * What a run directory holds beyond the bound of its copy — `N bytes` (its regular files' sizes) or
 * `more than N files and directories` — or undefined when it is within it. Links are not followed,
 * and the walk stops at the first entry past the bound: a directory the sandbox filled with
 * millions of names costs no more to look at than a full one.
 */
export function runDirectoryExcess(path: string): string | undefined {
  // None at all is no excess: the copy says what is missing.
  if (!lstatSync(path, { throwIfNoEntry: false })?.isDirectory()) return undefined;
  let bytes = 0;
  let entries = 0;
  const pending = [path];
  for (let directory = pending.pop(); directory !== undefined; directory = pending.pop()) {
    // Read one entry at a time (readdirSync would read a whole directory, however many names it holds).
    const dir = opendirSync(directory);
    try {
      for (let entry = dir.readSync(); entry; entry = dir.readSync()) {
        entries += 1;
        if (entries > RUN_DIR_MAX_ENTRIES) return `more than ${RUN_DIR_MAX_ENTRIES} files and directories`;
        const child = join(directory, entry.name);
        const stats = lstatSync(child);
        if (stats.isDirectory()) pending.push(child);
        else if (stats.isFile()) bytes += stats.size;
      }
    } finally {
      dir.closeSync();
    }
  }
  return bytes > RUN_DIR_MAX_BYTES ? `${bytes} bytes` : undefined;
}

/**
 * Copies a helper's run directory (a few small files: at once, fs.promises.cp took 14-20 ms of a
 * restore's event loop): its regular files and directories. The directory is the sandbox's to
 * write, and the helper makes nothing else: a link would lead the agent's writes into a copy (its
 * /etc files) and a copy's mounts to files of the host; FIFOs, sockets and devices are no state and
 * cannot be copied. All are left out. A directory beyond RUN_DIR_MAX_BYTES or RUN_DIR_MAX_ENTRIES is
 * not copied at all (RunDirectoryTooLargeError): the copy blocks the event loop, and is made again
 * for every sandbox restored.
 *
 * Each entry keeps its owner (cpSync would make all of them the agent's, root): the helper and the
 * in-sandbox daemon write their reports (exit-code…) as the image's user, through a temporary file
 * and a rename in the directory, which a cold create makes that user's for it. `owner` (runDirOwner)
 * is given the copy's directory itself, as a cold create does, whoever owned the source's: a
 * checkpoint saved before copies kept their owners has a root-owned one.
 */
export function copyRunDirectory(from: string, to: string, owner?: OciUser): void {
  const excess = runDirectoryExcess(from);
  if (excess) throw new RunDirectoryTooLargeError(excess);
  cpSync(from, to, {
    recursive: true,
    filter: (source) => {
      const stats = lstatSync(source);
      return stats.isFile() || stats.isDirectory();
    },
  });
  keepOwners(from, to);
  if (owner) chownSync(to, owner.uid, owner.gid);
}

/** Gives every entry copied to `to` the owner of its source in `from` (entries left out are skipped). */
function keepOwners(from: string, to: string): void {
  const source = lstatSync(from);
  const copy = lstatSync(to, { throwIfNoEntry: false });
  if (!copy) return;
  if (copy.uid !== source.uid || copy.gid !== source.gid) lchownSync(to, source.uid, source.gid);
  if (source.isDirectory() && copy.isDirectory()) for (const name of readdirSync(from)) keepOwners(join(from, name), join(to, name));
}

/**
 * Who a sandbox's run directory belongs to, as a cold create makes it (containerd-runtime.ts): the
 * numeric user its helper (process 1) runs as, when that is not root; undefined otherwise (no
 * helper, root, or a named user, for which process 1 stays root).
 */
export function runDirOwner(spec: Pick<OciSpec, "process">): OciUser | undefined {
  if (spec.process.args[0] !== HELPER_BINARY) return undefined;
  const { uid, gid } = spec.process.user;
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || (uid === 0 && gid === 0)) return undefined;
  return { uid, gid };
}

/**
 * The mounts of `spec` whose source is `runDir` or below it and that a link leads elsewhere
 * (`linked`), or that are not there (`gone`), by destination.
 */
export function unsafeRunDirMounts(spec: Pick<OciSpec, "mounts">, runDir: string): { linked: string[]; gone: string[] } {
  const prefix = runDir.endsWith("/") ? runDir : `${runDir}/`;
  const inRunDir = spec.mounts.filter((mount) => mount.source === runDir || mount.source.startsWith(prefix));
  const unsafe = { linked: [] as string[], gone: [] as string[] };
  if (inRunDir.length === 0) return unsafe;
  let realRunDir: string | undefined;
  try {
    realRunDir = realpathSync(runDir);
  } catch {
    // gone with everything below it
  }
  for (const mount of inRunDir) {
    if (realRunDir === undefined || !existsSync(mount.source)) {
      (lstatSync(mount.source, { throwIfNoEntry: false }) ? unsafe.linked : unsafe.gone).push(mount.destination);
      continue;
    }
    const expected = mount.source === runDir ? realRunDir : join(realRunDir, mount.source.slice(prefix.length));
    if (realpathSync(mount.source) !== expected || lstatSync(mount.source).isSymbolicLink()) unsafe.linked.push(mount.destination);
  }
  return unsafe;
}

/**
 * The OCI spec of a copy: the checkpoint's, with what is the copy's own rewritten — the sources of
 * its run directory's mounts (the helper's directory and an Isolated sandbox's /etc files), its
 * network namespace, cgroup and hostname. Mount order, destinations, process and namespaces stay
 * (runsc restores the mount tree of the image onto them).
 */
export function copySpec(
  record: Pick<CheckpointRecord, "ociSpec" | "runDir">,
  own: { runDir: string; cgroupsPath: string; hostname: string; netnsPath?: string; shimGroup?: string },
): OciSpec {
  const spec = moveRunDir(record.ociSpec, record.runDir, own.runDir);
  for (const namespace of spec.linux.namespaces) {
    if (namespace.type === "network" && namespace.path !== undefined) {
      if (!own.netnsPath) throw new FsbError("internal", "an Isolated checkpoint needs the copy's network namespace");
      namespace.path = own.netnsPath;
    }
  }
  spec.linux.cgroupsPath = own.cgroupsPath;
  spec.hostname = own.hostname;
  // The source's shim group is its agent's: a copy joins one of its own agent's, or has a shim of its own.
  const { [SHIM_GROUP_ANNOTATION]: _sourceGroup, ...annotations } = spec.annotations ?? {};
  spec.annotations = own.shimGroup ? { ...annotations, [SHIM_GROUP_ANNOTATION]: own.shimGroup } : annotations;
  return spec;
}

/** A copy of `spec` whose mounts of `from` (the run directory) or below it come from `to` instead. */
export function moveRunDir(spec: OciSpec, from: string, to: string): OciSpec {
  const moved = structuredClone(spec);
  const prefix = from.endsWith("/") ? from : `${from}/`;
  for (const mount of moved.mounts) {
    if (mount.source === from) mount.source = to;
    else if (mount.source.startsWith(prefix)) mount.source = join(to, mount.source.slice(prefix.length));
  }
  return moved;
}

/**
 * The exec that gives a restored copy without the daemon its hostname: the helper (`--sethostname`)
 * by its absolute path in its read-only mount. Never a program found through the copy's PATH: the
 * copy's root file system is the sandbox's to change (its code could replace /bin/hostname), and
 * this exec runs as root with CAP_SYS_ADMIN. Undefined when the sandbox has no helper mounted.
 */
export function hostnameExecArgs(spec: OciSpec, hostname: string): string[] | undefined {
  return spec.mounts.some((mount) => mount.destination === HELPER_BINARY) ? [HELPER_BINARY, "--sethostname", hostname] : undefined;
}

/** The user's command and working directory inside the helper's arguments (`helper --workdir W [--envd E] -- CMD…`). */
export function userCommandOf(spec: Pick<OciSpec, "process">): { command: string[]; workingDir: string } {
  const args = spec.process.args;
  if (args[0] !== HELPER_BINARY) return { command: [...args], workingDir: spec.process.cwd || "/" };
  const separator = args.indexOf("--");
  const workdirAt = args.indexOf("--workdir");
  return {
    command: separator >= 0 ? args.slice(separator + 1) : args.slice(1),
    workingDir: workdirAt >= 0 && workdirAt < (separator >= 0 ? separator : args.length) ? (args[workdirAt + 1] ?? "/") : "/",
  };
}

/** How long a sandbox whose save runsc refused is watched for the stop that Debian 12's runsc makes follow its refusal. */
const REFUSAL_STOP_WAIT_MS = 3_000;

/** A runsc error without the Go stack trace a panic appends to it (goroutine dumps), which says nothing to a user. */
export function withoutGoTrace(message: string): string {
  const trace = /:?\s*goroutine \d+ \[/.exec(message);
  return trace ? `${message.slice(0, trace.index).trimEnd()} (runsc's stack trace is in the agent's log)` : message;
}

/** runsc's refusal, as a FailedPreconditionError that says what to change; anything else as it is. */
export function checkpointError(error: unknown, sandboxId: string): FsbError {
  const text = error instanceof Error ? error.message : String(error);
  const connected = /cannot be saved in connected state: (local [^,]+, remote [^:]+:\d+)/.exec(text);
  if (connected || /save rejected|still has waiters upon save/.test(text)) {
    return new FailedPreconditionError(
      `sandbox ${sandboxId} holds TCP sockets this gVisor (runsc 20221219) cannot save` +
        (connected
          ? ` (a connection ${connected[1]})`
          : /waiters/.test(text)
            ? " (a socket a process waits on through epoll, as Go, Node.js and asyncio servers do)"
            : "") +
        ": close connections, wait 60 s after the last one closed (TIME-WAIT), stop such servers, then retry",
    );
  }
  return FsbError.from(error);
}

function publicView(record: CheckpointRecord): RuntimeCheckpoint {
  const {
    version: _version,
    ociSpec: _spec,
    runDir: _runDir,
    binaryName: _binary,
    snapshotParent: _parent,
    envd: _envd,
    daemonResumeSignal: _signal,
    daemonResumesOnHostname: _watch,
    ...view
  } = record;
  return view;
}

function checkId(id: string, field: string): void {
  if (!isSandboxId(id)) throw new ValidationError(field, `${JSON.stringify(id)} is not a valid checkpoint id (lower-case letters, digits, '.', '_' and '-')`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function directorySize(path: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) total += await directorySize(child);
    else if (entry.isFile()) total += (await stat(child)).size;
  }
  return total;
}
