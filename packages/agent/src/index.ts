export * from "./runtime/runtime.js";
export { agentConfigFromEnv, type AgentConfig } from "./agent-config.js";
export { detectCgroupLayout, joinCgroup, type CgroupLayout, type CgroupVersion } from "./cgroup.js";
export { readLog, type FollowOptions } from "./log-follower.js";
export { createAgentService, type AgentIdentity, type AgentServiceOptions } from "./server/agent-service.js";
export { startAgentServer, type AgentServer, type AgentServerOptions } from "./server/agent-server.js";
