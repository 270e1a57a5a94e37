/**
 * The agent's port to a container runtime. The containerd adapter implements it for real;
 * a fake implements it for unit tests of the agent and control plane.
 */
import type { SandboxStats } from "@fast-sandbox/api/core";
import type { RuntimeCheckpoints } from "./checkpoint.js";

/** Labels every managed container carries; the janitor and crash recovery rely on them. */
export const LABEL_MANAGED = "fast-sandbox.io/managed";
export const LABEL_AGENT = "fast-sandbox.io/agent";
/**
 * UID of the agent's Pod (Kubernetes mode only): a Pod recreated under the same name is another
 * agent, so neither it nor the janitor treats the old Pod's containers as the new one's.
 */
export const LABEL_AGENT_UID = "fast-sandbox.io/agent-uid";
export const LABEL_SANDBOX_ID = "fast-sandbox.io/sandbox-id";
export const LABEL_NAMESPACE = "fast-sandbox.io/namespace";
export const LABEL_NAME = "fast-sandbox.io/name";
export const LABEL_POOL = "fast-sandbox.io/pool";
/** Ports the sandbox exposes, comma-separated: an agent that adopts the sandbox keeps them exclusive. */
export const LABEL_EXPOSED_PORTS = "fast-sandbox.io/exposed-ports";

export type RuntimeType = "container" | "gvisor";

export interface EnvVar {
  name: string;
  value: string;
}

export interface SandboxResources {
  /** CPU limit in millicores (1000 = one core). */
  cpuMillis?: number;
  memoryBytes?: number;
  pids?: number;
  /**
   * The most the sandbox may hold on its node's disk (its root file system's own layer and its run
   * directory), in bytes: the agent's EphemeralStorageGuard evicts it past that.
   */
  ephemeralStorageBytes?: number;
}

/**
 * How a sandbox is networked. `shared`: it uses its agent's network namespace (its address and
 * ports). `isolated`: a network namespace of its own with an address on the node's sandbox bridge,
 * and egress limited by its policy (network/ in the agent).
 */
export type NetworkMode = "shared" | "isolated";

export type EgressPolicyKind = "allowAll" | "denyAll" | "allowList";

/** One destination an `allowList` policy lets a sandbox connect to. */
export interface EgressRule {
  /** An IPv4 or IPv6 CIDR (`10.0.0.0/8`, `203.0.113.7/32`); a bare address means that one address. */
  cidr: string;
  /** Destination ports; absent or empty: every port. */
  ports?: number[];
  /** Absent: tcp and udp. */
  protocol?: "tcp" | "udp";
}

/**
 * Where an isolated sandbox may connect to. Whatever it says, a sandbox never reaches the node's own
 * addresses, 169.254.0.0/16 or other sandboxes (unless `allowSandboxToSandbox`).
 * `allowAll`: anywhere else; `denyAll`: nowhere, DNS included; `allowList`: the rules' destinations and DNS.
 */
export interface EgressPolicy {
  kind: EgressPolicyKind;
  allow?: EgressRule[];
}

export interface SandboxNetworkSpec {
  mode: NetworkMode;
  /** Isolated only. @default { kind: "allowAll" } */
  egress?: EgressPolicy;
  /** Isolated only: sandboxes of the same pool (namespace and pool name) may connect to each other. @default false */
  allowSandboxToSandbox?: boolean;
}

/** Everything the runtime needs to create one sandbox. */
export interface RuntimeSandboxSpec {
  /**
   * Unique id of this instance (the control plane's choice, following `isSandboxId` of the API); it
   * names the sandbox's host files. Each runtime maps it to its own identifiers (containerd:
   * container-id.ts) and reports the sandbox under it.
   */
  sandboxId: string;
  /** Fast Sandbox namespace and name of the Sandbox object (labels only). */
  namespace: string;
  name: string;
  pool: string;
  image: string;
  /** Replaces the image's entrypoint when non-empty. */
  command: string[];
  /** Replaces the image's cmd when non-empty (or when command is set). */
  args: string[];
  env: EnvVar[];
  workingDir?: string;
  resources?: SandboxResources;
  runtimeType: RuntimeType;
  /** File that receives the sandbox's stdout and stderr. */
  logPath: string;
  /** Ports the sandbox exposes (recorded with the sandbox, for admission after an agent restart). */
  exposedPorts?: number[];
  /** @default { mode: "shared" } */
  network?: SandboxNetworkSpec;
  /**
   * Restore the sandbox from this checkpoint (its id, see runtime/checkpoint.ts) instead of starting
   * it from its image: image, command and environment are then the checkpoint's.
   * @default none: a new sandbox from the image
   */
  fromCheckpoint?: string;
}

/** `creating`: a create is in flight on the agent (reported by the agent, never by a runtime's list). */
export type RuntimeSandboxState = "creating" | "created" | "running" | "stopped" | "unknown";

export interface RuntimeSandbox {
  sandboxId: string;
  namespace: string;
  name: string;
  pool: string;
  image: string;
  state: RuntimeSandboxState;
  pid?: number;
  exitCode?: number;
  /** The kernel's OOM killer killed a process of the sandbox (its memory limit was reached). */
  oomKilled?: boolean;
  /** Ports the sandbox exposes, as recorded at its create. */
  exposedPorts?: number[];
  /** Isolated sandboxes: their address on the node's sandbox bridge. */
  address?: string;
  /** A checkpoint of it is in flight (reported running until it ends). */
  checkpointing?: boolean;
  /** Its disk limit (resources.ephemeralStorageBytes), as recorded at its create. */
  ephemeralStorageBytes?: number;
  /** Why the agent stopped it (`evict`), as recorded then; its state is stopped. */
  evicted?: string;
  labels: Record<string, string>;
}

/** A sandbox's resource use at one moment (SandboxStats on the wire). */
export type RuntimeSandboxStats = SandboxStats;

export interface ExecRequest {
  command: string[];
  env?: EnvVar[];
  workingDir?: string;
  /** USER[:GROUP], names of the sandbox's accounts or numbers (exec-user.ts). @default the image's USER */
  user?: string;
}

export interface ExecIo {
  /** A returned promise pauses reading that stream until it settles (backpressure). */
  onStdout: (chunk: Uint8Array) => void | Promise<void>;
  onStderr: (chunk: Uint8Array) => void | Promise<void>;
  /** Aborting kills the exec'd process (SIGKILL). */
  signal?: AbortSignal;
}

export interface DeleteOptions {
  /** Time between SIGTERM and SIGKILL. */
  gracePeriodMs: number;
}

/** Progress of an image pull, as it goes. */
export interface ImagePullProgress {
  /** The normalized reference being pulled, e.g. `docker.io/library/busybox:latest`. */
  image: string;
  phase: "resolving" | "downloading" | "unpacking" | "done";
  layersTotal: number;
  /** Layers downloaded (phase downloading) or unpacked (phase unpacking, done). */
  layersDone: number;
  /** Compressed size of all layers; layers already present count as done. */
  bytesTotal: number;
  bytesDone: number;
  /** Digest of the image's index or manifest, once resolved. */
  digest: string;
}

export interface PulledImage {
  /** The normalized reference the image is stored under. */
  image: string;
  /** Digest of its index or manifest. */
  digest: string;
}

export interface PullImageOptions {
  onProgress?: (progress: ImagePullProgress) => void;
}

/** The agent's stock of prepared instances (prepared-instances.ts), as its status reports it. */
export interface PreparedInstancesState {
  /** How many the agent keeps ready. */
  target: number;
  /** How many are ready to be claimed now. */
  ready: number;
  /** Why the stock is short: the last prepare's failure while none has succeeded since (it keeps retrying). */
  error?: string;
}

export interface Runtime {
  /** Readies shared resources before the first create (e.g. the shim anchor); idempotent. */
  prepare(): Promise<void>;
  /**
   * Removes what `prepare()` set up (shim anchors, and so their shims), for an agent that stops with
   * no sandboxes left (scale-down, pool deletion, `fsb down`): nothing of it stays running. The next
   * `prepare()` sets it up again. Idempotent.
   */
  unprepare(): Promise<void>;
  /** Image references present in the runtime's image store (and unpacked). */
  listImages(): Promise<string[]>;
  /**
   * Pulls the image from its registry into the runtime's image store and unpacks it. Concurrent
   * pulls of one image share a single download; every caller gets its result or its error.
   */
  pullImage(reference: string, options?: PullImageOptions): Promise<PulledImage>;
  /** Creates and starts the sandbox (pulling its image when missing); on any failure undoes every step it took. Throws NotFoundError for an unknown image. */
  create(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox>;
  /** Stops (SIGTERM, grace, SIGKILL) and removes task, container and snapshot. Idempotent: a missing sandbox is not an error. */
  delete(sandboxId: string, options: DeleteOptions): Promise<void>;
  /** One sandbox this agent owns, or undefined. */
  get(sandboxId: string): Promise<RuntimeSandbox | undefined>;
  /** The sandboxes this agent owns, rebuilt from the runtime's labels. */
  list(): Promise<RuntimeSandbox[]>;
  /**
   * The sandbox's resource use now: its cgroup read twice, `windowMs` apart, for its CPU use (0:
   * read once, `cpuUsedMillis` 0); its disk use, its snapshot's usage, its run directory's (walks
   * of what it wrote) and the files its processes removed but hold open or mapped (left out, as 0, with
   * `disk: false`). Throws NotFoundError for a sandbox this
   * agent does not hold.
   */
  stats(sandboxId: string, windowMs: number, options?: { disk?: boolean }): Promise<RuntimeSandboxStats>;
  /**
   * Stops the sandbox for good, `reason` recorded with it (reported as `evicted` from then on): every
   * process of it is killed at once, its container, snapshot and run directory stay until it is
   * deleted. Throws NotFoundError for a sandbox this agent does not hold.
   */
  evict(sandboxId: string, reason: string): Promise<void>;
  /** Runs a process inside the sandbox, streaming its output; resolves with its exit code. */
  exec(sandboxId: string, request: ExecRequest, io: ExecIo): Promise<number>;
  /** Resolves with the exit code when the sandbox's command exits; rejects with the signal's reason when it aborts. */
  wait(sandboxId: string, signal?: AbortSignal): Promise<number>;
  close(): void;
  /** Checkpoints of gVisor sandboxes and restores from them; undefined: the runtime has none. */
  readonly checkpoints?: RuntimeCheckpoints;
  /** The stock of prepared instances; undefined (or no method): the runtime keeps none. */
  preparedInstances?(): PreparedInstancesState | undefined;
}
