/**
 * Connections to the agents an `AgentFleet` reports (Kubernetes mode: agent Pods): one client per
 * ready agent, a heartbeat (`Status`) every `heartbeatIntervalMs`, and from it what the core needs —
 * the `AgentObserver` of the sandbox reconciler (connectivity and the last report), the
 * `AgentClients` of the fast path, and the agents' images in the registry (image affinity).
 *
 * An agent is connected from its first answered heartbeat after the fleet reported it ready, and
 * stops being so when the fleet reports it lost or removed, or after `missedHeartbeats` heartbeats
 * in a row went unanswered. `onConnected` runs at each (re)connection with the first report
 * (adoption), `onStatus` with every report (facts the agent saw).
 *
 * Agents are known by name, and a Pod's name is unique only within its namespace: a sandbox whose
 * agent is gone may name a Pod of another namespace that took the name since (kubernetes-agent-fleet.ts).
 * Asked about an agent for a sandbox of a namespace (`namespace`), an agent of another namespace is
 * answered as one not there: no client (the call fails as unavailable and is tried again), it does
 * not exist, no connectivity nor status; each such mismatch is logged once.
 */
import type { Logger } from "pino";
import { systemClock, type Clock } from "../controller/clock.js";
import type { AgentClient, AgentStatus } from "../agent-client/agent-client.js";
import type { AgentClients } from "../fastpath/sandbox-manager.js";
import type { AgentObserver } from "../reconcile/sandbox-reconciler.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { AgentFleet, AgentFleetEvent, FleetAgent, ReadyAgent } from "./agent-fleet.js";
import { AgentHeartbeat } from "./agent-heartbeat.js";

export interface AgentConnectionsOptions {
  fleet: AgentFleet;
  registry: AgentRegistry;
  /** Makes the client of `agent` at `endpoint` (which token it is called with is the factory's business: agent-token.ts). */
  connect(endpoint: string, agent: ReadyAgent): AgentClient;
  logger: Logger;
  /** @default 2000 */
  heartbeatIntervalMs?: number;
  /** Unanswered heartbeats in a row after which an agent counts as not connected. @default 3 */
  missedHeartbeats?: number;
  /** Runs when an agent (re)connects, with its first report; the agent is placed on only after it resolves. */
  onConnected?(agentName: string, status: AgentStatus): Promise<void>;
  /** Runs with every report. */
  onStatus?(agentName: string, status: AgentStatus): Promise<void>;
  /** Counts each heartbeat's result. */
  metrics?: { heartbeat(agent: string, ok: boolean): void };
  /** Times the heartbeats and the connectivity. @default systemClock */
  clock?: Clock;
}

interface Connection {
  agent: ReadyAgent;
  client: AgentClient;
  connected: boolean;
  since: Date;
  /** The last status, when it arrived, and when it was asked for. */
  observed?: { status: AgentStatus; at: Date; askedAt: Date };
  heartbeat: AgentHeartbeat;
  /** The onConnected of the current connection has finished. */
  adopted: boolean;
  /** Its last status said it is retired (it refuses creates until it is stopped). */
  retired?: boolean;
}

export class AgentConnections implements AgentObserver, AgentClients {
  private readonly options: AgentConnectionsOptions;
  private readonly clock: Clock;
  private readonly connections = new Map<string, Connection>();
  /** Agents the fleet reported lost (not removed): they exist, unconnected, since then. */
  private readonly away = new Map<string, { since: Date; namespace: string }>();
  /** Mismatches logged (`<agent's namespace>/<agent> <sandbox's namespace>`), until the agent is removed. */
  private readonly mismatches = new Set<string>();
  private readonly listeners = new Set<(agentName: string) => void>();
  private readonly reportListeners = new Set<(agentName: string) => void>();
  private unsubscribe: (() => void) | undefined;
  private stopped = false;

  constructor(options: AgentConnectionsOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
  }

  /** Follows the fleet from now on; agents it already reports ready are connected at once. */
  start(): void {
    this.unsubscribe = this.options.fleet.subscribe((event) => this.fleetChanged(event));
    for (const agent of this.options.fleet.listAgents()) {
      if (agent.ready && agent.endpoint) this.open({ ...agent, ready: true, endpoint: agent.endpoint });
      else this.away.set(agent.name, { since: this.clock.now(), namespace: agent.namespace });
    }
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    for (const connection of this.connections.values()) this.close(connection);
    this.connections.clear();
  }

  get(agentName: string, namespace?: string): AgentClient | undefined {
    const connection = this.connections.get(agentName);
    return connection && this.serves(connection.agent, namespace) ? connection.client : undefined;
  }

  fleetAgents(): readonly FleetAgent[] {
    return this.options.fleet.listAgents();
  }

  /** Whether the fleet still has the agent (connected or not): its Pod exists. */
  exists(agentName: string, namespace?: string): boolean {
    const connection = this.connections.get(agentName);
    if (connection) return this.serves(connection.agent, namespace);
    const agent = this.options.fleet.listAgents().find((candidate) => candidate.name === agentName);
    return agent !== undefined && this.serves(agent, namespace);
  }

  agentConnectivity(name: string, namespace?: string): { connected: boolean; since: Date } | undefined {
    const connection = this.connections.get(name);
    if (connection) {
      if (!this.serves(connection.agent, namespace)) return undefined;
      return { connected: connection.connected && connection.adopted, since: connection.since };
    }
    const away = this.away.get(name);
    return away && this.serves({ name, namespace: away.namespace }, namespace) ? { connected: false, since: away.since } : undefined;
  }

  observedStatus(name: string, namespace?: string): { status: AgentStatus; at: Date; askedAt: Date } | undefined {
    const connection = this.connections.get(name);
    return connection?.connected && this.serves(connection.agent, namespace) ? connection.observed : undefined;
  }

  /** Whether the agent may serve a sandbox of `namespace` (undefined: the agent itself is asked about); a mismatch is logged once. */
  private serves(agent: { name: string; namespace: string }, namespace: string | undefined): boolean {
    if (namespace === undefined || agent.namespace === namespace) return true;
    const mismatch = `${agent.namespace}/${agent.name} ${namespace}`;
    if (!this.mismatches.has(mismatch)) {
      this.mismatches.add(mismatch);
      this.options.logger.warn(
        { agent: agent.name, agentNamespace: agent.namespace, namespace },
        "a sandbox names an agent of another namespace: nothing of it is sent there (its agent counts as not there)",
      );
    }
    return false;
  }

  onAgentChanged(listener: (agentName: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Calls `listener` with an agent's name after each status it reports while connected (`observedStatus` is that status); returns the unsubscribe function. */
  onAgentReported(listener: (agentName: string) => void): () => void {
    this.reportListeners.add(listener);
    return () => this.reportListeners.delete(listener);
  }

  /** Names of the agents connected now. */
  connectedAgents(): string[] {
    return [...this.connections.values()].filter((c) => c.connected && c.adopted).map((c) => c.agent.name);
  }

  private fleetChanged(event: AgentFleetEvent): void {
    if (this.stopped) return;
    const { agent } = event;
    if (event.type === "ready") {
      const current = this.connections.get(agent.name);
      if (current && current.agent.endpoint === event.agent.endpoint) return;
      if (current) this.drop(current, "its endpoint changed");
      this.open(event.agent);
      return;
    }
    const current = this.connections.get(agent.name);
    if (current) this.drop(current, event.type === "lost" ? event.reason : "removed from the fleet");
    if (event.type === "lost") this.away.set(agent.name, { since: this.away.get(agent.name)?.since ?? this.clock.now(), namespace: agent.namespace });
    else {
      this.away.delete(agent.name);
      for (const mismatch of this.mismatches) if (mismatch.startsWith(`${agent.namespace}/${agent.name} `)) this.mismatches.delete(mismatch);
    }
    this.changed(agent.name);
  }

  private open(agent: ReadyAgent): void {
    const client = this.options.connect(agent.endpoint, agent);
    const connection: Connection = {
      agent,
      client,
      connected: false,
      since: this.away.get(agent.name)?.since ?? this.clock.now(),
      adopted: false,
      heartbeat: new AgentHeartbeat({
        clock: this.clock,
        intervalMs: this.options.heartbeatIntervalMs ?? 2000,
        client: () => client,
        onAnswer: (status, askedAt) => this.answered(connection, status, askedAt),
        // A busy agent answered (its containerd is slow): alive, but with nothing new to observe.
        onBusy: () => this.options.metrics?.heartbeat(agent.name, false),
        onMissed: (consecutive, error) => this.missed(connection, consecutive, error),
      }),
    };
    this.connections.set(agent.name, connection);
    this.away.delete(agent.name);
    connection.heartbeat.start({ beatNow: true });
  }

  private drop(connection: Connection, reason: string): void {
    this.close(connection);
    this.connections.delete(connection.agent.name);
    if (connection.connected) this.options.logger.warn({ agent: connection.agent.name, reason }, "agent disconnected");
  }

  private close(connection: Connection): void {
    connection.heartbeat.stop();
    connection.client.close();
  }

  private missed(connection: Connection, consecutive: number, error: unknown): void {
    const name = connection.agent.name;
    if (this.connections.get(name) !== connection) return;
    this.options.metrics?.heartbeat(name, false);
    if (!connection.connected || consecutive < (this.options.missedHeartbeats ?? 3)) return;
    connection.connected = false;
    connection.since = this.clock.now();
    this.options.logger.warn({ err: error, agent: name, failures: consecutive }, "agent does not answer its heartbeats");
    if (this.options.registry.getAgent(name)?.ready) this.options.registry.setAgentReady(name, false);
    this.changed(name);
  }

  private answered(connection: Connection, status: AgentStatus, askedAt: Date): void {
    const name = connection.agent.name;
    if (this.connections.get(name) !== connection) return;
    this.options.metrics?.heartbeat(name, true);
    connection.observed = { status, at: this.clock.now(), askedAt };
    if (this.options.registry.getAgent(name)) this.options.registry.setImages(name, status.images);
    const retired = status.retired === true;
    if (retired !== (connection.retired ?? false)) {
      connection.retired = retired;
      // Retired by the leader, which stops it next: no placement here either (another replica's
      // create would be refused). Its pool's controller takes it back if the retirement is lifted.
      if (retired && this.options.registry.getAgent(name)?.ready) this.options.registry.setAgentReady(name, false);
      if (connection.connected) this.changed(name);
    }
    if (!connection.connected) {
      connection.connected = true;
      connection.since = this.clock.now();
      connection.adopted = false;
      this.options.logger.info({ agent: name, endpoint: connection.agent.endpoint }, "agent connected");
      const adopt = this.options.onConnected?.(name, status) ?? Promise.resolve();
      void adopt
        .catch((error: unknown) => this.options.logger.error({ err: error, agent: name }, "could not adopt all of the agent's sandboxes"))
        .finally(() => {
          if (this.connections.get(name) !== connection) return;
          connection.adopted = true;
          this.changed(name);
        });
      return;
    }
    this.options
      .onStatus?.(name, status)
      .catch((error: unknown) => this.options.logger.warn({ err: error, agent: name }, "could not record the agent's status"));
    for (const listener of this.reportListeners) {
      try {
        listener(name);
      } catch (error) {
        this.options.logger.error({ err: error, agent: name }, "agent report listener failed");
      }
    }
  }

  private changed(agentName: string): void {
    for (const listener of this.listeners) {
      try {
        listener(agentName);
      } catch (error) {
        this.options.logger.error({ err: error, agent: agentName }, "agent change listener failed");
      }
    }
  }
}
