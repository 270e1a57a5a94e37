import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pino } from "pino";
import { API_VERSION, NoCapacityError, UnavailableError } from "@fast-sandbox/api";
import {
  startEmbeddedControlPlane,
  type AgentProcessView,
  type AgentSandboxSpec,
  type AgentStatus,
  type LocalAgentEvents,
  type LocalAgentSettings,
} from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { SimulatedAgents } from "./simulated-agent.js";

function settings(name: string): LocalAgentSettings {
  return {
    name,
    namespace: "default",
    pool: "p",
    stateDir: "/nonexistent",
    agentToken: "t",
    containerdSocket: "/nonexistent",
    containerdNamespace: "n",
    cgroupParent: "",
    heartbeatIntervalMs: 1000,
    logger: pino({ level: "silent" }),
  };
}

/** Events recorded in order: `ready <endpoint>` and `lost <reason>`. */
function recorder(): { events: LocalAgentEvents; log: string[]; statuses: AgentStatus[] } {
  const log: string[] = [];
  const statuses: AgentStatus[] = [];
  return {
    log,
    statuses,
    events: {
      onReady: (agent: AgentProcessView, status: AgentStatus) => {
        log.push(`ready ${agent.endpoint}`);
        statuses.push(status);
      },
      onHeartbeat: () => undefined,
      onLost: (_agent, reason) => log.push(`lost ${reason}`),
    },
  };
}

function spec(sandboxId: string, overrides: Partial<AgentSandboxSpec> = {}): AgentSandboxSpec {
  return {
    sandboxId,
    namespace: "default",
    name: `sb-${sandboxId}`,
    image: "busybox",
    command: [],
    args: [],
    envs: [],
    runtimeType: "container",
    exposedPorts: [],
    network: { mode: "Isolated", egress: { policy: "allowAll" }, allowSandboxToSandbox: false },
    ...overrides,
  };
}

const turn = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

describe("SimulatedAgents", () => {
  it("serves an agent from the next turn after start, reporting its identity and images", async () => {
    const agents = new SimulatedAgents({ images: ["busybox"], nodeName: "node-1" });
    const { events, log, statuses } = recorder();
    const process = agents.createProcess(settings("p-0"), events);
    process.start();
    assert.deepEqual(log, []);
    await turn();
    assert.deepEqual(log, ["ready simulated:p-0#1"]);
    assert.equal(statuses[0]?.nodeName, "node-1");
    const status = await agents.connect("simulated:p-0#1").status();
    assert.deepEqual(
      { name: status.name, pool: status.pool, images: status.images, sandboxes: status.sandboxes },
      { name: "p-0", pool: "p", images: ["busybox", "docker.io/library/busybox:latest"], sandboxes: [] },
    );
    await process.stop();
  });

  it("admits creates up to the slots, answers a repeated sandbox id again and frees the slot on delete", async () => {
    const agents = new SimulatedAgents();
    const process = agents.createProcess(settings("p-0"), recorder().events);
    process.start();
    await turn();
    const client = agents.connect("simulated:p-0#1");
    const first = await client.createSandbox(spec("a", { slots: 2 }));
    assert.equal(first.state, "running");
    assert.match(first.address ?? "", /^10\.\d+\.\d+\.\d+$/);
    assert.deepEqual(await client.createSandbox(spec("a", { slots: 2 })), first);
    const second = await client.createSandbox(spec("b", { slots: 2 }));
    assert.notEqual(second.address, first.address);
    await assert.rejects(client.createSandbox(spec("c", { slots: 2 })), NoCapacityError);
    await client.deleteSandbox("a", 0);
    await client.createSandbox(spec("c", { slots: 2 }));
    assert.deepEqual((await client.listSandboxes()).map((s) => s.sandboxId).sort(), ["b", "c"]);
    assert.equal(agents.sandboxCount, 2);
    assert.ok((await client.status()).images.includes("docker.io/library/busybox:latest"), "a created sandbox's image is on the node");
  });

  it("reports the command of a sandbox running `true` as exited with code 0, and no other", async () => {
    const agents = new SimulatedAgents();
    const process = agents.createProcess(settings("p-0"), recorder().events);
    process.start();
    await turn();
    const client = agents.connect("simulated:p-0#1");
    await client.createSandbox(spec("a", { command: ["true"] }));
    await client.createSandbox(spec("b", { command: ["sleep", "60"] }));
    const reported = new Map((await client.status()).sandboxes.map((s) => [s.sandboxId, s.exitCode]));
    assert.deepEqual(
      [...reported],
      [
        ["a", 0],
        ["b", undefined],
      ],
    );
  });

  it("keeps a Shared sandbox's exposed ports exclusive on the agent, and gives it no address", async () => {
    const agents = new SimulatedAgents();
    const process = agents.createProcess(settings("p-0"), recorder().events);
    process.start();
    await turn();
    const client = agents.connect("simulated:p-0#1");
    const shared = { exposedPorts: [8080], network: { mode: "Shared" as const } };
    const created = await client.createSandbox(spec("a", shared));
    assert.equal(created.address, undefined);
    await assert.rejects(client.createSandbox(spec("b", shared)), /port 8080 is in use/);
    await client.createSandbox(spec("c", { exposedPorts: [8080] }));
    await client.deleteSandbox("a", 0);
    await client.createSandbox(spec("b", shared));
  });

  it("pulls an image into the node's images", async () => {
    const agents = new SimulatedAgents();
    const process = agents.createProcess(settings("p-0"), recorder().events);
    process.start();
    await turn();
    const client = agents.connect("simulated:p-0#1");
    const progress = [];
    for await (const step of client.pullImage("python:3.12")) progress.push(step.phase);
    assert.deepEqual(progress, ["done"]);
    assert.ok((await client.status()).images.includes("docker.io/library/python:3.12"));
  });

  it("a killed agent is lost, its connections fail, and it serves its sandboxes again at a new endpoint", async () => {
    const agents = new SimulatedAgents({ restartDelayMs: 5 });
    const { events, log } = recorder();
    const process = agents.createProcess(settings("p-0"), events);
    process.start();
    await turn();
    const old = agents.connect("simulated:p-0#1");
    await old.createSandbox(spec("a"));
    process.kill();
    assert.deepEqual(log, ["ready simulated:p-0#1", "lost simulated agent killed"]);
    await assert.rejects(old.status(), UnavailableError);
    await turn(20);
    assert.deepEqual(log.slice(2), ["ready simulated:p-0#2"]);
    assert.deepEqual(
      (await agents.connect("simulated:p-0#2").listSandboxes()).map((s) => s.sandboxId),
      ["a"],
    );
    await process.stop();
    await assert.rejects(agents.connect("simulated:p-0#2").status(), UnavailableError);
    assert.equal(agents.get("p-0")?.sandboxes.size, 1, "sandboxes outlive a stopped agent");
  });

  it("a closed connection fails its calls", async () => {
    const agents = new SimulatedAgents();
    const process = agents.createProcess(settings("p-0"), recorder().events);
    process.start();
    await turn();
    const client = agents.connect("simulated:p-0#1");
    client.close();
    await assert.rejects(client.status(), /connection closed/);
  });

  it("drives the embedded control plane: a pool's agents, creates through the API, placement by slots", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "fsb-simulated-agent-spec-"));
    const agents = new SimulatedAgents({ images: ["busybox"] });
    const controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token: "simulated-agent-spec-token",
      logger: pino({ level: "silent" }),
      agents,
      containerdSocket: "/nonexistent/containerd.sock",
      cgroupRoot: "",
      heartbeatIntervalMs: 200,
    });
    const client = new FastSandboxClient({ url: controlPlane.url, token: "simulated-agent-spec-token" });
    try {
      await client.pools.apply({
        apiVersion: API_VERSION,
        kind: "SandboxPool",
        metadata: { name: "sim", namespace: "default" },
        spec: { capacity: { poolMin: 3, poolMax: 3, bufferMin: 0 }, maxSandboxesPerPod: 2, image: "busybox" },
      });
      for (let i = 0; i < 6; i++) await client.sandboxes.create({ name: `s-${i}`, pool: "sim", image: "busybox", command: ["sleep", "60"] });
      await assert.rejects(client.sandboxes.create({ name: "s-6", pool: "sim", image: "busybox" }), /no capacity|poolMax/);
      const listed = await client.sandboxes.list();
      assert.equal(listed.length, 6);
      assert.ok(listed.every((sandbox) => sandbox.status?.phase === "Running"));
      assert.deepEqual(
        agents
          .list()
          .map((agent) => agent.sandboxes.size)
          .sort(),
        [2, 2, 2],
      );
      await client.sandboxes.delete("s-0", { gracePeriodMs: 0 });
      assert.equal(agents.sandboxCount, 5);
    } finally {
      client.close();
      await controlPlane.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
