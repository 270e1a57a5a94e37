/**
 * The agent's port to a container runtime. The containerd adapter implements it for real;
 * a fake implements it for unit tests of the agent and control plane.
 */

/** Labels every managed container carries; the janitor and crash recovery rely on them. */
export const LABEL_MANAGED = "fast-sandbox.io/managed";
export const LABEL_AGENT = "fast-sandbox.io/agent";
export const LABEL_SANDBOX_ID = "fast-sandbox.io/sandbox-id";
export const LABEL_NAMESPACE = "fast-sandbox.io/namespace";
export const LABEL_NAME = "fast-sandbox.io/name";
export const LABEL_POOL = "fast-sandbox.io/pool";

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
}

/** Everything the runtime needs to create one sandbox. */
export interface RuntimeSandboxSpec {
  /** Unique id; used as containerd container id, task id and snapshot key. */
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
}

export type RuntimeSandboxState = "created" | "running" | "stopped" | "unknown";

export interface RuntimeSandbox {
  sandboxId: string;
  namespace: string;
  name: string;
  pool: string;
  image: string;
  state: RuntimeSandboxState;
  pid?: number;
  exitCode?: number;
  labels: Record<string, string>;
}

export interface ExecRequest {
  command: string[];
  env?: EnvVar[];
  workingDir?: string;
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

export interface Runtime {
  /** Readies shared resources before the first create (e.g. the shim anchor); idempotent. */
  prepare(): Promise<void>;
  /** Image references present in the runtime's image store (and unpacked). */
  listImages(): Promise<string[]>;
  /** Creates and starts the sandbox; on any failure undoes every step it took. Throws NotFoundError for a missing image. */
  create(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox>;
  /** Stops (SIGTERM, grace, SIGKILL) and removes task, container and snapshot. Idempotent: a missing sandbox is not an error. */
  delete(sandboxId: string, options: DeleteOptions): Promise<void>;
  /** One sandbox this agent owns, or undefined. */
  get(sandboxId: string): Promise<RuntimeSandbox | undefined>;
  /** The sandboxes this agent owns, rebuilt from the runtime's labels. */
  list(): Promise<RuntimeSandbox[]>;
  /** Runs a process inside the sandbox, streaming its output; resolves with its exit code. */
  exec(sandboxId: string, request: ExecRequest, io: ExecIo): Promise<number>;
  /** Resolves with the exit code when the sandbox's command exits; rejects with the signal's reason when it aborts. */
  wait(sandboxId: string, signal?: AbortSignal): Promise<number>;
  close(): void;
}
