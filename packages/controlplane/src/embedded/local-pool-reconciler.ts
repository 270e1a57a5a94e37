/**
 * Embedded mode's pool controller: for every SandboxPool it runs local agent processes, as many as
 * the pool sizer says (reconcile/pool-sizer.ts: between poolMin and poolMax, bufferMin free slots,
 * idle spare agents released after scaleDownDelaySeconds), registers them with the registry as they
 * come and go, tracks their connectivity, and writes the pool's status.
 */
import { join } from "node:path";
import type { Logger } from "pino";
import type { SandboxPool, pb } from "@fast-sandbox/api";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore, Watch } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, sandboxKey, type SandboxManager } from "../fastpath/sandbox-manager.js";
import { planPoolSize } from "../reconcile/pool-sizer.js";
import { ImagePrewarmer } from "../reconcile/image-prewarmer.js";
import { LocalAgentProcess, registryConfigPath, type LocalAgentEvents, type LocalAgentSettings } from "./local-agent-process.js";

export { desiredAgents } from "../reconcile/pool-sizer.js";

/** Whether an agent answers, and since when (the moment it last changed). */
export interface AgentConnectivity {
  connected: boolean;
  since: Date;
}

/** The last status an agent reported, and when it arrived. */
export interface ObservedAgentStatus {
  status: pb.AgentStatus;
  at: Date;
}

export interface LocalPoolReconcilerOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  manager: SandboxManager;
  logger: Logger;
  dataDir: string;
  agentToken: string;
  containerdSocket: string;
  containerdNamespace: string;
  /** Root cgroup of the agents (`fast-sandbox`); empty: no cgroups. */
  cgroupRoot: string;
  heartbeatIntervalMs: number;
  /** First restart delay of a lost agent. @default 200 */
  agentRestartDelayMs?: number;
  /** Extra environment of every agent process. */
  agentEnv?: Record<string, string>;
  /** Counts the agents' heartbeats. @default not counted */
  metrics?: LocalAgentSettings["metrics"];
  /** How often pools are resized and their status written. @default 1000 */
  resyncIntervalMs?: number;
  clock?: () => Date;
  /** Called when an agent answers after a (re)start, to adopt what it runs. */
  onAgentReady(agentName: string, status: pb.AgentStatus): Promise<void>;
  /** Called with every heartbeat's status (e.g. to record commands that exited). */
  onAgentStatus(agentName: string, status: pb.AgentStatus): Promise<void>;
}

/** Agent names are unique on the host: `<pool>-<n>`, or `<namespace>.<pool>-<n>` outside the default namespace. */
export function agentName(namespace: string, pool: string, ordinal: number): string {
  return namespace === DEFAULT_NAMESPACE ? `${pool}-${ordinal}` : `${namespace}.${pool}-${ordinal}`;
}

export class LocalPoolReconciler {
  private readonly options: LocalPoolReconcilerOptions;
  private readonly pools = new Map<string, SandboxPool>();
  private readonly agents = new Map<string, LocalAgentProcess>();
  /** Agents named by sandbox records at start-up: started whatever the pool's size says. */
  private readonly pinned = new Map<string, { namespace: string; pool: string }>();
  private readonly connectivity = new Map<string, AgentConnectivity>();
  /** Agents started and not yet adopted (first start only). */
  private readonly starting = new Set<string>();
  /** Agents being stopped (scale-down, pool deleted): their names are not reused until they are gone. */
  private readonly stopping = new Set<string>();
  private readonly observed = new Map<string, ObservedAgentStatus>();
  /** Per pool: since when it has had spare capacity (scale-down delay). */
  private readonly spareSince = new Map<string, Date>();
  private readonly desired = new Map<string, number>();
  private readonly agentListeners = new Set<(agentName: string) => void>();
  private readonly clock: () => Date;
  private readonly prewarmer: ImagePrewarmer;
  private watch: Watch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(options: LocalPoolReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? (() => new Date());
    this.prewarmer = new ImagePrewarmer({ logger: options.logger, clock: this.clock });
  }

  /** Whether the agent answers, and since when; undefined for an agent this controller does not run. */
  agentConnectivity(name: string): AgentConnectivity | undefined {
    return this.agents.has(name) ? this.connectivity.get(name) : undefined;
  }

  /** The agent's last reported status (heartbeat or start), if any. */
  observedStatus(name: string): ObservedAgentStatus | undefined {
    return this.observed.get(name);
  }

  /** Calls `listener` with an agent's name when its connectivity changes (started, answers, lost, removed); returns the unsubscribe function. */
  onAgentChanged(listener: (agentName: string) => void): () => void {
    this.agentListeners.add(listener);
    return () => this.agentListeners.delete(listener);
  }

  private agentChanged(name: string): void {
    for (const listener of this.agentListeners) listener(name);
  }

  /**
   * Whether a create that finds no free slot should wait: the pool may still start an agent (below
   * poolMax) or one of its agents is still starting. False means "no capacity" now and for a while.
   */
  canGrow(namespace: string, pool: string): boolean {
    const spec = this.pools.get(sandboxKey(namespace, pool));
    if (!spec) return false;
    const mine = [...this.agents.values()].filter((a) => a.settings.namespace === namespace && a.settings.pool === pool);
    if (mine.length < spec.spec.capacity.poolMax) return true;
    // An agent started by this controller that has not answered yet (not one lost and restarting).
    return mine.some((a) => this.options.registry.getAgent(a.name)?.ready !== true && this.starting.has(a.name));
  }

  /** A create waits for capacity in this pool: resize now rather than at the next tick. */
  wake(namespace: string, pool: string): void {
    const spec = this.pools.get(sandboxKey(namespace, pool));
    if (spec) this.scale(spec);
  }

  getAgentProcess(name: string): LocalAgentProcess | undefined {
    return this.agents.get(name);
  }

  listAgentProcesses(): LocalAgentProcess[] {
    return [...this.agents.values()];
  }

  async start(): Promise<void> {
    // Agents that sandboxes are placed on must come back even if the pool's size alone would not
    // start them (a restart after scale-down left sandboxes on a higher ordinal).
    const { items: sandboxes } = await this.options.store.list("Sandbox");
    for (const sandbox of sandboxes) {
      const agent = sandbox.status?.assignedPod;
      if (agent) this.pinned.set(agent, { namespace: sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, pool: sandbox.spec.poolRef });
    }
    const { items, resourceVersion } = await this.options.store.list("SandboxPool");
    for (const pool of items) this.observe(pool);
    this.watch = this.options.store.watch("SandboxPool", { resourceVersion }, (event) => {
      if (event.type === "DELETED") this.forget(event.object);
      else this.observe(event.object);
    });
    this.timer = setInterval(() => void this.writeStatuses(), this.options.resyncIntervalMs ?? 1000);
    this.timer.unref();
  }

  private observe(pool: SandboxPool): void {
    const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
    this.pools.set(sandboxKey(namespace, pool.metadata.name), pool);
    this.options.manager.setPool(pool);
    // A changed slot count applies to the running agents at once.
    for (const agent of this.options.registry.listAgents({ namespace, pool: pool.metadata.name })) {
      if (agent.capacity !== pool.spec.maxSandboxesPerPod) {
        const { allocated: _allocated, usedPorts: _usedPorts, ready: _ready, ...info } = agent;
        this.options.registry.upsertAgent({ ...info, capacity: pool.spec.maxSandboxesPerPod });
      }
    }
    for (const [agent, owner] of this.pinned) {
      if (owner.namespace === namespace && owner.pool === pool.metadata.name && !this.agents.has(agent)) this.add(namespace, owner.pool, agent);
    }
    this.scale(pool);
  }

  private forget(pool: SandboxPool): void {
    const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
    this.pools.delete(sandboxKey(namespace, pool.metadata.name));
    this.options.manager.deletePool(namespace, pool.metadata.name);
    for (const agent of [...this.agents.values()]) {
      if (agent.settings.namespace === namespace && agent.settings.pool === pool.metadata.name) void this.remove(agent);
    }
  }

  /** Brings the pool's agent count to the sizer's plan: grows at once; drains and stops idle spare agents after the delay. */
  scale(pool: SandboxPool): void {
    if (this.stopped) return;
    const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
    const name = pool.metadata.name;
    const key = sandboxKey(namespace, name);
    const mine = [...this.agents.values()].filter((a) => a.settings.namespace === namespace && a.settings.pool === name);
    const plan = planPoolSize({
      pool,
      agents: mine.map((a) => {
        const registered = this.options.registry.getAgent(a.name);
        // An agent that does not answer is away, not idle: its sandboxes (Lost ones hold no slot)
        // may come back with it, so it counts as busy and is never scaled down meanwhile.
        const away = this.connectivity.get(a.name)?.connected !== true && !this.starting.has(a.name);
        return { name: a.name, allocated: away ? Math.max(1, registered?.allocated ?? 0) : (registered?.allocated ?? 0), ready: registered?.ready === true };
      }),
      waiting: this.options.manager.waitingFor(namespace, name),
      now: this.clock(),
      spareSince: this.spareSince.get(key),
    });
    this.desired.set(key, plan.desired);
    if (plan.spareSince) this.spareSince.set(key, plan.spareSince);
    else this.spareSince.delete(key);
    for (let ordinal = 0, added = 0; added < plan.add; ordinal++) {
      const agent = agentName(namespace, name, ordinal);
      // A name still stopping is skipped: its process removes its shim anchors on the way out.
      if (this.agents.has(agent) || this.stopping.has(agent)) continue;
      this.add(namespace, name, agent);
      added += 1;
    }
    for (const agentToRemove of plan.remove) {
      const process = this.agents.get(agentToRemove);
      if (!process || this.pinned.has(agentToRemove)) continue;
      // Drain: no placement can reach it once it is unready; placement is synchronous, so a create
      // that got here first shows in `allocated` now, and the agent stays.
      if (this.options.registry.getAgent(agentToRemove)) {
        this.options.registry.setAgentReady(agentToRemove, false);
        if ((this.options.registry.getAgent(agentToRemove)?.allocated ?? 0) > 0) {
          this.options.registry.setAgentReady(agentToRemove, true);
          continue;
        }
      }
      this.options.logger.info({ agent: agentToRemove, pool: key }, "releasing an idle agent (scale-down)");
      void this.remove(process);
    }
  }

  private add(namespace: string, pool: string, name: string): LocalAgentProcess {
    const { options } = this;
    const events: LocalAgentEvents = {
      onReady: (agent, status) => {
        this.connectivity.set(name, { connected: true, since: this.clock() });
        this.observed.set(name, { status, at: this.clock() });
        this.agentChanged(name);
        const current = this.pools.get(sandboxKey(namespace, pool));
        options.registry.upsertAgent({
          name,
          namespace,
          pool,
          endpoint: agent.endpoint,
          capacity: current?.spec.maxSandboxesPerPod ?? 1,
          hostIP: "127.0.0.1",
          nodeName: status.nodeName,
          ...(agent.pid ? { pid: agent.pid } : {}),
          images: status.images,
        });
        // No placements until the agent's sandboxes are adopted (their slots and ports restored).
        options.registry.setAgentReady(name, false);
        options
          .onAgentReady(name, status)
          .catch((error: unknown) => options.logger.error({ err: error, agent: name }, "could not adopt all of the agent's sandboxes"))
          .then(() => this.prewarm(agent, status))
          .catch((error: unknown) => options.logger.error({ err: error, agent: name }, "could not prewarm the pool's images"))
          .finally(() => {
            // The agent may have been removed meanwhile (pool deleted, scale-down).
            if (options.registry.getAgent(name) && this.agents.get(name) === agent) options.registry.setAgentReady(name, true);
            // Adopted: from now on the pool's size rules decide about it like about any other agent.
            this.pinned.delete(name);
            this.starting.delete(name);
          });
      },
      onHeartbeat: (_agent, status) => {
        this.observed.set(name, { status, at: this.clock() });
        options.registry.setImages(name, status.images);
        options.onAgentStatus(name, status).catch((error: unknown) => options.logger.warn({ err: error, agent: name }, "could not record the agent's status"));
      },
      onLost: (_agent, reason) => {
        if (this.connectivity.get(name)?.connected !== false) this.connectivity.set(name, { connected: false, since: this.clock() });
        this.observed.delete(name);
        this.starting.delete(name);
        if (options.registry.getAgent(name)) options.registry.setAgentReady(name, false);
        options.logger.warn({ agent: name, reason }, "agent lost");
        this.agentChanged(name);
      },
    };
    const agent = new LocalAgentProcess(
      {
        name,
        namespace,
        pool,
        stateDir: join(options.dataDir, "agents", name),
        agentToken: options.agentToken,
        containerdSocket: options.containerdSocket,
        containerdNamespace: options.containerdNamespace,
        cgroupParent: options.cgroupRoot ? `/${options.cgroupRoot}/${name}` : "",
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        ...(options.agentRestartDelayMs !== undefined ? { restartDelayMs: options.agentRestartDelayMs } : {}),
        ...(options.agentEnv ? { env: options.agentEnv } : {}),
        registryConfigPath: registryConfigPath(options.dataDir),
        ...(options.metrics ? { metrics: options.metrics } : {}),
        logger: options.logger,
      },
      events,
    );
    this.agents.set(name, agent);
    // Not connected until it first answers; the time counts from its start.
    this.connectivity.set(name, { connected: false, since: this.clock() });
    this.starting.add(name);
    this.agentChanged(name);
    agent.start();
    return agent;
  }

  /** Pulls the pool's prewarmImages the agent lacks before it is marked ready (never fails: see image-prewarmer.ts). */
  private async prewarm(agent: LocalAgentProcess, status: pb.AgentStatus): Promise<void> {
    const images = this.pools.get(sandboxKey(agent.settings.namespace, agent.settings.pool))?.spec.prewarmImages ?? [];
    if (images.length === 0 || !agent.client) return;
    const { pulled } = await this.prewarmer.prewarm(agent.name, agent.client, images, status.images);
    // Image affinity sees them at once, not at the next heartbeat.
    if (pulled.length > 0 && this.options.registry.getAgent(agent.name)) this.options.registry.setImages(agent.name, [...status.images, ...pulled]);
  }

  private async remove(agent: LocalAgentProcess): Promise<void> {
    this.agents.delete(agent.name);
    this.connectivity.delete(agent.name);
    this.observed.delete(agent.name);
    this.starting.delete(agent.name);
    this.options.registry.removeAgent(agent.name);
    this.agentChanged(agent.name);
    this.stopping.add(agent.name);
    try {
      await agent.stop();
    } finally {
      this.stopping.delete(agent.name);
    }
  }

  private async writeStatuses(): Promise<void> {
    for (const pool of this.pools.values()) {
      const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
      this.scale(pool);
      const usage = this.options.registry.poolUsage(namespace, pool.metadata.name);
      const status = {
        agents: usage.agents,
        readyAgents: usage.readyAgents,
        sandboxes: usage.allocated,
        freeSlots: usage.free,
        desiredAgents: this.desired.get(sandboxKey(namespace, pool.metadata.name)) ?? 0,
      };
      const previous = pool.status ?? {};
      if (
        status.agents === previous.agents &&
        status.readyAgents === previous.readyAgents &&
        status.sandboxes === previous.sandboxes &&
        status.freeSlots === previous.freeSlots &&
        status.desiredAgents === previous.desiredAgents
      )
        continue;
      try {
        const current = await this.options.store.get("SandboxPool", { namespace, name: pool.metadata.name });
        if (!current) continue;
        const written = await this.options.store.updateStatus("SandboxPool", { ...current, status: { ...current.status, ...status } });
        this.pools.set(sandboxKey(namespace, pool.metadata.name), written);
      } catch (error) {
        this.options.logger.warn({ err: error, pool: pool.metadata.name }, "could not write pool status");
      }
    }
  }

  /** Resolves when every pool has as many ready agents as poolMin asks for and every pinned agent is ready (or the timeout passes). */
  async waitForAgents(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ready =
        [...this.pools.values()].every((pool) => {
          const usage = this.options.registry.poolUsage(pool.metadata.namespace ?? DEFAULT_NAMESPACE, pool.metadata.name);
          return usage.readyAgents >= pool.spec.capacity.poolMin;
        }) && [...this.pinned.keys()].every((agent) => !this.agents.has(agent) || this.options.registry.getAgent(agent)?.ready === true);
      if (ready) return true;
      if (Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.stop();
    if (this.timer) clearInterval(this.timer);
    await Promise.all([...this.agents.values()].map((agent) => agent.stop()));
    this.agents.clear();
  }
}
