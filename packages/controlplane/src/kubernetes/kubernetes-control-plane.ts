/**
 * The Kubernetes composition root: one controller replica. The same core as the embedded mode
 * (registry, fast path, sandbox reconciler, pool sizer, adoption) over the Kubernetes adapters:
 * the store is the API server (CRDs), the agents are Pods (KubernetesAgentFleet), the leader holds a
 * coordination.k8s.io Lease.
 *
 * On every replica: the fast-path API, the pool informer (pools for the fast path, `canGrow`), the
 * agent Pods and a heartbeat to each (AgentConnections; a connecting agent gets its pool's
 * prewarmImages before it is placed on), and the registry kept in step with the
 * fleet (PoolController's registry sync) and with the allocations the store records (AllocationSync),
 * so any replica can place. Admission is decided by the agent (its slots and ports, atomically);
 * replicas only propose, and a refused proposal is placed again.
 *
 * On the leader only: pool sizing and pool status, the sandbox reconciler (placement of sandboxes
 * written with kubectl, deletion, expiry, failure policy, reset), adoption of what agents run,
 * facts from heartbeats (CommandExited, OOMKilled), hot images, the removal of the checkpoints the
 * control plane made for itself and left behind (CheckpointCollector), the settling of pauses whose
 * outcome is not known (PauseSettler). Leadership ends → those stop.
 *
 * The E2B-compatible API (`e2b`), on every replica: its keys are Secrets in the controller's namespace
 * (KubernetesApiKeyStore), the sandboxes' tokens derive from one Secret every replica shares, and a
 * new sandbox's daemon is asked through the relay of its agent.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { createAgentClient } from "../agent-client/rpc-agent-client.js";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import { startApiServer, type ApiServer } from "../fastpath/api-server.js";
import { CachedAccessReview } from "../fastpath/access-review.js";
import { KubernetesAccessReview } from "./kubernetes-access-review.js";
import { CheckpointManager } from "../fastpath/checkpoint-manager.js";
import { RESUME_AFTER_WAKE_TAKES_AT_MOST_MS, SandboxPauses } from "../fastpath/checkpoint-pauses.js";
import { ControlPlaneMetrics } from "../fastpath/control-plane-metrics.js";
import { SandboxManager } from "../fastpath/sandbox-manager.js";
import { AgentConnections } from "../fleet/agent-connections.js";
import { agentPodLimits, type AgentPodOptions } from "../fleet/agent-pod.js";
import type { AgentTemplatePolicy } from "../fleet/agent-template-policy.js";
import { agentsByName } from "../fleet/agent-fleet.js";
import { agentTokenOf } from "../fleet/agent-token.js";
import { KubernetesAgentFleet } from "../fleet/kubernetes-agent-fleet.js";
import { kubernetesLeaseClient } from "../leader/kubernetes-lease-client.js";
import type { LeaderElector } from "../leader/leader-elector.js";
import { LeaseLeaderElector } from "../leader/lease-leader-elector.js";
import { AgentAdoption } from "../reconcile/agent-adoption.js";
import { AgentOnboarding } from "../reconcile/agent-onboarding.js";
import { AllocationSync } from "../reconcile/allocation-sync.js";
import { HotImagesReconciler } from "../reconcile/hot-images-reconciler.js";
import { CheckpointCollector, type CheckpointCollectionTiming } from "../reconcile/checkpoint-collector.js";
import { ImagePrewarmer } from "../reconcile/image-prewarmer.js";
import { PauseSettler } from "../reconcile/pause-settler.js";
import { recordSandboxFacts } from "../reconcile/sandbox-facts.js";
import { sandboxInformer } from "../reconcile/sandbox-informer.js";
import { SandboxReconciler } from "../reconcile/sandbox-reconciler.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { openKubernetesResourceStore } from "../store/kubernetes-resource-store.js";
import { PoolController } from "../reconcile/pool-controller.js";
import { agentPoolOf, poolControllerHooks } from "../reconcile/pool-controller-hooks.js";
import type { ProxyAddress } from "../proxy/sandbox-endpoints.js";
import { SandboxDirectory } from "../proxy/sandbox-directory.js";
import { startE2bApiServer, type E2bApiServer } from "../e2b/e2b-api-server.js";
import { E2bSandboxes } from "../e2b/e2b-sandboxes.js";
import { pollEnvdHealth } from "../e2b/envd-readiness.js";
import { KubernetesReplicaLiveness } from "../leader/kubernetes-replica-liveness.js";
import { hostResources } from "../e2b/host-resources.js";
import { KubernetesApiKeyStore } from "../e2b/kubernetes-api-key-store.js";
import { loadOrCreateKubernetesTokenSecret } from "../e2b/kubernetes-token-secret.js";

/** How long a Bound record may be another replica's create in flight (image pull and create) before the leader finishes it. */
export const DEFAULT_FOREIGN_CREATE_GRACE_MS = 120_000;
/**
 * A pause or resume another replica started is its own this long (a pause at least
 * PAUSE_TAKES_AT_MOST_MS, a resume at least its pool's wakeTimeoutSeconds and
 * RESUME_AFTER_WAKE_TAKES_AT_MOST_MS: checkpoint-pauses.ts).
 */
const PAUSE_IN_FLIGHT_ELSEWHERE_MS = 180_000;

export interface KubernetesControlPlaneOptions {
  kubeConfig: KubeConfig;
  /** This replica's name in the leader election (its Pod name). */
  identity: string;
  /** Where the Lease is (the controller's namespace) and its name. */
  lease: { namespace: string; name: string; durationSeconds?: number; renewDeadlineMs?: number; retryPeriodMs?: number };
  /** Bearer token of the fast-path API. */
  token: string;
  /**
   * Whether the fast-path API also takes Kubernetes users' own tokens, each call allowed as far as
   * their RBAC allows (FSB_KUBERNETES_USERS; fastpath/api-caller-check.ts). @default true
   */
  kubernetesUsers?: boolean;
  /** The deployment's agent token; each pool's agents have one derived from it (agent-token.ts). */
  agentToken: string;
  /** Agent Pods made before pools had tokens of their own (no label) are called with `agentToken`. @default false */
  agentTokenForOldPods?: boolean;
  host: string;
  port: number;
  /** How agent Pods are built (image, default template, containerd namespace). */
  agentPod?: AgentPodOptions;
  /** What a pool's agentTemplate may set (FSB_AGENT_TEMPLATE_POLICY, FSB_AGENT_TEMPLATE_IMAGES). @default restricted, no image */
  agentTemplatePolicy?: AgentTemplatePolicy;
  /** The namespaces whose pools get agents (FSB_POOL_NAMESPACES); a Pod elsewhere is no agent. @default every namespace */
  poolNamespaces?: readonly string[];
  /** @default 2000 */
  heartbeatIntervalMs?: number;
  /** The sandbox proxy's public address, where `status.endpoints` point. @default http://localhost:7072 */
  proxyAddress?: ProxyAddress;
  /** How long start-up waits for the ready agents to answer before it takes writes anyway. @default 15000 */
  recoveryTimeoutMs?: number;
  /** @default DEFAULT_FOREIGN_CREATE_GRACE_MS */
  foreignCreateGraceMs?: number;
  /**
   * This replica's Pod (in the Lease's namespace): the Pods with its labels are the replicas, and
   * when none that ran as another replica wrote a create runs any more, that create's grace ends
   * (kubernetes-replica-liveness.ts). @default none: every such create gets its whole grace
   */
  podName?: string;
  /** Serve the E2B-compatible API. @default not served */
  e2b?: KubernetesE2bOptions;
  /** When the leader's checkpoint collector runs and which of the control plane's own checkpoints it removes. @default every 10 minutes; forks' after 1 hour, unnamed pauses' after 10 minutes */
  checkpointCollection?: CheckpointCollectionTiming;
  /** Called when this replica stops leading (the process usually exits then, to start clean). */
  onStoppedLeading?(): void;
  logger: Logger;
  /** The time of every component: heartbeats, waits, the Lease, requeues. @default systemClock */
  clock?: Clock;
}

export interface KubernetesE2bOptions {
  host: string;
  port: number;
  /** Where its Secrets are (the keys, the tokens' secret): the controller's namespace. */
  namespace: string;
  /** E2B_API_URL as clients reach this API (what `fsb e2b env` prints). */
  apiUrl: string;
  /** E2B_SANDBOX_URL: the sandbox proxy as clients reach it. */
  sandboxUrl: string;
  /** Where E2B's templates (pools) and sandboxes are. @default "default" */
  sandboxNamespace?: string;
}

export interface KubernetesControlPlane {
  url: string;
  /** Where the E2B-compatible API listens, when it is served. */
  e2bUrl: string | undefined;
  registry: AgentRegistry;
  manager: SandboxManager;
  isLeader(): boolean;
  /** Stops serving, steps down (the Lease is released for a successor) and stops watching; agents and sandboxes keep running. */
  close(): Promise<void>;
}

export async function startKubernetesControlPlane(options: KubernetesControlPlaneOptions): Promise<KubernetesControlPlane> {
  const { kubeConfig, logger } = options;
  const clock = options.clock ?? systemClock;
  const store = openKubernetesResourceStore({ kubeConfig, logger });
  const registry = new AgentRegistry();
  const metrics = new ControlPlaneMetrics();
  // Each pool's agents get their pool's token, derived from the deployment's (agent-token.ts).
  // What the deployment allows (its agent template policy, its pools' namespaces) is the fleet's to
  // enforce: it makes the Pods and says which are agents; the pool controller says why in the status.
  const fleet = new KubernetesAgentFleet({
    kubeConfig,
    logger,
    clock,
    pod: { ...options.agentPod, deploymentToken: options.agentToken },
    ...(options.agentTemplatePolicy ? { templatePolicy: options.agentTemplatePolicy } : {}),
    ...(options.poolNamespaces ? { poolNamespaces: options.poolNamespaces } : {}),
  });
  const agentOf = agentsByName(fleet, logger);
  const agentTokenOfRelay = (relay: string) => {
    const agent = fleet.listAgents().find((candidate) => candidate.endpoint === relay);
    return agent ? agentTokenOf(options.agentToken, agent, options.agentTokenForOldPods) : undefined;
  };
  const elector = new LeaseLeaderElector({
    lease: kubernetesLeaseClient({ kubeConfig, namespace: options.lease.namespace, name: options.lease.name }),
    identity: options.identity,
    logger,
    clock,
    ...(options.lease.durationSeconds !== undefined ? { leaseDurationSeconds: options.lease.durationSeconds } : {}),
    ...(options.lease.renewDeadlineMs !== undefined ? { renewDeadlineMs: options.lease.renewDeadlineMs } : {}),
    ...(options.lease.retryPeriodMs !== undefined ? { retryPeriodMs: options.lease.retryPeriodMs } : {}),
  });
  const leading = () => elector.isLeader();
  // One cache of every sandbox for AllocationSync (every replica), the leader's SandboxReconciler and the heartbeats' facts.
  const sandboxCache = sandboxInformer({ store, logger, clock });

  const connections: AgentConnections = new AgentConnections({
    fleet,
    registry,
    connect: (endpoint, agent) => createAgentClient(endpoint, agentTokenOf(options.agentToken, agent, options.agentTokenForOldPods)),
    logger,
    metrics,
    clock,
    ...(options.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
    onConnected: (agentName, status) => onboarding.onConnected(agentName, status),
    onStatus: async (agentName, status) => {
      if (!leading()) return;
      // Facts only about sandboxes of the agent Pod's own namespace: a Pod of another namespace
      // holding a name (agent-fleet.ts agentsByName) must not mark them.
      const agentNamespace = fleet.listAgents().find((agent) => agent.name === agentName)?.namespace;
      if (agentNamespace !== undefined) await recordSandboxFacts(store, agentName, status, { clock, cached: (key) => sandboxCache.get(key), agentNamespace });
    },
  });
  const manager = new SandboxManager({
    store,
    registry,
    agents: connections,
    logger,
    clock,
    ...(options.proxyAddress ? { proxyAddress: options.proxyAddress } : {}),
  });
  const checkpoints = new CheckpointManager({ manager, store, registry, agents: connections, logger });
  // Pauses live in the store (phase Paused, the checkpoint's name and node): any replica resumes
  // what another paused, and the leader's reconciler leaves a paused sandbox alone. A pause or
  // resume another replica started is left to it for as long as it can take.
  const pauses = new SandboxPauses({
    manager,
    store,
    registry,
    agents: connections,
    checkpoints,
    logger,
    clock,
    inFlightElsewhereMs: PAUSE_IN_FLIGHT_ELSEWHERE_MS,
  });
  manager.setSavedStateCleanup((sandbox) => pauses.removeSavedState(sandbox));
  const adoption = new AgentAdoption({ store, registry, manager, agents: connections, logger, clock });
  const allocations = new AllocationSync({
    store,
    informer: sandboxCache,
    registry,
    logger,
    clock,
    isBusy: (namespace, name) => manager.isBusy(namespace, name),
    // A resume may wait for an agent of its checkpoint's node as long as its pool's wake timeout, then restore.
    resumeDemandMs: (sandbox) => manager.wakeTimeoutMs(sandbox.metadata.namespace ?? "default", sandbox.spec.poolRef) + RESUME_AFTER_WAKE_TAKES_AT_MOST_MS,
    onPending: (sandbox) => {
      if (leading()) poolController.wake(sandbox.metadata.namespace ?? "default", sandbox.spec.poolRef);
    },
    portsHeldBy: (sandbox) => manager.portsHeldBy(sandbox),
  });
  const poolController = new PoolController({
    store,
    fleet,
    registry,
    logger,
    clock,
    isLeader: leading,
    ...(options.poolNamespaces ? { poolNamespaces: options.poolNamespaces } : {}),
    ...poolControllerHooks({ connections, registry, allocations, manager, sandboxes: sandboxCache, clock }),
    onPoolEmptied: async (namespace, pool) => {
      await checkpoints.deletePoolCheckpoints(namespace, pool);
    },
  });
  const onboarding = new AgentOnboarding({
    adoption,
    clock,
    registry,
    agents: connections,
    logger,
    prewarmer: new ImagePrewarmer({ logger, clock }),
    isLeader: leading,
    poolOf: agentPoolOf(fleet, poolController),
  });
  poolController.onPoolChanged((pool, deleted) => {
    if (deleted) manager.deletePool(pool.metadata.namespace ?? "default", pool.metadata.name);
    else manager.setPool(pool);
  });
  manager.setPoolCapacity({
    canGrow: (namespace, pool) => poolController.canGrow(namespace, pool),
    wake: (namespace, pool) => poolController.wake(namespace, pool),
    blockedReason: (namespace, pool) => poolController.blockedReason(namespace, pool),
  });
  connections.onAgentChanged((name) => {
    const agent = fleet.listAgents().find((a) => a.name === name);
    if (agent) poolController.wake(agent.namespace, agent.pool);
  });
  let releaseWrites: () => void = () => undefined;
  manager.holdWritesUntil(new Promise<void>((resolve) => (releaseWrites = resolve)));

  // The leader's part, started and stopped with the leadership.
  let sandboxes: SandboxReconciler | undefined;
  let hotImages: HotImagesReconciler | undefined;
  let checkpointCollector: CheckpointCollector | undefined;
  let pauseSettler: PauseSettler | undefined;
  const startLeading = async (signal: AbortSignal): Promise<void> => {
    logger.info({ identity: options.identity }, "leading: starting the reconcilers");
    // What agents run is adopted once per leadership: the previous leader's view is gone.
    await adoptConnectedAgents(connections, onboarding);
    if (signal.aborted) return;
    sandboxes = new SandboxReconciler({
      store,
      manager,
      registry,
      agents: connections,
      logger,
      clock,
      informer: sandboxCache,
      foreignCreateGraceMs: options.foreignCreateGraceMs ?? DEFAULT_FOREIGN_CREATE_GRACE_MS,
      ...(options.podName
        ? { replicas: new KubernetesReplicaLiveness({ kubeConfig, namespace: options.lease.namespace, podName: options.podName, logger, clock }) }
        : {}),
    });
    hotImages = new HotImagesReconciler({ store, registry, agents: connections, logger, clock, informer: sandboxCache });
    await sandboxes.start();
    await hotImages.start();
    // Every replica's forks and pauses leave their checkpoints to it; another replica's in flight are younger than its grace periods.
    checkpointCollector = new CheckpointCollector({ ...options.checkpointCollection, checkpoints, store, logger, clock });
    checkpointCollector.start();
    // Every replica's pauses that went unanswered or were cut short: each record says when it is due.
    pauseSettler = new PauseSettler({ pauses, store, logger, clock, informer: sandboxCache });
    await pauseSettler.start();
    for (const agent of fleet.listAgents()) poolController.wake(agent.namespace, agent.pool);
  };
  const stopLeading = async (): Promise<void> => {
    await pauseSettler?.stop();
    await checkpointCollector?.stop();
    hotImages?.stop();
    await sandboxes?.stop();
    checkpointCollector = undefined;
    pauseSettler = undefined;
    hotImages = undefined;
    sandboxes = undefined;
  };

  let api: ApiServer | undefined;
  let e2bApi: E2bApiServer | undefined;
  let directory: SandboxDirectory | undefined;
  const e2b = options.e2b;
  const apiKeys = e2b ? new KubernetesApiKeyStore({ kubeConfig, namespace: e2b.namespace }) : undefined;
  try {
    await poolController.start();
    await fleet.start();
    connections.start();
    await allocations.start();
    metrics.observe({ sandboxes: () => allocations.cachedSandboxes(), registry });
    if (e2b && apiKeys) {
      const tokenSecret = await loadOrCreateKubernetesTokenSecret({ kubeConfig, namespace: e2b.namespace });
      const sandboxDirectory = new SandboxDirectory({ store, logger, informer: sandboxCache });
      directory = sandboxDirectory;
      await sandboxDirectory.start();
      e2bApi = await startE2bApiServer({
        sandboxes: new E2bSandboxes({
          manager,
          store,
          lookup: (sandboxId) => sandboxDirectory.lookup(sandboxId),
          // An Isolated sandbox's address is inside its agent's network: asked through its agent's relay.
          envdReady: pollEnvdHealth({
            clock,
            // The E2B API's sandboxes are all of its namespace: an agent of another namespace that has the name is not theirs.
            relay: { endpointOf: (agentName) => agentOf(agentName, e2b.sandboxNamespace ?? "default")?.endpoint, token: agentTokenOfRelay },
          }),
          tokenSecret,
          // A sandbox of a pool without limits is bounded by its agent Pod's (the deployment's
          // template under the pool's), else by its node: this replica's node stands for the nodes.
          host: hostResources("/"),
          agentLimits: (pool) => agentPodLimits(pool, options.agentPod ?? {}),
          logger,
          clock,
          pauses,
          checkpoints,
          ...(e2b.sandboxNamespace ? { namespace: e2b.sandboxNamespace } : {}),
          // getHost(port) of E2B's SDKs: `<port>-<id>.<domain>`, which the proxy routes.
          ...(options.proxyAddress ? { domain: `${options.proxyAddress.domain}${options.proxyAddress.portSuffix}` } : {}),
        }),
        apiKeys,
        host: e2b.host,
        port: e2b.port,
        logger,
      });
    }
    api = await startApiServer({
      manager,
      store,
      registry,
      agents: connections,
      checkpoints,
      pauses,
      token: options.token,
      ...(options.kubernetesUsers === false ? {} : { review: new CachedAccessReview(new KubernetesAccessReview({ kubeConfig })) }),
      host: options.host,
      port: options.port,
      metrics,
      ...(e2b && apiKeys ? { e2b: { apiKeys, apiUrl: e2b.apiUrl, sandboxUrl: e2b.sandboxUrl } } : {}),
      // `fsb apply` of a pool the deployment refuses fails saying why, instead of a stored pool
      // whose status says it afterwards (kubectl apply still gets the status: no admission webhook).
      admitPool: (pool) => fleet.admitPool(pool),
    });
  } catch (error) {
    await api?.close();
    await e2bApi?.close();
    directory?.stop();
    await apiKeys?.close();
    connections.stop();
    onboarding.stop();
    await allocations.stop();
    await poolController.stop();
    await fleet.stop();
    await store.close();
    throw error;
  }
  const server = api;
  const e2bServer = e2bApi;
  void waitForAgents(fleet, connections, options.recoveryTimeoutMs ?? 15_000, clock).then((all) => {
    if (!all) logger.warn("not every ready agent answered in time; serving anyway");
    releaseWrites();
  });
  const leadership = runLeadership({
    elector,
    start: startLeading,
    stop: stopLeading,
    logger,
    onStoppedLeading: () => options.onStoppedLeading?.(),
  });
  return {
    url: server.url,
    e2bUrl: e2bServer?.url,
    registry,
    manager,
    isLeader: leading,
    async close() {
      // First out of the election (a replica that lost it campaigns no more): the reconcilers stop,
      // then the lease is released, so a successor takes over while this replica closes the rest.
      await leadership.stop();
      await server.close();
      await e2bServer?.close();
      directory?.stop();
      checkpoints.close();
      await apiKeys?.close();
      await manager.drain();
      connections.stop();
      onboarding.stop();
      await allocations.stop();
      await poolController.stop();
      await fleet.stop();
      await store.close();
    },
  };
}

export interface LeadershipOptions {
  elector: LeaderElector;
  /** Starts the leader's work; `signal` aborts when the leadership ends. */
  start(signal: AbortSignal): Promise<void>;
  /** Stops the leader's work, also what a start that failed half-way did start. */
  stop(): Promise<void>;
  logger: Pick<Logger, "warn" | "error">;
  /** Called when this replica stops leading, given up or lost. */
  onStoppedLeading?(): void;
}

/**
 * Campaigns with `elector` and runs the leader's work while this replica leads: started at each
 * leadership, stopped when it ends, one after the other. A start that fails (a reconciler's first
 * read refused) would leave a leader that renews its Lease and reconciles nothing, and no other
 * replica could take over: the replica gives the leadership up instead — what did start stops,
 * the Lease is released and a follower takes it on its next try. It campaigns no more (main.ts
 * exits on onStoppedLeading, and the Deployment starts it again clean). A retry in place would keep
 * the Lease on the replica least likely to succeed while whatever broke its start (its caches, its
 * connection) persists. Returns what stops it all: the campaign, then the work.
 */
export function runLeadership(options: LeadershipOptions): { stop(): Promise<void> } {
  const { elector, logger } = options;
  let work: Promise<void> = Promise.resolve();
  let givingUp: Promise<void> | undefined;
  elector.run({
    onStartedLeading: (signal) => {
      work = work
        .then(() => options.start(signal))
        .catch((error: unknown) => {
          if (signal.aborted) {
            // Lost meanwhile: onStoppedLeading stops what started, and the campaign goes on.
            logger.warn({ err: error }, "the leadership ended while the reconcilers started");
            return;
          }
          logger.error({ err: error, identity: elector.identity }, "could not start leading; giving the leadership up");
          // Not awaited: the elector's stop waits for onStoppedLeading's work, which follows this step.
          givingUp ??= elector.stop();
        });
    },
    onStoppedLeading: () => {
      logger.warn({ identity: elector.identity }, "stopped leading");
      work = work.then(() => options.stop()).catch((error: unknown) => logger.error({ err: error }, "could not stop the reconcilers"));
      options.onStoppedLeading?.();
      // The elector gives the lease up only after this: no successor reconciles beside our reconcilers.
      return work;
    },
  });
  return {
    async stop() {
      await elector.stop();
      await givingUp;
      await work;
    },
  };
}

/**
 * Adopts what every connected agent runs (a new leader's first look), all asked for at once: the
 * adoptions share one list of the Sandboxes, taken after every status here was asked for, instead of
 * one list of every Sandbox per agent (agent-adoption.ts). Never throws (AgentOnboarding.adopt).
 */
export async function adoptConnectedAgents(
  connections: Pick<AgentConnections, "connectedAgents" | "observedStatus">,
  onboarding: Pick<AgentOnboarding, "adopt">,
): Promise<void> {
  await Promise.all(
    connections.connectedAgents().flatMap((name) => {
      const observed = connections.observedStatus(name);
      return observed ? [onboarding.adopt(name, observed.status)] : [];
    }),
  );
}

/** Resolves true once every agent the fleet reports ready is connected (adopted), false after `timeoutMs`. */
async function waitForAgents(fleet: KubernetesAgentFleet, connections: AgentConnections, timeoutMs: number, clock: Clock): Promise<boolean> {
  const deadline = clock.now().getTime() + timeoutMs;
  for (;;) {
    const ready = fleet.listAgents().filter((agent) => agent.ready);
    if (ready.every((agent) => connections.agentConnectivity(agent.name)?.connected === true)) return true;
    if (clock.now().getTime() >= deadline) return false;
    await sleep(clock, 100);
  }
}
