import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import type { AgentStatus } from "../agent-client/agent-client.js";
import type { AgentFleetEvent } from "../fleet/agent-fleet.js";
import { EmbeddedAgentFleet, agentName, type AgentProcess, type ExistingAgent } from "./embedded-agent-fleet.js";
import type { LocalAgentEvents, LocalAgentSettings } from "./local-agent-process.js";

class FakeProcess implements AgentProcess {
  started = false;
  stopped = false;
  restartsHeld = false;
  endpoint = "";
  pid: number | undefined = undefined;
  /** Resolves the stop() in flight; stop() resolves at once unless `holdStop` is set first. */
  holdStop = false;
  finishStop: () => void = () => undefined;
  constructor(
    readonly settings: LocalAgentSettings,
    readonly events: LocalAgentEvents,
  ) {}
  get name(): string {
    return this.settings.name;
  }
  start(): void {
    this.started = true;
  }
  stop(): Promise<void> {
    this.stopped = true;
    if (!this.holdStop) return Promise.resolve();
    return new Promise((resolve) => (this.finishStop = resolve));
  }
  kill(): void {
    this.die("killed");
  }
  holdRestarts(): void {
    this.restartsHeld = true;
  }
  answer(endpoint: string): void {
    this.endpoint = endpoint;
    this.events.onReady(this, { nodeName: "host-1", images: [] } as unknown as AgentStatus);
  }
  die(reason: string): void {
    this.events.onLost(this, reason);
  }
}

function pool(name: string, namespace = "default"): SandboxPool {
  return { apiVersion: API_VERSION, kind: "SandboxPool", metadata: { name, namespace }, spec: { capacity: { poolMin: 0, poolMax: 4 }, maxSandboxesPerPod: 2 } };
}

function fleetWithFakes(existing: readonly ExistingAgent[] = []): {
  fleet: EmbeddedAgentFleet;
  processes: Map<string, FakeProcess>;
  events: AgentFleetEvent[];
} {
  const processes = new Map<string, FakeProcess>();
  const fleet = new EmbeddedAgentFleet({
    existingAgents: () => Promise.resolve(existing),
    dataDir: "/tmp/fsb-embedded-fleet-spec",
    agentToken: "t",
    containerdSocket: "/run/containerd/containerd.sock",
    containerdNamespace: "fast-sandbox",
    cgroupRoot: "",
    heartbeatIntervalMs: 1000,
    logger: pino({ level: "silent" }),
    createProcess: (settings, events) => {
      const fake = new FakeProcess(settings, events);
      processes.set(settings.name, fake);
      return fake;
    },
  });
  const events: AgentFleetEvent[] = [];
  fleet.subscribe((event) => events.push(event));
  return { fleet, processes, events };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("EmbeddedAgentFleet", () => {
  it("records on each agent the hash of what its pool's spec gave its process (prepared instances, limits), which a spec change moves", async () => {
    const { fleet, processes } = fleetWithFakes();
    const first = { ...pool("py"), spec: { ...pool("py").spec, image: "python:3.12", preparedInstances: 1 } };
    await fleet.startAgents(first, 1);
    const started = fleet.templateHash(first);
    assert.equal(fleet.listAgents()[0]?.templateHash, started);
    assert.equal(processes.get("py-0")?.settings.env?.FSB_PREPARED_INSTANCES, "1");
    const more = { ...first, spec: { ...first.spec, preparedInstances: 2 } };
    assert.notEqual(fleet.templateHash(more), started, "prepared instances reach the agent only at its start");
    const limited = { ...first, spec: { ...first.spec, agentTemplate: { spec: { containers: [{ name: "agent", resources: { limits: { cpu: "1" } } }] } } } };
    assert.notEqual(fleet.templateHash(limited), started, "so do its limits");
    const resized = { ...first, spec: { ...first.spec, maxSandboxesPerPod: 3, capacity: { poolMin: 1, poolMax: 9 } } };
    assert.equal(fleet.templateHash(resized), started, "slots and capacity do not reach the process");
    await fleet.startAgents(more, 1);
    assert.equal(fleet.listAgents().find((agent) => agent.name === "py-1")?.templateHash, fleet.templateHash(more));
  });

  it("starts agents under the lowest free ordinals of the pool, namespaced outside the default namespace", async () => {
    const { fleet, processes } = fleetWithFakes();
    assert.deepEqual(await fleet.startAgents(pool("py"), 2), ["py-0", "py-1"]);
    assert.deepEqual(await fleet.startAgents(pool("py", "team-a"), 1), ["team-a.py-0"]);
    await fleet.stopAgents({ namespace: "default", pool: "py" }, ["py-0"]);
    assert.deepEqual(await fleet.startAgents(pool("py"), 2), ["py-0", "py-2"]);
    assert.ok([...processes.values()].every((p) => p.started));
    assert.equal(processes.get("py-1")?.settings.stateDir, "/tmp/fsb-embedded-fleet-spec/agents/py-1");
  });

  it("reports an agent ready with its endpoint when it answers, lost when it dies, ready again after its restart — never synchronously", async () => {
    const { fleet, processes, events } = fleetWithFakes();
    await fleet.startAgents(pool("py"), 1);
    const agent = processes.get("py-0");
    assert.ok(agent);
    agent.answer("127.0.0.1:40001");
    assert.equal(events.length, 0, "delivered after the call, not inside it");
    await settle();
    assert.deepEqual(events.at(-1), {
      type: "ready",
      agent: {
        name: "py-0",
        namespace: "default",
        pool: "py",
        ready: true,
        endpoint: "127.0.0.1:40001",
        nodeName: "host-1",
        hostIP: "127.0.0.1",
        templateHash: fleet.templateHash(pool("py")),
      },
    });
    agent.die("agent process exited (SIGKILL)");
    await settle();
    assert.equal(events.at(-1)?.type, "lost");
    assert.equal(fleet.listAgents({ namespace: "default", pool: "py" })[0]?.ready, false);
    agent.answer("127.0.0.1:40002");
    await settle();
    assert.equal(events.at(-1)?.type === "ready" && events.at(-1)?.agent.endpoint, "127.0.0.1:40002");
  });

  it("reports a ready agent lost as soon as its stop begins, and removed once its process is gone", async () => {
    const { fleet, processes, events } = fleetWithFakes();
    await fleet.startAgents(pool("py"), 1);
    const agent = processes.get("py-0");
    assert.ok(agent);
    agent.answer("127.0.0.1:40001");
    await settle();
    agent.holdStop = true;
    const stopping = fleet.stopAgents({ namespace: "default", pool: "py" }, ["py-0"]);
    await settle();
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.agent.name}`),
      ["ready py-0", "lost py-0"],
      "lost while its process still stops: its server closes meanwhile",
    );
    const lost = events.at(-1);
    assert.ok(lost?.type === "lost");
    assert.equal(lost.agent.endpoint, undefined);
    assert.equal(lost.reason, "agent stopping");
    agent.finishStop();
    await stopping;
    await settle();
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.agent.name}`),
      ["ready py-0", "lost py-0", "removed py-0"],
    );
  });

  it("stops only named agents of the given pool, reports them removed, and ignores what a stopped process still says", async () => {
    const { fleet, processes, events } = fleetWithFakes();
    await fleet.startAgents(pool("py"), 2);
    await fleet.startAgents(pool("go"), 1);
    await fleet.stopAgents({ namespace: "default", pool: "py" }, ["py-1", "go-0", "py-9"]);
    await settle();
    assert.equal(processes.get("py-1")?.stopped, true);
    assert.equal(processes.get("go-0")?.stopped, false, "another pool's agent is not stopped");
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.agent.name}`),
      ["removed py-1"],
    );
    processes.get("py-1")?.answer("127.0.0.1:1");
    await settle();
    assert.equal(events.length, 1);
    assert.deepEqual(
      fleet.listAgents().map((a) => a.name),
      ["py-0", "go-0"],
    );
    await fleet.stop();
    assert.ok([...processes.values()].every((p) => p.stopped));
  });

  it("starts again at start() the agents sandboxes are placed on, under their names, and sizes new ones around them", async () => {
    const { fleet, processes } = fleetWithFakes([
      { namespace: "default", pool: "py", name: "py-1" },
      { namespace: "team-a", pool: "go", name: "team-a.go-4" },
    ]);
    await fleet.start();
    assert.deepEqual([...processes.keys()].sort(), ["py-1", "team-a.go-4"]);
    assert.ok([...processes.values()].every((p) => p.started));
    assert.deepEqual(
      fleet.listAgents({ namespace: "team-a", pool: "go" }).map((a) => a.name),
      ["team-a.go-4"],
    );
    assert.deepEqual(await fleet.startAgents(pool("py"), 2), ["py-0", "py-2"]);
    await fleet.stop();
  });

  it("holdRestarts() holds the restarts of every agent process, also of one started after it, before stop()", async () => {
    const { fleet, processes } = fleetWithFakes();
    await fleet.startAgents(pool("py"), 2);
    fleet.holdRestarts();
    assert.deepEqual(
      [...processes.values()].map((p) => [p.name, p.restartsHeld, p.stopped]),
      [
        ["py-0", true, false],
        ["py-1", true, false],
      ],
    );
    await fleet.startAgents(pool("py"), 1);
    assert.equal(processes.get("py-2")?.restartsHeld, true);
    await fleet.stop();
  });

  it("does not reuse the name of an agent whose process is still stopping", async () => {
    const { fleet, processes } = fleetWithFakes();
    await fleet.startAgents(pool("py"), 1);
    const first = processes.get("py-0")!;
    first.holdStop = true;
    const stopping = fleet.stopAgents({ namespace: "default", pool: "py" }, ["py-0"]);
    await settle();
    assert.deepEqual(await fleet.startAgents(pool("py"), 1), ["py-1"], "py-0 is still on its way out");
    first.finishStop();
    await stopping;
    assert.deepEqual(await fleet.startAgents(pool("py"), 1), ["py-0"]);
    await fleet.stop();
  });
});

describe("agentName", () => {
  it("is <pool>-<n> in the default namespace", () => {
    assert.equal(agentName("default", "python", 0), "python-0");
    assert.equal(agentName("default", "python", 12), "python-12");
  });

  it("is <namespace>.<pool>-<n> elsewhere, so equal pool names in two namespaces do not collide", () => {
    assert.equal(agentName("team-a", "python", 3), "team-a.python-3");
    assert.notEqual(agentName("team-a", "python", 0), agentName("team-b", "python", 0));
    assert.notEqual(agentName("team-a", "python", 0), agentName("default", "python", 0));
  });
});
