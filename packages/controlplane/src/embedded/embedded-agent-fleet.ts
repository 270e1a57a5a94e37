/**
 * The embedded `AgentFleet`: a pool's agents are supervised local processes (local-agent-process.ts)
 * named `<pool>-<n>` (lowest free ordinal first; `<namespace>.<pool>-<n>` outside the default
 * namespace), all on this host. A process that dies or stops answering is `lost` and restarted by
 * its supervisor under the same name (so it adopts what it ran), `ready` again when it answers; a
 * stopped one is `removed`.
 *
 * What "agents that already exist" means here (`start()`): agent processes do not outlive the
 * control plane, but their sandboxes do; the agents that sandbox records name are started again under
 * their names, whatever their pool's size says, so that they adopt what they ran (the pool
 * controller releases them later like any other idle agent).
 *
 * An agent's `templateHash` is the hash of the environment its pool's spec gives it (prepared
 * instances, agent limits); one started again without its pool (the pool is gone) has none.
 */
import { join } from "node:path";
import type { SandboxPool } from "@fast-sandbox/api";
import type { Clock } from "../controller/clock.js";
import { DEFAULT_NAMESPACE } from "../fastpath/sandbox-manager.js";
import { preparedInstancesEnv } from "../fastpath/instance-template.js";
import type { AgentFleet, AgentFleetEvent, AgentFleetListener, FleetAgent, PoolRef } from "../fleet/agent-fleet.js";
import { agentLimitsEnv } from "../fleet/agent-limits-env.js";
import { agentTemplateHash } from "../fleet/agent-template-hash.js";
import { LocalAgentProcess, registryConfigPath, type LocalAgentEvents, type LocalAgentSettings } from "./local-agent-process.js";

/** Agent names are unique on the host: `<pool>-<n>`, or `<namespace>.<pool>-<n>` outside the default namespace. */
export function agentName(namespace: string, pool: string, ordinal: number): string {
  return namespace === DEFAULT_NAMESPACE ? `${pool}-${ordinal}` : `${namespace}.${pool}-${ordinal}`;
}

/** What of an agent process's environment comes from its pool's spec (the process's `templateHash` is its hash). */
function poolAgentEnv(pool: SandboxPool): Record<string, string> {
  return { ...preparedInstancesEnv(pool), ...agentLimitsEnv(pool) };
}

/** What the fleet needs of an agent process (LocalAgentProcess; a fake in unit tests). */
export interface AgentProcess {
  readonly name: string;
  /** The running process's id; undefined between a death and its restart. */
  readonly pid: number | undefined;
  start(): void;
  stop(): Promise<void>;
  /** Kills the process; its supervisor restarts it (a crash, for tests and benchmarks). */
  kill(signal?: NodeJS.Signals): void;
  /** From now on the process is not restarted when it exits; `stop()` still ends it. @default restarts go on (a process without a supervisor) */
  holdRestarts?(): void;
}

/** An agent to start again at `start()` under its name. */
export interface ExistingAgent extends PoolRef {
  name: string;
  /** The agent's pool, which says e.g. which prepared instances the agent keeps. */
  definition?: SandboxPool;
}

export interface EmbeddedAgentFleetOptions {
  dataDir: string;
  agentToken: string;
  containerdSocket: string;
  containerdNamespace: string;
  /** Root cgroup of the agents (`fast-sandbox`); empty: no cgroups. */
  cgroupRoot: string;
  heartbeatIntervalMs: number;
  logger: LocalAgentSettings["logger"];
  /** First restart delay of a lost agent. @default 200 */
  agentRestartDelayMs?: number;
  /** Extra environment of every agent process. */
  agentEnv?: Record<string, string>;
  /** Counts the agents' heartbeats. @default not counted */
  metrics?: LocalAgentSettings["metrics"];
  /** Time and timers of the agent processes' supervisors. @default systemClock */
  clock?: Clock;
  /** Makes the process of an agent. @default a LocalAgentProcess */
  createProcess?: (settings: LocalAgentSettings, events: LocalAgentEvents) => AgentProcess;
  /** The agents that already exist (named by sandbox records), started again by `start()`. @default none */
  existingAgents?: () => Promise<readonly ExistingAgent[]>;
}

export class EmbeddedAgentFleet implements AgentFleet {
  private readonly options: EmbeddedAgentFleetOptions;
  private readonly processes = new Map<string, AgentProcess>();
  private readonly agents = new Map<string, FleetAgent>();
  private readonly listeners = new Set<AgentFleetListener>();
  /** Agents being stopped: their names are not reused until their processes are gone (they remove their shim anchors on the way out). */
  private readonly stopping = new Set<string>();
  /** Set by holdRestarts(): agents started later (a pool controller still at work) are held too. */
  private restartsHeld = false;

  constructor(options: EmbeddedAgentFleetOptions) {
    this.options = options;
  }

  /** Starts again the agents that sandboxes are placed on (`existingAgents`); `ready` events follow as they answer. */
  async start(): Promise<void> {
    for (const agent of (await this.options.existingAgents?.()) ?? []) {
      if (!this.processes.has(agent.name)) this.add(agent, agent.name, agent.definition);
    }
  }

  /** The process of an agent, for tests and benchmarks (its pid, a crash). */
  getAgentProcess(name: string): AgentProcess | undefined {
    return this.processes.get(name);
  }

  listAgentProcesses(): AgentProcess[] {
    return [...this.processes.values()];
  }

  startAgents(pool: SandboxPool, count: number): Promise<string[]> {
    const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
    const names: string[] = [];
    for (let ordinal = 0; names.length < count; ordinal++) {
      const name = agentName(namespace, pool.metadata.name, ordinal);
      if (this.processes.has(name) || this.stopping.has(name)) continue;
      this.add({ namespace, pool: pool.metadata.name }, name, pool);
      names.push(name);
    }
    return Promise.resolve(names);
  }

  templateHash(pool: SandboxPool): string {
    return agentTemplateHash(poolAgentEnv(pool));
  }

  async stopAgents(pool: PoolRef, names: readonly string[]): Promise<void> {
    await Promise.all(
      names.map(async (name) => {
        const agent = this.agents.get(name);
        const agentProcess = this.processes.get(name);
        if (!agent || !agentProcess || agent.namespace !== pool.namespace || agent.pool !== pool.pool) return;
        this.processes.delete(name);
        this.agents.delete(name);
        this.stopping.add(name);
        // Lost at once, as a Pod being deleted is: its server closes while it stops (the stop waits
        // for its creates and removes its anchors), and nobody should count that as missed heartbeats.
        if (agent.ready) {
          const { endpoint: _endpoint, ...away } = agent;
          this.emit({ type: "lost", agent: { ...away, ready: false }, reason: "agent stopping" });
        }
        try {
          await agentProcess.stop();
        } finally {
          this.stopping.delete(name);
        }
        this.emit({ type: "removed", agent: { ...agent, ready: false } });
      }),
    );
  }

  listAgents(pool?: PoolRef): FleetAgent[] {
    return [...this.agents.values()].filter((a) => !pool || (a.namespace === pool.namespace && a.pool === pool.pool)).map((a) => ({ ...a }));
  }

  subscribe(listener: AgentFleetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Lost agents are no longer restarted: the control plane's close() begins with it, and stops the
   * fleet last. An agent restarted meanwhile would only get SIGTERM while it starts.
   */
  holdRestarts(): void {
    this.restartsHeld = true;
    for (const agentProcess of this.processes.values()) agentProcess.holdRestarts?.();
  }

  async stop(): Promise<void> {
    const processes = [...this.processes.values()];
    this.processes.clear();
    this.agents.clear();
    await Promise.all(processes.map((p) => p.stop()));
  }

  private add(ref: PoolRef, name: string, pool?: SandboxPool): void {
    const { options } = this;
    const base: FleetAgent = {
      name,
      namespace: ref.namespace,
      pool: ref.pool,
      ready: false,
      hostIP: "127.0.0.1",
      ...(pool ? { templateHash: this.templateHash(pool) } : {}),
    };
    const current = (): FleetAgent | undefined => (this.processes.get(name) === agentProcess ? this.agents.get(name) : undefined);
    const events: LocalAgentEvents = {
      onReady: (agent, status) => {
        if (!current()) return;
        const ready = { ...base, ready: true as const, endpoint: agent.endpoint, nodeName: status.nodeName, ...(agent.pid ? { pid: agent.pid } : {}) };
        this.agents.set(name, ready);
        this.emit({ type: "ready", agent: ready });
      },
      onHeartbeat: () => undefined,
      onLost: (_agent, reason) => {
        const previous = current();
        if (!previous) return;
        const lost = { ...base, ...(previous.nodeName ? { nodeName: previous.nodeName } : {}) };
        this.agents.set(name, lost);
        this.emit({ type: "lost", agent: lost, reason });
      },
    };
    const settings: LocalAgentSettings = {
      name,
      namespace: ref.namespace,
      pool: ref.pool,
      stateDir: join(options.dataDir, "agents", name),
      agentToken: options.agentToken,
      containerdSocket: options.containerdSocket,
      containerdNamespace: options.containerdNamespace,
      cgroupParent: options.cgroupRoot ? `/${options.cgroupRoot}/${name}` : "",
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      ...(options.agentRestartDelayMs !== undefined ? { restartDelayMs: options.agentRestartDelayMs } : {}),
      env: { ...options.agentEnv, ...(pool ? poolAgentEnv(pool) : {}) },
      registryConfigPath: registryConfigPath(options.dataDir),
      ...(options.metrics ? { metrics: options.metrics } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      logger: options.logger,
    };
    const agentProcess = options.createProcess ? options.createProcess(settings, events) : new LocalAgentProcess(settings, events);
    this.processes.set(name, agentProcess);
    this.agents.set(name, base);
    agentProcess.start();
    if (this.restartsHeld) agentProcess.holdRestarts?.();
  }

  /** Asynchronously: never inside the call that caused the change. */
  private emit(event: AgentFleetEvent): void {
    for (const listener of this.listeners) {
      queueMicrotask(() => {
        try {
          listener(event);
        } catch (error) {
          this.options.logger.error({ err: error, event: event.type, agent: event.agent.name }, "an agent fleet listener failed");
        }
      });
    }
  }
}
