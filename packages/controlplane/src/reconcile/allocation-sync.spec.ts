import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, type Sandbox, type SandboxSpec, type SandboxStatus } from "@fast-sandbox/api";
import { pino } from "pino";
import { FakeClock } from "../controller/clock.js";
import { PAUSED_CHECKPOINT_ANNOTATION, RESUMING_ANNOTATION } from "../fastpath/checkpoint-pauses.js";
import { AgentRegistry, type AgentInfo } from "../registry/agent-registry.js";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import { CLEANUP_FINALIZER } from "../fastpath/sandbox-manager.js";
import { AllocationSync, heldOn, needsCheckpointAgent } from "./allocation-sync.js";

const NAMESPACE = "team";
const POOL = "python";
const FINALIZER = CLEANUP_FINALIZER;

function agentInfo(name: string, overrides: Partial<AgentInfo> = {}): AgentInfo {
  return {
    name,
    namespace: NAMESPACE,
    pool: POOL,
    endpoint: `${name}:7071`,
    capacity: 3,
    // Each agent Pod has its own address, as in Kubernetes.
    hostIP: `ip-${name}`,
    images: [],
    ...overrides,
  };
}

function spec(overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  return { image: "python:3.12", poolRef: POOL, ...overrides };
}

describe("heldOn", () => {
  const record = (status?: SandboxStatus): Sandbox => ({
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "s", namespace: NAMESPACE },
    spec: spec(),
    ...(status ? { status } : {}),
  });

  it("is the assigned agent of a Bound or Running record, and nothing otherwise", () => {
    assert.equal(heldOn(undefined), undefined);
    assert.equal(heldOn(record()), undefined);
    assert.equal(heldOn(record({ phase: "Running" })), undefined, "no agent assigned");
    assert.equal(heldOn(record({ phase: "Bound", assignedPod: "a" })), "a");
    assert.equal(heldOn(record({ phase: "Running", assignedPod: "a" })), "a");
    for (const phase of ["Pending", "Terminating", "Expired", "Failed", "Lost", "Paused"] as const) {
      assert.equal(heldOn(record({ phase, assignedPod: "a" })), undefined, phase);
    }
  });

  it("is the assigned agent of a Paused record whose pause is undecided (Paused=Unknown: its instance may run on), and nothing once it is paused", () => {
    const paused = (status: "Unknown" | "True", assignedPod?: string): Sandbox =>
      record({
        phase: "Paused",
        ...(assignedPod ? { assignedPod } : {}),
        conditions: [{ type: "Paused", status, reason: status === "Unknown" ? "Pausing" : "Paused" }],
      });
    assert.equal(heldOn(paused("Unknown", "a")), "a");
    assert.equal(heldOn(paused("Unknown")), undefined, "no agent assigned");
    assert.equal(heldOn(paused("True", "a")), undefined);

    // Deleted, it needs an agent of its checkpoint's node, as a paused one does (it may be paused already); a Running one its pause only began on needs its own agent.
    const named = (sandbox: Sandbox, deleted: boolean): Sandbox => ({
      ...sandbox,
      metadata: {
        ...sandbox.metadata,
        annotations: { [PAUSED_CHECKPOINT_ANNOTATION]: "s-pause-0a1b2c" },
        ...(deleted ? { deletionTimestamp: "2026-03-04T05:06:07.000Z" } : {}),
      },
    });
    assert.equal(needsCheckpointAgent(named(paused("Unknown", "a"), true), 0), true);
    assert.equal(needsCheckpointAgent(named(record({ phase: "Running", assignedPod: "a" }), true), 0), false);
  });

  it("is the assigned agent of an Expired or Terminating record whose cleanup has not run (its container is there)", () => {
    const cleanupPending = (status: SandboxStatus): Sandbox => ({
      ...record(status),
      metadata: { name: "s", namespace: NAMESPACE, finalizers: [CLEANUP_FINALIZER] },
    });
    assert.equal(heldOn(cleanupPending({ phase: "Terminating", assignedPod: "a" })), "a");
    assert.equal(heldOn(cleanupPending({ phase: "Expired", assignedPod: "a" })), "a");
    for (const phase of ["Pending", "Failed", "Lost", "Paused"] as const) {
      assert.equal(heldOn(cleanupPending({ phase, assignedPod: "a" })), undefined, phase);
    }
  });
});

describe("AllocationSync", () => {
  let store: MemoryResourceStore;
  let registry: AgentRegistry;
  let clock: FakeClock;
  let busy: Set<string>;
  let pending: string[];
  let sync: AllocationSync;

  beforeEach(async () => {
    store = new MemoryResourceStore();
    registry = new AgentRegistry();
    registry.upsertAgent(agentInfo("agent-a"));
    registry.upsertAgent(agentInfo("agent-b"));
    clock = new FakeClock();
    busy = new Set();
    pending = [];
    sync = new AllocationSync({
      store,
      registry,
      clock,
      logger: pino({ level: "silent" }),
      isBusy: (namespace, name) => busy.has(`${namespace}/${name}`),
      onPending: (sandbox) => pending.push(`${sandbox.metadata.namespace}/${sandbox.metadata.name}`),
    });
    await sync.start();
  });

  afterEach(async () => {
    await sync.stop();
    await store.close();
  });

  const settle = () => sync.whenIdle();
  const key = (name: string, namespace = NAMESPACE) => `${namespace}/${name}`;
  const placedOn = (name: string, namespace = NAMESPACE) => registry.placementOf(key(name, namespace))?.agent.name;

  /** Writes a record as another replica's fast path would: created, then its status. */
  async function record(
    name: string,
    status?: SandboxStatus,
    options: { spec?: Partial<SandboxSpec>; namespace?: string; finalizer?: boolean } = {},
  ): Promise<Sandbox> {
    const created = await store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: options.namespace ?? NAMESPACE, ...(options.finalizer ? { finalizers: [FINALIZER] } : {}) },
      spec: spec(options.spec),
    });
    return status ? store.updateStatus("Sandbox", { ...created, status }) : created;
  }

  async function setStatus(name: string, status: SandboxStatus): Promise<Sandbox> {
    const current = await store.get("Sandbox", { namespace: NAMESPACE, name });
    assert.ok(current, `no record ${name}`);
    return store.updateStatus("Sandbox", { ...current, status });
  }

  it("gives a Running record's agent its slot and exposed ports", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080, 9090] } });
    await settle();
    assert.equal(placedOn("web"), "agent-a");
    assert.deepEqual(registry.placementOf(key("web"))?.ports, [8080, 9090]);
    const agent = registry.getAgent("agent-a");
    assert.equal(agent?.allocated, 1);
    assert.deepEqual(agent?.usedPorts, [8080, 9090]);
    assert.equal(registry.getAgent("agent-b")?.allocated, 0);
    registry.verifyIndexes();
  });

  it("gives a record only the ports portsHeldBy says it holds (an Isolated instance holds none)", async () => {
    await sync.stop();
    sync = new AllocationSync({
      store,
      registry,
      clock,
      logger: pino({ level: "silent" }),
      isBusy: () => false,
      portsHeldBy: (sandbox) => (sandbox.status?.sandboxIP ? [] : (sandbox.spec.exposedPorts ?? [])),
    });
    await sync.start();
    await record("isolated", { phase: "Running", assignedPod: "agent-a", sandboxIP: "10.88.0.2" }, { spec: { exposedPorts: [8080] } });
    await record("also-isolated", { phase: "Running", assignedPod: "agent-a", sandboxIP: "10.88.0.3" }, { spec: { exposedPorts: [8080] } });
    await record("shared", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [9090] } });
    await settle();
    const agent = registry.getAgent("agent-a");
    assert.equal(agent?.allocated, 3);
    assert.deepEqual(agent?.usedPorts, [9090]);
    registry.verifyIndexes();
  });

  it("gives a Bound record its slot too, and records listed before start() as well as those written after", async () => {
    await sync.stop();
    await record("early", { phase: "Running", assignedPod: "agent-b" });
    sync = new AllocationSync({ store, registry, clock, logger: pino({ level: "silent" }), isBusy: () => false });
    await sync.start();
    await record("bound", { phase: "Bound", assignedPod: "agent-a" });
    await settle();
    assert.equal(placedOn("early"), "agent-b");
    assert.equal(placedOn("bound"), "agent-a");
    assert.equal(registry.poolUsage(NAMESPACE, POOL).allocated, 2);
  });

  it("holds nothing for a Pending record or one with no agent", async () => {
    await record("waiting");
    await record("nowhere", { phase: "Running" });
    await settle();
    assert.equal(registry.placementCount, 0);
  });

  it("releases the slot and ports when the record is deleted", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080] } });
    await settle();
    assert.equal(placedOn("web"), "agent-a");

    await store.delete("Sandbox", { namespace: NAMESPACE, name: "web" });
    await settle();
    assert.equal(placedOn("web"), undefined);
    assert.equal(registry.getAgent("agent-a")?.allocated, 0);
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, []);
    registry.verifyIndexes();
  });

  it("keeps the slot while a record is being deleted (its container is there until cleanup), releasing it once the record is gone", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { finalizer: true });
    await settle();
    await store.delete("Sandbox", { namespace: NAMESPACE, name: "web" });
    await settle();
    const deleting = await store.get("Sandbox", { namespace: NAMESPACE, name: "web" });
    assert.ok(deleting?.metadata.deletionTimestamp, "held by its finalizer");
    assert.equal(placedOn("web"), "agent-a");

    await store.update("Sandbox", { ...deleting, metadata: { ...deleting.metadata, finalizers: [] } });
    await settle();
    assert.equal(await store.get("Sandbox", { namespace: NAMESPACE, name: "web" }), undefined);
    assert.equal(placedOn("web"), undefined);
  });

  it("keeps the slot and ports of a record whose delete failed on its agent (Terminating), releasing them once its cleanup finished", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { finalizer: true, spec: { exposedPorts: [8080] } });
    await settle();
    await store.delete("Sandbox", { namespace: NAMESPACE, name: "web" });
    await setStatus("web", { phase: "Terminating", assignedPod: "agent-a" });
    await settle();
    assert.equal(placedOn("web"), "agent-a");
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, [8080]);

    const deleting = await store.get("Sandbox", { namespace: NAMESPACE, name: "web" });
    assert.ok(deleting);
    await store.update("Sandbox", { ...deleting, metadata: { ...deleting.metadata, finalizers: [] } });
    await settle();
    assert.equal(placedOn("web"), undefined);
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, []);
  });

  it("releases the slot when the record turns Lost", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080] } });
    await settle();
    await setStatus("web", { phase: "Lost", assignedPod: "agent-a" });
    await settle();
    assert.equal(placedOn("web"), undefined);
    assert.equal(registry.getAgent("agent-a")?.allocated, 0);
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, []);
  });

  it("says an agent holds sandboxes while a record names it in a phase it may serve again (Lost too, which holds no slot), not once it ended", async () => {
    assert.equal(sync.holdsSandboxes("agent-a"), false);
    await record("web", { phase: "Running", assignedPod: "agent-a" });
    await settle();
    assert.equal(sync.holdsSandboxes("agent-a"), true);
    assert.equal(sync.holdsSandboxes("agent-b"), false);
    await setStatus("web", { phase: "Lost", assignedPod: "agent-a" });
    await settle();
    assert.equal(registry.getAgent("agent-a")?.allocated, 0, "no slot");
    assert.equal(sync.holdsSandboxes("agent-a"), true, "yet it may come back with its agent");
    await setStatus("web", { phase: "Failed", assignedPod: "agent-a" });
    await settle();
    assert.equal(sync.holdsSandboxes("agent-a"), false);
  });

  it("moves the slot and ports when the record moves to another agent", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080] } });
    await settle();
    await setStatus("web", { phase: "Running", assignedPod: "agent-b" });
    await settle();
    assert.equal(placedOn("web"), "agent-b");
    assert.equal(registry.getAgent("agent-a")?.allocated, 0);
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, []);
    assert.equal(registry.getAgent("agent-b")?.allocated, 1);
    assert.deepEqual(registry.getAgent("agent-b")?.usedPorts, [8080]);
    registry.verifyIndexes();
  });

  it("leaves a key the local fast path is busy with alone, and settles it once the fast path is done", async () => {
    busy.add(key("web"));
    // The local fast path placed it elsewhere and has not written its record yet.
    registry.place({ sandboxKey: key("web"), namespace: NAMESPACE, pool: POOL, image: "python:3.12", ports: [] });
    const local = placedOn("web");
    const other = local === "agent-a" ? "agent-b" : "agent-a";
    await record("web", { phase: "Running", assignedPod: other });
    await settle();
    assert.equal(placedOn("web"), local, "the fast path's bookkeeping is ahead of the store");

    clock.advance(500);
    await settle();
    assert.equal(placedOn("web"), local, "still busy: still left alone");

    busy.delete(key("web"));
    clock.advance(500);
    await settle();
    assert.equal(placedOn("web"), other, "settled from the record once the fast path is done");
    assert.equal(registry.placementCount, 1);
  });

  it("gives a record whose agent is not registered its slot once the agent is registered and agentRegistered() is called", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-c" }, { spec: { exposedPorts: [8080] } });
    await settle();
    assert.equal(placedOn("web"), undefined);

    registry.upsertAgent(agentInfo("agent-c"));
    sync.agentRegistered("agent-c");
    await settle();
    assert.equal(placedOn("web"), "agent-c");
    assert.deepEqual(registry.getAgent("agent-c")?.usedPorts, [8080]);
  });

  it("looks again at a record whose agent is not registered after a while even without agentRegistered()", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-c" });
    await settle();
    registry.upsertAgent(agentInfo("agent-c"));
    await settle();
    assert.equal(placedOn("web"), undefined, "nothing told it yet");

    clock.advance(5000);
    await settle();
    assert.equal(placedOn("web"), "agent-c");
  });

  it("agentRegistered() of an agent that holds nothing, or that is unknown, changes nothing", async () => {
    await record("web", { phase: "Running", assignedPod: "agent-a" });
    await settle();
    sync.agentRegistered("agent-b");
    sync.agentRegistered("agent-z");
    await settle();
    assert.equal(placedOn("web"), "agent-a");
    assert.equal(registry.placementCount, 1);
  });

  it("restores the records of an agent that was removed and registered again", async () => {
    await record("one", { phase: "Running", assignedPod: "agent-a" });
    await record("two", { phase: "Bound", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080] } });
    await record("elsewhere", { phase: "Running", assignedPod: "agent-b" });
    await settle();
    assert.equal(registry.removeAgent("agent-a").length, 2);

    registry.upsertAgent(agentInfo("agent-a"));
    sync.agentRegistered("agent-a");
    await settle();
    assert.equal(placedOn("one"), "agent-a");
    assert.equal(placedOn("two"), "agent-a");
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, [8080]);
    assert.equal(placedOn("elsewhere"), "agent-b");
    registry.verifyIndexes();
  });

  it("retries a record whose port is still held on its agent by a record it has not seen leave yet", async () => {
    // Another sandbox holds 8080 on agent-a in this registry (e.g. placed by the local fast path).
    registry.restore({ sandboxKey: key("old"), agentName: "agent-a", ports: [8080] });
    await record("web", { phase: "Running", assignedPod: "agent-a" }, { spec: { exposedPorts: [8080] } });
    await settle();
    assert.equal(placedOn("web"), undefined, "conflict: not recorded yet");

    registry.release(key("old"));
    clock.advance(1000);
    await settle();
    assert.equal(placedOn("web"), "agent-a");
    assert.deepEqual(registry.getAgent("agent-a")?.usedPorts, [8080]);
  });

  it("counts the Pending records of a pool, not those of other pools or namespaces, placed or being deleted", async () => {
    await record("p1");
    await record("p2", { phase: "Pending" });
    await record("deleting", undefined, { finalizer: true });
    await store.delete("Sandbox", { namespace: NAMESPACE, name: "deleting" });
    await record("running", { phase: "Running", assignedPod: "agent-a" });
    await record("other-pool", undefined, { spec: { poolRef: "go" } });
    await record("other-namespace", undefined, { namespace: "elsewhere" });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 2);
    assert.equal(sync.pendingIn(NAMESPACE, "go"), 1);
    assert.equal(sync.pendingIn("elsewhere", POOL), 1);
    assert.equal(sync.pendingIn(NAMESPACE, "none"), 0);

    await setStatus("p1", { phase: "Running", assignedPod: "agent-a" });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 1);
    assert.equal(sync.cachedSandboxes().length, 6);
  });

  it("counts a Lost record whose failurePolicy recreates it as waiting for a slot, not a Lost one left to its owner", async () => {
    await record("recreated", { phase: "Lost", assignedPod: "agent-a" }, { spec: { failurePolicy: "AutoRecreate" } });
    await record("manual", { phase: "Lost", assignedPod: "agent-a" }, { spec: { failurePolicy: "Manual" } });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 1);
    await setStatus("recreated", { phase: "Running", assignedPod: "agent-b" });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 0);
  });

  it("counts a Lost record whose reset is still to be done as waiting (the reset removed its instance and found no slot), whatever its failurePolicy", async () => {
    await record("reset", { phase: "Lost", assignedPod: "agent-a", acceptedResetRevision: "r1" }, { spec: { failurePolicy: "Manual", resetRevision: "r2" } });
    await record("done", { phase: "Lost", assignedPod: "agent-a", acceptedResetRevision: "r2" }, { spec: { failurePolicy: "Manual", resetRevision: "r2" } });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 1, "a pool scaled to zero starts an agent for it");
    await setStatus("reset", { phase: "Running", assignedPod: "agent-b", acceptedResetRevision: "r2" });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 0);
  });

  it("counts a paused sandbox being resumed or deleted as waiting, and wakes its pool, while no agent of its checkpoint's node is ready", async () => {
    // The pool went down to zero agents while its sandboxes were paused.
    registry.removeAgent("agent-a");
    registry.removeAgent("agent-b");
    /** A paused record: its checkpoint on node-1, no agent; `annotations` added. */
    const pausedRecord = async (name: string, annotations: Record<string, string> = {}) => {
      const created = await store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: {
          name,
          namespace: NAMESPACE,
          finalizers: [FINALIZER],
          annotations: { [PAUSED_CHECKPOINT_ANNOTATION]: `${name}-pause-0a1b2c`, ...annotations },
        },
        spec: spec(),
      });
      return store.updateStatus("Sandbox", { ...created, status: { phase: "Paused", sandboxID: `${name}-id`, nodeName: "node-1" } });
    };
    // The fast path is busy with a sandbox exactly while it resumes or deletes it.
    busy.add(key("resuming")).add(key("deleted"));
    await pausedRecord("idle");
    await pausedRecord("resuming", { [RESUMING_ANNOTATION]: clock.now().toISOString() });
    await pausedRecord("deleted");
    await store.delete("Sandbox", { namespace: NAMESPACE, name: "deleted" });
    await settle();
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 2, "the resume and the delete need an agent of node-1; the sandbox left paused needs none");
    assert.deepEqual([...new Set(pending)].sort(), [key("deleted"), key("resuming")], "their pool is woken");

    // An agent on another node does not hold the checkpoint; one on node-1 does.
    registry.upsertAgent(agentInfo("agent-c", { nodeName: "node-2" }));
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 2);
    registry.upsertAgent(agentInfo("agent-d", { nodeName: "node-1" }));
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 0);
    registry.setAgentReady("agent-d", false);
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 2, "an agent not ready does not list the checkpoint");

    // A resume's intent left by a control plane that died mid-resume stops counting after a while.
    clock.advance(5 * 60_000);
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 1);
    busy.clear();
  });

  it("counts a resume as demand for as long as it may wait for its pool (resumeDemandMs), not only 5 minutes", async () => {
    await sync.stop();
    sync = new AllocationSync({ store, registry, clock, logger: pino({ level: "silent" }), isBusy: () => false, resumeDemandMs: () => 20 * 60_000 });
    await sync.start();
    registry.removeAgent("agent-a");
    registry.removeAgent("agent-b");
    const created = await store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: {
        name: "resuming",
        namespace: NAMESPACE,
        annotations: { [PAUSED_CHECKPOINT_ANNOTATION]: "resuming-pause-0a1b2c", [RESUMING_ANNOTATION]: clock.now().toISOString() },
      },
      spec: spec(),
    });
    await store.updateStatus("Sandbox", { ...created, status: { phase: "Paused", sandboxID: "resuming-id", nodeName: "node-1" } });
    await settle();
    clock.advance(10 * 60_000);
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 1, "10 minutes into a resume whose pool may wake for longer");
    clock.advance(10 * 60_000);
    assert.equal(sync.pendingIn(NAMESPACE, POOL), 0, "past it");
  });

  it("calls onPending with the records waiting to be placed, not with placed or deleting ones", async () => {
    await record("p1");
    await record("p2", { phase: "Pending" });
    await record("running", { phase: "Running", assignedPod: "agent-a" });
    await record("deleting", undefined, { finalizer: true });
    await settle();
    pending.length = 0;
    await store.delete("Sandbox", { namespace: NAMESPACE, name: "deleting" });
    await settle();
    assert.deepEqual(pending, [], "a record being deleted is no demand");

    await record("p3");
    await settle();
    assert.deepEqual(pending, [key("p3")]);
  });

  it("calls onPending for every Pending record it lists", async () => {
    await record("p1");
    await record("p2", { phase: "Pending" });
    await record("running", { phase: "Running", assignedPod: "agent-a" });
    await settle();
    assert.deepEqual([...new Set(pending)].sort(), [key("p1"), key("p2")]);
  });

  it("takes no slot for a record on an agent of another namespace under that name (its own agent's Pod gone, another namespace's Pod named so)", async () => {
    await record("theirs", { phase: "Running", assignedPod: "agent-a" }, { namespace: "elsewhere" });
    await settle();
    assert.equal(placedOn("theirs", "elsewhere"), undefined);
    assert.equal(registry.getAgent("agent-a")?.allocated, 0);
  });

  it("follows only its namespace when given one", async () => {
    await sync.stop();
    sync = new AllocationSync({ store, registry, clock, logger: pino({ level: "silent" }), isBusy: () => false, namespace: NAMESPACE });
    await sync.start();
    await record("mine", { phase: "Running", assignedPod: "agent-a" });
    await record("theirs", { phase: "Running", assignedPod: "agent-a" }, { namespace: "elsewhere" });
    await settle();
    assert.equal(placedOn("mine"), "agent-a");
    assert.equal(placedOn("theirs", "elsewhere"), undefined);
    assert.equal(sync.pendingIn("elsewhere", POOL), 0);
  });
});
