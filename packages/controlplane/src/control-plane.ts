/**
 * The embedded composition root: the same core as the Kubernetes mode (registry, fast path, pool
 * controller, sandbox reconciler, agent connections, adoption, hot images, checkpoint collection,
 * the settling of pauses whose outcome is not known)
 * over the embedded adapters: the store is SQLite, the agents are supervised local processes
 * (EmbeddedAgentFleet), and this single instance always leads. Start-up is crash recovery: the
 * agents that sandbox records name are started again, and writes wait until every one of them (and
 * poolMin agents per pool) has reported what it runs and the registry holds the true allocations.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { API_VERSION, FsbError, type SandboxPool } from "@fast-sandbox/api";
import { sleep, systemClock, type Clock } from "./controller/clock.js";
import { AgentRegistry } from "./registry/agent-registry.js";
import { createAgentClient } from "./agent-client/rpc-agent-client.js";
import { openSqliteResourceStore } from "./store/sqlite-resource-store.js";
import type { ResourceStore } from "./store/resource-store.js";
import { DEFAULT_NAMESPACE, SandboxManager } from "./fastpath/sandbox-manager.js";
import { startApiServer, type ApiServer } from "./fastpath/api-server.js";
import { CheckpointManager } from "./fastpath/checkpoint-manager.js";
import { RESUME_AFTER_WAKE_TAKES_AT_MOST_MS, SandboxPauses } from "./fastpath/checkpoint-pauses.js";
import { SandboxDirectory } from "./proxy/sandbox-directory.js";
import { startSandboxProxy, type SandboxProxy } from "./proxy/sandbox-proxy.js";
import { ProxyMetrics } from "./proxy/proxy-metrics.js";
import { parseProxyBaseUrl } from "./proxy/sandbox-endpoints.js";
import { SignedFileLookup } from "./proxy/signed-file-lookup.js";
import { ControlPlaneMetrics } from "./fastpath/control-plane-metrics.js";
import { applySandboxPool } from "./fastpath/pool-service.js";
import { SandboxReconciler } from "./reconcile/sandbox-reconciler.js";
import { HotImagesReconciler } from "./reconcile/hot-images-reconciler.js";
import { CheckpointCollector, type CheckpointCollectionTiming } from "./reconcile/checkpoint-collector.js";
import { PauseSettler } from "./reconcile/pause-settler.js";
import { recordSandboxFacts } from "./reconcile/sandbox-facts.js";
import { sandboxInformer } from "./reconcile/sandbox-informer.js";
import { AgentAdoption } from "./reconcile/agent-adoption.js";
import { AgentOnboarding } from "./reconcile/agent-onboarding.js";
import { ImagePrewarmer } from "./reconcile/image-prewarmer.js";
import { AllocationSync } from "./reconcile/allocation-sync.js";
import { PoolController } from "./reconcile/pool-controller.js";
import { agentPoolOf, poolControllerHooks } from "./reconcile/pool-controller-hooks.js";
import { AgentConnections } from "./fleet/agent-connections.js";
import { EmbeddedAgentFleet, type AgentProcess, type ExistingAgent } from "./embedded/embedded-agent-fleet.js";
import type { LocalAgentEvents, LocalAgentSettings } from "./embedded/local-agent-process.js";
import type { AgentClient } from "./agent-client/agent-client.js";
import { LocalJanitorProcess, type LocalJanitorOptions } from "./embedded/local-janitor-process.js";
import { startE2bApiServer, type E2bApiServer } from "./e2b/e2b-api-server.js";
import { E2bSandboxes } from "./e2b/e2b-sandboxes.js";
import { createdThroughE2b, SigningSandboxes } from "./e2b/signing-sandboxes.js";
import { pollEnvdHealth } from "./e2b/envd-readiness.js";
import { TOKEN_SECRET_FILE, loadOrCreateTokenSecret } from "./e2b/envd-access-token.js";
import { hostResources } from "./e2b/host-resources.js";
import { API_KEY_DATABASE_FILE, openSqliteApiKeyStore } from "./e2b/sqlite-api-key-store.js";
import type { ApiKeyStore } from "./e2b/api-key-store.js";

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
  /**
   * Created when no pool of that name exists. Of one that exists only the image changes, to this
   * one's when it was given (`defaultPoolImageGiven`); the rest stays as it was applied.
   */
  defaultPool?: SandboxPool;
  /**
   * Whether `defaultPool`'s image was asked for (`fsb up --image`, FSB_BASE_IMAGE) rather than left at
   * the default. @default its image is not DEFAULT_BASE_IMAGE
   */
  defaultPoolImageGiven?: boolean;
  /** @default 2000 */
  heartbeatIntervalMs?: number;
  /** First restart delay of a lost agent (doubles per restart). @default 200 */
  agentRestartDelayMs?: number;
  /** The window over which pools with capacity.dynamicBuffer count their creates. @default 60000 */
  createRateWindowMs?: number;
  /** How long start-up waits for agents before serving writes anyway. @default 30000 */
  recoveryTimeoutMs?: number;
  /** Runs the janitor as a supervised child process (`fsb up` does); its log is `<dataDir>/janitor.log`. @default no janitor */
  janitor?: LocalJanitorOptions;
  logger?: Logger;
  /** Time and timers of every component. @default systemClock */
  clock?: Clock;
  /** The sandbox proxy (ingress to the sandboxes' exposed ports), on its own port. @default 127.0.0.1, any free port */
  proxy?: EmbeddedProxyOptions;
  /** The E2B-compatible control API, on its own port (its keys in `<dataDir>/e2b-api-keys.db`). @default 127.0.0.1, any free port */
  e2b?: EmbeddedE2bOptions;
  /**
   * How the pools' agents run and are reached, e.g. simulated in memory (bench/scale.ts).
   * @default agent processes on this host's containerd (LocalAgentProcess), reached over gRPC with the agent token
   */
  agents?: EmbeddedAgents;
  /** When the checkpoint collector runs and which of the control plane's own checkpoints it removes. @default every 10 minutes; forks' after 1 hour, unnamed pauses' after 10 minutes */
  checkpointCollection?: CheckpointCollectionTiming;
}

/** The agents of the embedded mode: a process per agent, and a client per endpoint its process reports. */
export interface EmbeddedAgents {
  /** Makes the process of an agent; it reports through `events` when its API listens (`endpoint`) and when it is lost. */
  createProcess(settings: LocalAgentSettings, events: LocalAgentEvents): AgentProcess;
  /** Makes the client of the agent API at `endpoint`. */
  connect(endpoint: string): AgentClient;
}

export interface EmbeddedE2bOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
}

export interface EmbeddedProxyOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
  /**
   * The proxy's address as clients reach it: `status.endpoints` are `<port>-<sandboxID>.` + its host.
   * @default http://localhost:<the proxy's port> (every `*.localhost` name is this host's loopback)
   */
  baseUrl?: string;
}

export interface EmbeddedControlPlane {
  url: string;
  /** Where the sandbox proxy listens, e.g. http://127.0.0.1:7072 (header-routed requests go there). */
  proxyUrl: string;
  /** Where the E2B-compatible API listens (E2B_API_URL), e.g. http://127.0.0.1:7073. */
  e2bUrl: string;
  store: ResourceStore;
  registry: AgentRegistry;
  manager: SandboxManager;
  /** The agent processes (tests and benchmarks reach a process through it: its pid, a crash). */
  fleet: EmbeddedAgentFleet;
  /** The heartbeats and clients of the agents. */
  connections: AgentConnections;
  pools: PoolController;
  sandboxes: SandboxReconciler;
  /** The supervised janitor process, when `janitor` was asked for. */
  janitor: LocalJanitorProcess | undefined;
  /** The image the default pool has as stored at the start (its own unless one was given); undefined without `defaultPool`. */
  defaultImage: string | undefined;
  /** Stops API, reconcilers and agents; sandboxes keep running and are adopted at the next start. */
  close(): Promise<void>;
}

/** The default pool's image when `fsb up` is given none (`--image`, FSB_BASE_IMAGE). */
export const DEFAULT_BASE_IMAGE = "fast-sandbox.io/base:latest";

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
  const logger = options.logger ?? stderrLogger({ name: "fsb-controlplane" });
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const clock = options.clock ?? systemClock;
  const store = openSqliteResourceStore({ path: join(options.dataDir, "state.db"), clock });
  const registry = new AgentRegistry();
  const metrics = new ControlPlaneMetrics();
  const containerdSocket = options.containerdSocket ?? "/run/containerd/containerd.sock";
  const containerdNamespace = options.containerdNamespace ?? "fast-sandbox";
  const cgroupRoot = options.cgroupRoot ?? "fast-sandbox";
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 2000;
  const agentToken = randomBytes(24).toString("base64url");
  // One cache of every sandbox for the proxy's directory, the controllers and the heartbeats' facts.
  const sandboxCache = sandboxInformer({ store, logger, clock });
  const directory = new SandboxDirectory({ store, logger, informer: sandboxCache });
  const configuredProxy = options.proxy?.baseUrl ? parseProxyBaseUrl(options.proxy.baseUrl, "proxy.baseUrl") : undefined;
  const proxyHost = options.proxy?.host ?? "127.0.0.1";
  // Derives the access tokens of sandboxes the E2B-compatible API creates (its presigned file URLs are signed with them).
  const e2bTokenSecret = loadOrCreateTokenSecret(join(options.dataDir, TOKEN_SECRET_FILE));
  let sandboxProxy: SandboxProxy;
  const signers = new SigningSandboxes(
    () => directory.list(),
    () => e2bTokenSecret,
  );
  const poolModes: { of?: Pick<SandboxManager, "networkModeOf"> } = {};
  try {
    sandboxProxy = await listening("the sandbox proxy", "proxy.port (fsb up --proxy-port)", proxyHost, options.proxy?.port, () =>
      startSandboxProxy({
        sources: {
          lookup: (sandboxId) => directory.lookup(sandboxId),
          // Tunnels and WebSockets close when their sandbox's access token changes or the sandbox goes.
          onSandboxChange: (listener) => directory.onChange(listener),
          // Shared network: the sandbox listens on its agent's address (this host).
          agentAddress: (agentName) => registry.getAgent(agentName)?.hostIP,
          domain: configuredProxy?.domain ?? "localhost",
          signedFiles: new SignedFileLookup({ signers, lookup: (sandboxId) => directory.lookup(sandboxId) }),
          exposesEveryPort: createdThroughE2b,
          trafficTokenOf: (sandbox) => signers.trafficTokenOf(sandbox),
          // The manager's pool cache, once there is one (the proxy starts first): a Bound Shared sandbox is served.
          networkModeOf: (sandbox) => poolModes.of?.networkModeOf(sandbox),
        },
        host: proxyHost,
        port: options.proxy?.port ?? 0,
        metrics: new ProxyMetrics(metrics.registry),
        logger,
      }),
    );
  } catch (error) {
    await store.close();
    throw error;
  }
  const proxyAddress = configuredProxy ?? parseProxyBaseUrl(`http://localhost:${sandboxProxy.port}`);
  const proxyUrl = `http://${proxyHost.includes(":") ? `[${proxyHost}]` : proxyHost}:${sandboxProxy.port}`;

  const customAgents = options.agents;
  const fleet = new EmbeddedAgentFleet({
    clock,
    dataDir: options.dataDir,
    agentToken,
    containerdSocket,
    containerdNamespace,
    cgroupRoot,
    heartbeatIntervalMs,
    logger,
    ...(options.agentRestartDelayMs !== undefined ? { agentRestartDelayMs: options.agentRestartDelayMs } : {}),
    existingAgents: () => agentsOfRecords(store),
    // Each pool's gVisor checkpoints, shared by its agents: <dataDir>/checkpoints/<namespace>/<pool>.
    agentEnv: { FSB_CHECKPOINT_DIR: join(options.dataDir, "checkpoints") },
    ...(customAgents ? { createProcess: (settings, events) => customAgents.createProcess(settings, events) } : {}),
  });
  const connections: AgentConnections = new AgentConnections({
    clock,
    fleet,
    registry,
    connect: (endpoint) => (customAgents ? customAgents.connect(endpoint) : createAgentClient(endpoint, agentToken)),
    logger,
    metrics,
    heartbeatIntervalMs,
    onConnected: (agentName, status) => onboarding.onConnected(agentName, status),
    onStatus: (agentName, status) => recordSandboxFacts(store, agentName, status, { clock, cached: (key) => sandboxCache.get(key) }),
  });
  const manager = new SandboxManager({ store, registry, agents: connections, logger, clock, proxyAddress });
  poolModes.of = manager;
  const checkpoints = new CheckpointManager({ manager, store, registry, agents: connections, logger });
  const pauses = new SandboxPauses({ manager, store, registry, agents: connections, checkpoints, logger, clock });
  manager.setSavedStateCleanup((sandbox) => pauses.removeSavedState(sandbox));
  const adoption = new AgentAdoption({ store, registry, manager, agents: connections, logger, clock });
  const allocations = new AllocationSync({
    clock,
    store,
    informer: sandboxCache,
    registry,
    logger,
    isBusy: (namespace, name) => manager.isBusy(namespace, name),
    // A resume may wait for an agent of its checkpoint's node as long as its pool's wake timeout, then restore.
    resumeDemandMs: (sandbox) =>
      manager.wakeTimeoutMs(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.spec.poolRef) + RESUME_AFTER_WAKE_TAKES_AT_MOST_MS,
    onPending: (sandbox) => pools.wake(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.spec.poolRef),
    portsHeldBy: (sandbox) => manager.portsHeldBy(sandbox),
  });
  const pools: PoolController = new PoolController({
    clock,
    store,
    fleet,
    registry,
    logger,
    // Local agents start in well under a second: the status follows placements closely.
    resyncIntervalMs: 1000,
    ...poolControllerHooks({
      connections,
      registry,
      allocations,
      manager,
      sandboxes: sandboxCache,
      clock,
      ...(options.createRateWindowMs !== undefined ? { createRateWindowMs: options.createRateWindowMs } : {}),
    }),
    onPoolEmptied: async (namespace, pool) => {
      await checkpoints.deletePoolCheckpoints(namespace, pool);
    },
  });
  const onboarding = new AgentOnboarding({
    adoption,
    clock,
    prewarmer: new ImagePrewarmer({ logger, clock }),
    registry,
    agents: connections,
    logger,
    poolOf: agentPoolOf(fleet, pools),
  });
  pools.onPoolChanged((pool, deleted) => {
    if (deleted) {
      manager.deletePool(pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name);
      // What no agent of it reported (it had none running) goes with the pool too; should this fail,
      // the janitor removes the directory later (its pool gone for FSB_JANITOR_CHECKPOINT_GRACE).
      void rm(join(options.dataDir, "checkpoints", pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name), { recursive: true, force: true }).catch(
        (error: unknown) => logger.warn({ err: error, pool: pool.metadata.name }, "could not remove a deleted pool's checkpoint directory"),
      );
    } else manager.setPool(pool);
  });
  manager.setPoolCapacity({ canGrow: (namespace, pool) => pools.canGrow(namespace, pool), wake: (namespace, pool) => pools.wake(namespace, pool) });
  connections.onAgentChanged((name) => {
    const agent = fleet.listAgents().find((a) => a.name === name);
    if (agent) pools.wake(agent.namespace, agent.pool);
  });
  let releaseWrites: () => void = () => undefined;
  manager.holdWritesUntil(new Promise<void>((resolve) => (releaseWrites = resolve)));
  const sandboxes = new SandboxReconciler({ store, manager, registry, agents: connections, logger, clock, informer: sandboxCache });
  const hotImages = new HotImagesReconciler({ store, registry, agents: connections, logger, clock, informer: sandboxCache });
  const checkpointCollector = new CheckpointCollector({ ...options.checkpointCollection, checkpoints, store, logger, clock });
  const pauseSettler = new PauseSettler({ pauses, store, logger, clock, informer: sandboxCache });

  let api: ApiServer | undefined;
  let e2bApi: E2bApiServer | undefined;
  let apiKeys: ApiKeyStore | undefined;
  let defaultImage: string | undefined;
  try {
    if (options.defaultPool) defaultImage = await ensureDefaultPool(store, options.defaultPool, options.defaultPoolImageGiven, logger);
    // The sandboxes' cache before the ports: a lookup (the E2B API's get, kill, connect) answered
    // before its first list would find no sandbox and say 404 of a running one. Its other users
    // registered at construction and work through it once they start.
    await directory.start();
    // Both ports before any agent starts: a port in use fails the start before an agent is spawned
    // (and killed while it starts). Writes wait for the agents anyway (holdWritesUntil).
    const keys = openSqliteApiKeyStore(join(options.dataDir, API_KEY_DATABASE_FILE));
    apiKeys = keys;
    const startedE2b = await listening("the E2B-compatible API", "e2b.port (fsb up --e2b-port)", options.e2b?.host ?? "127.0.0.1", options.e2b?.port, () =>
      startE2bApiServer({
        sandboxes: new E2bSandboxes({
          manager,
          store,
          lookup: (sandboxId) => directory.lookup(sandboxId),
          envdReady: pollEnvdHealth({ clock }),
          tokenSecret: e2bTokenSecret,
          host: hostResources(options.dataDir),
          logger,
          clock,
          ...(options.defaultPool ? { defaultPool: options.defaultPool.metadata.name } : {}),
          pauses,
          checkpoints,
          // getHost(port) of E2B's SDKs: `<port>-<id>.<domain>`, which the proxy routes.
          domain: configuredProxy ? `${configuredProxy.domain}${configuredProxy.portSuffix}` : `localhost:${sandboxProxy.port}`,
        }),
        apiKeys: keys,
        host: options.e2b?.host ?? "127.0.0.1",
        port: options.e2b?.port ?? 0,
        logger,
      }),
    );
    e2bApi = startedE2b;
    api = await listening("the API", "port (fsb up --port)", options.host ?? "127.0.0.1", options.port, () =>
      startApiServer({
        manager,
        store,
        registry,
        agents: connections,
        token: options.token,
        host: options.host ?? "127.0.0.1",
        port: options.port ?? 0,
        metrics,
        checkpoints,
        pauses,
        // The SDKs reach every sandbox at one URL, routing by headers: the proxy's public address if it has one.
        e2b: { apiKeys: keys, apiUrl: startedE2b.url, sandboxUrl: options.proxy?.baseUrl ? new URL(options.proxy.baseUrl).origin : proxyUrl },
      }),
    );
    // The agents that sandboxes are placed on first: the pool controller then sizes around them.
    await fleet.start();
    await pools.start();
    connections.start();
    await allocations.start();
    metrics.observe({ sandboxes: () => allocations.cachedSandboxes(), registry });
    const allReady = await waitForAgents(store, registry, fleet, options.recoveryTimeoutMs ?? 30_000, clock);
    if (!allReady) logger.warn("not every pool reached poolMin ready agents in time; serving anyway");
    releaseWrites();
    await sandboxes.start();
    await hotImages.start();
    checkpointCollector.start();
    await pauseSettler.start();
  } catch (error) {
    await pauseSettler.stop();
    await checkpointCollector.stop();
    hotImages.stop();
    await sandboxes.stop();
    await api?.close();
    await e2bApi?.close();
    await sandboxProxy.close();
    directory.stop();
    connections.stop();
    onboarding.stop();
    await allocations.stop();
    await pools.stop();
    await fleet.stop();
    await apiKeys?.close();
    await store.close();
    throw error;
  }
  const server = api;
  const e2bServer = e2bApi;
  const e2bApiKeys = apiKeys;
  const janitor = options.janitor
    ? new LocalJanitorProcess({
        ...options.janitor,
        url: server.url,
        token: options.token,
        containerdSocket,
        containerdNamespace,
        agentsDir: join(options.dataDir, "agents"),
        checkpointDir: join(options.dataDir, "checkpoints"),
        cgroupRoot,
        logPath: join(options.dataDir, "janitor.log"),
        logger,
      })
    : undefined;
  janitor?.start();
  return {
    url: server.url,
    proxyUrl,
    e2bUrl: e2bServer.url,
    store,
    registry,
    manager,
    fleet,
    connections,
    pools,
    sandboxes,
    janitor,
    defaultImage,
    async close() {
      // First: an agent lost during the steps below stays down; restarted, it would only be stopped
      // again (fleet.stop(), last) while it starts.
      fleet.holdRestarts();
      await janitor?.stop();
      await server.close();
      await e2bServer.close();
      await sandboxProxy.close();
      directory.stop();
      await pauseSettler.stop();
      await checkpointCollector.stop();
      checkpoints.close();
      await manager.drain();
      await sandboxes.stop();
      hotImages.stop();
      connections.stop();
      onboarding.stop();
      await allocations.stop();
      await pools.stop();
      await fleet.stop();
      await e2bApiKeys.close();
      await store.close();
    },
  };
}

/**
 * Creates the default pool when there is none; of one that exists, sets the image when it was given
 * and differs (the rest of the stored pool is as it was applied). Returns the pool's image as stored.
 */
async function ensureDefaultPool(store: ResourceStore, wanted: SandboxPool, imageGiven: boolean | undefined, logger: Logger): Promise<string | undefined> {
  const { namespace = DEFAULT_NAMESPACE, name } = wanted.metadata;
  const current = await store.get("SandboxPool", { namespace, name });
  if (!current) return (await applySandboxPool(store, wanted)).spec.image;
  const image = wanted.spec.image;
  const given = imageGiven ?? (image !== undefined && image !== DEFAULT_BASE_IMAGE);
  // One being deleted keeps what it has: its deletion ends with the record.
  if (!given || !image || image === current.spec.image || current.metadata.deletionTimestamp) return current.spec.image;
  const updated = await applySandboxPool(store, { ...current, spec: { ...current.spec, image } });
  logger.info({ pool: `${namespace}/${name}`, image, previousImage: current.spec.image }, "the default pool's image is now the one given");
  return updated.spec.image;
}

/**
 * Starts a server on `port`; a port in use (EADDRINUSE) fails with a message that names it and the
 * option that chose it, as the user gave it (`fsb up`'s flag).
 */
async function listening<T>(what: string, option: string, host: string, port: number | undefined, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error;
    throw new FsbError("failed_precondition", `port ${port ?? 0} on ${host}, for ${what}, is in use by another program; choose another with ${option}`, {
      cause: error,
    });
  }
}

/** The agents sandbox records are placed on, in pools that exist: started again to adopt what they run. */
async function agentsOfRecords(store: ResourceStore): Promise<ExistingAgent[]> {
  const { items: pools } = await store.list("SandboxPool");
  const poolsByKey = new Map(pools.map((pool) => [`${pool.metadata.namespace ?? DEFAULT_NAMESPACE}/${pool.metadata.name}`, pool]));
  const { items: sandboxes } = await store.list("Sandbox");
  const agents = new Map<string, ExistingAgent>();
  for (const sandbox of sandboxes) {
    const name = sandbox.status?.assignedPod;
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    const definition = poolsByKey.get(`${namespace}/${sandbox.spec.poolRef}`);
    if (name && definition) agents.set(name, { namespace, pool: sandbox.spec.poolRef, name, definition });
  }
  return [...agents.values()];
}

/**
 * Resolves true once every pool has poolMin ready agents and every agent started again for its
 * sandboxes is ready (adopted), false after `timeoutMs`.
 */
async function waitForAgents(store: ResourceStore, registry: AgentRegistry, fleet: EmbeddedAgentFleet, timeoutMs: number, clock: Clock): Promise<boolean> {
  const deadline = clock.now().getTime() + timeoutMs;
  const { items: pools } = await store.list("SandboxPool");
  const existing = new Set(fleet.listAgents().map((agent) => agent.name));
  for (;;) {
    const poolsReady = pools.every(
      (pool) => registry.poolUsage(pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name).readyAgents >= pool.spec.capacity.poolMin,
    );
    const running = new Set(fleet.listAgents().map((agent) => agent.name));
    if (poolsReady && [...existing].every((name) => !running.has(name) || registry.getAgent(name)?.ready === true)) return true;
    if (clock.now().getTime() > deadline) return false;
    await sleep(clock, 50);
  }
}
