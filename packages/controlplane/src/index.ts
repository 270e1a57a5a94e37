export { startEmbeddedControlPlane, defaultPool, type EmbeddedControlPlane, type EmbeddedControlPlaneOptions } from "./control-plane.js";
export { LocalJanitorProcess, type LocalJanitorOptions } from "./embedded/local-janitor-process.js";
export { SandboxManager, CLEANUP_FINALIZER, DEFAULT_NAMESPACE, type CreateSandboxInput } from "./fastpath/sandbox-manager.js";
export { startApiServer, type ApiServer, type ApiServerOptions } from "./fastpath/api-server.js";
export { AgentRegistry, type AgentInfo, type Placement, type PlacementRequest } from "./registry/agent-registry.js";
export type { ResourceStore, ResourceKind, WatchEvent } from "./store/resource-store.js";
export { openSqliteResourceStore } from "./store/sqlite-resource-store.js";
export { createAgentClient, type AgentClient } from "./agent-client/agent-client.js";
export { registryConfigPath } from "./embedded/local-agent-process.js";
