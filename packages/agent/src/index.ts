export * from "./runtime/runtime.js";
export { agentConfigFromEnv, DEFAULT_HELPER_PATH, type AgentConfig } from "./agent-config.js";
export { detectCgroupLayout, joinCgroup, type CgroupLayout, type CgroupVersion } from "./cgroup.js";
export { readLog, type FollowOptions } from "./log-follower.js";
export { createAgentService, type AgentIdentity, type AgentServiceOptions } from "./server/agent-service.js";
export { startAgentServer, type AgentServer, type AgentServerOptions } from "./server/agent-server.js";
export { AgentMetrics, type AgentOperation } from "./server/agent-metrics.js";
export {
  createContainerdRuntime,
  ContainerdRuntime,
  LABEL_HELPER,
  LABEL_ROLE,
  ROLE_SHIM_ANCHOR,
  LABEL_IMAGE,
  LABEL_RUNTIME_TYPE,
  type ContainerdRuntimeOptions,
  type CreateTimings,
} from "./containerd/containerd-runtime.js";
export { ContainerdClient, type ContainerdClientOptions } from "./containerd/containerd-client.js";
export { CONTAINERD_ID_MAX_LENGTH, containerIdOf, isContainerdId, sandboxIdOfContainer } from "./containerd/container-id.js";
export { isNotFound } from "./containerd/grpc-errors.js";
export { execFifoName, isExecFifoName, sandboxLogDir, sandboxLogPath, sandboxRunDir } from "./state-layout.js";
