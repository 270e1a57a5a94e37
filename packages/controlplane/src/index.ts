// The Kubernetes store and composition roots are `@fast-sandbox/controlplane/kubernetes`: this entry
// (the embedded mode) must not load @kubernetes/client-node (index.spec.ts).
export {
  startEmbeddedControlPlane,
  DEFAULT_BASE_IMAGE,
  defaultPool,
  type EmbeddedControlPlane,
  type EmbeddedControlPlaneOptions,
  type EmbeddedProxyOptions,
  type EmbeddedE2bOptions,
  type EmbeddedAgents,
} from "./control-plane.js";
export { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_FLAGS, controlPlaneEnv, hasControlPlaneNodeFlags } from "./control-plane-process.js";
export type { AgentProcess } from "./embedded/embedded-agent-fleet.js";
export type { AgentProcessView, LocalAgentEvents, LocalAgentSettings } from "./embedded/local-agent-process.js";
export { LocalJanitorProcess, type LocalJanitorOptions } from "./embedded/local-janitor-process.js";
export { SandboxManager, CLEANUP_FINALIZER, DEFAULT_NAMESPACE, type CreateSandboxInput } from "./fastpath/sandbox-manager.js";
export { CheckpointManager, RESTORED_FROM_ANNOTATION, type Checkpoint, type CheckpointManagerOptions } from "./fastpath/checkpoint-manager.js";
export { startApiServer, type ApiServer, type ApiServerOptions } from "./fastpath/api-server.js";
export { startSandboxProxy, type SandboxProxy, type SandboxProxyOptions } from "./proxy/sandbox-proxy.js";
export { SandboxDirectory, type SandboxDirectoryOptions } from "./proxy/sandbox-directory.js";
export type { ProxyTargetSources } from "./proxy/proxy-target.js";
export { SignedFileLookup, type ScanBudget, type SignedFileLookupOptions, type SignedFileMatch, type UrlSigners } from "./proxy/signed-file-lookup.js";
export { ProxyMetrics } from "./proxy/proxy-metrics.js";
export { endpointUrl, parseProxyBaseUrl, type ProxyAddress } from "./proxy/sandbox-endpoints.js";
export { ControlPlaneMetrics, type ControlPlaneMetricsSources } from "./fastpath/control-plane-metrics.js";
export { AgentRegistry, type AgentInfo, type Placement, type PlacementRequest } from "./registry/agent-registry.js";
export type { ResourceStore, ResourceKind, WatchEvent, Watch, WriteOptions } from "./store/resource-store.js";
export { openSqliteResourceStore } from "./store/sqlite-resource-store.js";
export { MemoryResourceStore, type MemoryResourceStoreOptions } from "./store/memory-resource-store.js";
export { updateWithRetry, type RetryOnConflictOptions } from "./store/retry-on-conflict.js";
export type {
  AgentClient,
  AgentLogsOptions,
  AgentSandbox,
  AgentSandboxSpec,
  AgentSandboxState,
  AgentStatus,
  ExecEvent,
  ExecRequest,
  PullPhase,
  PullProgress,
} from "./agent-client/agent-client.js";
export { createAgentClient } from "./agent-client/rpc-agent-client.js";
export { registryConfigPath } from "./embedded/local-agent-process.js";
