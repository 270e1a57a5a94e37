export {
  Janitor,
  DEFAULT_INTERVAL_MS,
  DEFAULT_PROTECTION_MS,
  DEFAULT_CHECKPOINT_GRACE_MS,
  type JanitorOptions,
  type PassResult,
  type RemovedObject,
} from "./janitor.js";
export { judge, judgeAttachment, AgentAbsence, ORPHAN_REASONS, type OrphanReason, type Verdict, type KeepReason, type JudgeContext } from "./orphans.js";
export { staticInventory, type Inventory, type InventorySnapshot } from "./inventory.js";
export { controlPlaneInventory } from "./control-plane-inventory.js";
// The Kubernetes inventory (kubernetes-inventory.ts) is not exported here: it loads the Kubernetes
// client, which `fsb up` and `fsb down` import this entry without needing; janitor-process.ts
// imports it when the janitor runs as the DaemonSet.
export { systemClock, type Clock } from "./clock.js";
export type { NodeContainers, ManagedContainer, ManagedLease, ManagedSnapshot } from "./node-containers.js";
export type { NodeNetworks, NetworkAttachmentFacts } from "./node-networks.js";
export { LocalNodeNetworks, type LocalNodeNetworksOptions } from "./local-node-networks.js";
export { createContainerdNodeContainers, type ContainerdNodeContainersOptions } from "./containerd-node-containers.js";
export { LocalHostLeftovers, type HostLeftovers, type LocalHostLeftoversOptions, type RemovedFile } from "./host-leftovers.js";
export {
  JanitorMetrics,
  startMetricsServer,
  parseLoopbackListen,
  type MetricsServer,
  type PassOutcome,
  type RemovalReason,
  type RemovedKind,
} from "./metrics.js";
export { judgePoolCheckpointDir, poolKey, type PoolCheckpointDirFacts, type PoolCheckpointReason, type PoolCheckpointVerdict } from "./pool-checkpoints.js";
export { LocalPoolCheckpointDirs, type PoolCheckpointDirs, type RemovedCheckpointDir } from "./pool-checkpoint-dirs.js";
export {
  startJanitorProcess,
  runJanitorOnce,
  sweepAfterShutdown,
  type JanitorProcessOptions,
  type KubernetesInventorySource,
  type NodeScope,
  type RunningJanitor,
} from "./janitor-process.js";
export { janitorConfigFromEnv, parseDuration } from "./janitor-config.js";
