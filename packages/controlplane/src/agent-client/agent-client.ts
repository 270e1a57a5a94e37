/**
 * The control plane's port to one agent, in the control plane's own terms. The Connect adapter
 * (`rpc-agent-client.ts`) is the only place that knows the wire messages; fakes implement this
 * interface for unit tests.
 */
import { FsbError, UnavailableError, type EgressPolicy, type EnvVar, type RuntimeType, type SandboxStats } from "@fast-sandbox/api";

/**
 * An agent call that went out and was cut off before its answer came (its connection dropped or was
 * reset mid-call): the agent may have done what it asked, or be doing it. Only the adapter that
 * made the call can tell this from an UnavailableError of a call that never reached the agent (no
 * connection, connection refused) or that the agent answered with: those leave nothing under way.
 */
export class NoAnswerError extends UnavailableError {}

/**
 * Whether an agent call was sent and got no answer — its deadline passed, or it was cut off
 * (NoAnswerError): what it asked for may still be done, or be under way. A call that never reached
 * the agent, or that the agent refused as unavailable, got its answer: nothing of it goes on.
 */
export function gotNoAnswer(error: unknown): boolean {
  return error instanceof NoAnswerError || FsbError.from(error).code === "deadline_exceeded";
}

/**
 * What a sandbox is doing on its agent. `creating`: a create of it is in flight there (it may have
 * no container yet); `unknown`: the runtime could not tell (or a newer agent said something else).
 */
export type AgentSandboxState = "creating" | "created" | "running" | "stopped" | "unknown";

/** One sandbox as its agent reports it. */
export interface AgentSandbox {
  /** The runtime's id of the sandbox: the record's `status.sandboxID`. */
  sandboxId: string;
  /** Namespace and name of the Sandbox object it belongs to (empty while only its create is known). */
  namespace: string;
  name: string;
  image: string;
  state: AgentSandboxState;
  /** Host process id of the sandbox's command; undefined when none runs. */
  pid?: number;
  /** The exit code of the sandbox's command, once it has exited (the sandbox stays up for exec). */
  exitCode?: number;
  /** The kernel's OOM killer killed a process of the sandbox (its memory limit was reached). */
  oomKilled: boolean;
  /** Isolated network: the sandbox's own address on its node's sandbox bridge; undefined on a Shared network. */
  address?: string;
  /** A checkpoint (or pause) of it is in flight on its agent: `running` says nothing of what it is after. */
  checkpointing?: boolean;
  /** Why its agent stopped it (its disk use went past its limit); undefined: it did not. */
  evicted?: string;
}

/**
 * The instance can run nothing any more: its process 1 is gone (its task stopped or vanished: killed
 * outside Fast Sandbox, or the host restarted), while no checkpoint of it is in flight. A paused
 * sandbox has no task either, by design: only a record that should be running asks this.
 */
export function processOneGone(reported: Pick<AgentSandbox, "state" | "checkpointing">): boolean {
  return reported.state === "stopped" && reported.checkpointing !== true;
}

/** An agent's answer to a heartbeat: who it is and what it holds. */
export interface AgentStatus {
  name: string;
  namespace: string;
  pool: string;
  /** The node (host) the agent runs on. */
  nodeName: string;
  /** Images in the agent's image store, under their own and their normalized names (`busybox` and `docker.io/library/busybox:latest`). */
  images: string[];
  /** Every sandbox the agent holds, creates in flight included. */
  sandboxes: AgentSandbox[];
  /** The agent's own process id. */
  pid: number;
  /** Retired (`retire`): it refuses creates until it is stopped, or the retirement is cancelled or lapses. @default false */
  retired?: boolean;
  /** Its stock of prepared instances; undefined: it keeps none (or is of a version that does not say). */
  preparedInstances?: PreparedInstancesReport;
}

/** An agent's stock of prepared instances, as its status reports it. */
export interface PreparedInstancesReport {
  /** How many it keeps ready. */
  target: number;
  /** How many are ready to be claimed now. */
  ready: number;
  /** Why the stock is short: the last prepare's failure while none has succeeded since (it keeps retrying). */
  error?: string;
}

/**
 * How one sandbox is networked, as the control plane decided from its pool (and its own, narrower,
 * egress policy). Shared: the agent's own network. Isolated: a network of its own, where the agent
 * enforces the egress policy.
 */
export type AgentSandboxNetwork = { mode: "Shared" } | { mode: "Isolated"; egress: EgressPolicy; allowSandboxToSandbox: boolean };

/** Everything an agent needs to create one sandbox. */
export interface AgentSandboxSpec {
  /** The runtime id to create it under (containerd container id, task id and snapshot key). */
  sandboxId: string;
  /** Namespace and name of the Sandbox object (recorded with the container, for adoption and the janitor). */
  namespace: string;
  name: string;
  image: string;
  /** Replaces the image's entrypoint when non-empty. */
  command: string[];
  /** Replaces the image's cmd when non-empty (or when `command` is set). */
  args: string[];
  envs: EnvVar[];
  /** Absolute path; undefined: the image's. */
  workingDir?: string;
  /** The pool's runtime: `container` (runc) or `gvisor` (runsc). */
  runtimeType: RuntimeType;
  /** CPU limit in millicores (1000 = one core); undefined: no limit. */
  cpuMillis?: number;
  /** Memory limit in bytes; undefined: no limit. */
  memoryBytes?: number;
  /** Limit on the number of processes in the sandbox; undefined: no limit. */
  pids?: number;
  /** Most bytes it may write on its node's disk (root file system layer and run directory); undefined: no limit. */
  ephemeralStorageBytes?: number;
  /**
   * The agent's sandbox slots as the pool says (`maxSandboxesPerPod`): the agent refuses the create
   * (NoCapacityError) when it already holds that many, creates in flight included, which is how two
   * control-plane replicas cannot both take its last slot. Undefined: no limit.
   */
  slots?: number;
  /**
   * Ports the sandbox exposes. On a Shared network each is exclusive on its agent, which refuses a
   * create that would share one; an Isolated sandbox has ports of its own.
   */
  exposedPorts: number[];
  network: AgentSandboxNetwork;
  /**
   * Restore it from this checkpoint (its id on the agent's node, agent-checkpoints.ts) instead of
   * starting it from the image. @default none
   */
  fromCheckpoint?: string;
}

/** A process to run inside a sandbox. */
export interface ExecRequest {
  sandboxId: string;
  /** The program and its arguments; must not be empty. */
  command: string[];
  /** Added to the sandbox's environment. @default none */
  envs?: EnvVar[];
  /** Absolute path. @default the sandbox's working directory */
  workingDir?: string;
  /** USER[:GROUP], names or numbers. @default the image's USER */
  user?: string;
}

/** What of a sandbox's output Logs returns. */
export interface AgentLogsOptions {
  /** Go on until its command exits. */
  follow: boolean;
  /** Only the last that many lines of what its log keeps (a whole number ≥ 0), then (`follow`) what comes. @default all of it */
  tailLines?: number;
}

/**
 * One event of an exec, in order: chunks of output as the process writes them, then its exit code
 * (always last; a stream that ends without one failed).
 */
export type ExecEvent = { type: "stdout"; data: Uint8Array } | { type: "stderr"; data: Uint8Array } | { type: "exit"; exitCode: number };

/** Where an image pull is, in order. */
export type PullPhase = "resolving" | "downloading" | "unpacking" | "done";

/** Progress of an image pull on one agent, as it goes. */
export interface PullProgress {
  /** The normalized reference being pulled, e.g. `docker.io/library/busybox:latest`. */
  image: string;
  phase: PullPhase;
  layersTotal: number;
  /** Layers downloaded (phase downloading) or unpacked (phases unpacking and done). */
  layersDone: number;
  /** Compressed size of all layers; layers already present count as done. */
  bytesTotal: number;
  bytesDone: number;
  /** Digest of the image's index or manifest, once resolved (empty before). */
  digest: string;
}

/** The control plane's port to one agent. Every method fails with an FsbError. */
export interface AgentClient {
  /** The agent's heartbeat. @param timeoutMs how long to wait for the answer (default 5000) */
  status(timeoutMs?: number): Promise<AgentStatus>;
  /** Creates and starts the sandbox (pulling its image when missing); the agent decides admission (slots, ports). */
  createSandbox(spec: AgentSandboxSpec): Promise<AgentSandbox>;
  /** Stops the sandbox (SIGTERM, `gracePeriodMs`, SIGKILL) and removes it; a sandbox already gone is not an error. */
  deleteSandbox(sandboxId: string, gracePeriodMs: number): Promise<void>;
  listSandboxes(): Promise<AgentSandbox[]>;
  /**
   * Retires the agent if it holds no sandbox and no create in flight, atomically with its admission:
   * it refuses every create from then on. `retired` false: it holds `sandboxes` and serves on. With
   * `cancel`, a retired agent admits creates again.
   */
  retire(cancel?: boolean): Promise<{ retired: boolean; sandboxes: number }>;
  /** A sandbox's resource use now (its CPU watched for 100 ms); NotFoundError when the agent does not hold it. */
  stats(sandboxId: string): Promise<SandboxStats>;
  /**
   * The sandbox's resource use as its agent sampled it while it ran, taken within [sinceMs, untilMs]
   * (0: open), oldest first; each sample's CPU use is over the time since the one before.
   * NotFoundError when the agent does not hold it.
   */
  statsHistory(sandboxId: string, sinceMs: number, untilMs: number): Promise<SandboxStats[]>;
  /**
   * The sandbox's output; `follow` goes on until its command exits (or `signal` aborts). `tailLines`:
   * only the last that many lines of what its log keeps, then (`follow`) what comes.
   */
  logs(sandboxId: string, options: AgentLogsOptions, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** Runs a process in the sandbox, streaming its output and then its exit code; aborting `signal` kills it. */
  exec(request: ExecRequest, signal?: AbortSignal): AsyncIterable<ExecEvent>;
  /** Pulls an image on the agent (joining a pull of it in flight), streaming progress until it is unpacked. */
  pullImage(image: string, signal?: AbortSignal): AsyncIterable<PullProgress>;
  /** Closes the connection; calls in flight fail. */
  close(): void;
}
