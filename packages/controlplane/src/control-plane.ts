/**
 * The embedded control plane: SQLite store, registry, fast-path API, reconcilers and a pool of local
 * agent processes, in one process. Start-up is crash recovery: writes wait until every agent has
 * reported what it runs and the registry holds the true allocations.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { destination, pino, type Logger } from "pino";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { AgentRegistry } from "./registry/agent-registry.js";
import type { AgentClient } from "./agent-client/agent-client.js";
import { openSqliteResourceStore } from "./store/sqlite-resource-store.js";
import type { ResourceStore } from "./store/resource-store.js";
import { DEFAULT_NAMESPACE, SandboxManager } from "./fastpath/sandbox-manager.js";
import { startApiServer, type ApiServer } from "./fastpath/api-server.js";
import { ControlPlaneMetrics } from "./fastpath/control-plane-metrics.js";
import { applySandboxPool } from "./fastpath/pool-service.js";
import { SandboxReconciler } from "./reconcile/sandbox-reconciler.js";
import { HotImagesReconciler } from "./reconcile/hot-images-reconciler.js";
import { recordSandboxFacts } from "./reconcile/sandbox-facts.js";
import { AgentAdoption } from "./reconcile/agent-adoption.js";
import { LocalPoolReconciler } from "./embedded/local-pool-reconciler.js";
import { LocalJanitorProcess, type LocalJanitorOptions } from "./embedded/local-janitor-process.js";

export interface EmbeddedControlPlaneOptions {
  /** Holds state.db and the agents' state. */
  dataDir: string;
  /** Bearer token of the fast-path API. */
  token: string;
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
  /** @default "/run/containerd/containerd.sock" */
  containerdSocket?: string;
  /** @default "fast-sandbox" */
  containerdNamespace?: string;
  /** cgroup under which each agent gets its own; empty string disables. @default "fast-sandbox" */
  cgroupRoot?: string;
  /** Created when no pool of that name exists. */
  defaultPool?: SandboxPool;
  /** @default 2000 */
  heartbeatIntervalMs?: number;
  /** First restart delay of a lost agent (doubles per restart). @default 200 */
  agentRestartDelayMs?: number;
  /** How long start-up waits for agents before serving writes anyway. @default 30000 */
  recoveryTimeoutMs?: number;
  /** Runs the janitor as a supervised child process (`fsb up` does); its log is `<dataDir>/janitor.log`. @default no janitor */
  janitor?: LocalJanitorOptions;
  logger?: Logger;
}

export interface EmbeddedControlPlane {
  url: string;
  store: ResourceStore;
  registry: AgentRegistry;
  manager: SandboxManager;
  pools: LocalPoolReconciler;
  sandboxes: SandboxReconciler;
  /** The supervised janitor process, when `janitor` was asked for. */
  janitor: LocalJanitorProcess | undefined;
  /** Stops API, reconcilers and agents; sandboxes keep running and are adopted at the next start. */
  close(): Promise<void>;
}

export function defaultPool(image: string): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "default", namespace: DEFAULT_NAMESPACE },
    spec: {
      capacity: { poolMin: 1, poolMax: 4, bufferMin: 2, bufferMax: 8 },
      maxSandboxesPerPod: 16,
      runtimeType: "container",
      image,
    },
  };
}

export async function startEmbeddedControlPlane(options: EmbeddedControlPlaneOptions): Promise<EmbeddedControlPlane> {
  const logger = options.logger ?? pino({ name: "fsb-controlplane" }, destination(2));
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const store = openSqliteResourceStore({ path: join(options.dataDir, "state.db") });
  const registry = new AgentRegistry();
  const clients = { get: (name: string): AgentClient | undefined => pools.getAgentProcess(name)?.client };
  const manager = new SandboxManager({ store, registry, agents: clients, logger });
  const metrics = new ControlPlaneMetrics();
  let releaseWrites: () => void = () => undefined;
  manager.holdWritesUntil(new Promise<void>((resolve) => (releaseWrites = resolve)));

  const adoption = new AgentAdoption({ store, registry, manager, agents: clients, logger });
  const pools: LocalPoolReconciler = new LocalPoolReconciler({
    store,
    registry,
    manager,
    logger,
    dataDir: options.dataDir,
    agentToken: randomBytes(24).toString("base64url"),
    containerdSocket: options.containerdSocket ?? "/run/containerd/containerd.sock",
    containerdNamespace: options.containerdNamespace ?? "fast-sandbox",
    cgroupRoot: options.cgroupRoot ?? "fast-sandbox",
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 2000,
    metrics,
    ...(options.agentRestartDelayMs !== undefined ? { agentRestartDelayMs: options.agentRestartDelayMs } : {}),
    onAgentReady: (agentName, status) => adoption.adopt(agentName, status),
    onAgentStatus: (agentName, status) => recordSandboxFacts(store, agentName, status),
  });
  manager.setPoolCapacity(pools);
  const sandboxes = new SandboxReconciler({ store, manager, registry, agents: pools, logger });
  const hotImages = new HotImagesReconciler({ store, registry, agents: clients, logger });
  metrics.observe({ sandboxes: () => sandboxes.cachedSandboxes(), registry });

  let api: ApiServer | undefined;
  try {
    if (options.defaultPool) {
      const { namespace = DEFAULT_NAMESPACE, name } = options.defaultPool.metadata;
      if (!(await store.get("SandboxPool", { namespace, name }))) await applySandboxPool(store, options.defaultPool);
    }
    await pools.start();
    api = await startApiServer({
      manager,
      store,
      registry,
      agents: clients,
      token: options.token,
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 0,
      metrics,
    });
    const allReady = await pools.waitForAgents(options.recoveryTimeoutMs ?? 30_000);
    if (!allReady) logger.warn("not every pool reached poolMin ready agents in time; serving anyway");
    releaseWrites();
    await sandboxes.start();
    await hotImages.start();
  } catch (error) {
    hotImages.stop();
    await api?.close();
    await pools.stop();
    await store.close();
    throw error;
  }
  const server = api;
  const janitor = options.janitor
    ? new LocalJanitorProcess({
        ...options.janitor,
        url: server.url,
        token: options.token,
        containerdSocket: options.containerdSocket ?? "/run/containerd/containerd.sock",
        containerdNamespace: options.containerdNamespace ?? "fast-sandbox",
        agentsDir: join(options.dataDir, "agents"),
        cgroupRoot: options.cgroupRoot ?? "fast-sandbox",
        logPath: join(options.dataDir, "janitor.log"),
        logger,
      })
    : undefined;
  janitor?.start();
  return {
    url: server.url,
    store,
    registry,
    manager,
    pools,
    sandboxes,
    janitor,
    async close() {
      await janitor?.stop();
      await server.close();
      await manager.drain();
      await sandboxes.stop();
      hotImages.stop();
      await pools.stop();
      await store.close();
    },
  };
}
