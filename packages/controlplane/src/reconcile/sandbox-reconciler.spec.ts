import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, FailedPreconditionError, type Sandbox, type SandboxStatus } from "@fast-sandbox/api";
import { pino } from "pino";
import { CLEANUP_FINALIZER, FAST_PATH_ANNOTATION, REQUEST_ID_ANNOTATION, requestName, type SandboxManager } from "../fastpath/sandbox-manager.js";
import { FakeAgentClient, SandboxManagerFixture, poolOf, sandboxSpec } from "../fastpath/sandbox-manager.fixture.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { FakeClock } from "../controller/clock.js";
import { SandboxReconciler, type AgentObserver, type SandboxReconcilerOptions } from "./sandbox-reconciler.js";
import type { ReplicaLiveness } from "../leader/replica-liveness.js";

type ObservedStatus = NonNullable<ReturnType<AgentObserver["observedStatus"]>>;
type ReportedSandbox = ObservedStatus["status"]["sandboxes"][number];

/** What the pool controller would know of its agents, set by hand: connectivity and the last reported status. */
class FakeAgentObserver implements AgentObserver {
  readonly connectivity = new Map<string, { connected: boolean; since: Date }>();
  readonly observed = new Map<string, ObservedStatus>();
  /** Agents of another namespace than `default` (AgentConnections answers none for a sandbox of another namespace). */
  readonly namespaceOf = new Map<string, string>();
  private readonly listeners = new Set<(agentName: string) => void>();

  agentConnectivity(name: string, namespace?: string): { connected: boolean; since: Date } | undefined {
    return this.of(name, namespace) ? this.connectivity.get(name) : undefined;
  }

  observedStatus(name: string, namespace?: string): ObservedStatus | undefined {
    return this.of(name, namespace) ? this.observed.get(name) : undefined;
  }

  private of(name: string, namespace: string | undefined): boolean {
    return namespace === undefined || (this.namespaceOf.get(name) ?? "default") === namespace;
  }

  onAgentChanged(listener: (agentName: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  readonly reportListeners = new Set<(agentName: string) => void>();

  onAgentReported(listener: (agentName: string) => void): () => void {
    this.reportListeners.add(listener);
    return () => this.reportListeners.delete(listener);
  }

  /** Sets the agent's connectivity (undefined: the agent is gone) and says so, as the pool controller does. */
  set(name: string, connectivity: { connected: boolean; since: Date } | undefined): void {
    if (connectivity) this.connectivity.set(name, connectivity);
    else this.connectivity.delete(name);
    for (const listener of this.listeners) listener(name);
  }
}

const T0 = new Date("2026-03-04T05:06:07.000Z");
const AGENT = "default-0";
const HEALTHY = "default-1";

let fixture: SandboxManagerFixture;
let clock: FakeClock;
let store: SqliteResourceStore;
let registry: AgentRegistry;
let clients: Map<string, FakeAgentClient>;
let observer: FakeAgentObserver;
let manager: SandboxManager;
let reconciler: SandboxReconciler;

const now = () => clock.now();
/** Time passes: timed requeues (expiry, recoveryTimeoutSeconds, back-off) that fall due are queued. */
const advance = (seconds: number) => clock.advance(seconds * 1000);
/** Every change made so far is reconciled: what a pass over all sandboxes used to do, for the changed ones only. */
const settle = () => reconciler.whenIdle();
const stored = (name: string) => fixture.stored(name);
const allocated = () => fixture.allocated();
const condition = (sandbox: Sandbox | undefined, type: string) => sandbox?.status?.conditions?.find((c) => c.type === type);
const client = (name: string) => fixture.client(name);

/** A ready agent of the default pool with a connected client that answers. */
function addAgent(name: string): FakeAgentClient {
  const agent = fixture.addAgent(name);
  observer.set(name, { connected: true, since: now() });
  return agent;
}

/** As the pool controller sees an agent stop answering: not connected since now, no placements. */
function disconnect(name: string): void {
  observer.observed.delete(name);
  registry.setAgentReady(name, false);
  observer.set(name, { connected: false, since: now() });
}

function reconnect(name: string): void {
  registry.setAgentReady(name, true);
  observer.set(name, { connected: true, since: now() });
}

/** A heartbeat of the agent arriving now, asked for at `askedAt`. */
function report(name: string, sandboxes: ReportedSandbox[], askedAt = now()): void {
  observer.observed.set(name, { status: { sandboxes }, at: now(), askedAt });
  for (const listener of observer.reportListeners) listener(name);
}

const spec = sandboxSpec;

/** Whether other replicas may still run, as set by a test; every question asked is kept. */
class FakeReplicaLiveness implements ReplicaLiveness {
  mayRun = true;
  readonly asked: Date[] = [];
  othersMayRunSince(at: Date): Promise<boolean> {
    this.asked.push(at);
    return Promise.resolve(this.mayRun);
  }
}

/** Writes a record straight to the store, as a create cut short by a crash (or `fsb apply`) leaves it. */
const storeRecord = (name: string, status?: SandboxStatus) => fixture.storeRecord(name, status);

/** A Sandbox written with kubectl in pool `later`, which does not exist until addLaterPool(). */
const applyToLaterPool = (name: string) =>
  store.create("Sandbox", {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: "default", finalizers: [CLEANUP_FINALIZER] },
    spec: spec({ poolRef: "later" }),
  });

/** Pool `later` comes, with one ready agent `later-0` of one slot. */
function addLaterPool(): void {
  manager.setPool({
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "later", namespace: "default" },
    spec: { capacity: { poolMin: 1, poolMax: 1 }, maxSandboxesPerPod: 1 },
  });
  registry.upsertAgent({ name: "later-0", namespace: "default", pool: "later", endpoint: "127.0.0.1:7999", capacity: 1, hostIP: "127.0.0.1", images: [] });
  clients.set("later-0", new FakeAgentClient());
}

beforeEach(async () => {
  fixture = new SandboxManagerFixture({ start: T0, pool: poolOf("default") });
  ({ clock, store, registry, clients, manager } = fixture);
  observer = new FakeAgentObserver();
  addAgent(AGENT);
  reconciler = new SandboxReconciler({ store, manager, registry, agents: observer, logger: pino({ level: "silent" }), clock });
  await reconciler.start();
});

afterEach(async () => {
  await reconciler.stop();
  await fixture.close();
});

describe("SandboxReconciler", () => {
  describe("agent connectivity and failurePolicy", () => {
    it("writes AgentConnected=False when the sandbox's agent stops answering, and changes nothing else before recoveryTimeoutSeconds", async () => {
      const created = await manager.create({ name: "web", spec: spec({ recoveryTimeoutSeconds: 10 }) });
      await settle();
      assert.equal(condition(await stored("web"), "AgentConnected"), undefined, "nothing to say while the agent answers");

      disconnect(AGENT);
      advance(1);
      await settle();
      const noticed = await stored("web");
      assert.equal(condition(noticed, "AgentConnected")?.status, "False");
      assert.equal(condition(noticed, "AgentConnected")?.reason, "AgentNotResponding");
      assert.match(condition(noticed, "AgentConnected")?.message ?? "", /failurePolicy Manual acts after 10s/);
      assert.equal(condition(noticed, "AgentConnected")?.lastTransitionTime, now().toISOString());

      advance(8.9); // under 10 s both from the disconnect and from the notice
      await settle();
      const waiting = await stored("web");
      assert.equal(waiting?.status?.phase, "Running");
      assert.equal(waiting?.status?.sandboxID, created.status?.sandboxID);
      assert.equal(condition(waiting, "Ready")?.status, "True");
      assert.equal(registry.placementOf("default/web")?.agent.name, AGENT);
      assert.equal(allocated(), 1);
      assert.deepEqual(client(AGENT).calls, [`create ${created.status?.sandboxID}`]);
    });

    it("forgets an agent gone for good once no sandbox names it any more (Kubernetes names every agent Pod anew)", async () => {
      const goneSince = (reconciler as unknown as { goneSince: Map<string, Date> }).goneSince;
      await manager.create({ name: "web", spec: spec() });
      await manager.create({ name: "api", spec: spec() });
      await settle();
      observer.set(AGENT, undefined);
      await settle();
      assert.ok(goneSince.has(AGENT), "remembered while its sandboxes name it");
      await manager.delete("default", "web");
      await settle();
      assert.ok(goneSince.has(AGENT), "one still names it");
      await manager.delete("default", "api");
      await settle();
      assert.equal(goneSince.size, 0);
    });

    it("says AgentGone when the agent no longer exists", async () => {
      await manager.create({ name: "web", spec: spec() });
      await settle();
      observer.set(AGENT, undefined);
      await settle();
      const noticed = await stored("web");
      assert.equal(condition(noticed, "AgentConnected")?.status, "False");
      assert.equal(condition(noticed, "AgentConnected")?.reason, "AgentGone");
    });

    it("says AgentGone when the agent's name is an agent's of another namespace now (its Pod gone, another namespace's Pod named so), connected as that one is", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      observer.namespaceOf.set(AGENT, "other");
      observer.set(AGENT, { connected: true, since: now() });
      report(AGENT, [{ sandboxId: created.status?.sandboxID ?? "", state: "running" }]);
      await settle();
      const noticed = await stored("web");
      assert.equal(condition(noticed, "AgentConnected")?.status, "False", "not its agent, whatever that one says");
      assert.equal(condition(noticed, "AgentConnected")?.reason, "AgentGone");
    });

    it("Manual: after recoveryTimeoutSeconds the sandbox is Lost (kept, Ready=False/AgentLost) and its slot released", async () => {
      const created = await manager.create({ name: "web", spec: spec({ recoveryTimeoutSeconds: 10, exposedPorts: [8080] }) });
      await settle();
      disconnect(AGENT);
      await settle();
      advance(10);
      await settle();
      const lost = await stored("web");
      assert.equal(lost?.status?.phase, "Lost");
      assert.deepEqual(lost?.status?.endpoints, []);
      assert.equal(lost?.status?.sandboxID, created.status?.sandboxID, "kept: the instance may come back with its agent");
      assert.equal(condition(lost, "Ready")?.status, "False");
      assert.equal(condition(lost, "Ready")?.reason, "AgentLost");
      assert.equal(lost?.metadata.deletionTimestamp, undefined);
      assert.equal(registry.placementOf("default/web"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(registry.getAgent(AGENT)?.usedPorts, []);

      // Later passes leave it so: nothing to recreate with Manual.
      advance(60);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Lost");
      assert.deepEqual(client(AGENT).calls, [`create ${created.status?.sandboxID}`]);
    });

    it("AutoRecreate: after recoveryTimeoutSeconds a new instance runs on a healthy agent of the pool", async () => {
      const created = await manager.create({ name: "web", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      assert.equal(created.status?.assignedPod, AGENT);
      const healthy = addAgent(HEALTHY);
      await settle();
      disconnect(AGENT);
      await settle();
      advance(4);
      await settle();
      assert.deepEqual(healthy.calls, [], "not before the timeout");

      advance(1);
      await settle();
      const recreated = await stored("web");
      assert.equal(recreated?.status?.phase, "Running");
      assert.equal(recreated?.status?.assignedPod, HEALTHY);
      const newId = recreated?.status?.sandboxID ?? "";
      assert.notEqual(newId, created.status?.sandboxID);
      assert.equal(recreated?.metadata.uid, created.metadata.uid);
      assert.equal(recreated?.status?.recreations, 1);
      assert.equal(condition(recreated, "Recreated")?.status, "True");
      assert.equal(condition(recreated, "Recreated")?.reason, "AgentLost");
      assert.equal(condition(recreated, "AgentConnected")?.status, "True");
      assert.equal(condition(recreated, "Ready")?.status, "True");
      assert.deepEqual(healthy.calls, [`create ${newId}`]);
      assert.deepEqual(client(AGENT).calls, [`create ${created.status?.sandboxID}`], "the unreachable agent is not called");
      assert.equal(registry.placementOf("default/web")?.agent.name, HEALTHY);
      assert.equal(allocated(), 1);
    });

    it("an agent back within the timeout: AgentConnected=True and nothing recreated, even after the timeout", async () => {
      const created = await manager.create({ name: "web", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      addAgent(HEALTHY);
      await settle();
      disconnect(AGENT);
      await settle();
      assert.equal(condition(await stored("web"), "AgentConnected")?.status, "False");

      advance(3);
      reconnect(AGENT);
      await settle();
      const back = await stored("web");
      assert.equal(condition(back, "AgentConnected")?.status, "True");
      assert.equal(condition(back, "AgentConnected")?.reason, "AgentReady");

      advance(30);
      await settle();
      const later = await stored("web");
      assert.equal(later?.status?.phase, "Running");
      assert.equal(later?.status?.sandboxID, created.status?.sandboxID);
      assert.equal(later?.status?.assignedPod, AGENT);
      assert.equal(later?.status?.recreations, undefined);
      assert.deepEqual(client(HEALTHY).calls, []);
      assert.deepEqual(client(AGENT).calls, [`create ${created.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });
    it("an agent that answers again but is still being set up (adoption, prewarm) when the timeout falls due: neither Lost nor recreated", async () => {
      for (const failurePolicy of ["Manual", "AutoRecreate"] as const) {
        const name = `web-${failurePolicy.toLowerCase()}`;
        const created = await manager.create({ name, spec: spec({ failurePolicy, recoveryTimeoutSeconds: 10 }) });
        await settle();
        disconnect(AGENT);
        await settle();
        advance(8);
        // Its heartbeats are answered again; the connection counts once its onboarding has finished.
        report(AGENT, [{ sandboxId: created.status?.sandboxID ?? "", state: "running" }]);
        await settle();
        advance(30);
        await settle();
        const during = await stored(name);
        assert.equal(during?.status?.phase, "Running", `${failurePolicy}: not Lost while its agent is set up`);
        assert.equal(during?.status?.sandboxID, created.status?.sandboxID, `${failurePolicy}: not recreated`);
        assert.equal(registry.placementOf(`default/${name}`)?.agent.name, AGENT, `${failurePolicy}: its slot is kept`);

        reconnect(AGENT);
        await settle();
        const back = await stored(name);
        assert.equal(condition(back, "AgentConnected")?.status, "True");
        assert.equal(back?.status?.phase, "Running");
      }
    });

    it("counts an outage from its own start when the agent came back and went again before the record said so", async () => {
      await manager.create({ name: "web", spec: spec({ recoveryTimeoutSeconds: 10 }) });
      await settle();
      disconnect(AGENT);
      await settle();
      assert.equal(condition(await stored("web"), "AgentConnected")?.status, "False");
      // Back for a moment and away again, both unseen by this reconciler: the record still says False from the first outage.
      advance(8);
      observer.set(AGENT, { connected: false, since: now() });
      advance(4);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running", "4 s into this outage, not 12 s");
      advance(6);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Lost", "10 s into this outage");
    });
  });

  describe("a vanished instance", () => {
    it("marks a Running sandbox Lost when its answering agent's report, asked for after the record last changed, lacks it; its slot is freed", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      const id = created.status?.sandboxID ?? "";
      advance(1);
      report(AGENT, [{ sandboxId: id, state: "running" }]);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running", "reported: nothing to do");
      assert.equal(allocated(), 1);

      // Its container removed behind the agent's back (ctr, containerd's state lost).
      client(AGENT).sandboxes.delete(id);
      advance(1);
      report(AGENT, []);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running", "one report is not enough");
      advance(5);
      report(AGENT, []);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running", "missing for 5 s");
      advance(5);
      report(AGENT, []);
      await settle();
      const lost = await stored("web");
      assert.equal(lost?.status?.phase, "Lost");
      assert.equal(condition(lost, "Ready")?.reason, "SandboxMissing");
      assert.match(condition(lost, "Ready")?.message ?? "", /agent default-0 answers but does not run it/);
      assert.equal(allocated(), 0, "its slot is free");
    });

    it("marks a Running sandbox Lost (SandboxStopped) when its agent reports it held with its process 1 gone for 10 s; AutoRecreate replaces it then", async () => {
      const manual = await manager.create({ name: "manual", spec: spec() });
      const auto = await manager.create({ name: "auto", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      await settle();
      assert.equal(allocated(), 2);
      // Their tasks killed outside Fast Sandbox (or the host restarted): the containers stay, stopped.
      const stopped = [manual, auto].map((sandbox) => ({ sandboxId: sandbox.status?.sandboxID ?? "", state: "stopped" as const }));
      for (const seconds of [1, 5]) {
        advance(seconds);
        report(AGENT, stopped);
        await settle();
        assert.equal((await stored("manual"))?.status?.phase, "Running", `stopped for ${seconds === 1 ? 0 : 5} s only`);
        assert.equal((await stored("auto"))?.status?.sandboxID, auto.status?.sandboxID);
      }
      advance(5);
      report(AGENT, stopped);
      await settle();
      const lost = await stored("manual");
      assert.equal(lost?.status?.phase, "Lost");
      assert.equal(condition(lost, "Ready")?.reason, "SandboxStopped");
      assert.match(condition(lost, "Ready")?.message ?? "", /agent default-0 answers but the sandbox's process 1 is gone/);
      assert.ok(client(AGENT).calls.includes(`delete ${manual.status?.sandboxID} 0`), "its stopped instance, which holds a slot on the agent, goes");
      assert.equal(lost?.status?.sandboxID, manual.status?.sandboxID, "the record keeps the instance's identity");
      // AutoRecreate's timeout counts from when the agent was last seen answering for it: long past.
      advance(1);
      await settle();
      const replaced = await stored("auto");
      assert.equal(replaced?.status?.phase, "Running");
      assert.notEqual(replaced?.status?.sandboxID, auto.status?.sandboxID, "a new instance");
      assert.equal(replaced?.status?.recreations, 1);
      assert.equal(condition(replaced, "Recreated")?.reason, "InstanceLost");
      assert.match(condition(replaced, "Recreated")?.message ?? "", /recreated 1 time/);
      assert.ok(
        client(AGENT).calls.some((call) => call.startsWith(`delete ${auto.status?.sandboxID} `)),
        "the stopped instance removed",
      );
      assert.equal(allocated(), 1, "the Lost one's slot is free; the replacement holds one");
    });

    it("marks a sandbox its agent evicted (stopped, past its disk limit) Lost with reason Evicted and the agent's words; AutoRecreate replaces it", async () => {
      const manual = await manager.create({ name: "manual", spec: spec() });
      const auto = await manager.create({ name: "auto", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      await settle();
      const evicted = "its disk use, 24.00 MiB (root file system changes, run directory and removed files still held open), went past its limit of 16.00 MiB";
      const stopped = [manual, auto].map((sandbox) => ({ sandboxId: sandbox.status?.sandboxID ?? "", state: "stopped" as const, evicted }));
      // No confirmation window: the agent says it stopped them (a sandbox stopped without a word waits 10 s, above).
      advance(1);
      report(AGENT, stopped);
      await settle();
      const lost = await stored("manual");
      assert.equal(lost?.status?.phase, "Lost");
      assert.deepEqual([condition(lost, "Ready")?.reason, condition(lost, "Ready")?.message], ["Evicted", `agent default-0 stopped it: ${evicted}`]);
      assert.ok(client(AGENT).calls.includes(`delete ${manual.status?.sandboxID} 0`), "its stopped instance goes, with what it wrote");
      // AutoRecreate after its recoveryTimeoutSeconds (5), counted from when its agent last answered for it running.
      advance(5);
      report(AGENT, stopped.slice(1));
      await settle();
      const replaced = await stored("auto");
      assert.equal(replaced?.status?.phase, "Running");
      assert.notEqual(replaced?.status?.sandboxID, auto.status?.sandboxID, "a new instance");
      assert.equal(condition(replaced, "Recreated")?.reason, "InstanceLost");
    });

    it("AutoRecreate backs off a sandbox whose instances keep being lost soon after they are made (at once, then 10 s, 20 s from the loss), and starts over after one ran 10 minutes", async () => {
      const first = await manager.create({ name: "auto", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      await settle();
      const evicted = "its disk use, 24.00 MiB (root file system changes, run directory and removed files still held open), went past its limit of 16.00 MiB";
      /** Its instance now, evicted by its agent; answers the instance lost. */
      const evict = async (): Promise<string> => {
        const sandboxId = (await stored("auto"))?.status?.sandboxID ?? "";
        advance(1);
        report(AGENT, [{ sandboxId, state: "stopped", evicted }]);
        await settle();
        return sandboxId;
      };
      /** Reports nothing held and lets `seconds` pass; answers the instance the sandbox has then. */
      const after = async (seconds: number): Promise<Sandbox | undefined> => {
        advance(seconds);
        report(AGENT, []);
        await settle();
        return stored("auto");
      };
      // The first loss: replaced once recoveryTimeoutSeconds (5) passed, as without a back-off.
      assert.equal(await evict(), first.status?.sandboxID);
      assert.equal((await stored("auto"))?.status?.phase, "Lost");
      const second = await after(5);
      assert.equal(second?.status?.phase, "Running");
      assert.equal(second?.status?.recreations, 1);
      // Lost 1 s after it was made: 10 s from the loss.
      await evict();
      const waiting = await after(8);
      assert.equal(waiting?.status?.phase, "Lost", "8 s after the second loss in a row");
      assert.equal(condition(waiting, "Ready")?.reason, "Evicted");
      assert.match(
        condition(waiting, "Ready")?.message ?? "",
        /^agent default-0 stopped it: its disk use.*; AutoRecreate backs off: a new instance at \S+, 10s after the loss \(its new instance was lost within 10 minutes of being made\)$/,
      );
      const third = await after(2);
      assert.equal(third?.status?.phase, "Running", "10 s after the loss");
      assert.equal(third?.status?.recreations, 2);
      assert.equal(condition(third, "Ready")?.reason, "Started");
      // Lost again soon: 20 s.
      await evict();
      assert.equal((await after(18))?.status?.phase, "Lost", "18 s after the third loss in a row");
      assert.match(
        condition(await stored("auto"), "Ready")?.message ?? "",
        /; AutoRecreate backs off: a new instance at \S+, 20s after the loss \(its last 2 new instances were each lost within 10 minutes of being made\)$/,
      );
      const fourth = await after(2);
      assert.equal(fourth?.status?.phase, "Running", "20 s after the loss");
      // One that ran 10 minutes: the count starts over. Replaced at once (recoveryTimeoutSeconds
      // counts from when its agent last answered for it running: long past).
      for (let minute = 0; minute < 10; minute += 1) {
        advance(60);
        report(AGENT, [{ sandboxId: fourth?.status?.sandboxID ?? "", state: "running" }]);
        await settle();
      }
      assert.equal(await evict(), fourth?.status?.sandboxID);
      const fifth = await stored("auto");
      assert.equal(fifth?.status?.phase, "Running", "replaced at once after an instance that ran 10 minutes");
      assert.notEqual(fifth?.status?.sandboxID, fourth?.status?.sandboxID);
      assert.equal(fifth?.status?.recreations, 4);
    });

    it("a sandbox whose instance was lost and whose first recreate failed is recreated for the same reason (InstanceLost)", async () => {
      const auto = await manager.create({ name: "auto", spec: spec({ failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 5 }) });
      await settle();
      const stopped = [{ sandboxId: auto.status?.sandboxID ?? "", state: "stopped" as const }];
      client(AGENT).createError = new FailedPreconditionError("image python:3.12 not found");
      for (const seconds of [1, 5, 5, 1]) {
        advance(seconds);
        report(AGENT, stopped);
        await settle();
      }
      const failed = await stored("auto");
      assert.equal(condition(failed, "Ready")?.reason, "RecreateFailed");
      assert.equal(condition(failed, "Recreated")?.status, "False");
      assert.equal(condition(failed, "Recreated")?.reason, "InstanceLost");

      client(AGENT).createError = undefined;
      advance(60);
      report(AGENT, []);
      await settle();
      const replaced = await stored("auto");
      assert.equal(replaced?.status?.phase, "Running");
      assert.equal(condition(replaced, "Recreated")?.status, "True");
      assert.equal(condition(replaced, "Recreated")?.reason, "InstanceLost", "not AgentLost: its agent answered all along");
    });

    it("keeps a Running sandbox whose task is stopped while a checkpoint of it is in flight", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      for (const seconds of [1, 6, 6]) {
        advance(seconds);
        report(AGENT, [{ sandboxId: created.status?.sandboxID ?? "", state: "stopped", checkpointing: true }]);
        await settle();
      }
      assert.equal((await stored("web"))?.status?.phase, "Running");
      assert.equal(allocated(), 1);
    });

    it("keeps a sandbox its agent misses for a moment and reports again", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      advance(1);
      report(AGENT, []);
      await settle();
      advance(5);
      report(AGENT, [{ sandboxId: created.status?.sandboxID ?? "", state: "running" }]);
      await settle();
      advance(6);
      report(AGENT, []);
      await settle();
      advance(6);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running", "missing again for 6 s only: the count started over");
    });

    it("does not count a report asked for before the record became what it is (another replica's create may postdate it)", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      // Two reports asked for before the reconciler saw the record Running (15 s apart), arriving after it: neither counts.
      const staleReport = (askedAgoMs: number) => {
        observer.observed.set(AGENT, { status: { sandboxes: [] }, at: now(), askedAt: new Date(now().getTime() - askedAgoMs) });
        for (const listener of observer.reportListeners) listener(AGENT);
      };
      staleReport(15_000);
      await settle();
      staleReport(1);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running");

      // The next report, asked for later, has it.
      advance(1);
      report(AGENT, [{ sandboxId: created.status?.sandboxID ?? "", state: "running" }]);
      await settle();
      advance(5);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running");
      assert.equal(allocated(), 1);
    });
  });

  describe("reset", () => {
    it("a changed resetRevision replaces the instance once and records it as accepted", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const oldId = created.status?.sandboxID ?? "";
      await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) });
      await settle();
      const reset = await stored("web");
      assert.equal(reset?.status?.acceptedResetRevision, "r1");
      assert.equal(reset?.status?.phase, "Running");
      const newId = reset?.status?.sandboxID ?? "";
      assert.notEqual(newId, oldId);
      assert.equal(reset?.status?.recreations, 1);
      assert.equal(condition(reset, "Recreated")?.reason, "Reset");
      assert.deepEqual(client(AGENT).calls, [`create ${oldId}`, `delete ${oldId} 2000`, `create ${newId}`]);

      advance(60);
      await settle();
      assert.equal((await stored("web"))?.status?.sandboxID, newId, "an accepted revision is not reset again");
      assert.equal(client(AGENT).calls.length, 3);
      assert.equal(allocated(), 1);
    });

    it("a Failed sandbox (stopped by a checkpoint that could not be saved) is left alone, and brought back by a reset", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await settle();
      const running = await stored("web");
      assert.ok(running?.status);
      await store.updateStatus("Sandbox", { ...running, status: { ...running.status, phase: "Failed" } });
      advance(60);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Failed", "nothing brings a Failed sandbox back by itself");

      await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) });
      await settle();
      const reset = await stored("web");
      assert.equal(reset?.status?.phase, "Running");
      assert.equal(reset?.status?.acceptedResetRevision, "r1");
      assert.notEqual(reset?.status?.sandboxID, created.status?.sandboxID);
      assert.equal(condition(reset, "Recreated")?.reason, "Reset");
      assert.ok(client(AGENT).calls.includes(`delete ${created.status?.sandboxID ?? ""} 2000`), "what is left of the failed instance is removed");
      assert.equal(allocated(), 1);
    });

    it("a reset whose new instance failed to start is tried again after a pause, not at once", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const creates = () => client(AGENT).calls.filter((call) => call.startsWith("create")).length;
      await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) });
      client(AGENT).createError = new FailedPreconditionError("image python:3.12 not found");
      await settle();
      const failed = await stored("web");
      assert.equal(condition(failed, "Ready")?.reason, "RecreateFailed");
      assert.equal(failed?.status?.phase, "Lost");
      assert.notEqual(failed?.status?.acceptedResetRevision, "r1", "the revision is not accepted while no instance runs for it");
      assert.equal(allocated(), 0);
      assert.equal(creates(), 2, "the original and one failed attempt: the failure's own status write does not retry it at once");
      advance(0.1);
      await settle();
      assert.equal(creates(), 2, "nor before the first pause between attempts");

      client(AGENT).createError = undefined;
      advance(60);
      await settle();
      const reset = await stored("web");
      assert.equal(reset?.status?.phase, "Running");
      assert.equal(reset?.status?.acceptedResetRevision, "r1");
      assert.notEqual(reset?.status?.sandboxID, created.status?.sandboxID);
      assert.equal(condition(reset, "Ready")?.status, "True");
      assert.equal(allocated(), 1);
    });
  });

  describe("unfinished creates", () => {
    const ID = "default.cut-short.abc123";

    it("Bound, its agent reporting it running after the record was first seen: Running, slot restored", async () => {
      // A report older than the record's first sighting may predate the create: it decides nothing.
      report(AGENT, []);
      await storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID });
      await settle();
      assert.equal((await stored("cut-short"))?.status?.phase, "Bound");

      advance(1);
      report(AGENT, [{ sandboxId: ID, state: "running" }]);
      await settle();
      const adopted = await stored("cut-short");
      assert.equal(adopted?.status?.phase, "Running");
      assert.equal(adopted?.status?.sandboxID, ID);
      assert.equal(condition(adopted, "Ready")?.status, "True");
      assert.equal(registry.placementOf("default/cut-short")?.agent.name, AGENT);
      assert.equal(allocated(), 1);
      assert.deepEqual(client(AGENT).calls, []);
    });

    it("Bound, an agent of another namespace under its agent's name reporting it running: not taken for its agent, the record stays Bound", async () => {
      observer.namespaceOf.set(AGENT, "other");
      report(AGENT, []);
      await storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID });
      await settle();
      advance(1);
      report(AGENT, [{ sandboxId: ID, state: "running" }]);
      await settle();
      assert.equal((await stored("cut-short"))?.status?.phase, "Bound", "what that agent says is not about this sandbox");
      assert.equal(registry.placementOf("default/cut-short"), undefined);
    });

    it("Bound by a fast-path create, its agent reporting nothing of it after the record was first seen: removed, the agent told to delete the id", async () => {
      const seen = await fixture.storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID }, {}, { [FAST_PATH_ANNOTATION]: "true" });
      registry.restore({ sandboxKey: "default/cut-short", agentName: AGENT, ports: [] });
      report(AGENT, []);
      await settle();
      assert.equal((await stored("cut-short"))?.metadata.uid, seen.metadata.uid, "the report predates the first sighting");

      advance(1);
      report(AGENT, [{ sandboxId: "someone.else.000000", state: "running" }]);
      await settle();
      assert.equal(await stored("cut-short"), undefined);
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 0`]);
      assert.equal(allocated(), 0);
    });

    it("Bound by a fast-path create, its agent holding it with its process 1 gone (an exit code recorded): removed, never Running", async () => {
      await fixture.storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID }, {}, { [FAST_PATH_ANNOTATION]: "true" });
      registry.restore({ sandboxKey: "default/cut-short", agentName: AGENT, ports: [] });
      await settle();
      advance(1);
      report(AGENT, [{ sandboxId: ID, state: "stopped", exitCode: 0 }]);
      await settle();
      assert.equal(await stored("cut-short"), undefined);
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 0`]);
      assert.equal(allocated(), 0);
    });

    it("Bound: a report that arrives after the record was first seen but was asked for before it does not count", async () => {
      const seen = await fixture.storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID }, {}, { [FAST_PATH_ANNOTATION]: "true" });
      registry.restore({ sandboxKey: "default/cut-short", agentName: AGENT, ports: [] });
      await settle();
      const sighted = now();
      advance(1);
      // The heartbeat was on its way when the record was seen: it may predate the agent's create.
      report(AGENT, [], new Date(sighted.getTime() - 1));
      await settle();
      assert.equal((await stored("cut-short"))?.metadata.uid, seen.metadata.uid);
      assert.deepEqual(client(AGENT).calls, []);

      advance(1);
      report(AGENT, []);
      await settle();
      assert.equal(await stored("cut-short"), undefined);
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 0`]);
    });

    it("Bound from a record its user applied, its agent reporting nothing of it: Pending again and placed anew, never deleted", async () => {
      const seen = await storeRecord("applied", { phase: "Bound", assignedPod: AGENT, sandboxID: ID });
      registry.restore({ sandboxKey: "default/applied", agentName: AGENT, ports: [] });
      report(AGENT, []);
      await settle();
      advance(1);
      report(AGENT, [{ sandboxId: "someone.else.000000", state: "running" }]);
      await settle();
      const placed = await stored("applied");
      assert.equal(placed?.metadata.uid, seen.metadata.uid, "the user's object is kept");
      assert.equal(client(AGENT).calls[0], `delete ${ID} 0`);
      assert.equal(placed?.status?.phase, "Running", "placed anew by the reconciler");
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 0`, `create ${placed?.status?.sandboxID}`]);
      assert.notEqual(placed?.status?.sandboxID, ID, "nothing of the cut-short try");
    });

    it("Bound in the middle of a recreation, its agent reporting nothing of it: recreated, never removed", async () => {
      const seen = await storeRecord("recreating", {
        phase: "Bound",
        assignedPod: AGENT,
        sandboxID: ID,
        conditions: [{ type: "Recreated", status: "Unknown", reason: "AgentLost", message: "recreating", lastTransitionTime: T0.toISOString() }],
      });
      await settle();
      advance(1);
      report(AGENT, []);
      await settle();
      const recreated = await stored("recreating");
      assert.equal(recreated?.status?.phase, "Running");
      assert.equal(recreated?.metadata.uid, seen.metadata.uid);
      assert.notEqual(recreated?.status?.sandboxID, ID);
      assert.equal(recreated?.status?.recreations, 1);
      assert.equal(condition(recreated, "Recreated")?.status, "True");
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 2000`, `create ${recreated?.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });

    it("Bound while its agent still reports it creating: left alone", async () => {
      await storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID });
      await settle();
      for (let i = 0; i < 3; i++) {
        advance(60);
        report(AGENT, [{ sandboxId: ID, state: "creating" }]);
        await settle();
      }
      const record = await stored("cut-short");
      assert.equal(record?.status?.phase, "Bound");
      assert.deepEqual(client(AGENT).calls, []);
    });

    it("Pending by a fast-path create nobody here creates or waits for (its caller was never answered): removed, never placed", async () => {
      await fixture.storeRecord(
        "unanswered",
        {
          phase: "Pending",
          conditions: [{ type: "Scheduled", status: "False", reason: "WaitingForCapacity", message: "waiting", lastTransitionTime: T0.toISOString() }],
        },
        {},
        { [FAST_PATH_ANNOTATION]: "true" },
      );
      await settle();
      assert.equal(await stored("unanswered"), undefined);
      assert.deepEqual(client(AGENT).calls, [], "no instance under a name nobody knows");
      assert.equal(allocated(), 0);
    });

    it("Pending by a fast-path create, a retry of its request waiting for it after a restart: placed for the retry, which is answered then (not after 90 s)", async () => {
      await reconciler.stop();
      const name = requestName("default", "req-restart");
      const record = await fixture.storeRecord(name, undefined, {}, { [FAST_PATH_ANNOTATION]: "true", [REQUEST_ID_ANNOTATION]: "req-restart" });
      let answer: unknown;
      const call = manager.create({ spec: spec(), requestId: "req-restart" });
      call.then(
        (sandbox) => (answer = sandbox),
        (error: unknown) => (answer = error),
      );
      for (let turn = 0; turn < 100 && !manager.awaitedByRetry("default", name); turn++) await new Promise((resolve) => setImmediate(resolve));
      assert.ok(manager.awaitedByRetry("default", name), "the retry waits for the earlier attempt's record");
      // The control plane after its restart: a reconciler of its own.
      reconciler = new SandboxReconciler({ store, manager, registry, agents: observer, logger: pino({ level: "silent" }), clock });
      await reconciler.start();
      await settle();
      await clock.advanceAsync(100);
      const placed = await stored(name);
      assert.equal(placed?.status?.phase, "Running");
      assert.equal(placed?.metadata.uid, record.metadata.uid);
      assert.deepEqual(client(AGENT).calls, [`create ${placed?.status?.sandboxID}`]);
      assert.equal((answer as Sandbox | undefined)?.metadata?.uid, record.metadata.uid, "answered once placed");
      assert.equal((answer as Sandbox).status?.phase, "Running");
    });

    it("Pending, nobody placing it: placed on an agent and Running", async () => {
      const pending = await storeRecord("applied");
      await settle();
      const placed = await stored("applied");
      assert.equal(placed?.status?.phase, "Running");
      assert.equal(placed?.metadata.uid, pending.metadata.uid);
      assert.equal(placed?.status?.assignedPod, AGENT);
      assert.deepEqual(client(AGENT).calls, [`create ${placed?.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });
  });

  describe("several replicas (Kubernetes mode)", () => {
    /** The reconciler again, as a replica of several runs it: another replica's creates get a 60 s grace. */
    async function asReplica(options: Pick<SandboxReconcilerOptions, "clock" | "replicas">): Promise<void> {
      await reconciler.stop();
      reconciler = new SandboxReconciler({
        store,
        manager,
        registry,
        agents: observer,
        logger: pino({ level: "silent" }),
        foreignCreateGraceMs: 60_000,
        ...options,
      });
      await reconciler.start();
    }

    it("leaves a Pending record another replica's fast path wrote to it for the grace plus the pool's wake timeout, then places it", async () => {
      // The store stamps creationTimestamp with the real time: this clock starts there.
      const replicaClock = new FakeClock(new Date());
      await asReplica({ clock: replicaClock });
      await store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: "theirs", namespace: "default", finalizers: [CLEANUP_FINALIZER], annotations: { [FAST_PATH_ANNOTATION]: "true" } },
        spec: spec(),
      });
      await settle();
      replicaClock.advance((60 + 25) * 1000);
      await settle();
      assert.equal((await stored("theirs"))?.status?.phase, undefined, "another replica's create is left to it");
      assert.deepEqual(client(AGENT).calls, []);
      replicaClock.advance(10 * 1000);
      await settle();
      assert.equal((await stored("theirs"))?.status?.phase, "Running", "a create its replica did not finish is placed");
    });

    it("places a Pending record another replica's fast path wrote before its grace is over once no replica that ran when it was written runs", async () => {
      const replicaClock = new FakeClock(new Date());
      const replicas = new FakeReplicaLiveness();
      await asReplica({ clock: replicaClock, replicas });
      const written = await store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: "theirs", namespace: "default", finalizers: [CLEANUP_FINALIZER], annotations: { [FAST_PATH_ANNOTATION]: "true" } },
        spec: spec(),
      });
      await settle();
      replicaClock.advance(10 * 1000);
      await settle();
      assert.equal((await stored("theirs"))?.status?.phase, undefined, "while its writer may run, the create is left to it");
      assert.deepEqual(client(AGENT).calls, []);
      const writtenMs = Date.parse(written.metadata.creationTimestamp ?? "");
      assert.ok(
        replicas.asked.length > 0 && replicas.asked.every((at) => at.getTime() === writtenMs + 1000),
        `asked about the second after it was written: ${replicas.asked.join(", ")}`,
      );

      replicas.mayRun = false;
      replicaClock.advance(2 * 1000);
      await settle();
      assert.equal((await stored("theirs"))?.status?.phase, "Running", "nobody can be creating it any more: placed long before the grace is over");
    });

    it("removes a Bound record of a fast-path create its agent does not report before the grace is over once no replica that ran when it was seen runs", async () => {
      const ID = "default.cut-short.abc123";
      const replicas = new FakeReplicaLiveness();
      await asReplica({ clock, replicas });
      await fixture.storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: ID }, {}, { [FAST_PATH_ANNOTATION]: "true" });
      registry.restore({ sandboxKey: "default/cut-short", agentName: AGENT, ports: [] });
      const writtenAt = now();
      advance(1);
      report(AGENT, []);
      await settle();
      advance(10);
      report(AGENT, []);
      await settle();
      assert.equal((await stored("cut-short"))?.status?.phase, "Bound", "while another replica that ran when it was seen may run, it may still be creating it");
      assert.deepEqual(client(AGENT).calls, []);
      const firstSeen = replicas.asked[0]?.getTime() ?? 0;
      assert.ok(
        firstSeen >= writtenAt.getTime() && replicas.asked.every((at) => at.getTime() === firstSeen),
        `asked about when it was first seen Bound: ${replicas.asked.join(", ")}`,
      );

      replicas.mayRun = false;
      advance(2);
      report(AGENT, []);
      await settle();
      assert.equal(await stored("cut-short"), undefined, "nobody is creating it: removed long before the grace is over");
      assert.deepEqual(client(AGENT).calls, [`delete ${ID} 0`]);
      assert.equal(allocated(), 0);
    });
  });

  describe("sandboxes written to the store (kubectl apply) that cannot be placed yet", () => {
    it("a pool that does not exist yet: the record stays Pending with Scheduled=False/PoolNotFound, and is placed once the pool exists", async () => {
      const created = await applyToLaterPool("early");
      await settle();
      const waiting = await stored("early");
      assert.equal(waiting?.metadata.uid, created.metadata.uid);
      assert.equal(waiting?.status?.phase, "Pending");
      assert.equal(condition(waiting, "Scheduled")?.status, "False");
      assert.equal(condition(waiting, "Scheduled")?.reason, "PoolNotFound");
      assert.match(condition(waiting, "Scheduled")?.message ?? "", /pool default\/later does not exist/);
      assert.deepEqual(client(AGENT).calls, []);

      addLaterPool();
      advance(5);
      await settle();
      const placed = await stored("early");
      assert.equal(placed?.status?.phase, "Running");
      assert.equal(placed?.status?.assignedPod, "later-0");
      assert.equal(condition(placed, "Scheduled")?.status, "True");
    });

    it("an agent that fails the create: the record stays Pending with nothing of the try (no agent, no id, no slot) and the reason, and is tried again", async () => {
      client(AGENT).createError = new FailedPreconditionError("image python:3.12 cannot be unpacked");
      // A fact of an earlier try's instance (written from a heartbeat while it ran) is not kept either.
      await storeRecord("applied", {
        phase: "Pending",
        conditions: [
          { type: "CommandExited", status: "True", reason: "Exited", message: "the command exited with code 127", lastTransitionTime: T0.toISOString() },
        ],
      });
      await settle();
      const waiting = await stored("applied");
      assert.equal(condition(waiting, "CommandExited"), undefined);
      assert.equal(waiting?.status?.phase, "Pending");
      assert.equal(waiting?.status?.assignedPod, undefined);
      assert.equal(waiting?.status?.sandboxID, undefined);
      assert.equal(condition(waiting, "Scheduled")?.reason, "PlacementFailed");
      assert.match(condition(waiting, "Scheduled")?.message ?? "", /cannot be unpacked/);
      assert.equal(allocated(), 0);
      const tries = client(AGENT).calls.filter((call) => call.startsWith("create")).length;
      assert.equal(tries, 1);

      client(AGENT).createError = undefined;
      advance(5);
      await settle();
      const placed = await stored("applied");
      assert.equal(placed?.status?.phase, "Running");
      assert.equal(allocated(), 1);
    });
  });

  describe("placement retries", () => {
    it("a create its agent keeps failing is tried again after 3, 6, 12 … s, at most every 60 s; a success starts over", async () => {
      client(AGENT).createError = new FailedPreconditionError("image Upper:1 is not a valid reference");
      await storeRecord("doomed");
      await settle();
      const tries = () => client(AGENT).calls.filter((call) => call.startsWith("create")).length;
      assert.equal(tries(), 1);
      // The try n+1 comes 3 × 2^(n-1) s after the try n, and not a second before.
      const waits = [3, 6, 12, 24, 48, 60, 60];
      for (const [index, wait] of waits.entries()) {
        advance(wait - 1);
        await settle();
        assert.equal(tries(), index + 1, `no try ${index + 2} within ${wait - 1} s`);
        advance(1);
        await settle();
        assert.equal(tries(), index + 2, `try ${index + 2} after ${wait} s`);
      }
      assert.equal((await stored("doomed"))?.status?.phase, "Pending");
      assert.equal(allocated(), 0);

      client(AGENT).createError = undefined;
      advance(60);
      await settle();
      assert.equal((await stored("doomed"))?.status?.phase, "Running");
    });

    it("a sandbox waiting for its pool is tried every 3 s, however long it waits: a pool or a slot comes back by itself", async () => {
      await applyToLaterPool("early");
      await settle();
      assert.equal(condition(await stored("early"), "Scheduled")?.reason, "PoolNotFound");
      advance(120);
      await settle();
      addLaterPool();
      advance(3);
      await settle();
      assert.equal((await stored("early"))?.status?.phase, "Running", "placed within 3 s of its pool's coming, after two minutes of waiting");
    });
  });

  describe("expiry", () => {
    it("deletes a sandbox once its expireTime has passed, and not before", async () => {
      const created = await manager.create({ name: "web", spec: spec({ expireTime: new Date(T0.getTime() + 60_000).toISOString() }) });
      await settle();
      advance(59);
      await settle();
      assert.equal((await stored("web"))?.status?.phase, "Running");

      advance(1);
      await settle();
      assert.equal(await stored("web"), undefined);
      assert.deepEqual(client(AGENT).calls, [`create ${created.status?.sandboxID}`, `delete ${created.status?.sandboxID} 2000`]);
      assert.equal(allocated(), 0);
    });

    it("leaves a Paused sandbox alone whatever end it carries (the end its resume will give it)", async () => {
      await manager.create({ name: "paused", spec: spec({ expireTime: new Date(T0.getTime() + 60_000).toISOString() }) });
      await settle();
      const running = await stored("paused");
      assert.ok(running);
      await store.updateStatus("Sandbox", { ...running, status: { ...running.status, phase: "Paused" } });
      // Minute by minute: a reconcile that fails (a stale cached record) is retried on the clock too.
      for (let minute = 0; minute < 60; minute++) {
        advance(60);
        await settle();
      }
      assert.equal((await stored("paused"))?.status?.phase, "Paused");
    });

    it("follows a changed expireTime: an earlier one deletes earlier, a removed one never", async () => {
      const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000).toISOString();
      await manager.create({ name: "sooner", spec: spec({ expireTime: at(600) }) });
      await manager.create({ name: "kept", spec: spec({ expireTime: at(60) }) });
      await settle();
      await manager.update({ name: "sooner", spec: spec({ expireTime: at(30) }) });
      await manager.update({ name: "kept", spec: spec() });
      await settle();

      advance(29);
      await settle();
      assert.equal((await stored("sooner"))?.status?.phase, "Running");
      advance(1);
      await settle();
      assert.equal(await stored("sooner"), undefined);

      advance(3600);
      await settle();
      assert.equal((await stored("kept"))?.status?.phase, "Running");
    });
  });

  describe("paused sandboxes", () => {
    it("leaves a Paused sandbox (its instance removed, its state in a checkpoint) alone: not placed, not Lost, not removed", async () => {
      addAgent(AGENT);
      await storeRecord("paused", { phase: "Paused", sandboxID: "pausedpausedpaused01", nodeName: "node-1" });
      await settle();
      advance(3600);
      await settle();
      const record = await stored("paused");
      assert.equal(record?.status?.phase, "Paused");
      assert.equal(record?.status?.assignedPod, undefined);
      assert.deepEqual(client(AGENT).calls, []);
      assert.equal(allocated(), 0);
    });
  });
});
