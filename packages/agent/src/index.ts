export * from "./runtime/runtime.js";
export { agentConfigFromEnv, DEFAULT_HELPER_PATH, type AgentConfig } from "./agent-config.js";
export { detectCgroupLayout, joinCgroup, killCgroupProcesses, type CgroupLayout, type CgroupVersion } from "./cgroup.js";
export { readLog, type FollowOptions } from "./log-follower.js";
export { createAgentService, type AgentIdentity, type AgentServiceOptions } from "./server/agent-service.js";
export { startAgentServer, type AgentServer, type AgentServerOptions } from "./server/agent-server.js";
export { AgentMetrics, type AgentOperation, type RelayResult } from "./server/agent-metrics.js";
export { createSandboxRelay, parseRelayTarget, type SandboxRelay, type SandboxRelayOptions } from "./server/sandbox-relay.js";
export {
  createContainerdRuntime,
  ContainerdRuntime,
  LABEL_HELPER,
  LABEL_ROLE,
  ROLE_PULL_LEASE,
  ROLE_SHIM_ANCHOR,
  LABEL_IMAGE,
  LABEL_RUNTIME_TYPE,
  LABEL_NETWORK_ADDRESS,
  LABEL_NETWORK_NAMESPACE,
  type ContainerdRuntimeOptions,
  type CreateTimings,
} from "./containerd/containerd-runtime.js";
export {
  ROLE_PREPARED_INSTANCE,
  CLAIM_MAX_BYTES,
  templateKey,
  type PreparedInstancesSettings,
  type PreparedTemplate,
} from "./containerd/prepared-instances.js";
export { LABEL_RESTORED_FROM } from "./containerd/checkpoints.js";
export { removeTree } from "./disk-usage.js";
export { runtimeSpecOf } from "./server/create-request.js";
export { ContainerdClient, type ContainerdClientOptions } from "./containerd/containerd-client.js";
export { CONTAINERD_ID_MAX_LENGTH, containerIdOf, isContainerdId, sandboxIdOfContainer } from "./containerd/container-id.js";
export { isNotFound } from "./containerd/grpc-errors.js";
export { execFifoName, isExecFifoName, sandboxIdOfLogFile, sandboxLogDir, sandboxLogFiles, sandboxLogPath, sandboxRunDir } from "./state-layout.js";
export {
  DEFAULT_NETWORK_NAME,
  DEFAULT_NETWORK_STATE_ROOT,
  DEFAULT_NETWORK_SUBNET,
  networkSettingsFromEnv,
  type SandboxNetworkSettings,
} from "./network/network-settings.js";
export { SandboxNetworks, type ClaimedNetwork, type NetworkClaim, type SandboxNetworksOptions } from "./network/sandbox-networks.js";
export { AttachmentStore, type AttachmentOwner, type AttachmentRecord, type AttachmentState, type StoredAttachment } from "./network/attachment-store.js";
export { teardownAttachment, toolsForRecord, type AttachmentTools } from "./network/network-attachment.js";
export { checkSandboxNetwork } from "./network/egress-policy.js";
export { CniError } from "./network/cni-error.js";
