/**
 * Admission is decided by the agent: two control-plane replicas, each with its own in-memory
 * registry (as in Kubernetes mode with two controllers), both believe the agent's 3 slots are
 * theirs to fill. A burst through both ends with exactly 3 sandboxes — on the agent, in containerd
 * and in the shared store — and every other create is refused with a no-capacity error; a port is
 * exclusive on the agent the same way; and an agent restarted under the same name holds what its
 * predecessor created. One real agent process on the real containerd, runc and SQLite.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { destination, pino } from "pino";
import { API_VERSION, NoCapacityError, UnavailableError, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import { AgentRegistry, SandboxManager, createAgentClient, openSqliteResourceStore, type AgentClient } from "@fast-sandbox/controlplane";
import { startAgentProcess, stopAgentProcess, type AgentProcess } from "../../support/agent-process.js";
import { BASE_IMAGE, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { containerdLeftovers } from "../../support/embedded.js";

const SLOTS = 3;
const AGENT = "admission-0";
const POOL = "tiny";
const logger = pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }, destination(2));

const pool: SandboxPool = {
  apiVersion: API_VERSION,
  kind: "SandboxPool",
  metadata: { name: POOL, namespace: "default" },
  // Shared: exposed ports compete for the agent's address (what the port cases check).
  spec: { capacity: { poolMin: 1, poolMax: 1 }, runtimeType: "container", image: BASE_IMAGE, maxSandboxesPerPod: SLOTS, network: { mode: "Shared" } },
};

/** One control-plane replica: its own registry (the agent registered with all its slots free) and its own connection to the agent. */
class Replica {
  readonly registry = new AgentRegistry();
  readonly manager: SandboxManager;
  private client: AgentClient;

  constructor(
    readonly name: string,
    store: ReturnType<typeof openSqliteResourceStore>,
    endpoint: string,
    private readonly token: string,
  ) {
    this.client = createAgentClient(endpoint, token);
    this.register(endpoint);
    this.manager = new SandboxManager({
      store,
      registry: this.registry,
      agents: { get: (agentName) => (agentName === AGENT ? this.client : undefined) },
      logger: logger.child({ replica: name }),
    });
    this.manager.setPool(pool);
  }

  /** The agent came back at another endpoint: connect there (the registry keeps its placements). */
  reconnect(endpoint: string): void {
    this.client.close();
    this.client = createAgentClient(endpoint, this.token);
    this.register(endpoint);
  }

  create(name: string, exposedPorts: number[] = []): Promise<Sandbox> {
    return this.manager.create({
      name,
      spec: { poolRef: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], ...(exposedPorts.length ? { exposedPorts } : {}) },
    });
  }

  close(): void {
    this.client.close();
  }

  private register(endpoint: string): void {
    this.registry.upsertAgent({
      name: AGENT,
      namespace: "default",
      pool: POOL,
      endpoint,
      capacity: SLOTS,
      hostIP: "127.0.0.1",
      nodeName: "node-1",
      images: [BASE_IMAGE],
    });
  }
}

describe("admission at the agent, with two control-plane replicas that each have their own registry", () => {
  const suffix = randomBytes(3).toString("hex");
  const containerdNamespace = `fsb-e2e-admission-${suffix}`;
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-e2e-admission-"));
  const token = randomBytes(24).toString("base64url");
  const agentEnv = {
    FSB_AGENT_NAME: AGENT,
    FSB_AGENT_POOL: POOL,
    FSB_AGENT_TOKEN: token,
    FSB_AGENT_STATE_DIR: join(dataDir, "agents", AGENT),
    FSB_CONTAINERD_NAMESPACE: containerdNamespace,
    FSB_CGROUP_PARENT: `/${containerdNamespace}/${AGENT}`,
  };
  const store = openSqliteResourceStore({ path: join(dataDir, "state.db") });
  let agent: AgentProcess | undefined;
  let replicas: Replica[] = [];

  /** The sandboxes containerd runs for the agent (shim anchors left out). */
  const containers = () => containerdLeftovers(containerdNamespace).containers.sort();
  const records = async () => (await store.list("Sandbox")).items;

  async function deleteAll(created: { replica: Replica; sandbox: Sandbox }[]): Promise<void> {
    for (const { replica, sandbox } of created) await replica.manager.delete("default", sandbox.metadata.name, 0);
    assert.deepEqual(await records(), []);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
    for (const replica of replicas) assert.equal(replica.registry.poolUsage("default", POOL).allocated, 0);
  }

  before(async () => {
    importBaseImage(containerdNamespace);
    agent = await startAgentProcess(agentEnv);
    replicas = [new Replica("a", store, agent.endpoint, token), new Replica("b", store, agent.endpoint, token)];
  });

  after(async () => {
    for (const replica of replicas) {
      await replica.manager.drain();
      replica.close();
    }
    await stopAgentProcess(agent);
    await store.close();
    removeNamespace(containerdNamespace);
    removeCgroupTree(`/${containerdNamespace}`);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("lets exactly 3 of a burst of 20 through both replicas in, refuses the rest with NoCapacity, and leaves nothing after the deletes", async () => {
    const attempts = Array.from({ length: 20 }, (_, i) => {
      const replica = replicas[i % 2]!;
      return replica.create(`burst-${i}`).then((sandbox) => ({ replica, sandbox }));
    });
    const results = await Promise.allSettled(attempts);
    for (const replica of replicas) await replica.manager.drain();
    const created = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as Error);
    assert.equal(created.length, SLOTS, `created ${created.length}; refusals: ${refused.map((e) => e.message).join(" | ")}`);
    assert.equal(refused.length, 20 - SLOTS);
    for (const error of refused) {
      assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${String(error)}`);
      assert.match(error.message, /agent admission-0 is full: 3 of 3 slots in use|all 3 slots of pool default\/tiny are in use/);
    }
    // Both replicas believed they had room: the agent refused at least one create that its registry placed.
    assert.ok(
      refused.some((e) => e.message.includes("agent admission-0 is full")),
      "no create reached the full agent",
    );

    const ids = created.map(({ sandbox }) => sandbox.status?.sandboxID ?? "").sort();
    assert.deepEqual(containers(), ids);
    assert.deepEqual(containerdLeftovers(containerdNamespace).tasks.sort(), ids);
    const stored = await records();
    assert.equal(stored.length, SLOTS);
    assert.deepEqual(stored.map((s) => s.status?.sandboxID ?? "").sort(), ids);
    for (const record of stored) assert.equal(record.status?.phase, "Running");
    // Each replica holds a slot for exactly the sandboxes it created.
    for (const replica of replicas) {
      const mine = created.filter((c) => c.replica === replica).length;
      assert.equal(replica.registry.poolUsage("default", POOL).allocated, mine);
    }

    await deleteAll(created);
    // The slots are free on the agent again.
    const again = await Promise.all(replicas.map(async (replica, i) => ({ replica, sandbox: await replica.create(`again-${i}`) })));
    await deleteAll(again);
  });

  it("lets one of two creates of the same port through different replicas in; the other is refused naming the port", async () => {
    const results = await Promise.allSettled(replicas.map((replica, i) => replica.create(`port-${i}`, [19700]).then((sandbox) => ({ replica, sandbox }))));
    const created = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as Error);
    assert.equal(created.length, 1, refused.map((e) => e.message).join(" | "));
    assert.equal(refused.length, 1);
    const [error] = refused;
    assert.ok(error instanceof NoCapacityError, String(error));
    assert.match(error.message, /port 19700 is already exposed by sandbox default\/port-[01] on agent admission-0/);
    assert.deepEqual(containers(), [created[0]?.sandbox.status?.sandboxID]);
    assert.equal((await records()).length, 1);
    await deleteAll(created);
  });

  it("retires only when idle, atomically with admission: a create placed by the other replica first keeps it; once retired it refuses creates and is not ready", async () => {
    const [first, second] = replicas as [Replica, Replica];
    assert.ok(agent);
    const leader = createAgentClient(agent.endpoint, token);
    const readyz = async () => (await fetch(`http://${agent?.endpoint}/readyz`)).status;
    try {
      const held = { replica: second, sandbox: await second.create("held") };
      assert.deepEqual(await leader.retire(), { retired: false, sandboxes: 1 }, "a sandbox another replica placed keeps it serving");
      const more = { replica: second, sandbox: await second.create("more") };
      await deleteAll([held, more]);

      assert.deepEqual(await leader.retire(), { retired: true, sandboxes: 0 });
      assert.equal(await readyz(), 503, "retired: not ready");
      assert.equal((await leader.status()).retired, true, "its heartbeats say so, to every replica");
      const refused = await first.create("late").catch((error: unknown) => error);
      assert.ok(refused instanceof UnavailableError, `expected UnavailableError, got ${String(refused)}`);
      assert.match(refused.message, /agent admission-0 is retired/);
      assert.deepEqual(await records(), [], "the refused create left no record");
      assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
      assert.equal(first.registry.poolUsage("default", POOL).allocated, 0, "nor a slot");

      assert.deepEqual(await leader.retire(true), { retired: false, sandboxes: 0 }, "cancelled: its stop did not happen");
      assert.equal(await readyz(), 200);
      assert.equal((await leader.status()).retired, undefined);
      await deleteAll([{ replica: first, sandbox: await first.create("after") }]);
    } finally {
      await leader.retire(true).catch(() => undefined);
      leader.close();
    }
  });

  it("holds the sandboxes and ports of its predecessor after the agent restarts under the same name", async () => {
    const [first, second] = replicas as [Replica, Replica];
    const kept = { replica: first, sandbox: await first.create("kept", [19800]) };
    await stopAgentProcess(agent);
    agent = await startAgentProcess(agentEnv);
    for (const replica of replicas) replica.reconnect(agent.endpoint);

    // The second replica's registry knows nothing of `kept`; the restarted agent does.
    const error = await second.create("same-port", [19800]).catch((e: unknown) => e);
    assert.ok(error instanceof NoCapacityError, String(error));
    assert.match(error.message, /port 19800 is already exposed by sandbox default\/kept on agent admission-0/);
    const results = await Promise.allSettled([0, 1, 2].map((i) => second.create(`fill-${i}`)));
    const filled = results.filter((r) => r.status === "fulfilled").map((r) => ({ replica: second, sandbox: r.value }));
    assert.equal(filled.length, SLOTS - 1);
    assert.equal(containers().length, SLOTS);
    await deleteAll([kept, ...filled]);
  });
});
