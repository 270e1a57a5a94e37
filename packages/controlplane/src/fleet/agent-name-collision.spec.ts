/**
 * Agents are known by their Pod's name (the registry, the connections, `status.assignedPod`, the
 * proxy), and a Pod's name is unique only within its namespace: whoever may create Pods and a
 * SandboxPool in namespace B can make a Pod of B named as an agent Pod of namespace A. These specs
 * run the real fleet (over a fake API server), connections and sandbox manager, with agent clients
 * that record what reaches each Pod, and check that nothing about A's sandboxes goes to B's Pod.
 */
import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { API_VERSION, UnavailableError, type SandboxStats } from "@fast-sandbox/api";
import type { AgentCheckpoint, AgentCheckpointClient, AgentCheckpointRequest } from "../agent-client/agent-checkpoints.js";
import type { AgentClient, AgentSandbox, AgentStatus, ExecEvent, ExecRequest, PullProgress } from "../agent-client/agent-client.js";
import { CheckpointManager } from "../fastpath/checkpoint-manager.js";
import { SandboxPauses } from "../fastpath/checkpoint-pauses.js";
import { CLEANUP_FINALIZER, SandboxManager } from "../fastpath/sandbox-manager.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { AgentConnections } from "./agent-connections.js";
import { AGENT_POD_DEFAULTS } from "./agent-pod.js";
import { agentTokenOf, poolAgentToken, POOL_TOKEN_SCHEME } from "./agent-token.js";
import { agentsByName } from "./agent-fleet.js";
import { KubernetesAgentFleet } from "./kubernetes-agent-fleet.js";

const DEPLOYMENT_TOKEN = "the-deployment-token";
/** The name both Pods have: the agent Pod of team-a, and the Pod made in team-b to look like it. */
const AGENT = "python-agent-x7k2p";
const PORT = AGENT_POD_DEFAULTS.port;

/** A Pod of pool `python` of `namespace`, created at `created`, controlled by that pool. */
function agentPod(namespace: string, podIP: string, created: string, resourceVersion: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: AGENT,
      namespace,
      uid: `uid-${namespace}`,
      resourceVersion,
      creationTimestamp: created,
      labels: { "fast-sandbox.io/pool": "python", "fast-sandbox.io/agent-token": POOL_TOKEN_SCHEME },
      ownerReferences: [{ apiVersion: "sandbox.fast.io/v1alpha1", kind: "SandboxPool", name: "python", uid: `pool-${namespace}`, controller: true }],
    },
    spec: { containers: [{ name: "agent", image: "agent" }] },
    status: { phase: "Running", podIP, conditions: [{ type: "Ready", status: "True" }] },
  };
}

const podOfA = agentPod("team-a", "10.1.0.4", "2026-03-04T05:00:00Z", "5");
const podOfB = agentPod("team-b", "10.2.0.9", "2026-03-04T05:10:00Z", "8");

/** An API server whose Pod list is `pods` and whose watch events the test writes (`send`). */
async function apiServer(pods: unknown[]) {
  let watch: ServerResponse | undefined;
  const server = createServer((request, response) => {
    const query = new URL(request.url ?? "/", "http://x").searchParams;
    response.writeHead(200, { "content-type": "application/json" });
    if (query.get("watch") !== "true") {
      response.end(JSON.stringify({ apiVersion: "v1", kind: "PodList", metadata: { resourceVersion: "7" }, items: pods }));
      return;
    }
    response.flushHeaders();
    watch = response;
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    kubeConfig: testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    async send(type: "ADDED" | "DELETED", object: unknown): Promise<void> {
      await until("the fleet's watch", () => watch !== undefined);
      watch?.write(`${JSON.stringify({ type, object })}\n`);
    },
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** What reached one agent Pod (its endpoint), and with which token. */
class RecordingAgent implements AgentClient, AgentCheckpointClient {
  /** Every call but the heartbeat's status, by method. */
  readonly calls: string[] = [];
  readonly execs: ExecRequest[] = [];

  constructor(
    readonly endpoint: string,
    readonly token: string,
  ) {}

  async status(): Promise<AgentStatus> {
    return { name: AGENT, namespace: "", pool: "python", nodeName: "node-0", images: [], sandboxes: [], pid: 1 };
  }

  async createSandbox(): Promise<AgentSandbox> {
    throw new Error("not used");
  }

  async deleteSandbox(sandboxId: string): Promise<void> {
    this.calls.push(`deleteSandbox ${sandboxId}`);
  }

  async listSandboxes(): Promise<AgentSandbox[]> {
    this.calls.push("listSandboxes");
    return [];
  }

  async retire(): Promise<{ retired: boolean; sandboxes: number }> {
    return { retired: false, sandboxes: 0 };
  }

  async stats(): Promise<SandboxStats> {
    throw new Error("not used");
  }

  async statsHistory(): Promise<SandboxStats[]> {
    return [];
  }

  async *logs(): AsyncIterable<Uint8Array> {}

  async *exec(request: ExecRequest): AsyncIterable<ExecEvent> {
    this.calls.push("exec");
    this.execs.push(request);
    yield { type: "exit", exitCode: 0 };
  }

  async *pullImage(): AsyncIterable<PullProgress> {}

  async checkpointSandbox(request: AgentCheckpointRequest): Promise<AgentCheckpoint> {
    this.calls.push(`checkpointSandbox ${request.sandboxId}`);
    throw new Error("not saved");
  }

  async resumeSandbox(sandboxId: string): Promise<void> {
    this.calls.push(`resumeSandbox ${sandboxId}`);
  }

  async listCheckpoints(): Promise<AgentCheckpoint[]> {
    this.calls.push("listCheckpoints");
    return [];
  }

  async deleteCheckpoint(checkpointId: string): Promise<void> {
    this.calls.push(`deleteCheckpoint ${checkpointId}`);
  }

  close(): void {}
}

/** The real fleet, connections, manager, checkpoints and pauses of one controller replica, with a Running sandbox of team-a on AGENT. */
async function replica(kubeConfig: ReturnType<typeof testKubeConfig>) {
  const warnings: unknown[][] = [];
  const logger = { info: () => undefined, warn: (...args: unknown[]) => warnings.push(args), error: () => undefined };
  const fleet = new KubernetesAgentFleet({ kubeConfig, logger: logger as never, watchTimeoutSeconds: 60 });
  const registry = new AgentRegistry();
  const agents: RecordingAgent[] = [];
  // As kubernetes-control-plane.ts connects: each Pod is called with its own pool's token.
  const connections = new AgentConnections({
    fleet,
    registry,
    logger: pino({ level: "silent" }),
    heartbeatIntervalMs: 60_000,
    connect: (endpoint, agent) => {
      const client = new RecordingAgent(endpoint, agentTokenOf(DEPLOYMENT_TOKEN, agent));
      agents.push(client);
      return client;
    },
  });
  const store: SqliteResourceStore = openSqliteResourceStore({ path: ":memory:" });
  const silent = pino({ level: "silent" });
  const manager = new SandboxManager({ store, registry, agents: connections, logger: silent });
  const checkpoints = new CheckpointManager({ manager, store, registry, agents: connections, logger: silent });
  const pauses = new SandboxPauses({ manager, store, registry, agents: connections, checkpoints, logger: silent });
  await store.create("SandboxPool", {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "python", namespace: "team-a" },
    spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1, runtimeType: "gvisor" },
  });
  const created = await store.create("Sandbox", {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "job", namespace: "team-a", finalizers: [CLEANUP_FINALIZER] },
    spec: { image: "python:3.12", poolRef: "python" },
  });
  await store.updateStatus("Sandbox", { ...created, status: { phase: "Running", assignedPod: AGENT, sandboxID: "team-a.job.000001" } });
  await fleet.start();
  connections.start();
  const reached = (endpoint: string) => agents.filter((agent) => agent.endpoint === endpoint);
  return {
    fleet,
    manager,
    checkpoints,
    pauses,
    store,
    warnings,
    /** Everything that reached the Pod at `podIP`. */
    at: (podIP: string) => reached(`${podIP}:${PORT}`),
    /** The execs that reached the Pod at `podIP`, with the tokens they were sent with. */
    execsAt: (podIP: string) => reached(`${podIP}:${PORT}`).flatMap((agent) => agent.execs.map((exec) => ({ token: agent.token, exec }))),
    /** Runs a command with a secret in its environment in team-a's sandbox; resolves with its events, or rejects. */
    exec: async () => {
      const events: ExecEvent[] = [];
      const stream = manager.exec({ namespace: "team-a", name: "job", command: ["sh", "-c", "deploy"], envs: [{ name: "DB_PASSWORD", value: "s3cret" }] });
      for await (const event of stream) events.push(event);
      return events;
    },
    async close() {
      checkpoints.close();
      connections.stop();
      await fleet.stop();
      await manager.drain();
      await store.close();
    },
  };
}

describe("an agent Pod's name taken by a Pod of another namespace", () => {
  test("while the agent's Pod exists, the other namespace's Pod is left out, once logged: the sandbox's calls go to its own agent with its pool's token", async () => {
    const api = await apiServer([podOfA]);
    const controller = await replica(api.kubeConfig);
    try {
      await until("team-a's agent connected", () => controller.fleet.listAgents().some((agent) => agent.ready));
      // team-b's user makes its Pod, named as team-a's agent Pod, ready (twice: logged once).
      await api.send("ADDED", podOfB);
      await api.send("ADDED", { ...podOfB, metadata: { ...podOfB.metadata, resourceVersion: "9" } });
      await until("the Pod of team-b seen", () => controller.warnings.length > 0 || controller.fleet.listAgents().length > 1);
      await sleep(50);
      await controller.exec();
      const toB = controller.execsAt("10.2.0.9");
      assert.deepEqual(toB, [], `team-a's command and its environment reached team-b's Pod: ${JSON.stringify(toB)}`);
      assert.deepEqual(controller.execsAt("10.1.0.4"), [
        {
          token: poolAgentToken(DEPLOYMENT_TOKEN, "team-a", "python"),
          exec: { sandboxId: "team-a.job.000001", command: ["sh", "-c", "deploy"], envs: [{ name: "DB_PASSWORD", value: "s3cret" }] },
        },
      ]);
      assert.deepEqual(
        controller.fleet.listAgents().map((agent) => [agent.namespace, agent.name, agent.endpoint]),
        [["team-a", AGENT, `10.1.0.4:${PORT}`]],
        "one agent per name",
      );
      assert.equal(controller.warnings.length, 1, "the Pod left out is logged once, not at every event");
      const [fields, message] = controller.warnings[0] as [Record<string, unknown>, string];
      assert.deepEqual([fields.namespace, fields.heldBy], ["team-b", "team-a"]);
      assert.match(message, /left out/);
    } finally {
      await controller.close();
      api.close();
    }
  });

  test("once the agent's Pod is gone, a Pod of another namespace made under its name is sent nothing of the sandbox that named it: exec, checkpoint, pause fail as unavailable, and a delete does not wait for it", async () => {
    const api = await apiServer([podOfA]);
    const controller = await replica(api.kubeConfig);
    const unavailable = (what: string) => (error: unknown) => {
      assert.ok(error instanceof UnavailableError, `${what}: an UnavailableError (its agent is not there: retry), not ${String(error)}`);
      return true;
    };
    try {
      await until("team-a's agent ready", () => controller.fleet.listAgents().some((agent) => agent.ready));
      await api.send("DELETED", podOfA);
      await api.send("ADDED", podOfB);
      await until("team-b's Pod reported under the name", () => controller.fleet.listAgents().some((agent) => agent.namespace === "team-b" && agent.ready));
      await sleep(50);
      const outcome = await controller.exec().then(
        (events) => `answered ${JSON.stringify(events)}`,
        (error: unknown) => error,
      );
      const toB = controller.execsAt("10.2.0.9");
      assert.deepEqual(toB, [], `team-a's command and its environment reached team-b's Pod: ${JSON.stringify(toB)}`);
      unavailable("exec")(outcome);
      await assert.rejects(controller.checkpoints.checkpoint({ namespace: "team-a", sandbox: "job", checkpoint: "snap" }), unavailable("checkpoint"));
      await assert.rejects(controller.pauses.pause("team-a", "job"), unavailable("pause"));
      await controller.manager.delete("team-a", "job", 0);
      assert.equal(await controller.store.get("Sandbox", { namespace: "team-a", name: "job" }), undefined, "deleted: its agent is gone");
      assert.deepEqual(
        controller.at("10.2.0.9").flatMap((agent) => agent.calls),
        [],
        "nothing of team-a's sandbox reached team-b's Pod",
      );
    } finally {
      await controller.close();
      api.close();
    }
  });

  test("the Pod left out takes the name over once the Pod that held it is gone: that one is removed first, then this one is ready", async () => {
    const api = await apiServer([podOfA]);
    const controller = await replica(api.kubeConfig);
    const events: string[] = [];
    controller.fleet.subscribe((event) => events.push(`${event.type} ${event.agent.namespace}/${event.agent.name}`));
    try {
      await until("team-a's agent ready", () => controller.fleet.listAgents().some((agent) => agent.ready));
      await api.send("ADDED", podOfB);
      await api.send("DELETED", podOfA);
      await until("team-b's Pod reported", () => events.includes(`ready team-b/${AGENT}`));
      assert.deepEqual(events, [`lost team-a/${AGENT}`, `removed team-a/${AGENT}`, `ready team-b/${AGENT}`]);
      assert.deepEqual(
        controller.fleet.listAgents().map((agent) => [agent.namespace, agent.name]),
        [["team-b", AGENT]],
      );
    } finally {
      await controller.close();
      api.close();
    }
  });

  test("a fleet that starts when both exist takes the older Pod, whatever the order of the list (namespaces sort the other way)", async () => {
    const older = agentPod("team-z", "10.3.0.1", "2026-03-04T05:00:00Z", "5");
    const younger = agentPod("team-b", "10.2.0.9", "2026-03-04T05:10:00Z", "8");
    const api = await apiServer([younger, older]);
    const controller = await replica(api.kubeConfig);
    try {
      assert.deepEqual(
        controller.fleet.listAgents().map((agent) => [agent.namespace, agent.name]),
        [["team-z", AGENT]],
      );
    } finally {
      await controller.close();
      api.close();
    }
  });
});

describe("agentsByName (the proxy's and the E2B relay's lookup of a sandbox's agent)", () => {
  let api: Awaited<ReturnType<typeof apiServer>>;
  let fleet: KubernetesAgentFleet;
  const warnings: unknown[][] = [];
  const logger = { info: () => undefined, warn: (...args: unknown[]) => warnings.push(args), error: () => undefined };

  before(async () => {
    api = await apiServer([podOfB]);
    fleet = new KubernetesAgentFleet({ kubeConfig: api.kubeConfig, logger: logger as never, watchTimeoutSeconds: 60 });
    await fleet.start();
  });

  after(async () => {
    await fleet.stop();
    api.close();
  });

  test("finds the agent of the sandbox's namespace, and none of another namespace (logged once)", () => {
    const agentOf = agentsByName(fleet, logger);
    assert.equal(agentOf(AGENT, "team-b")?.endpoint, `10.2.0.9:${PORT}`);
    assert.equal(agentOf(AGENT, "team-a"), undefined, "team-a's sandbox is not sent to team-b's Pod");
    assert.equal(agentOf(AGENT, "team-a"), undefined);
    assert.equal(agentOf("python-agent-other", "team-b"), undefined);
    assert.equal(warnings.length, 1);
    assert.deepEqual((warnings[0] as [Record<string, unknown>])[0], { agent: AGENT, agentNamespace: "team-b", namespace: "team-a" });
  });
});
