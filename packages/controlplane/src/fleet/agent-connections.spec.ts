import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import { BusyError, type SandboxStats } from "@fast-sandbox/api";
import type { AgentClient, AgentSandbox, AgentStatus, ExecEvent, PullProgress } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { AgentConnections, type AgentConnectionsOptions } from "./agent-connections.js";
import type { AgentFleet, AgentFleetEvent, AgentFleetListener, FleetAgent, ReadyAgent } from "./agent-fleet.js";

const NAMESPACE = "team";
const POOL = "python";
const AGENT = "python-agent-0";
const HEARTBEAT_MS = 20;

/** A fleet whose agents and events the test sets by hand. */
class FakeFleet implements AgentFleet {
  readonly agents = new Map<string, FleetAgent>();
  private readonly listeners = new Set<AgentFleetListener>();

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async startAgents(): Promise<string[]> {
    return [];
  }
  async stopAgents(): Promise<void> {}
  templateHash(): string {
    return "";
  }

  listAgents(): FleetAgent[] {
    return [...this.agents.values()].map((agent) => ({ ...agent }));
  }

  subscribe(listener: AgentFleetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  /** The agent exists (listed), not ready. */
  add(name: string): void {
    this.agents.set(name, { name, namespace: NAMESPACE, pool: POOL, ready: false });
  }

  ready(name: string, endpoint: string): void {
    const agent: ReadyAgent = { name, namespace: NAMESPACE, pool: POOL, ready: true, endpoint, hostIP: "10.1.0.1", nodeName: "node-0" };
    this.agents.set(name, agent);
    this.emit({ type: "ready", agent: { ...agent } });
  }

  lose(name: string, reason = "Pod is not ready"): void {
    const agent: FleetAgent = { name, namespace: NAMESPACE, pool: POOL, ready: false };
    this.agents.set(name, agent);
    this.emit({ type: "lost", agent: { ...agent }, reason });
  }

  remove(name: string): void {
    const agent = this.agents.get(name) ?? { name, namespace: NAMESPACE, pool: POOL, ready: false };
    this.agents.delete(name);
    this.emit({ type: "removed", agent: { ...agent } });
  }

  emit(event: AgentFleetEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

/** An agent client whose heartbeats answer, fail or hang as the test says; it counts them. */
class FakeAgentClient implements AgentClient {
  mode: "answer" | "fail" | "busy" = "answer";
  images: string[] = [];
  retired = false;
  statusCalls = 0;
  answered = 0;
  closed = false;

  constructor(readonly endpoint: string) {}

  async status(): Promise<AgentStatus> {
    this.statusCalls += 1;
    if (this.mode === "fail") throw new Error(`agent at ${this.endpoint} does not answer`);
    if (this.mode === "busy") throw new BusyError("containerd did not list this agent's sandboxes and images within 1500 ms");
    this.answered += 1;
    return agentStatus({ images: [...this.images], pid: this.answered, ...(this.retired ? { retired: true } : {}) });
  }

  async createSandbox(): Promise<AgentSandbox> {
    throw new Error("not used");
  }

  async deleteSandbox(): Promise<void> {
    throw new Error("not used");
  }

  async listSandboxes(): Promise<AgentSandbox[]> {
    return [];
  }

  async retire(): Promise<{ retired: boolean; sandboxes: number }> {
    throw new Error("not used");
  }

  async stats(): Promise<SandboxStats> {
    throw new Error("not used");
  }

  async statsHistory(): Promise<SandboxStats[]> {
    throw new Error("not used");
  }

  async *logs(): AsyncIterable<Uint8Array> {}

  async *exec(): AsyncIterable<ExecEvent> {}

  async *pullImage(): AsyncIterable<PullProgress> {}

  close(): void {
    this.closed = true;
  }
}

function agentStatus(overrides: Partial<AgentStatus> = {}): AgentStatus {
  return {
    name: AGENT,
    namespace: NAMESPACE,
    pool: POOL,
    nodeName: "node-0",
    images: [],
    sandboxes: [],
    pid: 1,
    ...overrides,
  };
}

/** A promise and its resolve/reject, for an onConnected the test finishes when it wants. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (error: Error) => void } {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("AgentConnections", () => {
  let fleet: FakeFleet;
  let registry: AgentRegistry;
  let clock: FakeClock;
  let clients: FakeAgentClient[];
  let changes: string[];
  let connectedCalls: { agent: string; status: AgentStatus }[];
  let statusCalls: { agent: string; status: AgentStatus }[];
  let heartbeats: { agent: string; ok: boolean }[];
  let adoption: ((agentName: string) => Promise<void>) | undefined;
  let connections: AgentConnections;

  beforeEach(() => {
    fleet = new FakeFleet();
    registry = new AgentRegistry();
    clock = new FakeClock();
    clients = [];
    changes = [];
    connectedCalls = [];
    statusCalls = [];
    heartbeats = [];
    adoption = undefined;
  });

  afterEach(() => {
    connections?.stop();
  });

  function startConnections(overrides: Partial<AgentConnectionsOptions> = {}): AgentConnections {
    connections = new AgentConnections({
      fleet,
      registry,
      clock,
      logger: pino({ level: "silent" }),
      heartbeatIntervalMs: HEARTBEAT_MS,
      missedHeartbeats: 3,
      connect: (endpoint) => {
        const client = new FakeAgentClient(endpoint);
        clients.push(client);
        return client;
      },
      onConnected: async (agent, status) => {
        connectedCalls.push({ agent, status });
        await adoption?.(agent);
      },
      onStatus: async (agent, status) => {
        statusCalls.push({ agent, status });
      },
      metrics: { heartbeat: (agent, ok) => heartbeats.push({ agent, ok }) },
      ...overrides,
    });
    connections.onAgentChanged((name) => changes.push(name));
    connections.start();
    return connections;
  }

  function registerAgent(name = AGENT): void {
    registry.upsertAgent({ name, namespace: NAMESPACE, pool: POOL, endpoint: "10.1.0.1:7071", capacity: 2, hostIP: "10.1.0.1", images: [] });
  }

  /**
   * Moves the clock on one heartbeat interval at a time, letting each heartbeat's answer arrive,
   * until `condition` holds; fails after 100 intervals. Heartbeats run on the FakeClock: no real waits.
   */
  async function waitFor(condition: () => boolean, what: string): Promise<void> {
    for (let beats = 0; !condition(); beats++) {
      if (beats >= 100) assert.fail(`not ${what} after 100 heartbeat intervals`);
      await clock.advanceAsync(HEARTBEAT_MS);
    }
  }

  const connected = (name = AGENT) => connections.agentConnectivity(name)?.connected === true;
  const clientAt = (endpoint: string) => clients.find((c) => c.endpoint === endpoint) ?? assert.fail(`no client for ${endpoint}`);

  it("connects an agent the fleet already lists as ready: connected after its first answered heartbeat and once onConnected resolved", async () => {
    const adopted = deferred();
    adoption = () => adopted.promise;
    fleet.ready(AGENT, "10.1.0.1:7071");
    const t0 = clock.now();
    startConnections();
    assert.equal(clients.length, 1);
    assert.equal(connections.get(AGENT), clients[0], "the fast path gets the client at once");

    await waitFor(() => connectedCalls.length === 1, "onConnected runs");
    assert.equal(connectedCalls[0]?.agent, AGENT);
    assert.equal(connectedCalls[0]?.status.pid, 1, "with the first report");
    assert.deepEqual(connections.agentConnectivity(AGENT), { connected: false, since: t0 }, "not before its sandboxes are adopted");
    assert.deepEqual(connections.connectedAgents(), []);
    assert.deepEqual(changes, []);

    clock.advance(1000);
    adopted.resolve();
    await waitFor(() => connected(), "the agent is connected");
    assert.deepEqual(changes, [AGENT]);
    assert.deepEqual(connections.connectedAgents(), [AGENT]);
    assert.equal(connections.agentConnectivity(AGENT)?.since.getTime(), t0.getTime(), "connected since its first answer");
    assert.ok(connections.observedStatus(AGENT));
    assert.ok(heartbeats.some((h) => h.agent === AGENT && h.ok));
  });

  it("connects an agent the fleet reports ready later, and says an unready listed agent exists but is not connected", async () => {
    fleet.add(AGENT);
    startConnections();
    assert.equal(clients.length, 0);
    assert.deepEqual(connections.agentConnectivity(AGENT), { connected: false, since: clock.now() });
    assert.equal(connections.agentConnectivity("unknown"), undefined);
    assert.equal(connections.get(AGENT), undefined);

    fleet.ready(AGENT, "10.1.0.1:7071");
    await waitFor(() => connected(), "the agent is connected");
    assert.equal(clients.length, 1);
    assert.equal(clients[0]?.endpoint, "10.1.0.1:7071");
    assert.equal(connectedCalls.length, 1);
  });

  it("answers about an agent for a sandbox of another namespace as about one not there (a Pod named as a gone agent of that namespace), logged once", async () => {
    const warnings: unknown[][] = [];
    const logger = pino({ level: "silent" });
    logger.warn = (...args: unknown[]) => warnings.push(args);
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections({ logger });
    await waitFor(() => connected(), "the agent is connected");
    const ofItsNamespace = [
      connections.get(AGENT, NAMESPACE),
      connections.exists(AGENT, NAMESPACE),
      connections.agentConnectivity(AGENT, NAMESPACE)?.connected,
    ];
    assert.deepEqual(ofItsNamespace, [clients[0], true, true], "a sandbox of its namespace is served");
    assert.ok(connections.observedStatus(AGENT, NAMESPACE));
    const ofAnother = [
      connections.get(AGENT, "other"),
      connections.exists(AGENT, "other"),
      connections.agentConnectivity(AGENT, "other"),
      connections.observedStatus(AGENT, "other"),
    ];
    assert.deepEqual(ofAnother, [undefined, false, undefined, undefined], "a sandbox of another namespace: no client, no agent");
    assert.equal(connections.get(AGENT), clients[0], "asked about the agent itself: its client");
    assert.equal(warnings.length, 1, "the mismatch is logged once");
    assert.deepEqual(warnings[0]?.[0], { agent: AGENT, agentNamespace: NAMESPACE, namespace: "other" });

    fleet.lose(AGENT);
    await waitFor(() => !connected(), "the agent is lost");
    assert.equal(connections.agentConnectivity(AGENT, "other"), undefined, "away, it is still not the other namespace's");
    assert.equal(connections.agentConnectivity(AGENT, NAMESPACE)?.connected, false);
  });

  it("becomes connected even when onConnected fails (the failure is logged)", async () => {
    adoption = async () => {
      throw new Error("adoption failed");
    };
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    assert.equal(connectedCalls.length, 1);
  });

  it("puts the images an agent reports into the registry once the agent is registered", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    const client = clientAt("10.1.0.1:7071");
    client.images = ["python:3.12"];
    await waitFor(() => connected(), "the agent is connected");
    assert.equal(registry.getAgent(AGENT), undefined, "not registered: nothing to update, no error");

    registerAgent();
    await waitFor(() => registry.getAgent(AGENT)?.images.includes("python:3.12") === true, "the registry has the agent's images");
    client.images = ["python:3.12", "node:22"];
    await waitFor(() => registry.getAgent(AGENT)?.images.length === 2, "the registry follows the images");
    assert.deepEqual([...(registry.getAgent(AGENT)?.images ?? [])].sort(), ["node:22", "python:3.12"]);
  });

  it("marks an agent whose reports say it is retired unready at once, and says it changed both ways", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    registerAgent();
    await waitFor(() => connected(), "the agent is connected");
    assert.equal(registry.getAgent(AGENT)?.ready, true);
    changes = [];
    clientAt("10.1.0.1:7071").retired = true;
    await waitFor(() => registry.getAgent(AGENT)?.ready === false, "the retired agent unready");
    assert.deepEqual(changes, [AGENT], "its pool controller is told (it keeps it unready while retired)");
    assert.equal(connections.observedStatus(AGENT)?.status.retired, true);
    clientAt("10.1.0.1:7071").retired = false;
    await waitFor(() => changes.length === 2, "told again once the retirement is lifted");
  });

  it("calls onStatus with the reports after the first, and observedStatus is the latest", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => statusCalls.length >= 2, "two later reports arrive");
    assert.ok(statusCalls.every((call) => call.agent === AGENT));
    assert.ok(
      statusCalls.every((call) => call.status.pid > 1),
      "the first report goes to onConnected, not onStatus",
    );
    const pids = statusCalls.map((call) => call.status.pid);
    assert.deepEqual(
      pids,
      [...pids].sort((a, b) => a - b),
      "in order",
    );
    const latest = clientAt("10.1.0.1:7071").answered;
    await waitFor(() => (connections.observedStatus(AGENT)?.status.pid ?? 0) >= latest, "observedStatus catches up");
    assert.equal(connections.observedStatus(AGENT)?.at.getTime(), clock.now().getTime());
  });

  it("after missedHeartbeats unanswered heartbeats the agent is not connected and unready in the registry; it reconnects when it answers again", async () => {
    registerAgent();
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    changes.length = 0;
    const client = clientAt("10.1.0.1:7071");

    clock.advance(5000);
    client.mode = "fail";
    await waitFor(() => !connected(), "the agent counts as not connected");
    assert.ok(client.statusCalls - client.answered >= 3, "only after three heartbeats in a row went unanswered");
    assert.deepEqual(connections.agentConnectivity(AGENT), { connected: false, since: clock.now() });
    assert.equal(registry.getAgent(AGENT)?.ready, false);
    assert.equal(connections.observedStatus(AGENT), undefined);
    assert.deepEqual(connections.connectedAgents(), []);
    assert.deepEqual(changes, [AGENT]);
    assert.ok(heartbeats.some((h) => !h.ok));
    assert.equal(connections.get(AGENT), client, "the client is kept: the agent may answer again");
    assert.equal(client.closed, false);

    client.mode = "answer";
    await waitFor(() => connected(), "the agent is connected again");
    assert.equal(connectedCalls.length, 2, "onConnected runs at each reconnection");
    assert.equal(clients.length, 1);
  });

  it("sends a heartbeat at once and then every heartbeatIntervalMs on the clock, never two at a time", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    const client = clientAt("10.1.0.1:7071");
    assert.equal(client.statusCalls, 1, "the first one at once");
    await clock.advanceAsync(HEARTBEAT_MS - 1);
    assert.equal(client.statusCalls, 1);
    await clock.advanceAsync(1);
    assert.equal(client.statusCalls, 2);
    await clock.advanceAsync(HEARTBEAT_MS * 10);
    assert.equal(client.statusCalls, 12);

    // A heartbeat still unanswered when the next falls due: the next is skipped.
    let answer!: () => void;
    client.status = () => {
      client.statusCalls += 1;
      return new Promise((resolve) => (answer = () => resolve(agentStatus())));
    };
    await clock.advanceAsync(HEARTBEAT_MS * 5);
    assert.equal(client.statusCalls, 13);
    answer();
    await clock.advanceAsync(HEARTBEAT_MS);
    assert.equal(client.statusCalls, 14);

    connections.stop();
    assert.equal(clock.pendingTimers, 0, "stop() cancels the heartbeats");
  });

  it("a busy agent (it answers that its containerd is slow) stays connected and ready however long it lasts; its last report stays the observed one", async () => {
    registerAgent();
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    const client = clientAt("10.1.0.1:7071");
    const observed = connections.observedStatus(AGENT);
    client.mode = "busy";
    const before = client.statusCalls;
    await waitFor(() => client.statusCalls >= before + 10, "ten busy answers");
    assert.equal(connected(), true);
    assert.equal(registry.getAgent(AGENT)?.ready, true);
    assert.equal(connections.observedStatus(AGENT), observed);
    // Two unanswered heartbeats, then a busy answer: the count starts over, so two more do not disconnect it.
    client.mode = "fail";
    await waitFor(() => client.statusCalls >= before + 12, "two unanswered");
    client.mode = "busy";
    await waitFor(() => client.statusCalls >= before + 13, "a busy answer");
    client.mode = "fail";
    await waitFor(() => client.statusCalls >= before + 15, "two unanswered again");
    assert.equal(connected(), true);
  });

  it("stays connected while fewer than missedHeartbeats heartbeats in a row go unanswered", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections({ missedHeartbeats: 1_000_000 });
    await waitFor(() => connected(), "the agent is connected");
    const client = clientAt("10.1.0.1:7071");
    client.mode = "fail";
    const before = client.statusCalls;
    await waitFor(() => client.statusCalls >= before + 3, "three heartbeats go unanswered");
    assert.equal(connected(), true);
  });

  it("a lost agent is disconnected (client closed, since the loss); a removed one is gone", async () => {
    registerAgent();
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    changes.length = 0;
    const client = clientAt("10.1.0.1:7071");

    clock.advance(1000);
    fleet.lose(AGENT);
    assert.deepEqual(connections.agentConnectivity(AGENT), { connected: false, since: clock.now() });
    assert.equal(connections.get(AGENT), undefined);
    assert.equal(connections.observedStatus(AGENT), undefined);
    assert.equal(client.closed, true);
    assert.deepEqual(changes, [AGENT]);

    fleet.remove(AGENT);
    assert.equal(connections.agentConnectivity(AGENT), undefined);
    assert.deepEqual(changes, [AGENT, AGENT]);
  });

  it("removing a connected agent closes its client and forgets it", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    fleet.remove(AGENT);
    assert.equal(connections.agentConnectivity(AGENT), undefined);
    assert.equal(connections.get(AGENT), undefined);
    assert.equal(clientAt("10.1.0.1:7071").closed, true);
    assert.deepEqual(connections.connectedAgents(), []);
  });

  it("a lost agent that is ready again is not connected since its loss until it answers, then connected again", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    clock.advance(1000);
    const lostAt = clock.now();
    fleet.lose(AGENT);
    clock.advance(1000);
    const adopted = deferred();
    adoption = () => adopted.promise;
    fleet.ready(AGENT, "10.1.0.1:7071");
    assert.deepEqual(connections.agentConnectivity(AGENT), { connected: false, since: lostAt });
    assert.equal(clients.length, 2, "a new client for the new connection");
    adopted.resolve();
    await waitFor(() => connected(), "the agent is connected again");
    assert.equal(connectedCalls.length, 2);
  });

  it("opens a new client when the agent's endpoint changes and closes the old one; the same endpoint again changes nothing", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    await waitFor(() => connected(), "the agent is connected");
    const old = clientAt("10.1.0.1:7071");

    fleet.ready(AGENT, "10.1.0.1:7071");
    assert.equal(clients.length, 1, "same endpoint: same client");
    assert.equal(connected(), true);

    fleet.ready(AGENT, "10.1.0.2:7071");
    assert.equal(old.closed, true);
    assert.equal(clients.length, 2);
    const current = clientAt("10.1.0.2:7071");
    assert.equal(connections.get(AGENT), current);
    assert.equal(connected(), false, "not connected until the new endpoint answers");
    await waitFor(() => connected(), "connected at the new endpoint");
    assert.equal(connections.get(AGENT), current);
    assert.equal(current.closed, false);
    assert.equal(connectedCalls.length, 2);
  });

  it("stop() closes every client and ignores the fleet from then on", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    fleet.ready("python-agent-1", "10.1.0.2:7071");
    startConnections();
    await waitFor(() => connections.connectedAgents().length === 2, "both agents are connected");
    connections.stop();
    assert.ok(clients.every((client) => client.closed));
    assert.equal(fleet.subscribers, 0);
    assert.equal(connections.get(AGENT), undefined);
    assert.deepEqual(connections.connectedAgents(), []);

    fleet.emit({ type: "ready", agent: { name: "python-agent-2", namespace: NAMESPACE, pool: POOL, ready: true, endpoint: "10.1.0.3:7071" } });
    assert.equal(clients.length, 2);
  });

  it("unsubscribing from onAgentChanged stops the notices; a throwing listener does not stop the others", async () => {
    fleet.ready(AGENT, "10.1.0.1:7071");
    startConnections();
    const seen: string[] = [];
    const unsubscribe = connections.onAgentChanged((name) => seen.push(name));
    connections.onAgentChanged(() => {
      throw new Error("listener failed");
    });
    await waitFor(() => connected(), "the agent is connected");
    assert.deepEqual(seen, [AGENT]);
    assert.deepEqual(changes, [AGENT]);
    unsubscribe();
    fleet.lose(AGENT);
    assert.deepEqual(seen, [AGENT]);
    assert.deepEqual(changes, [AGENT, AGENT]);
  });
});
