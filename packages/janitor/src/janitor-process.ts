/**
 * The janitor's composition root: real containerd, the host's cgroups and state directories, the
 * inventory (the control plane's through the SDK, or the Kubernetes API's), and the optional
 * metrics endpoint. `fsb janitor`,
 * the process `fsb up` supervises (main.ts) and `fsb down --delete-sandboxes` all start here.
 */
import type { Logger } from "pino";
import { ValidationError } from "@fast-sandbox/api/core";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { controlPlaneInventory } from "./control-plane-inventory.js";
import { createContainerdNodeContainers } from "./containerd-node-containers.js";
import { LocalHostLeftovers } from "./host-leftovers.js";
import { LocalNodeNetworks } from "./local-node-networks.js";
import { staticInventory, type Inventory } from "./inventory.js";
import { Janitor, type PassResult } from "./janitor.js";
import { startMetricsServer } from "./metrics.js";
import { LocalPoolCheckpointDirs } from "./pool-checkpoint-dirs.js";

export interface NodeScope {
  /** containerd namespaces to look after. */
  containerdNamespaces: string[];
  /** @default "/run/containerd/containerd.sock" */
  containerdSocket?: string;
  /** Directory of the agents' state directories (`<dataDir>/agents` in the embedded mode). */
  agentsDir?: string;
  /** cgroup the embedded agents live under; "" or absent: agents' own cgroups are not touched (their sandboxes' leftover cgroups under `/<containerdNamespace>/<agent>` are). */
  cgroupRoot?: string;
  /** State directories of the node's sandbox networks (the agents' FSB_NETWORK_STATE_DIR). @default every directory under /run/fast-sandbox/network */
  networkStateDirs?: string[];
  /**
   * The node's checkpoint directory (the agents' FSB_CHECKPOINT_DIR, `<dir>/<namespace>/<pool>`):
   * gone pools' directories are removed there (both inventories list the pools); absent: none is
   * looked at.
   */
  checkpointDir?: string;
}

/** The Kubernetes mode's inventory source: agent Pods and Sandbox objects from the API server. */
export interface KubernetesInventorySource {
  /** This node's name (`spec.nodeName` of the agent Pods that count). */
  nodeName: string;
  /** A kubeconfig file; absent: `KUBECONFIG`, the in-cluster service account, then `~/.kube/config`. */
  kubeconfigPath?: string;
}

export interface JanitorProcessOptions extends NodeScope {
  /** The control plane's fast-path API, for the inventory (required unless `kubernetes` is set). */
  url?: string;
  token?: string;
  /** Read the inventory from the Kubernetes API instead of the control plane. */
  kubernetes?: KubernetesInventorySource;
  /** @default 10_000 */
  intervalMs?: number;
  /** @default 120_000 */
  protectionMs?: number;
  /** How long a pool must be gone, and its checkpoint directory unchanged, before the directory goes. @default 3_600_000 */
  checkpointGraceMs?: number;
  /** Serve `/metrics` there (loopback only; port 0 picks one). */
  metricsListen?: { host: string; port: number };
  logger: Logger;
}

export interface RunningJanitor {
  janitor: Janitor;
  /** Where `/metrics` is served, when it is. */
  metricsUrl?: string;
  /** Stops the loop after the pass in progress and closes every connection. */
  stop(): Promise<void>;
}

function compose(scope: NodeScope, inventory: Inventory, options: { intervalMs?: number; protectionMs?: number; checkpointGraceMs?: number; logger: Logger }) {
  const nodes = scope.containerdNamespaces.map((containerdNamespace) =>
    createContainerdNodeContainers({ containerdNamespace, ...(scope.containerdSocket ? { socketPath: scope.containerdSocket } : {}) }),
  );
  const host = new LocalHostLeftovers({
    ...(scope.agentsDir ? { agentsDir: scope.agentsDir } : {}),
    cgroupRoot: scope.cgroupRoot ?? "",
    containerdNamespaces: scope.containerdNamespaces,
  });
  const networks = new LocalNodeNetworks(scope.networkStateDirs ? { stateDirs: scope.networkStateDirs } : {});
  const janitor = new Janitor({
    inventory,
    nodes,
    host,
    networks,
    ...(scope.checkpointDir ? { checkpoints: new LocalPoolCheckpointDirs(scope.checkpointDir) } : {}),
    logger: options.logger,
    ...(options.intervalMs !== undefined ? { intervalMs: options.intervalMs } : {}),
    ...(options.protectionMs !== undefined ? { protectionMs: options.protectionMs } : {}),
    ...(options.checkpointGraceMs !== undefined ? { checkpointGraceMs: options.checkpointGraceMs } : {}),
  });
  return { janitor, host, close: () => nodes.forEach((node) => node.close()) };
}

/**
 * The inventory source. The Kubernetes client is loaded only for the Kubernetes inventory: the
 * embedded mode's janitor never needs it, and loading it costs that process tens of MiB.
 */
async function openInventory(options: Pick<JanitorProcessOptions, "url" | "token" | "kubernetes">): Promise<{ inventory: Inventory; close(): void }> {
  if (options.kubernetes) {
    const [{ KubeConfig }, { kubernetesInventory }] = await Promise.all([import("@kubernetes/client-node"), import("./kubernetes-inventory.js")]);
    const kubeConfig = new KubeConfig();
    if (options.kubernetes.kubeconfigPath) kubeConfig.loadFromFile(options.kubernetes.kubeconfigPath);
    else kubeConfig.loadFromDefault();
    return { inventory: kubernetesInventory({ kubeConfig, nodeName: options.kubernetes.nodeName }), close: () => undefined };
  }
  if (!options.url || !options.token) throw new ValidationError("url", "the janitor needs the control plane's URL and token (or a Kubernetes inventory)");
  const client = new FastSandboxClient({ url: options.url, token: options.token, requestTimeoutMs: 15_000 });
  return { inventory: controlPlaneInventory(client), close: () => client.close() };
}

/** Starts the periodic janitor (and its metrics endpoint when asked). */
export async function startJanitorProcess(options: JanitorProcessOptions): Promise<RunningJanitor> {
  const inventorySource = await openInventory(options);
  const { janitor, close } = compose(options, inventorySource.inventory, options);
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  try {
    if (options.metricsListen) metricsServer = await startMetricsServer(janitor.metrics, options.metricsListen);
  } catch (error) {
    inventorySource.close();
    close();
    throw error;
  }
  janitor.start();
  options.logger.info(
    {
      containerdNamespaces: options.containerdNamespaces,
      intervalMs: options.intervalMs,
      protectionMs: options.protectionMs,
      checkpointDir: options.checkpointDir,
      checkpointGraceMs: options.checkpointGraceMs,
      metrics: metricsServer?.url,
    },
    "janitor started",
  );
  return {
    janitor,
    ...(metricsServer ? { metricsUrl: metricsServer.url } : {}),
    async stop() {
      await janitor.stop();
      await metricsServer?.close();
      inventorySource.close();
      close();
    },
  };
}

/** One pass against the control plane, then everything is closed (`fsb janitor --once`). */
export async function runJanitorOnce(options: Omit<JanitorProcessOptions, "intervalMs" | "metricsListen">): Promise<PassResult> {
  const inventorySource = await openInventory(options);
  const { janitor, close } = compose(options, inventorySource.inventory, options);
  try {
    return await janitor.runPass();
  } finally {
    inventorySource.close();
    close();
  }
}

/**
 * After the control plane and its agents have stopped for good (`fsb down --delete-sandboxes`):
 * no agent exists and no record counts, so every managed container of the namespaces goes at once —
 * the agents' shim anchors (and with them their shims), and anything a create left behind —, and
 * then the cgroup root itself where nothing is left under it.
 */
export async function sweepAfterShutdown(scope: NodeScope & { logger: Logger }): Promise<PassResult> {
  const { janitor, host, close } = compose(scope, staticInventory(), { protectionMs: 0, logger: scope.logger });
  try {
    const result = await janitor.runPass();
    // With its agents' cgroups gone, the cgroup root goes too, where nothing is left under it.
    if (result.outcome === "completed" && result.failures === 0) {
      const removed = host.removeCgroupRoot();
      if (removed.length > 0) scope.logger.debug({ removed: removed.length }, "removed the cgroup root");
    }
    return result;
  } finally {
    close();
  }
}
