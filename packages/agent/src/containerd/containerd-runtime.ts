/**
 * The agent's Runtime on containerd: sandboxes are containerd containers + runc (or runsc) tasks,
 * created through containerd's gRPC services directly (no `ctr`, no containerd Go client).
 *
 * Create path: resolve image (cached) -> [isolated: claim a network namespace] -> Snapshots.Prepare
 * -> Containers.Create -> Tasks.Create -> [isolated: its egress policy in force] -> Tasks.Start ->
 * the helper's report that the command started (command-start.ts); every step is undone in
 * reverse order when a later one fails. Networking is the `networks` sub-service (network/).
 *
 * Sandboxes are known by their sandbox id everywhere the agent reports them and in the host files
 * of its state directory; containerd knows each one under the container id it maps to
 * (container-id.ts), which also names its task, snapshot and cgroup.
 */
import { setMaxListeners } from "node:events";
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { chown, lstat, mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { availableParallelism, totalmem } from "node:os";
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { AlreadyExistsError, FailedPreconditionError, FsbError, NotFoundError, UnavailableError, ValidationError } from "@fast-sandbox/api/core";
import {
  LABEL_AGENT,
  LABEL_AGENT_UID,
  LABEL_EXPOSED_PORTS,
  LABEL_MANAGED,
  LABEL_NAME,
  LABEL_NAMESPACE,
  LABEL_POOL,
  LABEL_SANDBOX_ID,
  type DeleteOptions,
  type ExecIo,
  type ExecRequest,
  type PullImageOptions,
  type PulledImage,
  type PreparedInstancesState,
  type Runtime,
  type RuntimeSandbox,
  type RuntimeSandboxSpec,
  type RuntimeSandboxStats,
  type RuntimeSandboxState,
} from "../runtime/runtime.js";
import { execFifoName, parseExecFifoName, sandboxIdOfLogFile, sandboxLogDir, sandboxLogPath, sandboxRunDir } from "../state-layout.js";
import { removeLog } from "../log-rotation.js";
import { PreparedPool } from "../runtime/prepared-pool.js";
import {
  CLAIM_FIFO,
  CLAIM_MAX_BYTES,
  ROLE_PREPARED_INSTANCE,
  encodeClaim,
  newInstanceId,
  templateKey,
  networkKey,
  writeClaim,
  type PreparedInstancesSettings,
} from "./prepared-instances.js";
import { ContainerdClient, quoteFilterValue } from "./containerd-client.js";
import { containerIdOf, sandboxIdOfContainer } from "./container-id.js";
import { ExecFifos } from "./exec-fifos.js";
import { ExecFiles } from "./exec-files.js";
import { RUNSC_NETNS, writeRunscOwnNetnsWrapper, writeRunscWrapper } from "./gvisor-binary.js";
import { probeRunscFeatures, type RunscFeatures } from "./runsc-features.js";
import { readRunFile } from "./run-file.js";
import { GvisorCheckpoints, LABEL_RESTORED_FROM, LABEL_ROOTFS_OVERLAY, ROOTFS_OVERLAY_MEMORY, moveRunDir, withoutGoTrace } from "./checkpoints.js";
import { Status as TaskStatus, type Process } from "./gen/github.com/containerd/containerd/api/types/task/task_pb.js";
import type { Container } from "./gen/github.com/containerd/containerd/api/services/containers/v1/containers_pb.js";
import { OptionsSchema as RuncOptionsSchema, ProcessDetailsSchema } from "./gen/github.com/containerd/containerd/runtime/v2/runc/options/oci_pb.js";
import { isNotFound, isTransient } from "./grpc-errors.js";
import { ImageResolver } from "./image-resolver.js";
import { ImagePuller } from "./image-puller.js";
import { PullingImageResolver } from "./pulling-image-resolver.js";
import {
  buildOciSpec,
  buildAnchorSpec,
  helperArgs,
  mergeEnv,
  namedImageUser,
  execProcessOf,
  processArgs,
  sandboxCgroupsPath,
  sandboxHostname,
  sandboxWorkingDir,
  type OciProcess,
  type OciSpec,
} from "./oci-spec.js";
import { CommandStartWatcher, commandStartError } from "./command-start.js";
import { ClaimJournal, type RunDirMove } from "./claim-journal.js";
import { cgroupProcessIds, detectCgroupLayout, killCgroupProcesses, readCgroupUsage, readOomKillCount, removeCgroup, type CgroupLayout } from "../cgroup.js";
import type { SandboxNetworkSettings } from "../network/network-settings.js";
import type { SharedNetwork } from "../shared-network.js";
import { SandboxNetworks, type ClaimedNetwork } from "../network/sandbox-networks.js";
import { IpNetworkNamespaces } from "../network/network-namespace.js";
import { directoryDiskBytes, openDeletedFileBytes, removeTree } from "../disk-usage.js";
import { LABEL_EVICTED, diskLimitLabels, diskLimitOf, evictedLabel } from "./disk-limit-labels.js";

/** Label carrying the image reference of a sandbox. */
export const LABEL_IMAGE = "fast-sandbox.io/image";
/** Label carrying the runtime type of a sandbox. */
export const LABEL_RUNTIME_TYPE = "fast-sandbox.io/runtime-type";
/** Set on sandboxes whose process 1 is the injected helper. */
export const LABEL_HELPER = "fast-sandbox.io/helper";
/**
 * Set on sandboxes whose mounted helper runs execs as the image's user (`--exec-as`): one made by an
 * earlier agent keeps its earlier helper binary, which would take the flag for a command, so its
 * execs run as before (root).
 */
export const LABEL_HELPER_EXEC_AS = "fast-sandbox.io/helper-exec-as";
/** Marks an agent's infrastructure (containers, snapshots, pull leases) that is no sandbox: its value says what it is. */
export const LABEL_ROLE = "fast-sandbox.io/role";
/** How many times an agent's start makes a shim anchor whose start fails before it gives up. */
const ANCHOR_START_ATTEMPTS = 3;
/** The longest pause between two attempts at a claim's containerd record (containerd away for long). */
const CLAIM_RECORD_RETRY_MAX_MS = 5_000;
/**
 * How long a log file must have gone unwritten before an agent's start removes it as a leftover (no
 * sandbox of that id): a create writes its log only once its container exists, but a file made
 * between the sweep's container list and its read of the directory must not be taken for one.
 */
export const LEFTOVER_LOG_GRACE_MS = 60_000;
/** How often a gVisor pool's agent looks for the checkpoint its instances are restored from, until it exists. */
const CHECKPOINT_POLL_MS = 500;
/** Value of LABEL_ROLE on an agent's shim anchors (`fsb-anchor.<agent>.<n>`). */
export const ROLE_SHIM_ANCHOR = "shim-anchor";
/** Value of LABEL_ROLE on an agent's pull leases (ImagePuller): the janitor removes those of a gone agent. */
export const ROLE_PULL_LEASE = "pull-lease";
/** When an agent (re)started last adopted this anchor. */
export const LABEL_ADOPTED_AT = "fast-sandbox.io/adopted-at";
/** Isolated sandboxes: their address on the node's sandbox bridge. */
export const LABEL_NETWORK_ADDRESS = "fast-sandbox.io/network-address";
/** Isolated sandboxes: the id of their network namespace (its record in the network's state directory). */
export const LABEL_NETWORK_NAMESPACE = "fast-sandbox.io/network-namespace";

const RUNC_V2 = "io.containerd.runc.v2";
const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/** containerd resolves Any type URLs through typeurl, which registers the runc options under their proto name. */
const RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options";
/** Keeps a snapshot alive across containerd's garbage collection until we remove it ourselves. */
const GC_ROOT_LABEL = "containerd.io/gc.root";

const SIGTERM = 15;
const SIGKILL = 9;
/** How long a task whose kill failed may take to be seen exited before the failure counts (see `signal`). */
const KILL_FAILED_EXIT_WAIT_MS = 3_000;
/**
 * How long a wait for a process goes on asking while containerd does not answer (a restart): the
 * process runs on in its shim meanwhile, so giving up at once would end an exec or a `logs -f`
 * whose command is still running.
 */
const WAIT_UNAVAILABLE_MAX_MS = 60_000;
/** The longest pause between two Waits while containerd is away. */
const WAIT_RETRY_MAX_MS = 2_000;
/**
 * How long an exec's output may stay silent after its exit before reading stops (a background
 * child holds the pipe open). Counts idleness only: not the time its output waits for a slow client.
 */
const EXEC_OUTPUT_GRACE_MS = 5_000;
/** How long an exec whose exit was not seen may take to end after its SIGKILL before its process is deleted. */
const EXEC_KILL_WAIT_MS = 3_000;
/** The prefix of the ids of user execs (`exec-<hex>`): those a previous agent process left are ended at its successor's start. */
const EXEC_ID_PREFIX = "exec-";

const run = promisify(execFile);
/**
 * How long a claim's containerd record waits after the create returns. Connect takes ~2 ms of the
 * agent's event loop to encode and write an answer after the handler returns (measured here), in
 * several turns of the loop, so the record's gRPC call, started any sooner, delays the answer by its
 * own few ms. A client's next request about the sandbox arrives no sooner than this anyway.
 */
const CLAIM_RECORD_DELAY_MS = 5;

/**
 * Lets work wait until a create's answer is on its way: `soon()` (the create is returning) resolves
 * the promise CLAIM_RECORD_DELAY_MS later; `now()` (nothing to answer first: a failed claim being
 * undone) at once.
 */
function afterAnswer(): { promise: Promise<void>; soon(): void; now(): void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, soon: () => setTimeout(resolve, CLAIM_RECORD_DELAY_MS), now: () => resolve() };
}

/** A refill of prepared instances waits this long after the last create ended (bursts come in waves). */
const PREPARED_REFILL_QUIET_MS = 20;

export interface ContainerdRuntimeOptions {
  /** containerd's gRPC socket. @default "/run/containerd/containerd.sock" (env FSB_CONTAINERD_ADDRESS) */
  socketPath?: string;
  /** containerd namespace of the sandboxes. @default "fast-sandbox" (env FSB_CONTAINERD_NAMESPACE) */
  namespace?: string;
  /** Name of this agent: label `fast-sandbox.io/agent`, shim group; `list()` returns only its sandboxes. */
  agentName: string;
  /**
   * UID of the agent's Pod (Kubernetes mode): label `fast-sandbox.io/agent-uid` on every container it
   * creates. Containers of the same agent name with another UID belong to a Pod that was replaced:
   * `list()` and `get()` leave them out and `prepare()` replaces such anchors instead of adopting them
   * (the janitor reclaims the rest). Containers without the label are judged by the name alone.
   * @default none: the name alone (embedded mode)
   */
  agentUid?: string;
  /** containerd snapshotter the images are unpacked for. @default "overlayfs" */
  snapshotter?: string;
  /** Directory for the exec FIFOs (created if missing). @default "/run/fast-sandbox/<agentName>" */
  stateDir?: string;
  /** The host's cgroup hierarchy, where OOM kills of sandboxes are read. @default detectCgroupLayout() */
  cgroupLayout?: CgroupLayout;
  /** Parent cgroup: a sandbox's `linux.cgroupsPath` becomes `<cgroupParent>/<container id>` (cgroupfs driver, v1 and v2). @default "/<namespace>" */
  cgroupParent?: string;
  /**
   * The CPU bound of `cgroupParent` (the agent's limit, cgroup.ts limitCgroup): a sandbox's own CPU
   * limit above it is written as it (v1 refuses a quota above its parent's; v2 caps it the same). @default none
   */
  cpuBoundMillis?: number;
  /** runsc binary for runtimeType "gvisor" (run by the runc v2 shim, directly or through a wrapper, see gvisor-binary.ts). @default "/usr/bin/runsc" */
  runscPath?: string;
  /**
   * The node's sandbox network (network/network-settings.ts), for sandboxes whose network mode is
   * isolated. @default none: only shared sandboxes (an isolated create fails with FailedPrecondition)
   */
  network?: SandboxNetworkSettings;
  /** Host files bind-mounted read-only into sandboxes that share the host network. @default ["/etc/resolv.conf", "/etc/hosts"] */
  hostNetworkFiles?: string[];
  /**
   * The agent's own network namespace (shared-network.ts), which its Shared runc sandboxes join with
   * its resolver files: set when the agent runs in a network of its own (a Pod). @default none: they
   * stay in the runtime's, the host's, network
   */
  sharedNetwork?: SharedNetwork;
  /**
   * Host path of the static in-sandbox helper (process 1 of every sandbox: reaps orphans, records the
   * command's exit code, keeps the sandbox alive for exec). Absent: the user's command is process 1.
   */
  helperPath?: string;
  /**
   * Host path of the static in-sandbox daemon (packages/envd, E2B's envd interface on port 49983),
   * which the helper runs in every sandbox with a network of its own. Absent, or no file there
   * (logged once): sandboxes run without it.
   */
  envdPath?: string;
  /**
   * How many shims the agent spreads its runc sandboxes over (each kept alive by an anchor). A
   * shim serializes the creates it serves, so more shims let concurrent creates run in parallel.
   * @default min(4, the number of CPUs)
   */
  shimGroups?: number;
  /** Deadline of each containerd call. @default 10_000 */
  requestTimeoutMs?: number;
  /** Registry credentials in Docker's config.json format, read at every pull. @default none: anonymous pulls */
  registryConfigPath?: string;
  /**
   * How long a create waits, after Tasks.Start, for the helper's word that the command started
   * (it fails the create when the command cannot start). Past it the create succeeds with a
   * warning, and a command that fails later shows as an exit (127/126). @default 5_000
   */
  commandStartTimeoutMs?: number;
  /** Called after every successful create with the duration of each step (metrics, benchmarks). */
  onCreateTimings?: (timings: CreateTimings) => void;
  /**
   * Sandboxes of the pool's template kept ready (prepared-instances.ts): with the helper, of runc or
   * gVisor; or gVisor copies restored ahead from a checkpoint. @default none
   */
  preparedInstances?: PreparedInstancesSettings;
  /**
   * How long operations on a sandbox that claimed an instance wait for containerd to record the
   * claim (e.g. across a containerd restart) before they go on without it; the record itself is
   * retried until it is written or the container is gone. @default 60_000
   */
  claimRecordTimeoutMs?: number;
  /** This pool's gVisor checkpoints on the node (checkpoints.ts). @default "<stateDir>/checkpoints" */
  checkpointDir?: string;
  logger: Logger;
}

/** A prepared instance in the stock: everything a claim needs to hand it over. */
interface PreparedInstanceBase {
  id: string;
  containerId: string;
  pid: number;
  runDir: string;
  logPath: string;
  labels: Record<string, string>;
  address?: string;
}

/** An instance (runc or gVisor) whose helper waits for its command (prepared-instances.ts). */
interface WaitingInstance extends PreparedInstanceBase {
  kind: "waiting";
  ociSpec: OciSpec;
  image: Awaited<ReturnType<ImageResolver["resolve"]>>;
  envd: boolean;
}

/** A gVisor copy restored ahead from the pool's checkpoint, running its processes. */
interface RestoredInstance extends PreparedInstanceBase {
  kind: "restored";
  checkpointId: string;
}

type PreparedInstance = WaitingInstance | RestoredInstance;

/** Whether a process exists (signal 0). */
function processAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export interface CreateTimings {
  imageMs: number;
  /**
   * Isolated sandboxes: claiming the network namespace (or making one when none was prepared), plus
   * any wait for its egress policy before Tasks.Start (applied while the container is made). 0 for shared ones.
   */
  networkMs: number;
  snapshotMs: number;
  containerMs: number;
  taskMs: number;
  startMs: number;
  /** From Tasks.Start's answer to the helper's report that the command is executing (0 without the helper); a claim: all of it. */
  commandStartMs: number;
  totalMs: number;
  /** The create claimed a prepared instance (every other step was done ahead). */
  prepared?: boolean;
}

export function createContainerdRuntime(options: ContainerdRuntimeOptions): ContainerdRuntime {
  return new ContainerdRuntime(options);
}

export class ContainerdRuntime implements Runtime {
  readonly namespace: string;
  private readonly agentName: string;
  private readonly agentUid: string;
  private readonly snapshotter: string;
  private readonly stateDir: string;
  private readonly cgroupParent: string;
  private readonly cpuBoundMillis: number | undefined;
  private readonly cgroupLayout: CgroupLayout;
  private readonly gvisorBinary: string;
  /** runsc for isolated gVisor sandboxes (their own network namespace); written with the network settings. */
  private readonly gvisorOwnNetnsBinary: string | undefined;
  /** What the runsc behind both wrappers can do: probed at the first restore, once. */
  private runscFeatures: Promise<RunscFeatures> | undefined;
  private readonly hostNetworkFiles: readonly string[];
  private readonly sharedNetwork: SharedNetwork | undefined;
  /** Whether the host accounts swap per cgroup: a sandbox's memory limit then covers swap too. */
  private readonly swapAccounting: boolean;
  /** Isolated sandboxes' networks; undefined without network settings. */
  readonly networks: SandboxNetworks | undefined;
  /** Checkpoints of gVisor sandboxes and restores from them (checkpoints.ts). */
  readonly checkpoints: GvisorCheckpoints;
  private readonly helperPath: string | undefined;
  private readonly envdPath: string | undefined;
  /** Creates in flight per shim group; a create goes to the least busy group. */
  private readonly groupLoad: number[];
  private readonly onCreateTimings: ((timings: CreateTimings) => void) | undefined;
  private readonly commandStartTimeoutMs: number;
  private readonly claimRecordTimeoutMs: number;
  private readonly logger: Logger;
  private readonly client: ContainerdClient;
  private readonly images: PullingImageResolver;
  private readonly puller: ImagePuller;
  private readonly preparedSettings: PreparedInstancesSettings | undefined;
  private readonly preparedKey: string;
  private preparedStock: PreparedPool<PreparedInstance> | undefined;
  /** Sandboxes that claimed a prepared instance: their container has the instance's id. */
  private readonly claimedContainers = new Map<string, string>();
  /** The cgroup of each container `list` reported, by container id (cgroupOfListed); pruned to what the last list saw. */
  private readonly listedCgroups = new Map<string, string>();
  /** Claims whose container containerd does not know as the sandbox yet (recordClaim). */
  private readonly pendingClaims = new Map<string, Promise<void>>();
  /** Discards of stock instances in flight (copies restored ahead from a deleted checkpoint, instances of an image pulled anew): a shutdown waits for them. */
  private readonly staleDiscards = new Set<Promise<void>>();
  /** The claims written ahead of containerd (claim-journal.ts). */
  private readonly claimJournal: ClaimJournal;
  /** The FIFOs and output files of execs in the state directory, and which belong to execs in flight (exec-files.ts). */
  private readonly execFiles: ExecFiles;
  private createsInFlight = 0;
  private closed = false;
  /** Aborted by close(): ends the waits of background work. */
  private readonly closing = new AbortController();
  private lastCreateEndedAt = 0;

  constructor(options: ContainerdRuntimeOptions) {
    this.namespace = options.namespace ?? process.env.FSB_CONTAINERD_NAMESPACE ?? "fast-sandbox";
    this.agentName = options.agentName;
    this.agentUid = options.agentUid ?? "";
    this.snapshotter = options.snapshotter ?? "overlayfs";
    this.stateDir = options.stateDir ?? `/run/fast-sandbox/${options.agentName}`;
    this.cgroupParent = options.cgroupParent ?? `/${this.namespace}`;
    this.cpuBoundMillis = options.cpuBoundMillis;
    this.cgroupLayout = options.cgroupLayout ?? detectCgroupLayout();
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    // Root's alone, whoever made it first and however (the agent's lock, an earlier release, the
    // kubelet's hostPath): the sandboxes' run directories below are theirs to write, so a host user
    // reaching them could run a set-uid file a sandbox's root left there, or swap a claim FIFO.
    chmodSync(this.stateDir, 0o700);
    this.claimJournal = new ClaimJournal(this.stateDir);
    this.execFiles = new ExecFiles(this.stateDir);
    const runscPath = options.runscPath ?? "/usr/bin/runsc";
    this.gvisorBinary = writeRunscWrapper(this.stateDir, runscPath);
    this.gvisorOwnNetnsBinary = options.network ? writeRunscOwnNetnsWrapper(this.stateDir, runscPath) : undefined;
    this.hostNetworkFiles = options.hostNetworkFiles ?? ["/etc/resolv.conf", "/etc/hosts"];
    this.sharedNetwork = options.sharedNetwork;
    this.swapAccounting = swapAccounted(this.cgroupLayout, this.cgroupParent);
    this.onCreateTimings = options.onCreateTimings;
    this.commandStartTimeoutMs = options.commandStartTimeoutMs ?? 5_000;
    this.claimRecordTimeoutMs = options.claimRecordTimeoutMs ?? 60_000;
    // Every claim retrying its record waits on it: any number of them is expected.
    setMaxListeners(0, this.closing.signal);
    this.helperPath = options.helperPath;
    this.envdPath = options.envdPath && existsSync(options.envdPath) ? options.envdPath : undefined;
    const prepared = options.preparedInstances;
    // Instances of an image wait in the helper for their command (runc or gVisor); those of a
    // gVisor pool's checkpoint are copies restored from it.
    const preparable = prepared?.fromCheckpoint ? prepared.template.runtimeType === "gvisor" : Boolean(prepared && options.helperPath);
    this.preparedSettings = prepared && prepared.count > 0 && preparable ? prepared : undefined;
    this.preparedKey = this.preparedSettings ? templateKey(this.preparedSettings.template) : "";
    this.groupLoad = new Array<number>(Math.max(1, options.shimGroups ?? Math.min(4, availableParallelism()))).fill(0);
    this.logger = options.logger.child({
      component: "containerd-runtime",
      containerdNamespace: this.namespace,
    });
    if (options.envdPath && !this.envdPath) {
      this.logger.warn({ envdPath: options.envdPath }, "the in-sandbox daemon is missing: sandboxes run without it (run 'npm run build' or set FSB_ENVD_PATH)");
    }
    this.networks = options.network
      ? new SandboxNetworks({
          settings: options.network,
          owner: { agent: this.agentName, ...(this.agentUid ? { agentUid: this.agentUid } : {}), containerdNamespace: this.namespace },
          // Made again once creates leave the agent alone: a namespace's first step (a spawn) took
          // ~5 ms of the claim that started the refill.
          beforeEachPrepare: (signal) => this.quietForRefill(signal),
          logger: this.logger,
        })
      : undefined;
    this.client = new ContainerdClient({
      socketPath: options.socketPath ?? process.env.FSB_CONTAINERD_ADDRESS ?? "/run/containerd/containerd.sock",
      namespace: this.namespace,
      defaultTimeoutMs: options.requestTimeoutMs ?? 10_000,
    });
    this.puller = new ImagePuller({
      client: this.client,
      snapshotter: this.snapshotter,
      ...(options.registryConfigPath ? { registryConfigPath: options.registryConfigPath } : {}),
      // The janitor's too: a lease of an agent that never starts again (its pool deleted, its Pod
      // replaced under another name) is removed once the agent is gone, not a day later.
      leaseLabels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: this.agentName, [LABEL_ROLE]: ROLE_PULL_LEASE, ...this.agentUidLabel() },
      logger: this.logger,
    });
    this.images = new PullingImageResolver(
      this.client,
      this.snapshotter,
      new ImageResolver(
        this.client,
        `import it with \`FSB_CONTAINERD_NAMESPACE=${this.namespace} scripts/build-base-image.sh\` (base image) ` +
          `or \`ctr -n ${this.namespace} images import <oci-archive.tar>\``,
      ),
      this.puller,
    );
    this.checkpoints = new GvisorCheckpoints({
      client: this.client,
      snapshotter: this.snapshotter,
      directory: options.checkpointDir ?? join(this.stateDir, "checkpoints"),
      agentName: this.agentName,
      claimRestored: (spec) => this.claimRestored(spec),
      refuseDuplicate: (sandboxId) => this.refuseDuplicate(sandboxId),
      execFiles: this.execFiles,
      runDir: (sandboxId) => this.runDir(sandboxId),
      logPath: (sandboxId) => sandboxLogPath(this.stateDir, sandboxId),
      cgroupsPath: (containerId) => sandboxCgroupsPath(this.cgroupParent, containerId),
      removeCgroup: (containerId) => {
        const busy = removeCgroup(this.cgroupLayout, sandboxCgroupsPath(this.cgroupParent, containerId));
        return busy.length > 0 ? Promise.reject(new Error(`cgroup not empty: ${busy.join(", ")}`)) : Promise.resolve();
      },
      killCgroup: (containerId) => killCgroupProcesses(this.cgroupLayout, sandboxCgroupsPath(this.cgroupParent, containerId)),
      resolveImage: (image) => this.images.resolve(image),
      claimNetwork: (spec, runDir, labels, undo) => this.claimNetwork(spec, runDir, labels, undo),
      refillNetworks: () => this.networks?.refill(),
      ownerLabels: () => ({ [LABEL_MANAGED]: "true", [LABEL_AGENT]: this.agentName, ...this.agentUidLabel() }),
      owns: (labels) => this.owns(labels),
      exitedWithin: (containerId, timeoutMs) => this.exitedWithin(containerId, timeoutMs),
      createStarted: () => {
        this.createsInFlight += 1;
        return () => {
          this.createsInFlight -= 1;
          this.lastCreateEndedAt = performance.now();
        };
      },
      shimGroup: () => {
        if (!this.helperPath) return undefined;
        const group = this.leastBusyGroup();
        this.groupLoad[group] = (this.groupLoad[group] ?? 0) + 1;
        return { name: this.shimGroup(group), done: () => (this.groupLoad[group] = (this.groupLoad[group] ?? 1) - 1) };
      },
      runscFeatures: () => (this.runscFeatures ??= probeRunscFeatures(runscPath)),
      // The wrapper a create gives a sandbox of that network mode (createIn).
      runscBinary: (networkMode) => (networkMode === "isolated" && this.gvisorOwnNetnsBinary) || this.gvisorBinary,
      onDeleted: () => void this.discardStaleRestored(),
      containerIdFor: async (sandboxId) => {
        await this.claimRecorded(sandboxId);
        return this.containerIdFor(sandboxId);
      },
      ...(options.network ? { networkStateDir: options.network.stateDir } : {}),
      logger: this.logger,
    });
  }

  pullImage(reference: string, options?: PullImageOptions): Promise<PulledImage> {
    return this.images.pull(reference, options);
  }

  async listImages(): Promise<string[]> {
    const { images } = await this.client.images.list({});
    return images.map((image) => image.name).sort();
  }

  async create(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox> {
    this.createsInFlight += 1;
    try {
      await this.refuseDuplicate(spec.sandboxId);
      return (await this.claimPrepared(spec)) ?? (await this.createSandbox(spec));
    } finally {
      this.createsInFlight -= 1;
      this.lastCreateEndedAt = performance.now();
    }
  }

  /**
   * A create of a sandbox this agent runs already fails as a duplicate before it touches anything of
   * it — its run directory above all, which the cold path makes afresh. A sandbox has a run directory
   * from its create on, so only then is containerd asked (for a claimed one too: its container is
   * the instance's).
   */
  private async refuseDuplicate(sandboxId: string): Promise<void> {
    if (!this.claimedContainers.has(sandboxId) && !existsSync(this.runDir(sandboxId))) return;
    if (await this.sandboxContainer(sandboxId)) throw new AlreadyExistsError(`sandbox ${sandboxId} already exists on this agent`);
  }

  /**
   * The cold path: every step of a sandbox, one after another. `prepared`: a prepared instance of
   * `spec` (the template, under the instance's id), whose helper waits for a claim; `built` receives
   * its OCI spec and image.
   */
  private async createSandbox(
    spec: RuntimeSandboxSpec,
    prepared?: { built: { ociSpec?: OciSpec; image?: Awaited<ReturnType<ImageResolver["resolve"]>> } },
  ): Promise<RuntimeSandbox> {
    const sandboxId = spec.sandboxId;
    const started = performance.now();
    let mark = started;
    const lap = () => {
      const now = performance.now();
      const elapsed = now - mark;
      mark = now;
      return elapsed;
    };

    const image = await this.images.resolve(spec.image);
    const imageMs = lap();
    if (prepared) prepared.built.image = image;
    else if (processArgs(spec, image.config).length === 0) throw noCommand(spec.image);

    const labels: Record<string, string> = {
      [LABEL_MANAGED]: "true",
      [LABEL_AGENT]: this.agentName,
      ...this.agentUidLabel(),
      [LABEL_SANDBOX_ID]: sandboxId,
      [LABEL_NAMESPACE]: spec.namespace,
      [LABEL_NAME]: spec.name,
      [LABEL_POOL]: spec.pool,
      [LABEL_IMAGE]: spec.image,
      [LABEL_RUNTIME_TYPE]: spec.runtimeType,
      // runsc keeps its root file system changes in its memory (gvisor-binary.ts), so checkpoints carry them.
      ...(spec.runtimeType === "gvisor" ? { [LABEL_ROOTFS_OVERLAY]: ROOTFS_OVERLAY_MEMORY } : {}),
      ...(spec.exposedPorts?.length ? { [LABEL_EXPOSED_PORTS]: spec.exposedPorts.join(",") } : {}),
      ...diskLimitLabels(spec.resources),
    };
    if (prepared) {
      // Not a sandbox until claimed: list() and get() leave it out, the janitor knows the role.
      delete labels[LABEL_SANDBOX_ID];
      delete labels[LABEL_NAME];
      labels[LABEL_ROLE] = ROLE_PREPARED_INSTANCE;
    }
    const runDir = this.runDir(sandboxId);
    if (this.helperPath) {
      labels[LABEL_HELPER] = "true";
      labels[LABEL_HELPER_EXEC_AS] = "true";
      rmSync(runDir, { recursive: true, force: true });
      mkdirSync(runDir, { recursive: true, mode: 0o755 });
    }
    // Sandboxes share the agent's shims, kept alive by their anchors (prepare()): runc's and gVisor's
    // alike (the runc v2 shim takes the runtime binary per container).
    const group = !this.helperPath ? undefined : this.leastBusyGroup();
    if (group !== undefined) this.groupLoad[group] = (this.groupLoad[group] ?? 0) + 1;
    try {
      return await this.createIn(spec, image, labels, runDir, group, started, lap, imageMs, prepared?.built);
    } finally {
      if (group !== undefined) this.groupLoad[group] = (this.groupLoad[group] ?? 1) - 1;
      // Prepared network namespaces are made again once the create no longer needs the CPU.
      if (spec.network?.mode === "isolated") this.networks?.refill();
    }
  }

  /**
   * Hands a prepared instance over to the sandbox when one of its template is ready (see
   * prepared-instances.ts); undefined: none is, the caller takes the cold path.
   */
  private async claimPrepared(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox | undefined> {
    if (!this.preparedStock || this.preparedSettings?.fromCheckpoint || templateKey(spec) !== this.preparedKey) return undefined;
    const sandboxId = spec.sandboxId;
    const runDir = this.runDir(sandboxId);
    // A second create of an existing sandbox was refused already (refuseDuplicate); a run directory a
    // failed create left behind sends the create down the cold path, which makes it afresh.
    if (this.claimedContainers.has(sandboxId) || existsSync(runDir)) return undefined;
    const { image } = spec;
    // What a cold create would run now (cached: a map lookup); a pull that moved the tag since the
    // stock was made forgot the old resolution.
    const current = await this.images.resolve(image);
    for (;;) {
      const instance = this.preparedStock.take((candidate): candidate is WaitingInstance => candidate.kind === "waiting");
      if (!instance) return undefined;
      if (instance.image.targetDigest !== current.targetDigest) {
        this.logger.info(
          { instance: instance.id, image, was: instance.image.targetDigest, now: current.targetDigest },
          "a prepared instance is of an image its tag no longer names (pulled anew); it is replaced",
        );
        // Tracked like the stale copies' discards: a shutdown meanwhile waits for it instead of removing the same container at once.
        const discard = this.discardInstance(instance).finally(() => this.staleDiscards.delete(discard));
        this.staleDiscards.add(discard);
        continue;
      }
      const sandbox = await this.claimInstance(instance, spec, runDir);
      if (sandbox) return sandbox;
      this.logger.warn({ instance: instance.id, image }, "a prepared instance could not be claimed (its helper is gone); trying the next");
    }
  }

  /** The claim of one instance; undefined when its helper no longer waits (the instance is removed). Throws what a cold create would. */
  private async claimInstance(instance: WaitingInstance, spec: RuntimeSandboxSpec, runDir: string): Promise<RuntimeSandbox | undefined> {
    const started = performance.now();
    const sandboxId = spec.sandboxId;
    const containerId = instance.containerId;
    const config = instance.image.config;
    const userArgs = processArgs(spec, config);
    const workingDir = spec.workingDir || config.workingDir || "/";
    const env = mergeEnv(config.env, spec.env);
    let claim: Buffer;
    try {
      if (userArgs.length === 0) throw noCommand(spec.image);
      claim = encodeClaim({ workingDir, args: userArgs, env });
      if (claim.length > CLAIM_MAX_BYTES) {
        throw new FsbError("invalid_argument", `the command and its environment take ${claim.length} bytes; at most ${CLAIM_MAX_BYTES} are allowed`);
      }
    } catch (error) {
      // Refused before the instance was touched: it goes back to the stock.
      this.preparedStock?.adopt([instance]);
      throw error;
    }
    const labels = this.handOver(instance, spec, runDir, { [LABEL_IMAGE]: spec.image });
    const isolated = spec.network?.mode === "isolated";
    // The stored spec tells the truth from now on: execs take their defaults (env, cwd) from it, and
    // a checkpoint of the sandbox restores its mounts — from the run directory's new place.
    const moved = moveRunDir(instance.ociSpec, instance.runDir, runDir);
    const ociSpec: OciSpec = {
      ...moved,
      process: { ...moved.process, args: helperArgs(workingDir, userArgs, instance.envd, namedImageUser(config.user)), env },
    };
    const commandStart = new CommandStartWatcher(runDir);
    const answered = afterAnswer();
    try {
      // The helper starts the command at once, and the agent's own records are written while it
      // forks and executes it (~1 ms here, which the answer waits for anyway): the network's
      // attachment moves to the sandbox, then the journal names the claim. An agent that dies
      // before the journal's entry finds an unclaimed instance at its restart — removed, and its
      // network with it, whether still the instance's or already under an id no container has —
      // never a claimed sandbox whose network it would tear down as an instance's; the create's
      // caller saw the call fail and removes or places the sandbox anew.
      const writing = writeClaim(join(runDir, CLAIM_FIFO), claim, this.commandStartTimeoutMs);
      try {
        if (isolated) this.networks?.reassign(instance.id, sandboxId);
        this.claimJournal.write({ sandboxId, containerId, labels, ociSpec });
      } catch (error) {
        // Undone below as any failed claim, once the claim's write has finished.
        await writing.catch(() => undefined);
        throw error;
      }
      // containerd's record (labels and spec) waits until the answer is on its way: its gRPC call
      // costs this event loop a few ms, which delayed the answer by as much. Every other operation
      // on the sandbox waits for it (claimRecorded) from here on, before the event loop runs again
      // (a claim bigger than the pipe is written in its turns); the journal's entry keeps the
      // claim if the agent dies before.
      this.recordClaim(sandboxId, containerId, labels, ociSpec, answered.promise);
      const written = await writing;
      // The FIFO has served: it goes, so that no checkpoint or copy carries it and nothing in the
      // sandbox finds a host FIFO to open. The helper removes it before it starts the command; this
      // covers an instance whose helper predates that. (The command may run already and may have
      // put something there: the agent reads the run directory's files without blocking on FIFOs,
      // run-file.ts.)
      try {
        rmSync(join(runDir, CLAIM_FIFO), { force: true });
      } catch {
        // the sandbox put a directory in its place: its own business
      }
      if (!written) {
        answered.now();
        await this.discardClaimed(sandboxId, containerId);
        return undefined;
      }
      const report = await commandStart.wait(this.commandStartTimeoutMs);
      if (report && !report.started) {
        throw commandStartError(report, {
          args: userArgs,
          workingDir,
          commandFromSpec: spec.command.length > 0 || spec.args.length > 0,
          workingDirFromSpec: Boolean(spec.workingDir),
        });
      }
      if (!report) this.logger.warn({ sandboxId, timeoutMs: this.commandStartTimeoutMs }, "the helper did not report on the claimed command's start in time");
    } catch (error) {
      answered.now();
      await this.discardClaimed(sandboxId, containerId).catch((undoError: unknown) =>
        this.logger.warn({ sandboxId, containerId, err: undoError }, "could not remove a claimed instance whose create failed; the janitor must"),
      );
      // A network whose move failed is still the instance's (idempotent otherwise).
      if (isolated) await this.networks?.release(instance.id).catch(() => undefined);
      throw FsbError.from(error);
    } finally {
      commandStart.close();
      answered.soon();
    }
    const totalMs = performance.now() - started;
    this.logger.debug({ sandboxId, containerId, instance: instance.id, totalMs }, "sandbox created from a prepared instance");
    this.reportClaim(totalMs);
    return {
      sandboxId,
      namespace: spec.namespace,
      name: spec.name,
      pool: spec.pool,
      image: spec.image,
      state: "running",
      pid: instance.pid,
      ...(instance.address ? { address: instance.address } : {}),
      labels,
    };
  }

  /**
   * Hands a claimed instance's host files over to the sandbox — its run directory and log file move
   * under the sandbox id (the mounts and the shim's log file follow the inodes) — and returns the
   * labels its container gets: the instance's, with the sandbox's identity in place of its role.
   */
  private handOver(instance: PreparedInstance, spec: RuntimeSandboxSpec, runDir: string, extraLabels: Record<string, string> = {}): Record<string, string> {
    renameSync(instance.runDir, runDir);
    if (instance.logPath !== spec.logPath) renameSync(instance.logPath, spec.logPath);
    this.claimedContainers.set(spec.sandboxId, instance.containerId);
    const labels: Record<string, string> = {
      ...instance.labels,
      [LABEL_SANDBOX_ID]: spec.sandboxId,
      [LABEL_NAME]: spec.name,
      ...extraLabels,
      ...(spec.exposedPorts?.length ? { [LABEL_EXPOSED_PORTS]: spec.exposedPorts.join(",") } : {}),
    };
    delete labels[LABEL_ROLE];
    return labels;
  }

  /**
   * Relabels the claimed instance's container as the sandbox and stores its command's process in
   * its spec, in the background once `after` resolves; retried with backoff (containerd may be
   * restarting) until containerd has it, the container is gone or the sandbox deleted. Operations
   * on the sandbox wait for it (claimRecorded) for claimRecordTimeoutMs at most. The claim journal
   * keeps it meanwhile for the agent's next start. Never rejects.
   */
  private recordClaim(
    sandboxId: string,
    containerId: string,
    labels: Record<string, string>,
    ociSpec: OciSpec | undefined,
    after: Promise<void>,
    runDirMove?: RunDirMove,
  ): void {
    let release!: () => void;
    const waited = new Promise<void>((resolve) => (release = resolve));
    const stopWaiting = () => {
      if (this.pendingClaims.get(sandboxId) === waited) this.pendingClaims.delete(sandboxId);
      release();
    };
    let lastError: unknown;
    let patience: NodeJS.Timeout | undefined;
    const update = async () => {
      await after;
      // Operations on the sandbox wait this long at most, however long one attempt takes.
      patience = setTimeout(() => {
        this.logger.error(
          { sandboxId, containerId, err: lastError },
          "could not record a claimed instance as its sandbox in containerd in time; still retrying while containerd is away, the sandbox is unseen until then",
        );
        stopWaiting();
      }, this.claimRecordTimeoutMs);
      patience.unref();
      const deadline = performance.now() + this.claimRecordTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        try {
          await this.writeClaimRecord(containerId, labels, ociSpec, runDirMove);
          this.claimJournal.remove(sandboxId);
          if (attempt > 1) this.logger.info({ sandboxId, containerId, attempts: attempt }, "claimed instance recorded as its sandbox in containerd");
          return;
        } catch (error) {
          lastError = error;
          if (isNotFound(error)) {
            this.claimJournal.remove(sandboxId);
            this.logger.warn({ sandboxId, containerId }, "a claimed instance's container is gone before containerd recorded the claim");
            return;
          }
          // Deleted meanwhile (its removal is the delete's), or the agent is stopping (the journal keeps it).
          if (this.closed || this.claimedContainers.get(sandboxId) !== containerId) return;
          // containerd away (restarting): retried until it is back. Anything else is not going to
          // change by asking again: given up after the patience, the journal keeps it for the next start.
          if (!isTransient(error) && performance.now() > deadline) {
            this.logger.error(
              { sandboxId, containerId, err: error },
              "could not record a claimed instance as its sandbox in containerd; the agent's next start will",
            );
            return;
          }
          await sleep(Math.min(CLAIM_RECORD_RETRY_MAX_MS, 50 * 2 ** (attempt - 1)), undefined, { signal: this.closing.signal }).catch(() => undefined);
        }
      }
    };
    this.pendingClaims.set(sandboxId, waited);
    void update()
      .catch((error: unknown) => this.logger.error({ sandboxId, containerId, err: error }, "recording a claim failed; the agent's next start will"))
      .finally(() => {
        clearTimeout(patience);
        stopWaiting();
      });
  }

  /**
   * containerd's record of a claim: the sandbox's labels, and the user's process in the stored spec;
   * then its snapshot's labels (the role removed, the sandbox's id and name added; containerd's own,
   * such as the GC root, kept), so the janitor judges the snapshot as the sandbox's from then on.
   */
  private async writeClaimRecord(
    containerId: string,
    labels: Record<string, string>,
    claimedSpec: OciSpec | undefined,
    runDirMove?: RunDirMove,
  ): Promise<void> {
    // A copy restored ahead keeps its spec, but its run directory moved: the mounts must say where
    // to (a checkpoint of the sandbox restores with that spec, in place and into copies).
    const ociSpec = claimedSpec ?? (runDirMove ? await this.specWithRunDir(containerId, runDirMove) : undefined);
    await this.client.containers.update({
      container: { id: containerId, labels, ...(ociSpec ? { spec: { typeUrl: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(ociSpec)) } } : {}) },
      updateMask: { paths: ociSpec ? ["labels", "spec"] : ["labels"] },
    });
    // A path naming a label the update does not carry removes that label.
    const paths = [...Object.keys(labels), LABEL_ROLE].map((key) => `labels.${key}`);
    await this.client.snapshots.update({ snapshotter: this.snapshotter, info: { name: containerId, labels }, updateMask: { paths } });
  }

  /** The container's stored spec with its run directory's mounts moved (idempotent: a moved spec stays as it is). */
  private async specWithRunDir(containerId: string, move: RunDirMove): Promise<OciSpec> {
    const { container } = await this.client.containers.get({ id: containerId });
    const spec = JSON.parse(Buffer.from(container?.spec?.value ?? []).toString("utf8")) as OciSpec;
    return moveRunDir(spec, move.from, move.to);
  }

  /**
   * Records in containerd the claims a previous process of this agent made and could not record
   * (it was killed first): before the stock's leftovers are removed, so no claimed sandbox is taken
   * for one. Throws while containerd does not answer (the agent's start fails and is tried again).
   */
  private async replayClaims(): Promise<void> {
    for (const record of this.claimJournal.pending()) {
      try {
        await this.writeClaimRecord(record.containerId, record.labels, record.ociSpec, record.runDirMove);
        this.logger.info({ sandboxId: record.sandboxId, containerId: record.containerId }, "recorded a claim the previous agent process left unrecorded");
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      this.claimJournal.remove(record.sandboxId);
    }
  }

  /** A claim's time, as a create's steps: all of it is the command's start. */
  private reportClaim(totalMs: number): void {
    this.onCreateTimings?.({
      imageMs: 0,
      networkMs: 0,
      snapshotMs: 0,
      containerMs: 0,
      taskMs: 0,
      startMs: 0,
      commandStartMs: totalMs,
      totalMs,
      prepared: true,
    });
  }

  /** Resolves once containerd knows the sandbox as such (at once unless it claimed an instance moments ago). */
  private async claimRecorded(sandboxId: string): Promise<void> {
    const pending = this.pendingClaims.get(sandboxId);
    if (pending) await pending;
  }

  /** Removes a claimed instance whose create failed, and everything of it under the sandbox id. */
  private async discardClaimed(sandboxId: string, containerId: string): Promise<void> {
    await this.claimRecorded(sandboxId);
    await this.removeContainer(containerId, 0);
    this.claimJournal.remove(sandboxId);
    this.claimedContainers.delete(sandboxId);
    await this.networks?.release(sandboxId);
    await removeTree(this.runDir(sandboxId));
  }

  /** Makes one prepared instance of the template (the cold path, with the helper waiting for a claim). */
  private async makeInstance(): Promise<PreparedInstance> {
    const settings = this.preparedSettings;
    if (!settings) throw new FsbError("internal", "this agent keeps no prepared instances");
    if (settings.fromCheckpoint) return this.restoreInstance(settings.fromCheckpoint);
    const id = newInstanceId();
    const { template } = settings;
    const logPath = sandboxLogPath(this.stateDir, id);
    await mkdir(join(this.stateDir, "logs"), { recursive: true });
    const built: { ociSpec?: OciSpec; image?: Awaited<ReturnType<ImageResolver["resolve"]>> } = {};
    const sandbox = await this.removingLogOnFailure(logPath, () =>
      this.createSandbox(
        {
          sandboxId: id,
          name: id,
          namespace: template.namespace,
          pool: template.pool,
          image: template.image,
          command: [],
          args: [],
          env: [],
          runtimeType: template.runtimeType,
          ...(template.resources ? { resources: template.resources } : {}),
          ...(template.network ? { network: template.network } : {}),
          logPath,
        },
        { built },
      ),
    );
    if (!built.ociSpec || !built.image) throw new FsbError("internal", `prepared instance ${id} was made without its spec`);
    return {
      id,
      containerId: containerIdOf(id),
      pid: sandbox.pid ?? 0,
      runDir: this.runDir(id),
      logPath,
      labels: sandbox.labels,
      ociSpec: built.ociSpec,
      image: built.image,
      envd: built.ociSpec.process.args.includes("--envd"),
      ...(sandbox.address ? { address: sandbox.address } : {}),
      kind: "waiting",
    };
  }

  /**
   * An instance's make, whose failure removes the log file the shim opened for it: the create's
   * undo leaves a sandbox's log to the agent service, which has none of an instance.
   */
  private async removingLogOnFailure<T>(logPath: string, make: () => Promise<T>): Promise<T> {
    try {
      return await make();
    } catch (error) {
      await removeLog(logPath).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Restores one instance of the pool ahead from its checkpoint `name` (gVisor): the newest of that
   * name in the pool's namespace on this node; NotFoundError until it exists (the stock retries).
   */
  private async restoreInstance(name: string): Promise<PreparedInstance> {
    const { template } = this.preparedSettings ?? {};
    if (!template) throw new FsbError("internal", "this agent keeps no prepared instances");
    const record = (await this.checkpoints.list())
      .filter((checkpoint) => checkpoint.namespace === template.namespace && checkpoint.name === name)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    if (!record) throw new NotFoundError(`checkpoint ${template.namespace}/${name}, which the pool's instances are restored from, is not on this node yet`);
    const id = newInstanceId();
    const logPath = sandboxLogPath(this.stateDir, id);
    await mkdir(join(this.stateDir, "logs"), { recursive: true });
    const sandbox = await this.removingLogOnFailure(logPath, () =>
      this.checkpoints.restoreAhead(
        {
          sandboxId: id,
          name: id,
          namespace: template.namespace,
          pool: template.pool,
          image: record.image,
          command: [],
          args: [],
          env: [],
          runtimeType: "gvisor",
          ...(template.network ? { network: template.network } : {}),
          logPath,
          fromCheckpoint: record.checkpointId,
        },
        { role: ROLE_PREPARED_INSTANCE },
      ),
    );
    return {
      id,
      containerId: containerIdOf(id),
      pid: sandbox.pid ?? 0,
      runDir: this.runDir(id),
      logPath,
      labels: sandbox.labels,
      ...(sandbox.address ? { address: sandbox.address } : {}),
      kind: "restored",
      checkpointId: record.checkpointId,
    };
  }

  /**
   * Hands a copy restored ahead from checkpoint `spec.fromCheckpoint` over to the sandbox (gVisor
   * pools that keep instances of their checkpoint): its host files move under the sandbox id, its
   * network namespace becomes the sandbox's, containerd learns the sandbox's labels in the
   * background. Nothing runs in it that the restore would not have run: the copy has been running
   * the checkpoint's processes since it was restored. Undefined: none of that checkpoint is ready.
   */
  private async claimRestored(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox | undefined> {
    const settings = this.preparedSettings;
    if (!this.preparedStock || !settings?.fromCheckpoint || !spec.fromCheckpoint) return undefined;
    // The copy was restored with the pool's network policy; a sandbox asking another one is restored cold.
    if (networkKey(spec.network) !== networkKey(settings.template.network)) return undefined;
    const sandboxId = spec.sandboxId;
    const runDir = this.runDir(sandboxId);
    if (this.claimedContainers.has(sandboxId) || existsSync(runDir)) return undefined;
    this.createsInFlight += 1;
    try {
      for (;;) {
        const instance = this.preparedStock.take(
          (candidate): candidate is RestoredInstance => candidate.kind === "restored" && candidate.checkpointId === spec.fromCheckpoint,
        );
        if (!instance) {
          // Perhaps the stock is of a checkpoint since deleted and made again under its name (by another agent of the pool).
          void this.discardStaleRestored();
          return undefined;
        }
        if (!processAlive(instance.pid)) {
          this.logger.warn({ instance: instance.id }, "a pre-restored instance is gone; trying the next");
          await this.discardInstance(instance);
          continue;
        }
        const started = performance.now();
        const labels = this.handOver(instance, spec, runDir);
        if (spec.network?.mode === "isolated") this.networks?.reassign(instance.id, sandboxId);
        const runDirMove = { from: instance.runDir, to: runDir };
        this.claimJournal.write({ sandboxId, containerId: instance.containerId, labels, runDirMove });
        const answered = afterAnswer();
        this.recordClaim(sandboxId, instance.containerId, labels, undefined, answered.promise, runDirMove);
        answered.soon();
        const totalMs = performance.now() - started;
        this.logger.debug({ sandboxId, instance: instance.id, checkpointId: instance.checkpointId, totalMs }, "sandbox claimed a pre-restored instance");
        this.reportClaim(totalMs);
        return {
          sandboxId,
          namespace: spec.namespace,
          name: spec.name,
          pool: spec.pool,
          image: labels[LABEL_IMAGE] ?? spec.image,
          state: "running",
          pid: instance.pid,
          ...(spec.exposedPorts?.length ? { exposedPorts: [...spec.exposedPorts] } : {}),
          ...(instance.address ? { address: instance.address } : {}),
          labels,
        };
      }
    } finally {
      this.createsInFlight -= 1;
      this.lastCreateEndedAt = performance.now();
    }
  }

  /**
   * Removes the copies restored ahead from a checkpoint whose files are gone (deleted, perhaps made
   * again under its name) and refills the stock, from the newest checkpoint of the pool's name.
   */
  private discardStaleRestored(): Promise<void> {
    const discard = this.discardStale().finally(() => this.staleDiscards.delete(discard));
    this.staleDiscards.add(discard);
    return discard;
  }

  private async discardStale(): Promise<void> {
    const stock = this.preparedStock;
    if (!stock || !this.preparedSettings?.fromCheckpoint) return;
    const stale: RestoredInstance[] = [];
    for (;;) {
      const instance = stock.take(
        (candidate): candidate is RestoredInstance => candidate.kind === "restored" && !this.checkpoints.exists(candidate.checkpointId),
      );
      if (!instance) break;
      stale.push(instance);
    }
    if (stale.length === 0) return;
    this.logger.info(
      { instances: stale.length, checkpointIds: [...new Set(stale.map((instance) => instance.checkpointId))] },
      "copies restored ahead from a deleted checkpoint removed",
    );
    await Promise.all(stale.map((instance) => this.discardInstance(instance)));
    stock.fill();
  }

  /** Removes an instance of the stock that cannot be claimed, and its host files. */
  private async discardInstance(instance: PreparedInstance): Promise<void> {
    await this.removeContainer(instance.containerId, 0).catch((error: unknown) =>
      this.logger.warn({ instance: instance.id, err: error }, "could not remove a dead prepared instance; the janitor must"),
    );
    await this.networks?.release(instance.id);
    await removeTree(instance.runDir);
    await removeLog(instance.logPath);
  }

  /** Until the prepared helper says it waits for its claim (run/prepared). */
  private async helperWaiting(runDir: string): Promise<void> {
    const deadline = performance.now() + this.commandStartTimeoutMs;
    while (!existsSync(join(runDir, "prepared"))) {
      if (performance.now() > deadline)
        throw new UnavailableError(`the prepared instance's helper did not start waiting within ${this.commandStartTimeoutMs} ms`);
      await sleep(2);
    }
  }

  /** Until the checkpoint a gVisor pool's instances are restored from is on this node (polled: it is made after the pool). */
  private async checkpointAvailable(namespace: string, name: string, signal: AbortSignal): Promise<void> {
    while (!(await this.checkpoints.list()).some((checkpoint) => checkpoint.namespace === namespace && checkpoint.name === name)) {
      await sleep(CHECKPOINT_POLL_MS, undefined, { signal });
    }
  }

  /** A refill yields to creates: it goes on once none has been in flight for a moment. */
  private async quietForRefill(signal: AbortSignal): Promise<void> {
    for (;;) {
      const quietFor = performance.now() - this.lastCreateEndedAt;
      if (this.createsInFlight === 0 && quietFor >= PREPARED_REFILL_QUIET_MS) return;
      await sleep(Math.max(1, PREPARED_REFILL_QUIET_MS - quietFor), undefined, { signal });
    }
  }

  /** Prepared instances ready to be claimed. */
  get preparedInstanceCount(): number {
    return this.preparedStock?.size ?? 0;
  }

  preparedInstances(): PreparedInstancesState | undefined {
    const stock = this.preparedStock;
    if (!stock) return undefined;
    const failure = stock.failure;
    return {
      target: stock.target,
      ready: stock.size,
      ...(failure ? { error: withoutGoTrace(FsbError.from(failure.error).message) } : {}),
    };
  }

  /** Resolves once the stock of prepared instances is full (benchmarks, tests). */
  async preparedInstancesReady(): Promise<void> {
    await this.preparedStock?.filled();
  }

  /**
   * Stops keeping prepared instances and removes every one of this agent (the stock's and any a
   * previous process of the agent left). `prepare()` starts the stock again.
   */
  async removePreparedInstances(): Promise<void> {
    const stock = this.preparedStock;
    this.preparedStock = undefined;
    const drained = stock ? await stock.drain() : [];
    // Copies being discarded (their checkpoint deleted, as a pool's deletion does just before its
    // agents stop) are removed by that discard: two removals of one container fail each other.
    await Promise.allSettled([...this.staleDiscards]);
    const { containers } = await this.client.containers.list({
      filters: [`labels."${LABEL_ROLE}"==${quoteFilterValue(ROLE_PREPARED_INSTANCE)}`],
    });
    // A claimed instance is a sandbox, though containerd may still label it as stock: its relabel
    // runs after the create's answer (and is retried while containerd is away).
    const claimed = new Set(this.claimedContainers.values());
    const ids = new Set([...drained.map((instance) => instance.id), ...containers.filter((c) => this.owns(c.labels) && !claimed.has(c.id)).map((c) => c.id)]);
    await Promise.all(
      [...ids].map(async (id) => {
        await this.removeContainer(id, 0);
        await this.networks?.release(id);
        await removeTree(this.runDir(id));
        await removeLog(sandboxLogPath(this.stateDir, id));
      }),
    );
    if (ids.size > 0) this.logger.debug({ instances: ids.size }, "prepared instances removed");
  }

  private startPreparedStock(): void {
    const settings = this.preparedSettings;
    if (!settings || this.preparedStock) return;
    this.preparedStock = new PreparedPool({
      target: settings.count,
      prepare: () => this.makeInstance(),
      beforeEachPrepare: async (signal) => {
        if (settings.fromCheckpoint) await this.checkpointAvailable(settings.template.namespace, settings.fromCheckpoint, signal);
        await this.quietForRefill(signal);
      },
      onError: (error) => this.logger.warn({ err: error }, "could not make a prepared instance; retrying"),
    });
    this.preparedStock.fill();
  }

  /** containerd's id of a sandbox's container: the instance's for one that claimed a prepared instance. */
  private containerIdFor(sandboxId: string): string {
    return this.claimedContainers.get(sandboxId) ?? containerIdOf(sandboxId);
  }

  private leastBusyGroup(): number {
    let best = 0;
    for (let i = 1; i < this.groupLoad.length; i++) if ((this.groupLoad[i] ?? 0) < (this.groupLoad[best] ?? 0)) best = i;
    return best;
  }

  /**
   * runsc's network namespace (gvisor-binary.ts), before anything of a gVisor sandbox runs: made
   * here, where the agent's iproute2 is (a Kubernetes node running the wrappers may lack one; they
   * make it themselves otherwise). Never removed: it holds nothing but runsc's control sockets.
   */
  private async makeRunscNetns(): Promise<void> {
    const namespaces = new IpNetworkNamespaces();
    if (namespaces.exists(RUNSC_NETNS)) return;
    try {
      await namespaces.create(RUNSC_NETNS);
    } catch (error) {
      // Another agent made it meanwhile; or no iproute2 here: the wrappers try, and say so if they cannot.
      if (!namespaces.exists(RUNSC_NETNS))
        this.logger.warn({ err: error }, `could not make runsc's network namespace ${RUNSC_NETNS}; gVisor sandboxes make it as they start`);
    }
  }

  private agentUidLabel(): Record<string, string> {
    return this.agentUid ? { [LABEL_AGENT_UID]: this.agentUid } : {};
  }

  /** This agent's container: its name, and its Pod UID unless either side has none (the janitor's rule too). */
  private owns(labels: Readonly<Record<string, string>>): boolean {
    if (labels[LABEL_AGENT] !== this.agentName) return false;
    const uid = labels[LABEL_AGENT_UID];
    return !this.agentUid || !uid || uid === this.agentUid;
  }

  private shimGroup(index: number): string {
    return `${this.agentName}.shim-${index}`;
  }

  private async createIn(
    spec: RuntimeSandboxSpec,
    image: Awaited<ReturnType<ImageResolver["resolve"]>>,
    labels: Record<string, string>,
    runDir: string,
    group: number | undefined,
    started: number,
    lap: () => number,
    imageMs: number,
    prepared?: { ociSpec?: OciSpec },
  ): Promise<RuntimeSandbox> {
    const sandboxId = spec.sandboxId;
    const containerId = containerIdOf(sandboxId);
    const gvisor = spec.runtimeType === "gvisor";
    const isolated = spec.network?.mode === "isolated";

    const undo: { step: string; run: () => Promise<unknown> }[] = [];
    if (this.helperPath || isolated) undo.push({ step: "run directory", run: () => removeTree(runDir) });
    try {
      let network: ClaimedNetwork | undefined;
      let networkMs = 0;
      if (isolated) {
        network = await this.claimNetwork(spec, runDir, labels, undo);
        networkMs = lap();
      }
      const ociSpec = buildOciSpec(spec, image.config, {
        ...(this.cpuBoundMillis !== undefined ? { cpuBoundMillis: this.cpuBoundMillis } : {}),
        // The in-sandbox daemon only where its port is the sandbox's own (buildOciSpec checks it too).
        ...(this.helperPath
          ? {
              helper: {
                binaryPath: this.helperPath,
                runDir,
                ...(network && this.envdPath ? { envdPath: this.envdPath } : {}),
                ...(prepared ? { prepared: true } : {}),
              },
            }
          : {}),
        ...(group !== undefined ? { shimGroup: this.shimGroup(group) } : {}),
        cgroupsPath: sandboxCgroupsPath(this.cgroupParent, containerId),
        hostNetworkFiles: this.hostNetworkFiles,
        ...(this.sharedNetwork ? { sharedNetwork: this.sharedNetwork } : {}),
        ...(this.swapAccounting ? { swapAccounting: true } : {}),
        ...(network ? { isolatedNetwork: { netnsPath: network.netnsPath, files: this.networkFiles(runDir, network) } } : {}),
      });
      // runsc builds an isolated sandbox's network from its namespace's interfaces; a shared one runs
      // with --network=none (wrappers: gvisor-binary.ts).
      const runtimeOptions = gvisor
        ? {
            typeUrl: RUNC_OPTIONS_TYPE_URL,
            value: toBinary(RuncOptionsSchema, create(RuncOptionsSchema, { binaryName: (isolated && this.gvisorOwnNetnsBinary) || this.gvisorBinary })),
          }
        : undefined;
      // The helper runs as the image's user and writes its reports into the run directory.
      const { uid, gid } = ociSpec.process.user;
      if (prepared) {
        prepared.ociSpec = ociSpec;
        // The claim's way in: made here, so the instance is claimable as soon as its helper waits.
        await run("mkfifo", ["-m", "0600", join(runDir, CLAIM_FIFO)]);
        if (uid !== 0 || gid !== 0) await chown(join(runDir, CLAIM_FIFO), uid, gid);
      }
      if (this.helperPath && (uid !== 0 || gid !== 0)) await chown(runDir, uid, gid);
      // Each undo step is registered before its call: containerd commits a snapshot, container or
      // task even when its answer comes after the agent's deadline (or containerd went away before
      // answering), and what it left would block the id until the janitor came. The steps are
      // idempotent (NotFound ignored); one whose call found the object there already
      // (AlreadyExists) is dropped: that object is not this create's.
      // Once the task's removal failed, the container and snapshot stay, so the janitor (which finds
      // them by the container) ends the task; no container is deleted under a task that runs on.
      let taskLeft = false;
      const notUnderTask = (run: () => Promise<unknown>) => () =>
        taskLeft ? Promise.reject(new Error("its task could not be removed; left for the janitor")) : run();
      const snapshotUndo = {
        step: "snapshot",
        run: notUnderTask(() => ignoreNotFound(this.client.snapshots.remove({ snapshotter: this.snapshotter, key: containerId }))),
      };
      undo.push(snapshotUndo);
      let mounts;
      try {
        ({ mounts } = await this.client.snapshots.prepare({
          snapshotter: this.snapshotter,
          key: containerId,
          parent: image.chainId,
          labels: { ...labels, [GC_ROOT_LABEL]: new Date().toISOString() },
        }));
      } catch (error) {
        if (error instanceof AlreadyExistsError) undo.splice(undo.indexOf(snapshotUndo), 1);
        throw this.prepareError(error, spec, image.chainId);
      }
      const snapshotMs = lap();

      const containerUndo = {
        step: "container",
        run: notUnderTask(() => ignoreNotFound(this.client.containers.delete({ id: containerId }))),
      };
      undo.push(containerUndo);
      // Runs after the task's undo: a Tasks.Create that failed half-way may have left the cgroup.
      const cgroupUndo = {
        step: "cgroup",
        run: notUnderTask(() => {
          const busy = removeCgroup(this.cgroupLayout, sandboxCgroupsPath(this.cgroupParent, containerId));
          return busy.length > 0 ? Promise.reject(new Error(`cgroup not empty: ${busy.join(", ")}`)) : Promise.resolve();
        }),
      };
      undo.push(cgroupUndo);
      try {
        await this.client.containers.create({
          container: {
            id: containerId,
            labels,
            image: spec.image,
            runtime: { name: RUNC_V2, options: runtimeOptions },
            spec: {
              typeUrl: SPEC_TYPE_URL,
              value: Buffer.from(JSON.stringify(ociSpec)),
            },
            snapshotter: this.snapshotter,
            snapshotKey: containerId,
          },
        });
      } catch (error) {
        if (error instanceof AlreadyExistsError) {
          // Another create's container, and the cgroup named after it: left alone.
          for (const step of [containerUndo, cgroupUndo]) undo.splice(undo.indexOf(step), 1);
          throw new AlreadyExistsError(`sandbox ${sandboxId} already exists in containerd (container ${containerId})`);
        }
        throw error;
      }
      const containerMs = lap();

      // A task is removed the way a deletion removes one: SIGKILL, its cgroup's processes killed if
      // that fails, Tasks.Delete retried — and its container, snapshot and cgroup after it.
      undo.push({
        step: "task",
        run: async () => {
          try {
            await this.removeContainer(containerId, 0, sandboxIdOfContainer({ id: containerId, labels }));
          } catch (error) {
            taskLeft = true;
            throw error;
          }
        },
      });
      const { pid } = await this.client.tasks.create({
        containerId,
        rootfs: mounts,
        stdout: `file://${spec.logPath}`,
        stderr: `file://${spec.logPath}`,
        options: runtimeOptions,
      });
      const taskMs = lap();
      // Nothing of the sandbox runs before its egress policy is in force.
      if (network) {
        await network.policyApplied;
        networkMs += lap();
      }

      // Watching starts before the command can run, so its report cannot slip by unseen.
      const commandStart = this.helperPath && !prepared ? new CommandStartWatcher(runDir) : undefined;
      let startMs: number;
      let commandStartMs = 0;
      try {
        await this.client.tasks.start({ containerId });
        startMs = lap();
        if (prepared) await this.helperWaiting(runDir);
        if (commandStart) {
          const report = await commandStart.wait(this.commandStartTimeoutMs);
          commandStartMs = lap();
          if (!report) {
            this.logger.warn(
              { sandboxId, timeoutMs: this.commandStartTimeoutMs },
              "the helper did not report on the command's start in time; a failure will show as its exit code",
            );
          } else if (!report.started) {
            throw commandStartError(report, {
              args: processArgs(spec, image.config),
              workingDir: sandboxWorkingDir(ociSpec),
              commandFromSpec: spec.command.length > 0 || spec.args.length > 0,
              workingDirFromSpec: Boolean(spec.workingDir),
            });
          }
        }
      } finally {
        commandStart?.close();
      }

      const timings = {
        imageMs,
        networkMs,
        snapshotMs,
        containerMs,
        taskMs,
        startMs,
        commandStartMs,
        totalMs: performance.now() - started,
      };
      this.logger.debug({ sandboxId, containerId, pid, timings }, prepared ? "prepared instance made" : "sandbox created");
      if (!prepared) this.onCreateTimings?.(timings);
      return {
        sandboxId,
        namespace: spec.namespace,
        name: spec.name,
        pool: spec.pool,
        image: spec.image,
        state: "running",
        pid,
        ...(network ? { address: network.address } : {}),
        labels,
      };
    } catch (error) {
      for (const { step, run } of undo.reverse()) {
        try {
          await run();
        } catch (undoError) {
          if (!isNotFound(undoError)) {
            this.logger.warn({ sandboxId, containerId, step, err: undoError }, "could not undo a create step; the janitor must remove it");
          }
        }
      }
      throw FsbError.from(error);
    }
  }

  /**
   * Claims the sandbox's network namespace and writes its /etc files into its run directory; labels
   * the container with its address and namespace, and registers the teardown as an undo step.
   */
  private async claimNetwork(
    spec: RuntimeSandboxSpec,
    runDir: string,
    labels: Record<string, string>,
    undo: { step: string; run: () => Promise<unknown> }[],
  ): Promise<ClaimedNetwork> {
    const networks = this.networks;
    if (!networks) {
      throw new FailedPreconditionError(
        `agent ${this.agentName} has no sandbox network, so it cannot create the isolated sandbox ${spec.sandboxId}: configure one (FSB_NETWORK_NAME, FSB_NETWORK_SUBNET) or use the Shared network mode`,
      );
    }
    const network = await networks.claim({
      sandboxId: spec.sandboxId,
      namespace: spec.namespace,
      pool: spec.pool,
      hostname: sandboxHostname(spec),
      network: spec.network ?? { mode: "isolated" },
    });
    undo.push({
      step: "network",
      run: async () => {
        // A policy still being applied would come back after the teardown removed it.
        await network.policyApplied.catch(() => undefined);
        await networks.release(spec.sandboxId);
      },
    });
    labels[LABEL_NETWORK_ADDRESS] = network.address;
    labels[LABEL_NETWORK_NAMESPACE] = network.attachmentId;
    // Two small files: written at once (the thread pool's round trips took milliseconds of a claim).
    mkdirSync(join(runDir, "etc"), { recursive: true, mode: 0o755 });
    for (const { destination, source } of this.networkFiles(runDir, network)) writeFileSync(source, network.files[destination] ?? "", { mode: 0o644 });
    return network;
  }

  /** Where an isolated sandbox's /etc files live on the host: `<run directory>/etc/<name>`. */
  private networkFiles(runDir: string, network: ClaimedNetwork): { destination: string; source: string }[] {
    return Object.keys(network.files).map((destination) => ({ destination, source: join(runDir, "etc", destination.split("/").at(-1) ?? "") }));
  }

  async delete(sandboxId: string, options: DeleteOptions): Promise<void> {
    await this.claimRecorded(sandboxId);
    const containerId = this.containerIdFor(sandboxId);
    await this.removeContainer(containerId, options.gracePeriodMs, sandboxId);
    this.claimJournal.remove(sandboxId);
    this.claimedContainers.delete(sandboxId);
    await this.networks?.release(sandboxId);
    await removeTree(this.runDir(sandboxId));
    // What execs of a previous agent process left (this process's own execs remove theirs).
    await this.execFiles.removeLeftovers({ sandboxId, containerId });
    this.logger.debug({ sandboxId, containerId }, "sandbox deleted");
  }

  /**
   * Stops and removes a container's task, the container, its snapshot and its cgroup (named after
   * the container), whatever of them exists. With `sandboxId`, a container that belongs to another
   * sandbox is left alone — but not the prepared instance this sandbox claimed, whose labels still
   * name the instance while containerd has not recorded the claim yet.
   */
  private async removeContainer(containerId: string, gracePeriodMs: number, sandboxId?: string): Promise<void> {
    let snapshotter = this.snapshotter;
    let snapshotKey = containerId;
    let restored = false;
    try {
      const { container } = await this.client.containers.get({ id: containerId });
      restored = Boolean(container?.labels[LABEL_RESTORED_FROM]);
      const claimedBySandbox = sandboxId !== undefined && this.claimedContainers.get(sandboxId) === containerId;
      if (container && sandboxId !== undefined && sandboxIdOfContainer(container) !== sandboxId && !claimedBySandbox) {
        this.logger.warn({ sandboxId, containerId, owner: sandboxIdOfContainer(container) }, "the container belongs to another sandbox; not removed");
        return;
      }
      snapshotter = container?.snapshotter || snapshotter;
      snapshotKey = container?.snapshotKey || snapshotKey;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }

    await this.stopTask(containerId, gracePeriodMs, sandboxId ?? containerId, !restored);
    await this.deleteTask(containerId);
    await ignoreNotFound(this.client.containers.delete({ id: containerId }));
    await ignoreNotFound(this.client.snapshots.remove({ snapshotter, key: snapshotKey }));
    // runc removes the cgroup with the task; a create cut short (e.g. containerd gone under it) leaves it.
    const busy = removeCgroup(this.cgroupLayout, sandboxCgroupsPath(this.cgroupParent, containerId));
    if (busy.length > 0) {
      this.logger.warn({ sandboxId, containerId, cgroups: busy }, "could not remove the sandbox's cgroup (not empty); the janitor retries");
    }
  }

  /**
   * Tasks.Delete, tolerant of a known containerd 1.6 race: when a grouped shim reports a task's
   * exit, containerd may close that task's ttrpc connection while our Delete is in flight
   * ("ttrpc: closed") and clean the task up itself. Retrying then finds it deleted or deletes it.
   */
  private async deleteTask(containerId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await ignoreNotFound(this.client.tasks.delete({ containerId }));
        return;
      } catch (error) {
        const closed = error instanceof Error && /ttrpc: closed|shim disconnected/.test(error.message);
        if (!closed || attempt >= 5) throw error;
        this.logger.debug({ containerId, attempt }, "task delete raced the shim's cleanup; retrying");
        await sleep(50 * attempt);
      }
    }
  }

  /** Ids of the agent's shim anchor containers, one per shim group. */
  get anchorIds(): string[] {
    return this.groupLoad.map((_, index) => `fsb-anchor.${this.agentName}.${index}`);
  }

  /**
   * Starts the agent's shim anchors unless they already run (idempotent; an agent restart adopts
   * them). Without the helper there are no anchors and no shim sharing.
   */
  async prepare(): Promise<void> {
    await this.makeRunscNetns();
    // The exec files a previous process left: their reader is gone, and so is every such exec.
    const leftovers = await this.execFiles.removeLeftovers();
    if (leftovers.length > 0) this.logger.info({ files: leftovers.length }, "removed the exec FIFOs and output files a previous agent process left");
    // Claims first: an instance a previous process handed over is a sandbox, not stock.
    await this.replayClaims();
    await this.endLeftoverExecs(leftovers);
    // A previous process's instances are not adopted (their stock order and specs are gone): removed,
    // then made anew — also when this process keeps none (turned off, or the pool's count lowered to 0).
    await this.removePreparedInstances();
    if (this.networks) {
      const existing = new Set((await this.list()).map((sandbox) => sandbox.sandboxId));
      const recovered = await this.networks.recover(existing);
      if (recovered.kept + recovered.adopted + recovered.reclaimed > 0) this.logger.info(recovered, "recovered this agent's network namespaces");
    }
    await this.removeLeftoverLogs();
    // The pulls a previous process was killed in: their leases keep partial downloads for a day.
    const leases = await this.puller.removeLeftoverLeases({ [LABEL_AGENT]: this.agentName }).catch((error: unknown) => {
      this.logger.warn({ err: error }, "could not remove the pull leases a previous agent process left; containerd drops them when they expire");
      return 0;
    });
    if (leases > 0) this.logger.info({ leases }, "removed the pull leases (and partial downloads) a previous agent process left");
    if (!this.helperPath) return;
    await Promise.all(this.anchorIds.map((id, index) => this.startAnchorWithRetry(id, index)));
    this.startPreparedStock();
  }

  /**
   * Removes the log files of sandboxes this agent no longer has: a previous process that died between
   * a delete's runtime.delete and its removal of the log left them, and nothing else sweeps a live
   * agent's logs (the janitor removes the files of orphaned containers and of gone agents; a delete
   * retried by the control plane finds no sandbox, but removes the log all the same). Kept: the logs
   * of every container of this agent (sandboxes, stopped or not, and prepared instances, by their
   * sandbox id or container id), of claims not yet recorded (their container still has the
   * instance's labels), and any written within LEFTOVER_LOG_GRACE_MS. Failures are logged only.
   */
  private async removeLeftoverLogs(): Promise<void> {
    const logDir = sandboxLogDir(this.stateDir);
    try {
      const { containers } = await this.client.containers.list({ filters: [`labels."${LABEL_AGENT}"==${quoteFilterValue(this.agentName)}`] });
      const keep = new Set<string>([...this.claimedContainers.keys(), ...this.claimJournal.pending().map((claim) => claim.sandboxId)]);
      for (const container of containers) keep.add(sandboxIdOfContainer(container)).add(container.id);
      const changedBefore = Date.now() - LEFTOVER_LOG_GRACE_MS;
      let removed = 0;
      for (const name of await readdir(logDir).catch(() => [])) {
        const sandboxId = sandboxIdOfLogFile(name);
        if (sandboxId === undefined || keep.has(sandboxId) || keep.has(containerIdOf(sandboxId))) continue;
        const path = join(logDir, name);
        const stats = await lstat(path).catch(() => undefined);
        // Its last write (the shim's open makes a new log, so it is recent): a claim's rename keeps
        // an older one, but a claimed sandbox is kept by its container or the claim journal.
        if (!stats?.isFile() || stats.mtimeMs >= changedBefore) continue;
        await rm(path, { force: true });
        removed += 1;
      }
      if (removed > 0) this.logger.info({ files: removed }, "removed the log files of sandboxes this agent no longer has");
    } catch (error) {
      this.logger.warn({ err: error, dir: logDir }, "could not remove the log files of sandboxes this agent no longer has; they stay");
    }
  }

  /**
   * Kills and deletes the user execs (`exec-*`) a previous process of this agent left running in its
   * sandboxes: their reader is gone, so their output goes nowhere and their caller heard of a
   * failure. They are found from the exec FIFOs it left (`fifoNames`) and from each task's processes
   * (runc names each exec's id; runsc does not); a sandbox's process 1, and prepared instances (not
   * sandboxes), are never touched. Failures are logged: a sandbox's deletion ends its execs anyway.
   */
  private async endLeftoverExecs(fifoNames: readonly string[]): Promise<void> {
    const fromFifos = new Map<string, Set<string>>();
    for (const name of fifoNames) {
      const exec = parseExecFifoName(name);
      if (!exec) continue;
      const execs = fromFifos.get(exec.sandboxId) ?? new Set<string>();
      execs.add(exec.execId);
      fromFifos.set(exec.sandboxId, execs);
    }
    // list() also learns which sandboxes claimed a prepared instance (their container's id is the instance's).
    const sandboxes = (await this.list()).filter((sandbox) => sandbox.state === "running" || sandbox.state === "created");
    let ended = 0;
    await Promise.all(
      sandboxes.map(async ({ sandboxId }) => {
        const containerId = this.containerIdFor(sandboxId);
        const execIds = new Set(fromFifos.get(sandboxId));
        try {
          const { processes } = await this.client.tasks.listPids({ containerId });
          for (const { info } of processes) {
            if (!info?.typeUrl.endsWith("containerd.runc.v1.ProcessDetails")) continue;
            const { execId } = fromBinary(ProcessDetailsSchema, info.value);
            if (execId.startsWith(EXEC_ID_PREFIX)) execIds.add(execId);
          }
        } catch (error) {
          if (!isNotFound(error))
            this.logger.warn({ sandboxId, err: error }, "could not list a sandbox's processes to end the execs a previous agent process left");
        }
        for (const execId of execIds) {
          // Never an exec of this process (prepare runs before the agent serves, but that is main's business).
          if (this.execFiles.holds(execFifoName(sandboxId, execId))) continue;
          if (await this.endExec(sandboxId, containerId, execId, true)) ended += 1;
        }
      }),
    );
    if (ended > 0) this.logger.info({ execs: ended }, "ended the execs a previous agent process left running");
  }

  async unprepare(): Promise<void> {
    // A claim still being recorded is a sandbox: it must not look like stock to what follows.
    await Promise.all(this.pendingClaims.values());
    await this.removePreparedInstances();
    await this.networks?.releasePrepared();
    await Promise.all(
      this.anchorIds.map(async (id, index) => {
        await this.removeContainer(id, 0);
        // The anchor's cgroup is named after its group, not its id (removeContainer() removes `<parent>/<id>`).
        removeCgroup(this.cgroupLayout, sandboxCgroupsPath(this.cgroupParent, `fsb-anchor-${index}`));
      }),
    );
    this.logger.debug({ anchors: this.anchorIds }, "shim anchors removed");
  }

  /**
   * An anchor whose start fails is made anew, up to ANCHOR_START_ATTEMPTS times: once in a CI run
   * of thousands of creates, an anchor's `runc init` was gone between create and start ("cannot
   * start a stopped process"), and the agent exited at its start for it. The dead task's exit status
   * is logged, to tell what ended it if it happens again.
   */
  private async startAnchorWithRetry(id: string, index: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startAnchor(id, index);
        return;
      } catch (error) {
        if (attempt >= ANCHOR_START_ATTEMPTS) throw error;
        const { process: task } = await this.client.tasks.get({ containerId: id }).catch(() => ({ process: undefined }));
        this.logger.warn(
          { anchor: id, attempt, err: error, ...(task ? { taskStatus: task.status, exitStatus: task.exitStatus } : {}) },
          "a shim anchor did not start; making it anew",
        );
        await sleep(100 * attempt);
      }
    }
  }

  private async startAnchor(id: string, index: number): Promise<void> {
    if (!this.helperPath) return;
    try {
      const [{ container }, { process }] = await Promise.all([this.client.containers.get({ id }), this.client.tasks.get({ containerId: id })]);
      // An anchor of a replaced Pod of the same name is not adopted: it is replaced below.
      if (process?.status === TaskStatus.RUNNING && container && this.owns(container.labels)) {
        // Adopted: the update marks it in use again for the janitor, which spares recently updated
        // containers, and gives an anchor made before agent UIDs existed this agent's UID.
        const labels = { [LABEL_ADOPTED_AT]: new Date().toISOString(), ...this.agentUidLabel() };
        await this.client.containers.update({
          container: { id, labels },
          updateMask: { paths: Object.keys(labels).map((key) => `labels.${key}`) },
        });
        return;
      }
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    await this.removeContainer(id, 0);
    const spec = buildAnchorSpec(this.helperPath, this.shimGroup(index), sandboxCgroupsPath(this.cgroupParent, `fsb-anchor-${index}`));
    await this.client.containers.create({
      container: {
        id,
        labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: this.agentName, ...this.agentUidLabel(), [LABEL_ROLE]: ROLE_SHIM_ANCHOR },
        runtime: { name: RUNC_V2 },
        spec: { typeUrl: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) },
      },
    });
    // A tmpfs root: runc creates the helper's mount point in it, and unmounting it leaves the
    // bundle's rootfs directory empty so containerd can remove the bundle.
    await this.client.tasks.create({ containerId: id, rootfs: [{ type: "tmpfs", source: "tmpfs", target: "", options: ["size=64k", "mode=755"] }] });
    await this.client.tasks.start({ containerId: id });
    this.logger.debug({ anchor: id }, "shim anchor started");
  }

  /** One sandbox of this agent by id (two constant-time lookups), or undefined. */
  async get(sandboxId: string): Promise<RuntimeSandbox | undefined> {
    const container = await this.sandboxContainer(sandboxId);
    if (!container || !this.owns(container.labels) || container.labels[LABEL_ROLE]) return undefined;
    let task: Process | undefined;
    try {
      ({ process: task } = await this.client.tasks.get({ containerId: container.id }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    return this.toRuntimeSandbox(container, task);
  }

  async stats(sandboxId: string, windowMs: number, options: { disk?: boolean } = {}): Promise<RuntimeSandboxStats> {
    const container = await this.sandboxContainer(sandboxId);
    if (!container || !this.owns(container.labels) || container.labels[LABEL_ROLE]) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    const cgroup = this.cgroupOfContainer(container);
    const first = readCgroupUsage(this.cgroupLayout, cgroup);
    const started = performance.now();
    if (windowMs > 0) await sleep(windowMs);
    const usage = windowMs > 0 ? readCgroupUsage(this.cgroupLayout, cgroup) : first;
    const elapsedNanos = windowMs > 0 ? (performance.now() - started) * 1e6 : 0;
    let diskUsedBytes = 0;
    if (options.disk !== false) {
      const snapshot = { snapshotter: container.snapshotter || this.snapshotter, key: container.snapshotKey || container.id };
      try {
        const { size } = await this.client.snapshots.usage(snapshot);
        diskUsedBytes = Number(size);
      } catch (error) {
        if (!isNotFound(error)) {
          // containerd's walk is by paths: a tree deeper than PATH_MAX fails it (ENAMETOOLONG). Its
          // upper layer walked by du instead (when it has one: an overlay's upperdir).
          const { mounts } = await this.client.snapshots.mounts(snapshot);
          const upper = mounts.flatMap((mount) => mount.options).find((option) => option.startsWith("upperdir="));
          if (!upper) throw error;
          diskUsedBytes = await directoryDiskBytes(upper.slice("upperdir=".length));
        }
      }
      // Its run directory (on the node's disk, outside its snapshot), and files its processes removed
      // but hold open (which no walk sees).
      diskUsedBytes += await directoryDiskBytes(this.runDir(sandboxId));
      diskUsedBytes += await openDeletedFileBytes(cgroupProcessIds(this.cgroupLayout, cgroup));
    }
    return {
      timestampMs: Date.now(),
      cpuUsageNanos: usage.cpuUsageNanos,
      cpuUsedMillis: elapsedNanos > 0 ? Math.max(0, Math.round(((usage.cpuUsageNanos - first.cpuUsageNanos) / elapsedNanos) * 1000)) : 0,
      cpuLimitMillis: usage.cpuLimitMillis,
      memoryUsedBytes: usage.memoryUsedBytes,
      memoryCacheBytes: usage.memoryCacheBytes,
      memoryLimitBytes: usage.memoryLimitBytes,
      pids: usage.pids,
      diskUsedBytes,
      diskLimitBytes: diskLimitOf(container.labels) ?? 0,
      nodeCpus: availableParallelism(),
      nodeMemoryBytes: totalmem(),
    };
  }

  async evict(sandboxId: string, reason: string): Promise<void> {
    const container = await this.sandboxContainer(sandboxId);
    if (!container || !this.owns(container.labels) || container.labels[LABEL_ROLE]) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    // Recorded first: a sandbox found stopped is then reported evicted, whenever the kill lands.
    const labels = evictedLabel(reason);
    await this.client.containers.update({
      container: { id: container.id, labels },
      updateMask: { paths: Object.keys(labels).map((key) => `labels.${key}`) },
    });
    // Every process at once, no grace (a sandbox past its disk limit gets none, as the kubelet's
    // eviction of a Pod past its ephemeral-storage limit): its task stops; what it wrote stays until
    // it is deleted.
    await this.stopTask(container.id, 0, sandboxId, !container.labels[LABEL_RESTORED_FROM]);
    this.logger.warn({ sandboxId, containerId: container.id, reason }, "sandbox evicted: its processes were killed");
  }

  /** The container of a sandbox (under its mapped id, and labelled with the sandbox id), or undefined. */
  private async sandboxContainer(sandboxId: string): Promise<Container | undefined> {
    await this.claimRecorded(sandboxId);
    let container: Container | undefined;
    try {
      ({ container } = await this.client.containers.get({ id: this.containerIdFor(sandboxId) }));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    return container && sandboxIdOfContainer(container) === sandboxId ? container : undefined;
  }

  private toRuntimeSandbox(container: Container, task: Process | undefined): RuntimeSandbox {
    const labels = { ...container.labels };
    const sandbox: RuntimeSandbox = {
      sandboxId: sandboxIdOfContainer(container),
      namespace: labels[LABEL_NAMESPACE] ?? "",
      name: labels[LABEL_NAME] ?? "",
      pool: labels[LABEL_POOL] ?? "",
      image: labels[LABEL_IMAGE] ?? container.image,
      // A container without a task is not running (its task failed to start or containerd lost it).
      state: task ? taskState(task.status) : "stopped",
      labels,
    };
    if (task && task.pid > 0) sandbox.pid = task.pid;
    const exposedPorts = parsePorts(labels[LABEL_EXPOSED_PORTS]);
    if (exposedPorts.length > 0) sandbox.exposedPorts = exposedPorts;
    if (labels[LABEL_NETWORK_ADDRESS]) sandbox.address = labels[LABEL_NETWORK_ADDRESS];
    const diskLimit = diskLimitOf(labels);
    if (diskLimit !== undefined) sandbox.ephemeralStorageBytes = diskLimit;
    if (labels[LABEL_EVICTED]) sandbox.evicted = labels[LABEL_EVICTED];
    // The cgroup lives as long as the task: read while it runs (or has stopped but is not deleted).
    // Its spec's cgroup, as stats and kills read (one made under another parent keeps it).
    if (task && readOomKillCount(this.cgroupLayout, this.cgroupOfListed(container)) > 0) sandbox.oomKilled = true;
    if (labels[LABEL_HELPER] === "true") {
      // Process 1 is the helper, which outlives the command: the command's exit is what it recorded.
      // A stopped task of its own (killed outside Fast Sandbox) says nothing of the command's.
      const recorded = this.recordedExitCode(sandbox.sandboxId);
      if (recorded !== undefined) sandbox.exitCode = recorded;
    } else if (task?.status === TaskStatus.STOPPED) sandbox.exitCode = task.exitStatus;
    return sandbox;
  }

  async list(): Promise<RuntimeSandbox[]> {
    if (this.pendingClaims.size > 0) await Promise.all(this.pendingClaims.values());
    const [{ containers }, { tasks }] = await Promise.all([
      this.client.containers.list({
        filters: [`labels."${LABEL_AGENT}"==${quoteFilterValue(this.agentName)}`],
      }),
      this.client.tasks.list({}),
    ]);
    const tasksById = new Map(tasks.map((task) => [task.id, task]));
    const listed = new Set(containers.map((container) => container.id));
    for (const id of this.listedCgroups.keys()) if (!listed.has(id)) this.listedCgroups.delete(id);
    // Sandboxes made from prepared instances, found again after a restart.
    for (const container of containers) {
      const sandboxId = sandboxIdOfContainer(container);
      if (!container.labels[LABEL_ROLE] && this.owns(container.labels) && containerIdOf(sandboxId) !== container.id)
        this.claimedContainers.set(sandboxId, container.id);
    }
    return containers
      .filter((container) => this.owns(container.labels) && !container.labels[LABEL_ROLE])
      .map((container) => this.toRuntimeSandbox(container, tasksById.get(container.id)))
      .sort((a, b) => a.sandboxId.localeCompare(b.sandboxId));
  }

  async exec(sandboxId: string, request: ExecRequest, io: ExecIo): Promise<number> {
    if (request.command.length === 0) throw new FsbError("invalid_argument", "exec: command must not be empty");
    io.signal?.throwIfAborted();
    const process = await this.execProcess(sandboxId, request);
    const containerId = this.containerIdFor(sandboxId);
    const execId = `${EXEC_ID_PREFIX}${randomBytes(6).toString("hex")}`;
    const fifoName = execFifoName(sandboxId, execId);
    const release = this.execFiles.hold(fifoName);
    let fifos: ExecFifos;
    try {
      fifos = await ExecFifos.create(this.stateDir, fifoName, io.onStdout, io.onStderr);
    } catch (error) {
      release();
      throw error;
    }
    let registered = false;
    let exited = false;
    const kill = () => {
      this.client.tasks
        .kill({ containerId, execId, signal: SIGKILL })
        .catch((error: unknown) => this.logger.debug({ sandboxId, execId, err: error }, "exec kill failed"));
    };
    try {
      try {
        await this.client.tasks.exec({
          containerId,
          execId,
          stdout: fifos.stdoutPath,
          stderr: fifos.stderrPath,
          terminal: false,
          spec: {
            typeUrl: PROCESS_TYPE_URL,
            value: Buffer.from(JSON.stringify(process)),
          },
        });
      } catch (error) {
        if (isNotFound(error)) throw new NotFoundError(`sandbox ${sandboxId} has no running task to exec in`, { cause: error });
        // containerd may have made the process all the same (it answered too late, or went away meanwhile).
        if (isTransient(error)) registered = true;
        throw error;
      }
      registered = true;
      io.signal?.addEventListener("abort", kill, { once: true });
      await this.client.tasks.start({ containerId, execId });
      if (io.signal?.aborted) kill();
      const exitCode = await this.waitProcess(containerId, execId);
      exited = true;
      fifos.releaseWriters();
      const drain = await fifos.drained(EXEC_OUTPUT_GRACE_MS, { signal: io.signal });
      // Output the process itself wrote is all read by then (the bounds are far above what the
      // pipes can hold at its exit); what is cut off is a background child's, written after it.
      // The stream has no way to tell the caller of it, so the log does.
      if (drain === "writing")
        this.logger.warn(
          { sandboxId, execId, exitCode },
          "exec: a background process kept writing to the exec's output after it exited; the rest of that output is dropped",
        );
      else if (drain === "idle")
        this.logger.debug({ sandboxId, execId }, "exec: its output pipes are still held open after its exit (a background process); no longer read");
      return exitCode;
    } finally {
      io.signal?.removeEventListener("abort", kill);
      // The shim refuses to delete a running process: one whose exit was not seen (its start or wait
      // failed, containerd away, say; the start may have gone through on the shim's side all the
      // same) is killed first, or it would run on unseen while the caller hears of a failure — and
      // a retry would run a second copy.
      if (registered) await this.endExec(sandboxId, containerId, execId, !exited);
      await fifos.dispose();
      release();
    }
  }

  /**
   * Deletes an exec's process, SIGKILLed first (and given EXEC_KILL_WAIT_MS to end) when `kill`.
   * Never throws; false when there was no such process.
   */
  private async endExec(sandboxId: string, containerId: string, execId: string, kill: boolean): Promise<boolean> {
    if (kill) {
      try {
        await this.client.tasks.kill({ containerId, execId, signal: SIGKILL });
        await this.client.tasks.wait({ containerId, execId }, { timeoutMs: EXEC_KILL_WAIT_MS });
      } catch (error) {
        // Exited or never started (the delete takes a created process too), or containerd away.
        if (!isNotFound(error)) this.logger.debug({ sandboxId, execId, err: error }, "could not kill an exec whose exit was not seen");
      }
    }
    try {
      await this.client.tasks.deleteProcess({ containerId, execId });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      this.logger.warn({ sandboxId, execId, err: error }, "could not delete exec process; the agent's next start kills it");
      return true;
    }
  }

  /** Directory of a sandbox the helper writes to (mounted at /.fast-sandbox/run). */
  private runDir(sandboxId: string): string {
    return sandboxRunDir(this.stateDir, sandboxId);
  }

  /** The exit code the helper recorded for the user's command, once it exited. */
  private recordedExitCode(sandboxId: string): number | undefined {
    const text = (readRunFile(join(this.runDir(sandboxId), "exit-code")) ?? "").trim();
    return /^\d{1,3}$/.test(text) ? Number(text) : undefined;
  }

  /**
   * Resolves with the exit code of the sandbox's command. With the helper the task outlives the
   * command, so the helper's record counts (polled), and the task's exit if that comes first.
   */
  async wait(sandboxId: string, signal?: AbortSignal): Promise<number> {
    await this.claimRecorded(sandboxId);
    try {
      if (this.helperPath) {
        const controller = new AbortController();
        const stop = AbortSignal.any([controller.signal, ...(signal ? [signal] : [])]);
        const recorded = (async () => {
          for (;;) {
            const code = this.recordedExitCode(sandboxId);
            if (code !== undefined) return code;
            await sleep(100, undefined, { signal: stop });
          }
        })();
        const exited = this.waitProcess(this.containerIdFor(sandboxId), "", stop);
        try {
          return await Promise.race([recorded, exited]);
        } finally {
          controller.abort();
          recorded.catch(() => undefined);
          exited.catch(() => undefined);
        }
      }
      return await this.waitProcess(this.containerIdFor(sandboxId), "", signal);
    } catch (error) {
      if (isNotFound(error))
        throw new NotFoundError(`sandbox ${sandboxId} has no task`, {
          cause: error,
        });
      throw error;
    }
  }

  /** Ends this runtime's use of containerd: no refill, no retried claim record (the claim journal keeps those). */
  close(): void {
    this.closed = true;
    this.closing.abort();
    // Its periodic check of the firewall too.
    void this.networks?.stop();
    void this.preparedStock?.drain();
    this.puller.close();
    this.client.close();
  }

  /** The exec'd process (execProcessOf), as the sandbox's helper can run it (LABEL_HELPER_EXEC_AS). */
  private async execProcess(sandboxId: string, request: ExecRequest): Promise<OciProcess> {
    const container = await this.sandboxContainer(sandboxId);
    if (!container) throw new NotFoundError(`sandbox ${sandboxId} not found`);
    const spec = JSON.parse(Buffer.from(container.spec?.value ?? []).toString("utf8")) as OciSpec;
    return execProcessOf(spec, request, container.labels[LABEL_HELPER_EXEC_AS] === "true");
  }

  /**
   * Waits for a process (the task's init when execId is "") to exit; long waits are re-armed so every
   * call keeps a deadline. containerd away (restarting) is waited out with a backoff for up to
   * WAIT_UNAVAILABLE_MAX_MS in a row: the process runs on in its shim meanwhile.
   */
  private async waitProcess(containerId: string, execId: string, signal?: AbortSignal): Promise<number> {
    let unavailableSince: number | undefined;
    for (let retry = 0; ;) {
      // Each Wait has a deadline; between them an aborted waiter stops re-arming.
      signal?.throwIfAborted();
      try {
        const { exitStatus } = await this.client.tasks.wait({ containerId, execId }, { timeoutMs: 60_000 });
        return exitStatus;
      } catch (error) {
        if (error instanceof FsbError && error.code === "deadline_exceeded") {
          unavailableSince = undefined;
          retry = 0;
          continue;
        }
        if (!(error instanceof UnavailableError)) throw error;
        unavailableSince ??= performance.now();
        if (performance.now() - unavailableSince >= WAIT_UNAVAILABLE_MAX_MS) throw error;
        retry += 1;
        // An abort meanwhile ends the wait as it does between Waits (throwIfAborted above).
        await sleep(Math.min(WAIT_RETRY_MAX_MS, 50 * 2 ** retry), undefined, signal ? { signal } : undefined).catch(() => undefined);
      }
    }
  }

  /**
   * SIGTERM, up to gracePeriodMs for the exit, then SIGKILL to every process. Returns when no process
   * runs. `killAll` false: SIGKILL goes to process 1 only — a gVisor sandbox restored from a
   * checkpoint finds none of its processes by its own container id (checkpoints.ts), and ends with
   * its process 1 anyway.
   */
  private async stopTask(containerId: string, gracePeriodMs: number, sandboxId: string, killAll = true): Promise<void> {
    if (gracePeriodMs > 0) {
      if (await this.signal(containerId, SIGTERM, false)) return;
      if (await this.exitedWithin(containerId, gracePeriodMs)) return;
    }
    let failure: unknown;
    try {
      if (await this.signal(containerId, SIGKILL, killAll)) return;
      if (await this.exitedWithin(containerId, 10_000)) return;
    } catch (error) {
      failure = error;
    }
    // The last resort: the host processes of its cgroup. A gVisor sandbox whose task is stuck in the
    // open of a host FIFO (one in its image, say) outlives the Sentry's SIGKILL, and runsc's kill
    // of it hangs; its sandbox and gofer processes die like any.
    const cgroup = await this.cgroupOf(containerId);
    const killed = await killCgroupProcesses(this.cgroupLayout, cgroup);
    this.logger.warn(
      { sandboxId, containerId, cgroup, processes: killed, err: failure },
      "the sandbox did not end on its runtime's SIGKILL; its cgroup's processes were killed",
    );
    if (await this.exitedWithin(containerId, 10_000)) return;
    const cause = failure === undefined ? "it did not exit after SIGKILL" : FsbError.from(failure).message;
    throw new UnavailableError(
      `sandbox ${sandboxId} could not be stopped: ${cause}; ${killed} processes of its cgroup ${cgroup} were killed, and it has not exited`,
      {
        cause: failure,
      },
    );
  }

  /** The cgroup a container's spec names (one made under another parent, say), or the one this agent would give it. */
  private async cgroupOf(containerId: string): Promise<string> {
    try {
      const { container } = await this.client.containers.get({ id: containerId });
      if (container) return this.cgroupOfContainer(container);
    } catch {
      // no such container: the path this agent gives its containers
    }
    return sandboxCgroupsPath(this.cgroupParent, containerId);
  }

  /** `cgroupOfContainer` for the containers `list` reports, each spec read once (a list runs every heartbeat). */
  private cgroupOfListed(container: Container): string {
    let cgroup = this.listedCgroups.get(container.id);
    if (cgroup === undefined) {
      cgroup = this.cgroupOfContainer(container);
      this.listedCgroups.set(container.id, cgroup);
    }
    return cgroup;
  }

  /** The cgroup of a container containerd answered with: its spec's, else the path this agent gives its containers. */
  private cgroupOfContainer(container: Container): string {
    try {
      const spec = JSON.parse(Buffer.from(container.spec?.value ?? []).toString("utf8")) as Partial<OciSpec>;
      // A path of the cgroupfs driver (systemd's `slice:prefix:name` is not one).
      if (spec.linux?.cgroupsPath?.startsWith("/") && !spec.linux.cgroupsPath.includes(":")) return spec.linux.cgroupsPath;
    } catch {
      // no spec to read
    }
    return sandboxCgroupsPath(this.cgroupParent, container.id);
  }

  /**
   * Sends a signal to the task; true when there is nothing left to signal. A process that exits
   * while the signal is on its way makes runc/runsc fail the kill ("not running", "process already
   * finished"); what counts then is whether the task has stopped. runsc fails it too while its
   * sandbox process is going away and containerd has not yet seen the exit ("connecting to control
   * server at PID …: connection refused"), so a failed kill waits a moment for the task's exit
   * before it counts as a failure.
   */
  private async signal(containerId: string, signal: number, all: boolean): Promise<boolean> {
    try {
      await this.client.tasks.kill({ containerId, signal, all });
      return false;
    } catch (error) {
      if (isNotFound(error)) return true;
      try {
        const { process } = await this.client.tasks.get({ containerId });
        if (process?.status === TaskStatus.STOPPED) return true;
        if (await this.exitedWithin(containerId, KILL_FAILED_EXIT_WAIT_MS)) return true;
      } catch (checkError) {
        if (isNotFound(checkError)) return true;
      }
      throw error;
    }
  }

  private async exitedWithin(containerId: string, timeoutMs: number): Promise<boolean> {
    try {
      await this.client.tasks.wait({ containerId }, { timeoutMs });
      return true;
    } catch (error) {
      if (isNotFound(error)) return true;
      if (error instanceof FsbError && error.code === "deadline_exceeded") return false;
      throw error;
    }
  }

  private prepareError(error: unknown, spec: RuntimeSandboxSpec, parent: string): unknown {
    if (error instanceof AlreadyExistsError) {
      return new AlreadyExistsError(`sandbox ${spec.sandboxId} already exists (snapshot ${containerIdOf(spec.sandboxId)} is present)`);
    }
    if (isNotFound(error)) {
      // The image record exists but its layers are not unpacked for our snapshotter (or it changed).
      this.images.forget(spec.image);
      return new NotFoundError(
        `image "${spec.image}" is not unpacked for snapshotter "${this.snapshotter}" (no snapshot ${parent}); ` +
          `re-import it with \`ctr -n ${this.namespace} images import\` or unpack it with ` +
          `\`ctr -n ${this.namespace} images unpack --snapshotter ${this.snapshotter} ${spec.image}\``,
        { cause: error },
      );
    }
    return error;
  }
}

/** A sandbox with no command of its own whose image has none either. */
function noCommand(image: string): ValidationError {
  return new ValidationError("command", `image "${image}" has neither an entrypoint nor a cmd: give the sandbox a command`);
}

function taskState(status: TaskStatus): RuntimeSandboxState {
  switch (status) {
    case TaskStatus.CREATED:
      return "created";
    case TaskStatus.RUNNING:
    case TaskStatus.PAUSED:
    case TaskStatus.PAUSING:
      return "running";
    case TaskStatus.STOPPED:
      return "stopped";
    default:
      return "unknown";
  }
}

/** The ports of a LABEL_EXPOSED_PORTS value (`8080,9090`); anything else in it is ignored. */
function parsePorts(label: string | undefined): number[] {
  return (label ?? "")
    .split(",")
    .map(Number)
    .filter((port) => Number.isInteger(port) && port >= 1 && port <= 65535);
}

async function ignoreNotFound(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}

/**
 * Whether the host accounts swap per cgroup, where the sandboxes' cgroups are made: v1 with swap
 * accounting has `memory.memsw.limit_in_bytes`; v2 has `memory.swap.max` in every cgroup below the
 * root (the nearest existing one to `cgroupParent` tells). runc writes a swap limit only there.
 */
function swapAccounted(layout: CgroupLayout, cgroupParent: string): boolean {
  if (layout.version === 1) return layout.controllers.includes("memory") && existsSync(join(layout.root, "memory", "memory.memsw.limit_in_bytes"));
  for (let path = cgroupParent; path !== "/" && path !== "" && path !== "."; path = dirname(path)) {
    const directory = join(layout.root, path);
    if (existsSync(directory)) return existsSync(join(directory, "memory.swap.max"));
  }
  // None of it exists yet (a first start): any cgroup below the root with the memory controller tells.
  try {
    return readdirSync(layout.root, { withFileTypes: true }).some(
      (entry) => entry.isDirectory() && existsSync(join(layout.root, entry.name, "memory.max")) && existsSync(join(layout.root, entry.name, "memory.swap.max")),
    );
  } catch {
    return false;
  }
}
