import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, ConflictError, PermissionDeniedError, UnavailableError, type PoolCapacity, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import { pino } from "pino";
import type { AgentClient, PreparedInstancesReport } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import type { Informer } from "../controller/informer.js";
import type { SandboxManager } from "../fastpath/sandbox-manager.js";
import type { AgentConnections } from "../fleet/agent-connections.js";
import { AgentsNotStoppedError, type AgentFleet, type AgentFleetEvent, type AgentFleetListener, type FleetAgent, type PoolRef } from "../fleet/agent-fleet.js";
import { agentTemplateHash } from "../fleet/agent-template-hash.js";
import { AgentTemplateNotAllowedError } from "../fleet/agent-template-policy.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import type { AllocationSync } from "./allocation-sync.js";
import { POOL_CLEANUP_FINALIZER, PoolController, type PoolControllerOptions } from "./pool-controller.js";
import { poolControllerHooks } from "./pool-controller-hooks.js";

const NAMESPACE = "team";
const POOL = "python";

/**
 * A fleet whose agents exist only once the test says so: `startAgents` returns names that
 * `listAgents` does not show until `report(name)` (the Pod informer has not seen them yet).
 */
class FakeFleet implements AgentFleet {
  readonly agents = new Map<string, FleetAgent>();
  readonly requested: string[] = [];
  readonly stopCalls: string[][] = [];
  /** Whether each agent named in stopAgents was unready in the registry at the time. */
  readonly readyWhenStopped: (boolean | undefined)[] = [];
  registry: AgentRegistry | undefined;
  /** The template hash each requested agent was started with (its pool's agentTemplate then). */
  private readonly startedWith = new Map<string, string>();
  /** The uid of the pool each requested agent was started for (its Pod's owner). */
  private readonly startedFor = new Map<string, string>();
  private readonly listeners = new Set<AgentFleetListener>();
  private next = 0;
  /** Names startAgents hands out before new ones (the embedded fleet's names come back after their agent went). */
  readonly reusedNames: string[] = [];

  /**
   * When set, templateHash and startAgents throw it, as the Kubernetes fleet's do for an agentTemplate
   * that makes no agent Pod (one the CRD lets through: a container's env written as a map).
   */
  templateError: Error | undefined;

  templateHash(pool: SandboxPool): string {
    if (this.templateError) throw this.templateError;
    return agentTemplateHash(pool.spec.agentTemplate ?? {});
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  /** When set, startAgents fails with it, as the API server refusing the Pod (PodSecurity, a ResourceQuota, a webhook). */
  startError: Error | undefined;
  /** Called after each startAgents call (e.g. the Lease is lost meanwhile). */
  onStarted: (() => void) | undefined;
  /**
   * The fleet's fetchAgents (the API server's list of the pool's Pods), when a test sets it; the
   * fake has none by default, as the embedded fleet.
   */
  fetchAgents: AgentFleet["fetchAgents"];

  async startAgents(pool: SandboxPool, count: number): Promise<string[]> {
    if (this.templateError) throw this.templateError;
    if (this.startError) throw this.startError;
    const names = Array.from({ length: count }, () => this.reusedNames.shift() ?? `${pool.metadata.name}-agent-${this.next++}`);
    this.requested.push(...names);
    for (const name of names) this.startedWith.set(name, this.templateHash(pool));
    if (pool.metadata.uid) for (const name of names) this.startedFor.set(name, pool.metadata.uid);
    this.onStarted?.();
    return names;
  }

  /** When set, the next stopAgents fails with it (after recording the call). */
  stopError: Error | undefined;
  /** Agents whose stop fails (the others of the call are stopped), as a Pod whose deletion the API server refused. */
  readonly unstoppable = new Set<string>();

  async stopAgents(_pool: PoolRef, names: readonly string[]): Promise<void> {
    this.stopCalls.push([...names]);
    const error = this.stopError;
    this.stopError = undefined;
    if (error) throw error;
    for (const name of names) this.readyWhenStopped.push(this.registry?.getAgent(name)?.ready);
    const notStopped = names.filter((name) => this.unstoppable.has(name));
    if (notStopped.length > 0) throw new AgentsNotStoppedError(notStopped, new Error("etcdserver: request timed out"));
  }

  listAgents(pool?: PoolRef): FleetAgent[] {
    return [...this.agents.values()].filter((a) => !pool || (a.namespace === pool.namespace && a.pool === pool.pool)).map((a) => ({ ...a }));
  }

  subscribe(listener: AgentFleetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The Pod exists, not ready yet. */
  report(name: string): void {
    this.agents.set(name, { name, namespace: NAMESPACE, pool: POOL, ready: false, uid: `uid-${name}`, ...this.hashOf(name), ...this.ownerOf(name) });
  }

  ready(name: string, podIP: string): void {
    const agent: FleetAgent = {
      name,
      namespace: NAMESPACE,
      pool: POOL,
      ready: true,
      endpoint: `${podIP}:7071`,
      nodeName: "node-0",
      hostIP: "10.0.0.1",
      uid: `uid-${name}`,
      ...this.hashOf(name),
      ...this.ownerOf(name),
    };
    this.agents.set(name, agent);
    this.emit({ type: "ready", agent: { ...agent, ready: true, endpoint: `${podIP}:7071` } });
  }

  lose(name: string): void {
    const agent = { ...this.agents.get(name)!, ready: false };
    delete agent.endpoint;
    this.agents.set(name, agent);
    this.emit({ type: "lost", agent, reason: "Pod is not ready" });
  }

  /** The Pod ended for good (phase Failed: evicted), its object still there. */
  terminate(name: string): void {
    const agent: FleetAgent = { ...this.agents.get(name)!, ready: false, terminated: "its Pod is Failed (Evicted: the node was low on memory)" };
    delete agent.endpoint;
    this.agents.set(name, agent);
    this.emit({ type: "lost", agent, reason: "Pod is not ready" });
  }

  remove(name: string): void {
    const agent = this.agents.get(name)!;
    this.agents.delete(name);
    this.emit({ type: "removed", agent });
  }

  /** A ready agent the test adds as it is: e.g. one of an earlier pool of the same name. */
  add(agent: FleetAgent): void {
    this.agents.set(agent.name, agent);
    if (agent.ready && agent.endpoint) this.emit({ type: "ready", agent: { ...agent, ready: true, endpoint: agent.endpoint } });
  }

  private ownerOf(name: string): Pick<FleetAgent, "poolUid"> {
    const uid = this.startedFor.get(name);
    return uid === undefined ? {} : { poolUid: uid };
  }

  private hashOf(name: string): Pick<FleetAgent, "templateHash"> {
    const hash = this.startedWith.get(name);
    return hash === undefined ? {} : { templateHash: hash };
  }

  private emit(event: AgentFleetEvent): void {
    for (const listener of this.listeners) queueMicrotask(() => listener(event));
  }
}

/** An agent as this replica's connections see it: whether its heartbeats answer, and what it answers a retirement (no client: its Pod is not Ready). */
interface ReachableAgent {
  connected: boolean;
  retire?: () => Promise<{ retired: boolean; sandboxes: number }>;
}

/**
 * The pool controller's hooks as both composition roots wire them (pool-controller-hooks.ts), over
 * fake connections to `agents`; `calls` records each retirement asked. The rest of the core is not
 * used by agentUsable and retireAgent.
 */
function hooksOver(agents: Map<string, ReachableAgent>, calls: string[]): Pick<PoolControllerOptions, "agentUsable" | "retireAgent"> {
  const connections: Pick<AgentConnections, "get" | "agentConnectivity" | "observedStatus"> = {
    get: (name) => {
      const retire = agents.get(name)?.retire;
      if (!retire) return undefined;
      const client: Pick<AgentClient, "retire"> = {
        retire: async (cancel = false) => {
          calls.push(`${cancel ? "cancel" : "retire"} ${name}`);
          return cancel ? { retired: false, sandboxes: 0 } : retire();
        },
      };
      return client as AgentClient;
    },
    agentConnectivity: (name) => {
      const agent = agents.get(name);
      return agent ? { connected: agent.connected, since: new Date(0) } : undefined;
    },
    observedStatus: () => undefined,
  };
  const sandboxes: Pick<Informer<"Sandbox">, "addHandlers"> = { addHandlers: () => () => undefined };
  const { agentUsable, retireAgent } = poolControllerHooks({
    connections: connections as AgentConnections,
    registry: {} as AgentRegistry,
    allocations: {} as AllocationSync,
    manager: {} as SandboxManager,
    sandboxes: sandboxes as Informer<"Sandbox">,
  });
  return { ...(agentUsable ? { agentUsable } : {}), ...(retireAgent ? { retireAgent } : {}) };
}

function poolObject(capacity: PoolCapacity, maxSandboxesPerPod = 2): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: POOL, namespace: NAMESPACE },
    spec: { capacity, maxSandboxesPerPod, agentTemplate: { spec: { containers: [{ name: "agent", image: "agent:test" }] } } },
  };
}

describe("PoolController", () => {
  let store: MemoryResourceStore;
  let fleet: FakeFleet;
  let registry: AgentRegistry;
  let clock: FakeClock;
  let controller: PoolController;
  let waiting: number;
  let sandboxes: number;

  beforeEach(async () => {
    store = new MemoryResourceStore();
    fleet = new FakeFleet();
    registry = new AgentRegistry();
    fleet.registry = registry;
    clock = new FakeClock();
    waiting = 0;
    sandboxes = 0;
    controller = newController();
    await controller.start();
  });

  afterEach(async () => {
    await controller.stop();
    await store.close();
  });

  /** The controller under test, over this test's store, fleet, registry and clock. */
  const newController = (extra: Partial<PoolControllerOptions> = {}) =>
    new PoolController({
      store,
      fleet,
      registry,
      clock,
      logger: pino({ level: "silent" }),
      waitingFor: () => waiting,
      resyncIntervalMs: 60_000,
      ...extra,
    });

  const status = async () => (await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL }))?.status;

  async function settle(): Promise<void> {
    await controller.whenIdle();
  }

  /** Reports every requested agent ready, each with its own Pod IP. */
  async function allReady(): Promise<void> {
    for (const [i, name] of fleet.requested.entries()) if (!fleet.agents.get(name)?.ready) fleet.ready(name, `10.1.0.${i + 1}`);
    await settle();
  }

  function place(count: number): string[] {
    return Array.from(
      { length: count },
      () => registry.place({ sandboxKey: `${NAMESPACE}/s${sandboxes++}`, namespace: NAMESPACE, pool: POOL, image: "python", ports: [] }).agent.name,
    );
  }

  it("holds a pool with its cleanup finalizer; deleting it deletes its sandboxes first, then lets it go", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 2 }));
    await settle();
    const held = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.deepEqual(held?.metadata.finalizers, [POOL_CLEANUP_FINALIZER]);
    const sandbox = (name: string, poolRef: string): Sandbox => ({
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: NAMESPACE, finalizers: ["sandbox.fast.io/agent-cleanup"] },
      spec: { image: "python", poolRef },
    });
    await store.create("Sandbox", sandbox("mine", POOL));
    await store.create("Sandbox", sandbox("other", "another-pool"));

    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    await settle();
    const mine = await store.get("Sandbox", { namespace: NAMESPACE, name: "mine" });
    assert.ok(mine?.metadata.deletionTimestamp, "the pool's sandbox is being deleted");
    assert.equal((await store.get("Sandbox", { namespace: NAMESPACE, name: "other" }))?.metadata.deletionTimestamp, undefined);
    assert.ok(await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL }), "the pool waits while its sandbox's cleanup runs");

    // Its cleanup (the sandbox reconciler's) finishes: the finalizer goes, and so does the record.
    await store.update("Sandbox", { ...mine, metadata: { ...mine.metadata, finalizers: [] } });
    clock.advance(1000);
    await settle();
    assert.equal(await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL }), undefined);
  });

  it("looks for a deleted pool's sandboxes inside closingPool (the fast path's creates held), so a create in flight is not missed", async () => {
    await controller.stop();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const closings: string[] = [];
    controller = newController({
      closingPool: async (namespace, pool, work) => {
        closings.push(`${namespace}/${pool}`);
        await gate;
        return work();
      },
    });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 0, poolMax: 1 }));
    await settle();
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    for (let i = 0; i < 100 && closings.length === 0; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(closings, [`${NAMESPACE}/${POOL}`]);
    // A create that passed its pool check before the deletion stores its sandbox while the fast path finishes it.
    await store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "late", namespace: NAMESPACE, finalizers: ["sandbox.fast.io/agent-cleanup"] },
      spec: { image: "python", poolRef: POOL },
    });
    open();
    await settle();
    assert.ok((await store.get("Sandbox", { namespace: NAMESPACE, name: "late" }))?.metadata.deletionTimestamp, "the late sandbox is deleted with the pool");
    assert.ok(await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL }), "the pool waits for it");
  });

  it("deletes no more of a deleted pool's sandboxes once it is not the leader any more, nor lets the pool go", async () => {
    await controller.stop();
    let leader = true;
    controller = newController({ isLeader: () => leader, resyncIntervalMs: 1000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 0, poolMax: 1 }));
    await settle();
    for (const name of ["a", "b"]) {
      await store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name, namespace: NAMESPACE },
        spec: { image: "python", poolRef: POOL },
      });
    }
    const deleted: string[] = [];
    const deleteSandbox = store.delete.bind(store);
    store.delete = (async (kind: string, ref: { namespace: string; name: string }) => {
      if (kind === "Sandbox") {
        deleted.push(ref.name);
        leader = false; // the Lease is lost while the first sandbox is deleted
      }
      return deleteSandbox(kind as "Sandbox", ref);
    }) as typeof store.delete;
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    await settle();
    assert.equal(deleted.length, 1, `one sandbox deleted before the Lease was lost, not ${deleted.join(", ")}`);
    clock.advance(1000);
    await settle();
    assert.equal(deleted.length, 1, "a follower deletes none of the rest");
    assert.ok(await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL }), "nor removes the pool's finalizer");

    leader = true;
    clock.advance(1000);
    await settle();
    assert.equal(deleted.length, 2, "leading again, it carries the cascade on");
  });

  it("starts poolMin agents and no more while their Pods are requested but not yet observed, or observed but not ready", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 4 }));
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"]);

    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2, "requested Pods the fleet has not reported count as starting");

    fleet.report("python-agent-0");
    fleet.report("python-agent-1");
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2, "Pods that exist but are not ready count as starting");
    assert.deepEqual(await status(), {
      agents: 2,
      readyAgents: 0,
      sandboxes: 0,
      freeSlots: 0,
      desiredAgents: 2,
      buffer: 0,
      updatedAgents: 2,
      observedGeneration: 1,
    });
  });

  it("looks for the Pods it requested that a blind Pod watch never reports before it forgets them: none is created again, never past poolMax", async () => {
    let lists = 0;
    // The API server has every Pod requested; the fleet's watch, gone silent, reports none.
    fleet.fetchAgents = async (ref) => {
      lists += 1;
      return fleet.requested.map((name) => ({ name, namespace: ref.namespace, pool: ref.pool, ready: false }));
    };
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 2 }));
    await settle();
    assert.equal(fleet.requested.length, 2);
    for (let elapsedMs = 0; elapsedMs < 180_000; elapsedMs += 5_000) {
      clock.advance(5_000);
      controller.wake(NAMESPACE, POOL);
      await settle();
    }
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"], "created once in 3 minutes");
    assert.ok(lists >= 2 && lists <= 3, `listed once per startExpectationMs, not at every reconcile (${lists} lists)`);
    assert.equal(controller.canGrow(NAMESPACE, POOL), true, "creates wait for them");
    // The watch comes back: the fleet reports them, and they serve.
    await allReady();
    assert.equal((await status())?.readyAgents, 2);
    assert.equal(fleet.requested.length, 2);
  });

  it("forgets a requested Pod the API server does not have (deleted before it was ever seen) and starts another; one it cannot list still counts", async () => {
    let listFails = true;
    fleet.fetchAgents = async () => {
      if (listFails) throw new UnavailableError("cannot list the agent Pods: the Kubernetes API server did not answer within 90000 ms");
      return [];
    };
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"], "the API server cannot tell: not created twice");
    listFails = false;
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"], "gone for good: replaced");
  });

  it("replaces a requested Pod the fleet leaves out because another namespace's Pod holds its name, once it stays so past a short grace", async () => {
    // Another namespace's pool of the same name drew python-agent-0 first: the API server has this pool's Pod, the fleet never reports it.
    fleet.fetchAgents = async (ref) =>
      fleet.requested.map((name) => ({
        name,
        namespace: ref.namespace,
        pool: ref.pool,
        ready: false,
        ...(name === "python-agent-0" ? { nameTakenBy: `other/${name}` } : {}),
      }));
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"], "found left out: it still counts as starting for the grace");
    assert.deepEqual(fleet.stopCalls, []);
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"]], "still left out past the grace: its Pod is deleted");
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"], "and one of another name starts");
    // The new one is not left out: reported, it serves.
    fleet.ready("python-agent-1", "10.1.0.5");
    await settle();
    assert.equal((await status())?.readyAgents, 1);
    assert.equal(fleet.requested.length, 2);
  });

  it("registers ready agents with the pool's slots, their Pod IP and endpoint, and writes the pool status", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 4 }, 3));
    await settle();
    await allReady();
    const agent = registry.getAgent("python-agent-0");
    assert.ok(agent);
    assert.deepEqual(
      {
        capacity: agent.capacity,
        hostIP: agent.hostIP,
        endpoint: agent.endpoint,
        ready: agent.ready,
        pool: agent.pool,
        namespace: agent.namespace,
        nodeName: agent.nodeName,
      },
      { capacity: 3, hostIP: "10.1.0.1", endpoint: "10.1.0.1:7071", ready: true, pool: POOL, namespace: NAMESPACE, nodeName: "node-0" },
    );
    assert.deepEqual(await status(), {
      agents: 2,
      readyAgents: 2,
      sandboxes: 0,
      freeSlots: 6,
      desiredAgents: 2,
      buffer: 0,
      updatedAgents: 2,
      observedGeneration: 1,
    });
  });

  it("follows spec changes: a higher poolMin starts more agents, a new slot count applies to registered agents, observedGeneration follows", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 4 }));
    await settle();
    await allReady();
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, maxSandboxesPerPod: 5, capacity: { poolMin: 2, poolMax: 4 } } });
    await settle();
    assert.equal(fleet.requested.length, 2);
    await allReady();
    assert.equal(registry.getAgent("python-agent-0")?.capacity, 5);
    assert.deepEqual(await status(), {
      agents: 2,
      readyAgents: 2,
      sandboxes: 0,
      freeSlots: 10,
      desiredAgents: 2,
      buffer: 0,
      updatedAgents: 2,
      observedGeneration: 2,
    });
  });

  /** The pool's agentTemplate with the agent container's image changed (the fleet's template hash changes with it). */
  async function changeAgentImage(image: string): Promise<void> {
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, agentTemplate: { spec: { containers: [{ name: "agent", image }] } } } });
    await settle();
  }

  it("replaces idle agents of an earlier agentTemplate one at a time: the replacement starts first, the old agent goes drained once it is ready", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 2 }));
    await settle();
    await allReady();
    await changeAgentImage("agent:v2");
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1", "python-agent-2"], "one replacement, above poolMax by one");
    assert.deepEqual(fleet.stopCalls, [], "nothing stops before the replacement serves");
    assert.equal((await status())?.updatedAgents, 0);

    fleet.report("python-agent-2");
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.stopCalls, [], "a replacement that is not ready yet keeps the old agent");
    assert.equal(fleet.requested.length, 3, "one replacement at a time");

    await allReady();
    assert.deepEqual(fleet.stopCalls, [["python-agent-1"]], "the highest idle outdated agent goes once its replacement is ready");
    assert.deepEqual(fleet.readyWhenStopped, [false], "drained before the stop");
    fleet.remove("python-agent-1");
    await settle();
    assert.deepEqual(fleet.requested.slice(3), ["python-agent-3"], "then the next one is replaced");
    fleet.ready("python-agent-3", "10.1.0.4");
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-1"], ["python-agent-0"]]);
    fleet.remove("python-agent-0");
    await settle();
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 4, "nothing more to replace");
    assert.deepEqual(await status(), {
      agents: 2,
      readyAgents: 2,
      sandboxes: 0,
      freeSlots: 4,
      desiredAgents: 2,
      buffer: 0,
      updatedAgents: 2,
      observedGeneration: 2,
    });
  });

  it("keeps a busy agent of an earlier agentTemplate serving until its sandboxes are gone, then replaces it", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    await allReady();
    const [busy] = place(1);
    assert.equal(busy, "python-agent-0");
    await changeAgentImage("agent:v2");
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"], "no replacement while the only agent is busy");
    assert.deepEqual(fleet.stopCalls, []);
    assert.equal(registry.getAgent(busy)?.ready, true, "it still takes placements");

    registry.release(`${NAMESPACE}/s0`);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"]);
    await allReady();
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"]]);
  });

  it("stops idle outdated agents the pool does not need without replacing them, one at a time, never the busy one", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 0, poolMax: 3, bufferMin: 2 }));
    await settle();
    await allReady();
    place(2);
    waiting = 2;
    controller.wake(NAMESPACE, POOL);
    await settle();
    await allReady();
    waiting = 0;
    assert.equal(fleet.requested.length, 3);
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    // bufferMin 0: the pool needs one agent (two sandboxes on python-agent-0); the two idle ones are spare.
    await store.update("SandboxPool", {
      ...current,
      spec: {
        ...current.spec,
        capacity: { poolMin: 0, poolMax: 3, scaleDownDelaySeconds: 3600 },
        agentTemplate: { spec: { containers: [{ name: "agent", image: "agent:v2" }] } },
      },
    });
    await settle();
    assert.deepEqual(fleet.requested.length, 3, "no replacement: the pool has enough without it");
    assert.deepEqual(fleet.stopCalls, [["python-agent-2"]]);
    fleet.remove("python-agent-2");
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-2"], ["python-agent-1"]], "then the other idle one, one at a time");
    fleet.remove("python-agent-1");
    await settle();
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.stopCalls.length, 2, "the busy agent stays");
    assert.deepEqual(await status(), {
      agents: 1,
      readyAgents: 1,
      sandboxes: 2,
      freeSlots: 0,
      desiredAgents: 1,
      buffer: 0,
      updatedAgents: 0,
      observedGeneration: 2,
    });
  });

  it("with dynamicBuffer keeps the free slots its create rate asks for over its agents' measured start time, and gives them back when quiet", async () => {
    await controller.stop();
    let rate = 0.2;
    controller = newController({ createsPerSecond: (namespace, pool) => (namespace === NAMESPACE && pool === POOL ? rate : 0) });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 0, poolMax: 6, scaleDownDelaySeconds: 0, dynamicBuffer: true }, 1));
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"], "0.2 creates/s over the default 5 s start: one free slot");
    assert.equal((await status())?.buffer, 1);

    clock.advance(2_000);
    await allReady();
    rate = 1;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0", "python-agent-1"], "1 create/s over the measured 2 s start: two free slots");
    assert.equal((await status())?.buffer, 2);

    clock.advance(1_000);
    await allReady();
    rate = 0;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal((await status())?.buffer, 0);
    assert.deepEqual(fleet.stopCalls.flat().sort(), ["python-agent-0", "python-agent-1"], "a quiet window releases what the flow held");
  });

  it("without dynamicBuffer ignores the create rate", async () => {
    await controller.stop();
    controller = newController({ createsPerSecond: () => 10 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 6, bufferMin: 1 }, 1));
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"]);
    assert.equal((await status())?.buffer, 1, "bufferMin");
  });

  it("grows with demand (placements and waiting creates) up to poolMax and not beyond", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    await allReady();
    place(2);
    waiting = 1;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2);
    await allReady();
    waiting = 10;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 3);
    await allReady();
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 3, "never beyond poolMax");
    assert.equal((await status())?.desiredAgents, 3);
  });

  it("releases idle spare agents only after scaleDownDelaySeconds, drained (unready) before the stop, and never a busy one", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 3, poolMax: 3, scaleDownDelaySeconds: 30 }));
    await settle();
    await allReady();
    const [busy] = place(1);
    assert.ok(busy);
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 0, poolMax: 3, scaleDownDelaySeconds: 30 } } });
    await settle();
    assert.deepEqual(fleet.stopCalls, [], "spare capacity waits for the delay");
    assert.equal((await status())?.desiredAgents, 1);

    clock.advance(29_000);
    await settle();
    assert.deepEqual(fleet.stopCalls, []);

    // The requeue for the end of the delay fires without any other change.
    clock.advance(1_000);
    await settle();
    const stopped: string[] = fleet.stopCalls.flat();
    assert.equal(stopped.length, 2);
    assert.ok(!stopped.includes(busy), "the agent with a sandbox stays");
    assert.deepEqual(fleet.readyWhenStopped, [false, false], "drained: unready in the registry before the stop");

    // Their Pods go: the registry forgets them, the busy agent serves on.
    for (const name of stopped) fleet.remove(name);
    await settle();
    assert.deepEqual(
      registry.listAgents({ namespace: NAMESPACE, pool: POOL }).map((a) => [a.name, a.ready]),
      [[busy, true]],
    );
    assert.deepEqual(await status(), {
      agents: 1,
      readyAgents: 1,
      sandboxes: 1,
      freeSlots: 1,
      desiredAgents: 1,
      buffer: 0,
      updatedAgents: 1,
      observedGeneration: 2,
    });
  });

  it("retires idle agents at the agent before stopping them: one another replica placed a sandbox on serves on; a failed stop undoes the retirement", async () => {
    await controller.stop();
    /** What each agent answers its retirement: false for one that holds a sandbox this replica's registry does not know. */
    const holdsForeign = new Set<string>();
    const retireCalls: string[] = [];
    let failRetire = false;
    controller = newController({
      retireAgent: async (name, cancel) => {
        retireCalls.push(`${cancel ? "cancel" : "retire"} ${name}`);
        if (failRetire && !cancel) throw new Error("deadline exceeded");
        return !cancel && !holdsForeign.has(name);
      },
    });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 2, scaleDownDelaySeconds: 0 }));
    await settle();
    await allReady();
    const [a, b] = fleet.requested as [string, string];
    holdsForeign.add(a);
    fleet.stopError = new Error("the API server is away");
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 0, poolMax: 2, scaleDownDelaySeconds: 0 } } });
    await settle();
    assert.deepEqual(retireCalls.slice(0, 2).sort(), [`retire ${a}`, `retire ${b}`]);
    assert.deepEqual(fleet.stopCalls[0], [b], "only the agent that retired is stopped");
    assert.ok(retireCalls.includes(`cancel ${b}`), "its stop failed: its retirement is undone");
    assert.equal(registry.getAgent(a)?.ready, true, "the agent holding a sandbox serves on");

    // The next attempt (after the failure's back-off) retires and stops it again; the busy one is still kept.
    clock.advance(60_000);
    await settle();
    assert.deepEqual(fleet.stopCalls, [[b], [b]]);
    assert.equal(registry.getAgent(b)?.ready, false, "drained while its Pod goes");
    assert.equal(registry.getAgent(a)?.ready, true);
    assert.ok(!fleet.stopCalls.flat().includes(a), "never stopped");

    // A retirement that fails (a timeout under load) keeps the agent: it may hold another replica's sandbox.
    failRetire = true;
    holdsForeign.delete(a);
    clock.advance(60_000);
    await settle();
    assert.ok(retireCalls.filter((call) => call === `retire ${a}`).length >= 3, "tried again");
    assert.ok(!fleet.stopCalls.flat().includes(a), "not stopped without its answer");
    assert.equal(registry.getAgent(a)?.ready, true, "it serves on");
    failRetire = false;
    clock.advance(60_000);
    await settle();
    assert.deepEqual(fleet.stopCalls.at(-1), [a], "stopped once it answers retired");
  });

  it("asks an idle agent its heartbeats cannot reach before it stops it, and keeps it unless it answers retired: another replica may have placed on it", async () => {
    await controller.stop();
    const agents = new Map<string, ReachableAgent>();
    const calls: string[] = [];
    controller = newController({ ...hooksOver(agents, calls), awayLimitMs: 60_000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 2, scaleDownDelaySeconds: 0 }));
    await settle();
    const [a, x] = fleet.requested as [string, string];
    agents.set(a, { connected: true, retire: async () => ({ retired: true, sandboxes: 0 }) });
    agents.set(x, { connected: true, retire: async () => ({ retired: true, sandboxes: 0 }) });
    await allReady();
    assert.equal(registry.getAgent(x)?.ready, true);
    // This replica's heartbeats to x time out; its Pod stays Ready, and replica B, which reaches it,
    // places a sandbox on it that this replica's records do not show yet.
    let heldThroughB = 1;
    agents.set(x, { connected: false, retire: async () => ({ retired: heldThroughB === 0, sandboxes: heldThroughB }) });
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(registry.getAgent(x)?.ready, false, "not placed on through this replica");

    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 0, poolMax: 2, scaleDownDelaySeconds: 0 } } });
    await settle();
    assert.ok(calls.includes(`retire ${x}`), "asked, though its heartbeats fail");
    assert.deepEqual(fleet.stopCalls, [[a]], "the agent that answered retired is stopped; x, holding B's sandbox, is kept with its Pod");
    assert.equal(registry.getAgent(x)?.ready, false, "kept, but still not placed on through this replica");

    // Away too long, its Pod still Ready: asked again before it is stopped, and kept while it holds B's sandbox.
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.ok(!fleet.stopCalls.flat().includes(x), "never stopped while it holds a sandbox");
    // B's sandbox is gone: it answers retired, and goes.
    heldThroughB = 0;
    clock.advance(5_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.deepEqual(fleet.stopCalls.at(-1), [x]);
  });

  it("spare capacity that is used again before the delay ends is not released", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 0, poolMax: 2, scaleDownDelaySeconds: 30 }, 1));
    await settle();
    waiting = 2;
    controller.wake(NAMESPACE, POOL);
    await settle();
    await allReady();
    waiting = 0;
    controller.wake(NAMESPACE, POOL);
    await settle();
    clock.advance(20_000);
    place(2);
    controller.wake(NAMESPACE, POOL);
    await settle();
    clock.advance(20_000);
    await settle();
    assert.deepEqual(fleet.stopCalls, []);
  });

  it("marks a lost agent unready at once (its placements stay) and removes a removed one from the registry", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 2 }));
    await settle();
    await allReady();
    const [agent] = place(1);
    assert.ok(agent);
    fleet.lose(agent);
    await settle();
    assert.equal(registry.getAgent(agent)?.ready, false);
    assert.equal(registry.getAgent(agent)?.allocated, 1);
    assert.equal(fleet.requested.length, 2, "a lost agent is away, not gone: no replacement");
    assert.equal((await status())?.readyAgents, 1);

    fleet.ready(agent, "10.1.0.9");
    await settle();
    assert.equal(registry.getAgent(agent)?.ready, true);
    assert.equal(registry.getAgent(agent)?.endpoint, "10.1.0.9:7071");

    fleet.remove(agent);
    await settle();
    assert.equal(registry.getAgent(agent), undefined);
    assert.equal(fleet.requested.length, 3, "a removed agent is replaced to keep poolMin");
  });

  it("stops counting on an agent away longer than awayLimitMs: a replacement starts and creates stop waiting for it; back, it serves again", async () => {
    await controller.stop();
    controller = newController({ awayLimitMs: 60_000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    await allReady();
    const [agent] = place(1);
    assert.ok(agent);
    fleet.lose(agent);
    await settle();
    assert.equal(fleet.requested.length, 1, "away, not gone: no replacement yet");
    assert.equal(controller.canGrow(NAMESPACE, POOL), true, "creates wait for it meanwhile");

    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2, "replaced, though poolMax is 1: the away agent no longer counts");
    assert.deepEqual(fleet.stopCalls, [], "not stopped: its sandboxes may come back with it");
    await allReady();
    assert.equal(controller.canGrow(NAMESPACE, POOL), false, "no wait for the away agent: its replacement is the pool");

    fleet.ready(agent, "10.1.0.9");
    await settle();
    assert.equal(registry.getAgent(agent)?.ready, true, "back, it serves again");
  });

  it("stops an agent away too long that holds no sandbox (its Pod never became Ready), so a pool that cannot start agents replaces them one for one", async () => {
    await controller.stop();
    controller = newController({ awayLimitMs: 60_000, startLimitMs: 60_000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    const [first] = fleet.requested;
    assert.ok(first);
    fleet.report(first); // a Pod that never becomes Ready (a bad image, a missing Secret)
    controller.wake(NAMESPACE, POOL);
    await settle();
    for (let round = 1; round <= 3; round++) {
      clock.advance(61_000);
      controller.wake(NAMESPACE, POOL);
      await settle();
      assert.equal(fleet.requested.length, round + 1, `round ${round}: one replacement`);
      const stopped = fleet.stopCalls.flat();
      assert.equal(stopped.length, round, `round ${round}: the away agent is stopped, not kept beside its replacement`);
      assert.ok(!stopped.includes(fleet.requested[round]!), "the replacement is not stopped");
      // The fleet removes the stopped Pod; its replacement never comes up either.
      fleet.remove(stopped.at(-1)!);
      fleet.report(fleet.requested[round]!);
      controller.wake(NAMESPACE, POOL);
      await settle();
    }
    assert.equal(fleet.listAgents({ namespace: NAMESPACE, pool: POOL }).length, 1, "never more than the pool's size");
  });

  it("gives an agent never seen up startLimitMs, not awayLimitMs (a Pod still pulling a large image is starting, not away)", async () => {
    await controller.stop();
    controller = newController({ awayLimitMs: 60_000, startLimitMs: 600_000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    const [first] = fleet.requested;
    assert.ok(first);
    fleet.report(first);
    controller.wake(NAMESPACE, POOL);
    await settle();
    clock.advance(120_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 1, "still starting after awayLimitMs: no replacement");
    assert.deepEqual(fleet.stopCalls, []);
    clock.advance(500_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2, "replaced after startLimitMs");
    assert.deepEqual(fleet.stopCalls, [[first]], "and, holding nothing, stopped");
  });

  it("keeps its view of away agents fresh while it follows: leading again, an agent that came back meanwhile is not away since long ago", async () => {
    await controller.stop();
    let leader = true;
    controller = newController({ awayLimitMs: 60_000, isLeader: () => leader, resyncIntervalMs: 1000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    await allReady();
    const [agent] = place(1);
    assert.ok(agent);
    fleet.lose(agent); // seen away while leading
    await settle();
    leader = false;
    fleet.ready(agent, "10.1.0.9"); // back while this replica follows
    await settle();
    clock.advance(600_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    leader = true;
    fleet.lose(agent); // briefly away again, now that it leads
    await settle();
    assert.equal(fleet.requested.length, 1, "away for a moment, not for ten minutes: no replacement");
  });

  it("keeps an agent away too long while records name it, though it holds no slot (its sandboxes Lost, or a restarted controller)", async () => {
    await controller.stop();
    let holder = "";
    controller = newController({ awayLimitMs: 60_000, startLimitMs: 60_000, holdsSandboxes: (name) => name === holder });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    const [first] = fleet.requested;
    assert.ok(first);
    holder = first;
    fleet.report(first);
    controller.wake(NAMESPACE, POOL);
    await settle();
    clock.advance(61_000);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 2, "replaced");
    assert.deepEqual(fleet.stopCalls, [], "not stopped: its sandboxes may come back with it");
  });

  it("counts a later agent of the name of one that was away and then deleted as starting afresh, not as away since then", async () => {
    await controller.stop();
    controller = newController({ awayLimitMs: 60_000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    const [first] = fleet.requested;
    assert.ok(first);
    fleet.report(first); // its Pod exists and never becomes Ready
    controller.wake(NAMESPACE, POOL);
    await settle();
    fleet.remove(first); // deleted before it ever came up
    await settle();
    assert.equal(fleet.requested.length, 2, "replaced");
    fleet.ready(fleet.requested[1]!, "10.1.0.2");
    await settle();

    clock.advance(120_000);
    fleet.reusedNames.push(first);
    fleet.remove(fleet.requested[1]!);
    await settle();
    assert.deepEqual(fleet.requested.slice(2), [first], "the replacement has the first agent's name again");
    fleet.report(first);
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal(fleet.requested.length, 3, "it is starting, not away for 2 minutes: no replacement of it");
  });

  it("removes an agent whose Pod ended for good (evicted) and starts its replacement, busy or not", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 2 }));
    await settle();
    await allReady();
    const [agent] = place(1);
    assert.ok(agent);
    fleet.terminate(agent);
    await settle();
    assert.deepEqual(fleet.stopCalls, [[agent]], "the ended agent is removed");
    assert.equal(fleet.requested.length, 2, "and replaced");
    await allReady();
    assert.equal(registry.getAgent(agent)?.ready, false, "it takes no placement meanwhile");
    fleet.remove(agent);
    await settle();
    assert.equal(registry.getAgent(agent), undefined);
    assert.equal(fleet.requested.length, 2, "one replacement");
    assert.equal(fleet.stopCalls.length, 1, "stopped once");
  });

  it("on a follower, follows a pool while it has agents and stops requeueing it once the pool and its agents are gone", async () => {
    await controller.stop();
    let leader = true;
    controller = newController({ isLeader: () => leader, resyncIntervalMs: 1000 });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    await allReady();
    leader = false;
    const listAgents = fleet.listAgents.bind(fleet);
    let looks = 0;
    fleet.listAgents = (pool) => {
      if (pool?.pool === POOL) looks += 1;
      return listAgents(pool);
    };
    clock.advance(1500);
    await settle();
    assert.ok(looks > 0, "a follower still follows a live pool");
    const pool = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(pool);
    await store.update("SandboxPool", { ...pool, metadata: { ...pool.metadata, finalizers: [] } });
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    for (const name of fleet.requested) fleet.remove(name);
    await settle();
    // A resync asked for before the pool went still comes once.
    clock.advance(1500);
    await settle();
    const before = looks;
    for (let i = 0; i < 5; i++) {
      clock.advance(1500);
      await settle();
    }
    assert.equal(looks, before, "nothing left to follow: no more requeues");
  });

  it("creates no more agents once it is not the leader any more, midway through a scale-up", async () => {
    await controller.stop();
    let leader = true;
    controller = newController({ isLeader: () => leader });
    fleet.onStarted = () => (leader = false); // the Lease is lost while the first Pod is created
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 3, poolMax: 3 }));
    await settle();
    assert.deepEqual(fleet.requested, ["python-agent-0"], "no Pod created after the Lease was lost");
    assert.equal(await status(), undefined, "nor the status written: the new leader writes it");
  });

  it("stops no agent once it is not the leader any more: a retirement it asked for is undone", async () => {
    await controller.stop();
    let leader = true;
    const calls: string[] = [];
    controller = newController({
      isLeader: () => leader,
      retireAgent: async (name, cancel) => {
        calls.push(`${cancel ? "cancel" : "retire"} ${name}`);
        if (!cancel) leader = false; // the Lease is lost while the agent answers
        return true;
      },
    });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1, scaleDownDelaySeconds: 0 }));
    await settle();
    await allReady();
    const [agent] = fleet.requested as [string];
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 0, poolMax: 1, scaleDownDelaySeconds: 0 } } });
    await settle();
    assert.deepEqual(calls, [`retire ${agent}`, `cancel ${agent}`]);
    assert.deepEqual(fleet.stopCalls, [], "its Pod is not deleted");
    assert.equal(registry.getAgent(agent)?.ready, true, "it serves on");
  });

  it("writes the status again from a fresh read when the write meets a conflict", async () => {
    store.failNext("updateStatus", new ConflictError("the object has been modified"));
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    assert.deepEqual(await status(), {
      agents: 0,
      readyAgents: 0,
      sandboxes: 0,
      freeSlots: 0,
      desiredAgents: 1,
      buffer: 0,
      updatedAgents: 0,
      observedGeneration: 1,
    });
  });

  it("stops the agents of a deleted pool, starts none, and forgets them as the fleet removes them", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    await allReady();
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"]], "the agents of a pool that is gone are stopped, once");
    fleet.remove("python-agent-0");
    await settle();
    assert.equal(fleet.requested.length, 1);
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"]]);
    assert.deepEqual(registry.listAgents({ namespace: NAMESPACE, pool: POOL }), []);
  });

  it("when some stops of a scale-down fail, only the agents not stopped serve again (their retirement undone); those stopped stay drained", async () => {
    await controller.stop();
    const retireCalls: string[] = [];
    controller = newController({
      retireAgent: async (name, cancel) => {
        retireCalls.push(`${cancel ? "cancel" : "retire"} ${name}`);
        return !cancel;
      },
    });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 3, poolMax: 3, scaleDownDelaySeconds: 0 }));
    await settle();
    await allReady();
    const [a, b, c] = fleet.requested as [string, string, string];
    fleet.unstoppable.add(b);
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 0, poolMax: 3, scaleDownDelaySeconds: 0 } } });
    await settle();
    assert.deepEqual(fleet.stopCalls.flat().sort(), [a, b, c].sort(), "all three asked to stop at once");
    assert.deepEqual(
      [a, b, c].map((name) => registry.getAgent(name)?.ready),
      [false, true, false],
      "the two whose Pods were deleted take no placement; the one still running serves again",
    );
    assert.deepEqual(
      retireCalls.filter((call) => call.startsWith("cancel")),
      [`cancel ${b}`],
      "only the retirement of the agent not stopped is undone",
    );

    // The retry drains and stops the one left; the two stopped are not asked again while their Pods go.
    fleet.unstoppable.delete(b);
    clock.advance(60_000);
    await settle();
    assert.deepEqual(fleet.stopCalls.at(-1), [b]);
    assert.equal(fleet.stopCalls.flat().filter((name) => name === a).length, 1);
    assert.deepEqual(
      [a, b, c].map((name) => registry.getAgent(name)?.ready),
      [false, false, false],
    );
  });

  it("stops the agents of a deleted pool again after a failed stop", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 1 }));
    await settle();
    await allReady();
    fleet.stopError = new Error("the API server is away");
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"]]);
    // The reconcile's retry, after its back-off.
    clock.advance(60_000);
    await settle();
    assert.deepEqual(fleet.stopCalls, [["python-agent-0"], ["python-agent-0"]], "tried again");
    fleet.remove("python-agent-0");
    clock.advance(60_000);
    await settle();
    assert.equal(fleet.stopCalls.length, 2, "and no more once it is stopped");
  });

  it("says in the status when the agentTemplate makes no agent Pod, starts and replaces no agent from it, and keeps the running ones serving", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    await allReady();
    const [running] = fleet.requested as [string];
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    // A template written with kubectl that the CRD accepts and no Pod can be built from.
    fleet.templateError = new TypeError("theirs.some is not a function");
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 2, poolMax: 3 } } });
    await settle();
    assert.deepEqual(fleet.requested, [running], "no agent starts from it");
    assert.deepEqual(fleet.stopCalls, [], "the running agent is neither stopped nor replaced");
    assert.equal(registry.getAgent(running)?.ready, true, "and serves on");
    assert.equal(controller.canGrow(NAMESPACE, POOL), false, "a create does not wait for an agent that cannot start");
    const broken = await status();
    assert.equal(broken?.desiredAgents, 2);
    assert.equal(broken?.agents, 1);
    assert.equal(broken?.updatedAgents, 0, "no agent runs the spec as it is now");
    assert.equal(broken?.observedGeneration, 2);
    assert.deepEqual(broken?.conditions, [
      {
        type: "AgentTemplateValid",
        status: "False",
        reason: "InvalidAgentTemplate",
        message: "cannot build the agent Pod from spec.agentTemplate: theirs.some is not a function",
        observedGeneration: 2,
        lastTransitionTime: clock.now().toISOString(),
      },
    ]);

    // Looked at again, nothing changes: the condition keeps its transition time.
    clock.advance(60_000);
    await settle();
    assert.equal((await status())?.conditions?.[0]?.lastTransitionTime, broken?.conditions?.[0]?.lastTransitionTime);
    assert.deepEqual(fleet.requested, [running]);

    // Fixed: the condition goes and the pool grows.
    fleet.templateError = undefined;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal((await status())?.conditions, undefined);
    assert.equal(fleet.requested.length, 2);
    assert.equal(controller.canGrow(NAMESPACE, POOL), true);
    assert.deepEqual(fleet.stopCalls, []);
  });

  it("says in the status when the deployment's policy refuses the agentTemplate, as for one that makes no Pod: no agent starts or is replaced, the running ones serve on", async () => {
    await controller.stop();
    const warnings: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => warnings.push((JSON.parse(line) as { msg: string }).msg) });
    controller = newController({ logger });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 3 }));
    await settle();
    await allReady();
    const [running] = fleet.requested as [string];
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    // As the Kubernetes fleet's templateHash and startAgents throw it (agent-template-policy.ts).
    const refusal =
      "spec.agentTemplate.spec.hostPID is not allowed by the deployment's agent template policy (restricted): a pool may set …; set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow it";
    fleet.templateError = new AgentTemplateNotAllowedError("spec.agentTemplate.spec.hostPID", refusal);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, capacity: { poolMin: 2, poolMax: 3 } } });
    await settle();
    assert.deepEqual(fleet.requested, [running], "no agent starts from it");
    assert.deepEqual(fleet.stopCalls, [], "the running agent is neither stopped nor replaced");
    assert.equal(registry.getAgent(running)?.ready, true, "and serves on");
    assert.equal(controller.canGrow(NAMESPACE, POOL), false, "a create does not wait for an agent that cannot start");
    assert.equal(controller.blockedReason(NAMESPACE, POOL), refusal, "and is told why");
    const refused = await status();
    assert.equal(refused?.desiredAgents, 2);
    assert.equal(refused?.agents, 1);
    assert.deepEqual(refused?.conditions, [
      {
        type: "AgentTemplateValid",
        status: "False",
        reason: "AgentTemplateNotAllowed",
        message: refusal,
        observedGeneration: 2,
        lastTransitionTime: clock.now().toISOString(),
      },
    ]);
    clock.advance(60_000);
    await settle();
    assert.deepEqual(fleet.requested, [running]);
    assert.equal(warnings.filter((msg) => /not allowed by the deployment's agent template policy/.test(msg)).length, 1, "logged once, not at every look");

    // Allowed again (the template changed, or the policy did): the condition goes and the pool grows.
    fleet.templateError = undefined;
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.equal((await status())?.conditions, undefined);
    assert.equal(fleet.requested.length, 2);
    assert.equal(controller.blockedReason(NAMESPACE, POOL), undefined);
  });

  it("starts no agent for a pool in a namespace poolNamespaces leaves out, and says so in its status", async () => {
    await controller.stop();
    controller = newController({ poolNamespaces: ["sandboxes", "ci"] });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 3 }));
    await settle();
    assert.deepEqual(fleet.requested, [], "no agent starts");
    const message =
      "namespace team runs no pools: the controller's FSB_POOL_NAMESPACES allows pools only in sandboxes, ci; no agent starts for this pool until team is added there";
    assert.equal(controller.canGrow(NAMESPACE, POOL), false, "a create fails at once");
    assert.equal(controller.blockedReason(NAMESPACE, POOL), message);
    const held = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.deepEqual(held?.metadata.finalizers, [POOL_CLEANUP_FINALIZER], "the pool is still kept (its deletion cascades as any)");
    assert.equal(held?.status?.desiredAgents, 2);
    assert.equal(held?.status?.agents, 0);
    assert.deepEqual(held?.status?.conditions, [
      {
        type: "NamespaceAllowed",
        status: "False",
        reason: "NamespaceNotAllowed",
        message,
        observedGeneration: 1,
        lastTransitionTime: clock.now().toISOString(),
      },
    ]);
    // The namespace says it first, even when the template would be refused too: one cause at a time.
    fleet.templateError = new AgentTemplateNotAllowedError("spec.agentTemplate.spec.hostPID", "refused");
    clock.advance(60_000);
    await settle();
    assert.deepEqual(
      (await status())?.conditions?.map((c) => c.type),
      ["NamespaceAllowed"],
    );
    assert.deepEqual(fleet.requested, []);
  });

  it("runs the pools of a namespace poolNamespaces lists as any", async () => {
    await controller.stop();
    controller = newController({ poolNamespaces: ["sandboxes", NAMESPACE] });
    await controller.start();
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 3 }));
    await settle();
    assert.equal(fleet.requested.length, 2);
    assert.equal((await status())?.conditions, undefined);
    assert.equal(controller.blockedReason(NAMESPACE, POOL), undefined);
  });

  it("says in the status when the API server refuses its agent Pods, writes the status still, tries again after a back-off, and says True once one is created", async () => {
    const podSecurity =
      'pods "python-agent-0" is forbidden: violates PodSecurity "baseline:latest": privileged (container "agent" must not set securityContext.privileged=true)';
    fleet.startError = new PermissionDeniedError(podSecurity);
    await store.create("SandboxPool", poolObject({ poolMin: 2, poolMax: 3 }));
    await settle();
    assert.deepEqual(fleet.requested, []);
    const refused = await status();
    assert.equal(refused?.desiredAgents, 2, "the status is written");
    assert.equal(refused?.observedGeneration, 1);
    assert.deepEqual(refused?.conditions, [
      {
        type: "AgentPodsCreated",
        status: "False",
        reason: "Forbidden",
        message: podSecurity,
        observedGeneration: 1,
        lastTransitionTime: clock.now().toISOString(),
      },
    ]);

    // A create that waits for the pool's agents is told why none comes.
    assert.equal(controller.canGrow(NAMESPACE, POOL), true, "it is tried again");
    assert.equal(controller.blockedReason(NAMESPACE, POOL), `its agent Pods are refused (Forbidden, tried again): ${podSecurity}`);

    // A full ResourceQuota now, after the back-off.
    const quota = 'pods "python-agent-0" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=10, limited: pods=10';
    fleet.startError = new PermissionDeniedError(quota);
    clock.advance(11_000);
    await settle();
    assert.deepEqual(
      (await status())?.conditions?.map((c) => [c.status, c.reason, c.message]),
      [["False", "QuotaExceeded", quota]],
    );

    // Admitted again: the agents start and the condition says so.
    fleet.startError = undefined;
    clock.advance(11_000);
    await settle();
    assert.equal(fleet.requested.length, 2);
    const created = (await status())?.conditions?.[0];
    assert.equal(controller.blockedReason(NAMESPACE, POOL), undefined, "nothing blocks its agents any more");
    assert.equal(created?.type, "AgentPodsCreated");
    assert.equal(created?.status, "True");
    assert.equal(created?.lastTransitionTime, clock.now().toISOString());
  });

  it("counts the prepared instances its ready agents report, and says in the status while an agent cannot make them, True again once none fails", async () => {
    await controller.stop();
    const reports = new Map<string, PreparedInstancesReport>();
    controller = newController({ preparedInstancesOf: (name) => reports.get(name) });
    await controller.start();
    const pool = poolObject({ poolMin: 2, poolMax: 2 }, 4);
    await store.create("SandboxPool", { ...pool, spec: { ...pool.spec, image: "registry.invalid/app:1" } });
    await settle();
    await allReady();
    assert.equal((await status())?.preparedInstances, 0, "none reported yet");
    assert.equal((await status())?.conditions, undefined, "no agent has said anything is wrong");

    const pullFailed = "image registry.invalid/app:1 could not be pulled: getaddrinfo ENOTFOUND registry.invalid";
    reports.set("python-agent-0", { target: 2, ready: 0, error: pullFailed });
    reports.set("python-agent-1", { target: 2, ready: 1 });
    controller.wake(NAMESPACE, POOL);
    await settle();
    const failing = await status();
    assert.equal(failing?.preparedInstances, 1);
    assert.deepEqual(failing?.conditions, [
      {
        type: "InstancesPrepared",
        status: "False",
        reason: "PrepareFailed",
        message: `agent python-agent-0 cannot make prepared instances (creates take the slower path meanwhile; the agents keep trying): ${pullFailed}`,
        observedGeneration: 1,
        lastTransitionTime: clock.now().toISOString(),
      },
    ]);

    reports.set("python-agent-1", { target: 2, ready: 0, error: pullFailed });
    controller.wake(NAMESPACE, POOL);
    await settle();
    assert.match((await status())?.conditions?.[0]?.message ?? "", /^agents python-agent-0, python-agent-1 cannot make prepared instances/);

    // The image is fixed (pushed): both stocks fill.
    clock.advance(1000);
    reports.set("python-agent-0", { target: 2, ready: 2 });
    reports.set("python-agent-1", { target: 2, ready: 2 });
    controller.wake(NAMESPACE, POOL);
    await settle();
    const prepared = await status();
    assert.equal(prepared?.preparedInstances, 4);
    assert.deepEqual(
      prepared?.conditions?.map((c) => [c.type, c.status, c.reason, c.lastTransitionTime]),
      [["InstancesPrepared", "True", "Prepared", clock.now().toISOString()]],
    );

    // A pool that keeps none says nothing of them.
    const current = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(current);
    await store.update("SandboxPool", { ...current, spec: { ...current.spec, preparedInstances: 0 } });
    await settle();
    const none = await status();
    assert.equal(none?.preparedInstances, undefined);
    assert.equal(none?.conditions, undefined);
  });

  it("never places on an agent of an earlier pool of the same name (another pool uid) and stops it", async () => {
    await store.create("SandboxPool", poolObject({ poolMin: 1, poolMax: 2 }));
    await settle();
    await allReady();
    const [own] = fleet.requested as [string];
    const pool = await store.get("SandboxPool", { namespace: NAMESPACE, name: POOL });
    assert.ok(pool?.metadata.uid);
    assert.equal(fleet.agents.get(own)?.poolUid, pool.metadata.uid);
    // The Pod of the pool's earlier incarnation (deleted, created again), not yet garbage-collected.
    const earlier = "python-agent-of-before";
    fleet.add({
      name: earlier,
      namespace: NAMESPACE,
      pool: POOL,
      ready: true,
      endpoint: "10.9.0.1:7071",
      uid: "uid-before",
      poolUid: "uid-of-the-deleted-pool",
    });
    await settle();
    assert.equal(registry.getAgent(earlier), undefined, "never registered: no placement reaches it");
    assert.deepEqual(fleet.stopCalls, [[earlier]], "stopped");
    assert.equal((await status())?.agents, 1, "not counted as the pool's");
    assert.deepEqual(place(2), [own, own], "placements go to the pool's own agent");
    assert.ok(controller.canGrow(NAMESPACE, POOL), "nor counted against poolMax");
  });
});
