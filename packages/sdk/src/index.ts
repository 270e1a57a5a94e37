export {
  FastSandboxClient,
  Sandboxes,
  Pools,
  E2b,
  type E2bApiKey,
  type FastSandboxClientOptions,
  type ClientCallOptions,
  type CreateSandboxOptions,
  type CreatedSandbox,
  type ListSandboxesOptions,
  type ExecOptions,
  type ExecResult,
  type AgentSummary,
  type PullProgress,
  type PullImageOptions,
} from "./fast-sandbox-client.js";
export {
  FastSandbox,
  type SandboxConnectionOptions,
  type SandboxCreateOptions,
  type SandboxConnectOptions,
  type SandboxListOptions,
  type LogsOptions,
} from "./sandbox.js";
export { requestSandboxName } from "./create-request.js";
export { Checkpoints, type CheckpointInfo, type RestoreOptions, type ForkOptions, type ForkResult } from "./checkpoints.js";
export { Connection, type ConnectionOptions } from "./connection.js";
export { TokenFile, TOKEN_FILE_REFRESH_MS } from "./token-file.js";
export { sandboxProxyChannel, throughSandboxProxy, type DaemonChannel, type DaemonChannelFactory, type DaemonTarget } from "./daemon-channel.js";
export { Commands, DEFAULT_COMMAND_TIMEOUT_MS, type Command, type CommandOptions, type ProcessInfo } from "./commands.js";
export { CommandHandle } from "./command-handle.js";
export {
  Filesystem,
  type EntryInfo,
  type FileKind,
  type WriteInfo,
  type WriteData,
  type ReadOptions,
  type WriteOptions,
  type WatchOptions,
  type FilesystemOptions,
} from "./filesystem.js";
export { WatchHandle, type FilesystemEvent, type FilesystemEventType } from "./watch-handle.js";
export { Pty, type PtySize, type PtyCreateOptions, type PtyConnectOptions } from "./pty.js";
export type { RequestOptions } from "./request-options.js";
export type { UserOptions } from "./sandbox-daemon.js";
export { CommandExitError, type CommandResult } from "./errors.js";
export {
  TimeoutError,
  FsbError,
  ValidationError,
  NotFoundError,
  PermissionDeniedError,
  AlreadyExistsError,
  ConflictError,
  NoCapacityError,
  UnauthenticatedError,
  UnavailableError,
  FailedPreconditionError,
  type ErrorCode,
  type EgressPolicy,
  type EgressRule,
  type NetworkMode,
  type PoolNetwork,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type SandboxStats,
  type SandboxStatus,
} from "@fast-sandbox/api/core";
