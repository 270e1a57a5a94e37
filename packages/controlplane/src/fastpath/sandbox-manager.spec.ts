import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import {
  ConflictError,
  AlreadyExistsError,
  FailedPreconditionError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  UnavailableError,
  UpstreamUnavailableError,
  ValidationError,
  API_VERSION,
  DEFAULT_NETWORK_MODE,
  sandboxSpecFromMessage,
  sandboxSpecToMessage,
  type EgressPolicy,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
} from "@fast-sandbox/api";
import { pino } from "pino";
import type { AgentClient } from "../agent-client/agent-client.js";
import type { FakeClock } from "../controller/clock.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import type { SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { hashAccessToken } from "../proxy/access-token.js";
import {
  CLEANUP_FINALIZER,
  FAST_PATH_ANNOTATION,
  REQUEST_ID_ANNOTATION,
  REQUEST_SETTLE_MS,
  DELETE_RETRY_MS,
  SandboxManager,
  requestName,
  type ExecInput,
  type PoolCapacity,
} from "./sandbox-manager.js";
import { SandboxManagerFixture, deferred, poolOf, sandboxSpec, type FakeAgentClient } from "./sandbox-manager.fixture.js";

const NOW = new Date("2026-03-04T05:06:07.000Z");
const AGENT = "default-0";

const pool = poolOf;
const spec = sandboxSpec;

let fixture: SandboxManagerFixture;
let store: SqliteResourceStore;
/** The managers' clock: their waits (capacity, pauses between placement tries) end only when a test moves it. */
let clock: FakeClock;
let registry: AgentRegistry;
let agent: FakeAgentClient;
/** The connected agents' clients, by agent name (AGENT's is `agent`). */
let clients: Map<string, FakeAgentClient>;
let manager: SandboxManager;
let released: string[];

beforeEach(() => {
  fixture = new SandboxManagerFixture({
    start: NOW,
    // Shared: the port cases rely on exposed ports being exclusive on the agent's address.
    pool: pool("default", {
      runtimeType: "gvisor",
      sandboxResources: { cpu: "500m", memory: "256Mi", pids: 64, ephemeralStorage: "1Gi" },
      network: { mode: "Shared" },
    }),
  });
  ({ clock, store, registry, manager, clients, released } = fixture);
  agent = fixture.addAgent(AGENT);
});

afterEach(() => fixture.close());

const allocated = () => fixture.allocated();
const stored = (name: string) => fixture.stored(name);

/** The pool controller's side of capacity, as a create sees it: whether the pool may grow, and the wakes it was sent. */
class FakePoolCapacity implements PoolCapacity {
  growable = true;
  /** Why no agent starts for the pool (its template, its namespace), when a test says so. */
  blocked: string | undefined;
  readonly wakes: string[] = [];

  canGrow(): boolean {
    return this.growable;
  }

  blockedReason(): string | undefined {
    return this.blocked;
  }

  wake(namespace: string, pool: string): void {
    this.wakes.push(`${namespace}/${pool}`);
  }
}

/** Registers another agent (ready, with a connected client) and returns its client. */
function addAgent(name: string, pool = "default", capacity = 2): FakeAgentClient {
  return fixture.addAgent(name, { pool, capacity });
}

const storeRecord = (name: string, status?: Sandbox["status"], overrides: Partial<SandboxSpec> = {}) => fixture.storeRecord(name, status, overrides);

/** Polls until `read` returns a value (the state a create in flight passes through), failing after `timeoutMs`. */
async function eventually<T>(read: () => Promise<T | undefined> | T | undefined, timeoutMs = 2000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`condition not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Whether `call` has settled once the promise callbacks pending now have run (one turn of the event loop). */
async function isSettled(call: Promise<unknown>): Promise<boolean> {
  let settled = false;
  const mark = (): void => {
    settled = true;
  };
  call.then(mark, mark);
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

const condition = (sandbox: Sandbox | undefined, type: string) => sandbox?.status?.conditions?.find((c) => c.type === type);

async function rejection(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
  } catch (error) {
    return error;
  }
  assert.fail("expected the call to fail");
}

describe("SandboxManager", () => {
  describe("create", () => {
    it("stores the record with the cleanup finalizer, Running, placed on the agent, and takes a slot", async () => {
      const sandbox = await manager.create({
        name: "web",
        spec: spec({ command: ["python"], args: ["-m", "http.server"], envs: [{ name: "A", value: "1" }], workingDir: "/srv", exposedPorts: [8080] }),
        labels: { team: "a" },
      });
      const sandboxId = sandbox.status?.sandboxID ?? "";
      assert.match(sandboxId, /^[a-z0-9]{20}$/);
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.status?.assignedPod, AGENT);
      assert.equal(sandbox.status?.nodeName, "node-1");
      assert.deepEqual(sandbox.status?.endpoints, [`http://8080-${sandboxId}.localhost:7072/`]);
      assert.deepEqual(
        sandbox.status?.conditions?.map((c) => [c.type, c.status, c.lastTransitionTime]),
        [["Ready", "True", NOW.toISOString()]],
      );

      const record = await stored("web");
      assert.ok(record);
      assert.deepEqual(record.metadata.finalizers, [CLEANUP_FINALIZER]);
      assert.deepEqual(record.metadata.labels, { team: "a" });
      assert.equal(record.metadata.uid, sandbox.metadata.uid);
      assert.equal(record.status?.phase, "Running");
      assert.equal(record.status?.assignedPod, AGENT);
      assert.equal(record.status?.sandboxID, sandboxId);

      assert.equal(registry.placementOf("default/web")?.agent.name, AGENT);
      assert.equal(allocated(), 1);
      assert.deepEqual(agent.calls, [`create ${sandboxId}`]);
    });

    it("sends the spec and the pool's runtime and resources to the agent", async () => {
      await manager.create({ name: "web", spec: spec({ command: ["python"], args: ["app.py"], envs: [{ name: "A", value: "1" }], workingDir: "/srv" }) });
      const request = agent.createRequests[0];
      assert.ok(request);
      assert.equal(request.namespace, "default");
      assert.equal(request.name, "web");
      assert.equal(request.image, "python:3.12");
      assert.deepEqual(request.command, ["python"]);
      assert.deepEqual(request.args, ["app.py"]);
      assert.deepEqual(
        request.envs.map((e) => [e.name, e.value]),
        [["A", "1"]],
      );
      assert.equal(request.workingDir, "/srv");
      assert.equal(request.runtimeType, "gvisor");
      assert.equal(request.cpuMillis, 500);
      assert.equal(request.memoryBytes, 256 * 1024 * 1024);
      assert.equal(request.pids, 64);
      assert.equal(request.ephemeralStorageBytes, 2 ** 30);
    });

    it("sends the agent its slots (the pool's maxSandboxesPerPod) and the exposed ports, for the agent's own admission", async () => {
      await manager.create({ name: "web", spec: spec({ exposedPorts: [8080, 9090] }) });
      await manager.create({ name: "plain", spec: spec() });
      assert.deepEqual(
        agent.createRequests.map((r) => [r.slots, r.exposedPorts]),
        [
          [2, [8080, 9090]],
          [2, []],
        ],
      );
    });

    it("fast mode answers Running and the stored status catches up", async () => {
      const sandbox = await manager.create({ name: "quick", spec: spec({ consistencyMode: "fast" }) });
      assert.equal(sandbox.status?.phase, "Running");
      const read = await manager.get(undefined, "quick");
      assert.equal(read.status?.phase, "Running");
      assert.equal(read.status?.sandboxID, sandbox.status?.sandboxID);
    });

    it("stats: asks the sandbox's agent for its instance's reading; an unknown name is NotFound", async () => {
      const sandbox = await manager.create({ name: "measured", spec: spec() });
      const stats = await manager.stats(undefined, "measured");
      assert.deepEqual(stats, agent.statsAnswer);
      assert.ok(agent.calls.includes(`stats ${sandbox.status?.sandboxID}`));
      assert.ok((await rejection(manager.stats(undefined, "nothing-here"))) instanceof NotFoundError);
    });

    it("gives a sandbox without a name a generated one", async () => {
      const sandbox = await manager.create({ spec: spec() });
      assert.match(sandbox.metadata.name, /^sb-[0-9a-f]{10}$/);
      assert.ok(await stored(sandbox.metadata.name));
    });

    it("on an agent failure releases the slot, deletes the record and deletes the id on the agent", async () => {
      agent.createError = new FailedPreconditionError("image python:3.12 not found");
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
      assert.ok(error instanceof FsbError);
      assert.equal(error.code, "failed_precondition");
      const sandboxId = agent.createRequests[0]?.sandboxId;
      assert.ok(sandboxId);
      assert.deepEqual(agent.calls, [`create ${sandboxId}`, `delete ${sandboxId} 0`]);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(released, ["default/web"]);
      // The name is free again.
      agent.createError = undefined;
      assert.equal((await manager.create({ name: "web", spec: spec() })).status?.phase, "Running");
    });

    it("normalises a plain Error from the agent into an FsbError", async () => {
      agent.createError = new Error("socket hang up");
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
      assert.ok(error instanceof FsbError);
      assert.equal(error.code, "internal");
      assert.match(error.message, /socket hang up/);
    });

    it("fails with Unavailable, leaving nothing behind, when the chosen agent has no connection", async () => {
      fixture.connected = false;
      const creating = rejection(manager.create({ name: "web", spec: spec() }));
      // Placed three times, 300 ms and then 600 ms apart.
      await clock.advanceAsync(900);
      const error = await creating;
      assert.ok(error instanceof UnavailableError);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(agent.calls, []);
    });

    it("refuses a name that is taken", async () => {
      await manager.create({ name: "web", spec: spec() });
      assert.ok((await rejection(manager.create({ name: "web", spec: spec() }))) instanceof AlreadyExistsError);
      assert.equal(allocated(), 1);
      assert.equal(agent.createRequests.length, 1);
    });

    it("of the same name, concurrently: exactly one succeeds, the other is AlreadyExists, one slot is taken", async () => {
      const results = await Promise.allSettled([manager.create({ name: "web", spec: spec() }), manager.create({ name: "web", spec: spec() })]);
      const fulfilled = results.filter((r) => r.status === "fulfilled");
      const rejected = results.filter((r) => r.status === "rejected");
      assert.equal(fulfilled.length, 1);
      assert.equal(rejected.length, 1);
      assert.ok(rejected[0]?.reason instanceof AlreadyExistsError);
      assert.equal(allocated(), 1);
      assert.equal(agent.createRequests.length, 1);
      assert.equal((await store.list("Sandbox")).items.length, 1);
    });

    it("fails with NoCapacity when the pool's slots are all taken, storing nothing", async () => {
      await manager.create({ name: "a", spec: spec() });
      await manager.create({ name: "b", spec: spec() });
      assert.ok((await rejection(manager.create({ name: "c", spec: spec() }))) instanceof NoCapacityError);
      assert.equal(await stored("c"), undefined);
      assert.equal(allocated(), 2);
    });

    it("with an unknown pool fails with NotFound listing the namespace's pools", async () => {
      manager.setPool(pool("gpu"));
      const error = await rejection(manager.create({ name: "web", spec: spec({ poolRef: "nope" }) }));
      assert.ok(error instanceof NotFoundError);
      assert.match(error.message, /pool default\/nope does not exist/);
      assert.match(error.message, /default, gpu/);
      assert.equal(await stored("web"), undefined);
      assert.deepEqual(agent.calls, []);
    });

    it("with an invalid spec fails with a ValidationError before placing", async () => {
      const error = await rejection(manager.create({ name: "web", spec: spec({ workingDir: "relative" }) }));
      assert.ok(error instanceof ValidationError);
      assert.match(error.field, /workingDir/);
      assert.equal(allocated(), 0);
    });

    it("returns the same sandbox when a requestId is retried, creating it once", async () => {
      const first = await manager.create({ spec: spec(), requestId: "req-1" });
      const [again, concurrent] = await Promise.all([
        manager.create({ spec: spec(), requestId: "req-1" }),
        manager.create({ spec: spec(), requestId: " req-1 " }),
      ]);
      assert.equal(again.metadata.name, first.metadata.name);
      assert.equal(again.metadata.uid, first.metadata.uid);
      assert.equal(concurrent.metadata.uid, first.metadata.uid);
      assert.equal(agent.createRequests.length, 1);
      assert.equal(allocated(), 1);
      const record = await stored(first.metadata.name);
      assert.equal(record?.metadata.annotations?.["sandbox.fast.io/request-id"], "req-1");
    });

    it("refuses a requestId longer than 253 characters before anything is stored or placed, and takes one of 253", async () => {
      const error = await rejection(manager.create({ spec: spec(), requestId: "q".repeat(254) }));
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, `metadata.annotations[${JSON.stringify(REQUEST_ID_ANNOTATION)}]`);
      assert.match(error.message, /the create's requestId has 254 characters; at most 253 are allowed$/);
      assert.equal(allocated(), 0);
      assert.deepEqual(agent.createRequests, []);
      const created = await manager.create({ spec: spec(), requestId: "q".repeat(253) });
      assert.equal(created.metadata.name, requestName("default", "q".repeat(253)));
    });

    it("returns the same sandbox when a requestId is retried on another replica (its own memory of requests), creating it once", async () => {
      const first = await manager.create({ spec: spec(), requestId: "req-replicas" });
      // Another control-plane replica: its own manager and registry over the same store and agent.
      const otherRegistry = new AgentRegistry();
      otherRegistry.upsertAgent({
        name: AGENT,
        namespace: "default",
        pool: "default",
        endpoint: "127.0.0.1:7001",
        capacity: 2,
        hostIP: "127.0.0.1",
        images: [],
      });
      const other = new SandboxManager({
        store,
        registry: otherRegistry,
        agents: { get: (name) => clients.get(name) },
        logger: pino({ level: "silent" }),
        clock,
      });
      other.setPool(pool("default"));
      const again = await other.create({ spec: spec(), requestId: "req-replicas" });
      assert.equal(again.metadata.uid, first.metadata.uid);
      assert.equal(again.status?.phase, "Running");
      assert.equal(agent.createRequests.length, 1);
      assert.equal(otherRegistry.poolUsage("default", "default").allocated, 0);
      await other.drain();
    });

    it("keeps nothing per settled request: a retry after the create finished finds its record in the store", async () => {
      const first = await manager.create({ spec: spec(), requestId: "req-settled" });
      assert.equal((manager as unknown as { requests: Map<string, unknown> }).requests.size, 0, "nothing held once settled");
      const again = await manager.create({ spec: spec(), requestId: "req-settled" });
      assert.equal(again.metadata.uid, first.metadata.uid);
      assert.equal(again.status?.phase, "Running");
      assert.equal(agent.createRequests.length, 1);
      assert.equal(allocated(), 1);
    });

    it("scopes request ids to their namespace", async () => {
      const mine = await manager.create({ spec: spec(), requestId: "shared-id" });
      // Another namespace with the same id gets its own create (here: refused, it has no pool), never ours.
      await assert.rejects(manager.create({ namespace: "team-b", spec: spec(), requestId: "shared-id" }), NotFoundError);
      assert.equal((await manager.create({ spec: spec(), requestId: "shared-id" })).metadata.uid, mine.metadata.uid);
    });

    it("lets a requestId whose attempt failed be retried", async () => {
      agent.createError = new FailedPreconditionError("flaky");
      await rejection(manager.create({ name: "web", spec: spec(), requestId: "req-2" }));
      agent.createError = undefined;
      const sandbox = await manager.create({ name: "web", spec: spec(), requestId: "req-2" });
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(agent.createRequests.length, 2);
    });

    describe("retried after a restart, its earlier attempt's record still there", () => {
      /** The record an earlier attempt of request `requestId` left (its control plane died before it answered). */
      const earlier = (requestId: string, status?: Sandbox["status"]) =>
        fixture.storeRecord(requestName("default", requestId), status, {}, { [FAST_PATH_ANNOTATION]: "true", [REQUEST_ID_ANNOTATION]: requestId });
      /** The retry (its answer in `call`), once it waits for the earlier attempt's record. */
      async function retry(requestId: string): Promise<{ call: Promise<Sandbox> }> {
        const call = manager.create({ spec: spec(), requestId });
        call.catch(() => undefined);
        await eventually(() => manager.awaitedByRetry("default", requestName("default", requestId)) || undefined);
        return { call };
      }

      it("waits holding no claim on a Pending record: it is not busy, is placed meanwhile, and the retry answers with it at once", async () => {
        const record = await earlier("req-restart");
        const { call } = await retry("req-restart");
        assert.equal(manager.isBusy("default", record.metadata.name), false, "a wait is no create: the reconciler may place the record");
        const placed = await manager.placeStored(record);
        assert.equal(placed?.status?.phase, "Running");
        await clock.advanceAsync(100);
        assert.ok(await isSettled(call), "answered once the record is placed, not after REQUEST_SETTLE_MS");
        const answer = await call;
        assert.equal(answer.metadata.uid, record.metadata.uid);
        assert.equal(answer.status?.phase, "Running");
        assert.equal(agent.createRequests.length, 1);
        assert.equal(manager.awaitedByRetry("default", record.metadata.name), false);
      });

      it("is Unavailable when the record has not settled within REQUEST_SETTLE_MS, never answered with the unsettled record", async () => {
        const record = await earlier("req-stuck", { phase: "Bound", assignedPod: AGENT, sandboxID: "stuck0000000000000a1" });
        const { call } = await retry("req-stuck");
        await clock.advanceAsync(REQUEST_SETTLE_MS - 100);
        assert.equal(await isSettled(call), false, "still waiting before the deadline");
        await clock.advanceAsync(100);
        const error = await rejection(call);
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(error.message, /earlier create with request id req-stuck .*has not settled within 90s; retry later/);
        assert.equal((await stored(record.metadata.name))?.status?.phase, "Bound", "left to the reconciler, which adopts or removes it");
        assert.equal(manager.awaitedByRetry("default", record.metadata.name), false);
      });

      it("arriving while the record is being placed here (the reconciler), waits for that instead of being told the name is taken", async () => {
        const record = await earlier("req-placing");
        const gate = deferred();
        agent.createGate = gate.promise;
        const placing = manager.placeStored(record);
        await agent.createEntered.promise;
        const call = manager.create({ spec: spec(), requestId: "req-placing" });
        assert.equal(await isSettled(call), false, "not AlreadyExists");
        gate.resolve();
        await placing;
        const answer = await call;
        assert.equal(answer.metadata.uid, record.metadata.uid);
        assert.equal(answer.status?.phase, "Running");
        assert.equal(agent.createRequests.length, 1);
      });

      it("is Unavailable, saying so, when the record is being deleted", async () => {
        const record = await earlier("req-deleted", { phase: "Running", assignedPod: AGENT, sandboxID: "deleted000000000000a1" });
        await store.delete("Sandbox", { namespace: "default", name: record.metadata.name });
        const error = await rejection(manager.create({ spec: spec(), requestId: "req-deleted" }));
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(error.message, /is being deleted; retry once it is gone/);
        assert.equal(agent.createRequests.length, 0);
      });
    });
  });

  describe("ownership", () => {
    it("makes the pool the owner of the records it creates (Kubernetes' garbage collector removes one whose pool went meanwhile)", async () => {
      const owning = pool("default", { network: { mode: "Shared" } });
      owning.metadata.uid = "the-pool-uid";
      manager.setPool(owning);
      await manager.create({ name: "owned", spec: spec() });
      assert.deepEqual((await stored("owned"))?.metadata.ownerReferences, [
        { apiVersion: owning.apiVersion, kind: "SandboxPool", name: "default", uid: "the-pool-uid" },
      ]);
      // A pool known without a uid (never stored) names no owner.
      manager.setPool(pool("default", { network: { mode: "Shared" } }));
      await manager.create({ name: "unowned", spec: spec() });
      assert.equal((await stored("unowned"))?.metadata.ownerReferences, undefined);
    });
  });

  describe("held writes (crash recovery)", () => {
    it("reports writes as held until the recovery promise resolves, then released", async () => {
      assert.equal(manager.writesReleased, true);
      let release: () => void = () => undefined;
      manager.holdWritesUntil(new Promise<void>((resolve) => (release = resolve)));
      assert.equal(manager.writesReleased, false);
      release();
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(manager.writesReleased, true);
    });
  });

  describe("delete", () => {
    it("deletes on the agent with the grace period, releases the slot once and removes the record", async () => {
      const sandbox = await manager.create({ name: "web", spec: spec() });
      const sandboxId = sandbox.status?.sandboxID ?? "";
      await manager.delete(undefined, "web", 500);
      assert.deepEqual(agent.calls, [`create ${sandboxId}`, `delete ${sandboxId} 500`]);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(released, ["default/web"]);
      // Repeating it finds nothing to delete.
      assert.ok((await rejection(manager.delete(undefined, "web", 500))) instanceof NotFoundError);
      assert.equal(agent.calls.length, 2);
      assert.deepEqual(released, ["default/web"]);
    });

    it("passes a grace period of 0 through as 0, and uses 2000 ms by default", async () => {
      const a = await manager.create({ name: "a", spec: spec() });
      const b = await manager.create({ name: "b", spec: spec() });
      await manager.delete("default", "a", 0);
      await manager.delete("default", "b");
      assert.ok(agent.calls.includes(`delete ${a.status?.sandboxID} 0`));
      assert.ok(agent.calls.includes(`delete ${b.status?.sandboxID} 2000`));
    });

    it("fails with NotFound for a sandbox that does not exist, calling no agent", async () => {
      assert.ok((await rejection(manager.delete(undefined, "ghost"))) instanceof NotFoundError);
      assert.deepEqual(agent.calls, []);
      assert.deepEqual(released, []);
    });

    it("issued while the create's agent call is pending, completes after it and leaves nothing", async () => {
      for (const consistencyMode of ["strong", "fast"] as const) {
        const gate = deferred();
        agent.createGate = gate.promise;
        agent.createEntered = deferred();
        const name = `racy-${consistencyMode}`;
        const callsBefore = agent.calls.length;
        const creating = manager.create({ name, spec: spec({ consistencyMode }) });
        await agent.createEntered.promise;
        let deleted = false;
        const deleting = manager.delete(undefined, name, 0).then(() => (deleted = true));
        try {
          // Let the delete run as far as it can; it must not get past the pending create.
          for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
          assert.equal(deleted, false, "delete finished before the create it raced with");
          assert.equal(agent.calls.length, callsBefore + 1, "only the create reached the agent so far");
        } finally {
          gate.resolve();
        }
        const sandbox = await creating;
        await deleting;
        assert.equal(agent.calls.length, callsBefore + 2);
        const sandboxId = sandbox.status?.sandboxID ?? "";
        assert.deepEqual(agent.calls.slice(-2), [`create ${sandboxId}`, `delete ${sandboxId} 0`], consistencyMode);
        assert.equal(await stored(name), undefined, consistencyMode);
        assert.equal(registry.placementOf(`default/${name}`), undefined, consistencyMode);
        assert.equal(allocated(), 0, consistencyMode);
      }
    });
  });

  describe("a delete during a create's image pull", () => {
    it("ends the create's wait for a pull that does not end: the delete finishes, the create fails saying why, nothing is left", async () => {
      agent.pullHangs = true;
      const creating = rejection(manager.create({ name: "slow", spec: spec({ image: "127.0.0.1:5999/slow/img:1" }) }));
      await eventually(async () => (agent.pulls.length > 0 ? true : undefined));
      await manager.delete("default", "slow", 0);
      const error = await creating;
      assert.ok(error instanceof ConflictError, String(error));
      assert.equal(error.message, "sandbox default/slow was deleted while its image was being pulled");
      assert.equal(await stored("slow"), undefined);
      assert.equal(registry.placementOf("default/slow"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(
        agent.calls.filter((call) => call.startsWith("create")),
        [],
        "the agent was never asked to create it",
      );
    });

    it("of the control plane's stop (drain) ends the wait too: the create fails saying so, nothing is left, and the drain does not wait for the pull", async () => {
      agent.pullHangs = true;
      const creating = rejection(manager.create({ name: "slow", spec: spec({ image: "127.0.0.1:5999/slow/img:1" }) }));
      await eventually(async () => (agent.pulls.length > 0 ? true : undefined));
      await manager.drain();
      const error = await creating;
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /^the control plane is stopping: the create was given up/);
      assert.equal(await stored("slow"), undefined);
      assert.equal(allocated(), 0);
      assert.equal(agent.pulls.length, 1, "not placed again on another try");
    });

    it("of a record written with kubectl (the reconciler's finalize) ends the wait too", async () => {
      agent.pullHangs = true;
      await store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: "applied", namespace: "default", finalizers: [CLEANUP_FINALIZER] },
        spec: spec({ image: "127.0.0.1:5999/slow/img:1" }),
      });
      const seen = await stored("applied");
      assert.ok(seen);
      const placing = manager.placeStored(seen).catch((error: unknown) => error);
      await eventually(async () => (agent.pulls.length > 0 ? true : undefined));
      const marked = await store.delete("Sandbox", { namespace: "default", name: "applied" });
      assert.ok(marked);
      await manager.finalize(marked, 0);
      assert.ok((await placing) instanceof ConflictError);
      assert.equal(await stored("applied"), undefined);
      assert.equal(allocated(), 0);
    });
  });

  describe("a cleanup during a create", () => {
    it("of this replica (the reconciler's finalize) waits for the create, then removes the instance", async () => {
      const gate = deferred();
      agent.createGate = gate.promise;
      agent.createEntered = deferred();
      const creating = manager.create({ name: "pulling", spec: spec() });
      await agent.createEntered.promise;
      const marked = await store.delete("Sandbox", { namespace: "default", name: "pulling" });
      assert.ok(marked?.metadata.deletionTimestamp);
      let finalized = false;
      const finalizing = manager.finalize(marked, 0).then(() => (finalized = true));
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(finalized, false, "the cleanup waits for the create in flight");
      gate.resolve();
      const sandbox = await creating;
      await finalizing;
      const sandboxId = sandbox.status?.sandboxID ?? "";
      assert.deepEqual(agent.calls.slice(-2), [`create ${sandboxId}`, `delete ${sandboxId} 0`]);
      assert.equal(agent.sandboxes.size, 0);
      assert.equal(await stored("pulling"), undefined);
      assert.equal(allocated(), 0);
    });

    it("of another replica, done before the instance existed, makes the creating replica remove the instance", async () => {
      const other = new SandboxManager({ store, registry: new AgentRegistry(), agents: fixture.agents, logger: pino({ level: "silent" }), clock });
      const gate = deferred();
      agent.createGate = gate.promise;
      agent.createEntered = deferred();
      const creating = manager.create({ name: "raced", spec: spec({ consistencyMode: "fast" }) });
      await agent.createEntered.promise;
      const marked = await store.delete("Sandbox", { namespace: "default", name: "raced" });
      assert.ok(marked);
      await other.finalize(marked, 0);
      assert.equal(await stored("raced"), undefined, "the other replica dropped the record");
      gate.resolve();
      const sandbox = await creating;
      await manager.drain();
      const sandboxId = sandbox.status?.sandboxID ?? "";
      assert.equal(agent.sandboxes.has(sandboxId), false, "the instance made after the cleanup is removed");
      assert.equal(allocated(), 0, "its slot is free");
    });
  });

  describe("a cleanup whose agent is away", () => {
    it("waits for the agent while it still exists, and gives up once it has been away for recoveryTimeoutSeconds, conditions or not", async () => {
      const awaySince = clock.now();
      const cut = new SandboxManager({
        store,
        registry,
        agents: { get: () => undefined, exists: () => true, agentConnectivity: () => ({ connected: false, since: awaySince }) },
        logger: pino({ level: "silent" }),
        clock,
      });
      cut.setPool(pool("default"));
      // Bound on the agent (its create's answer lost with the agent): no condition was written.
      await storeRecord("stranded", { phase: "Bound", assignedPod: AGENT, sandboxID: "stranded0000000000000" }, { recoveryTimeoutSeconds: 30 });
      const marked = await store.delete("Sandbox", { namespace: "default", name: "stranded" });
      assert.ok(marked);
      await assert.rejects(cut.finalize(marked, 0), (error: unknown) => error instanceof UnavailableError && /does not answer right now/.test(error.message));
      assert.ok(await stored("stranded"), "kept while the agent may come back");
      clock.advance(31_000);
      await cut.finalize(marked, 0);
      assert.equal(await stored("stranded"), undefined, "given up after recoveryTimeoutSeconds");
    });

    it("gives up on an agent that has a client but stopped answering (partitioned, its Pod still Ready) once the sandbox's recovery timeout passed", async () => {
      const awaySince = clock.now();
      const deletes: string[] = [];
      const unanswering = {
        deleteSandbox: (sandboxId: string) => {
          deletes.push(sandboxId);
          return Promise.reject(new UnavailableError("connect ETIMEDOUT"));
        },
      } as unknown as AgentClient;
      const cut = new SandboxManager({
        store,
        registry,
        agents: { get: () => unanswering, exists: () => true, agentConnectivity: () => ({ connected: false, since: awaySince }) },
        logger: pino({ level: "silent" }),
        clock,
      });
      cut.setPool(pool("default"));
      await storeRecord("cut-off", { phase: "Running", assignedPod: AGENT, sandboxID: "cutoff00000000000000" }, { recoveryTimeoutSeconds: 30 });
      const marked = await store.delete("Sandbox", { namespace: "default", name: "cut-off" });
      assert.ok(marked);
      await assert.rejects(cut.finalize(marked, 0), UnavailableError);
      assert.deepEqual(deletes, ["cutoff00000000000000"], "tried while the agent may come back");
      clock.advance(31_000);
      await cut.finalize(marked, 0);
      assert.equal(await stored("cut-off"), undefined, "given up after recoveryTimeoutSeconds, not retried forever");
      assert.equal(deletes.length, 1, "and not waited on again");
    });
  });

  describe("pool deletion", () => {
    it("waits for creates in flight and refuses new ones in the pool while it runs", async () => {
      const gate = deferred();
      agent.createGate = gate.promise;
      agent.createEntered = deferred();
      const creating = manager.create({ name: "in-flight", spec: spec() });
      await agent.createEntered.promise;
      let sawSandboxes = -1;
      const deleting = manager.withPoolClosed("default", spec().poolRef, async () => {
        sawSandboxes = (await manager.list(undefined, spec().poolRef)).length;
      });
      await assert.rejects(manager.create({ name: "late", spec: spec() }), (error: Error) => {
        assert.match(error.message, /is being deleted/);
        return true;
      });
      assert.equal(sawSandboxes, -1, "the deletion's check must wait for the create in flight");
      gate.resolve();
      await creating;
      await deleting;
      assert.equal(sawSandboxes, 1, "the deletion's check sees the sandbox that was being created");
      agent.createGate = undefined;
      await manager.create({ name: "after", spec: spec() });
    });
  });

  describe("finalize", () => {
    it("with a stale copy of a deleted and re-created name leaves the new sandbox alone", async () => {
      await manager.create({ name: "web", spec: spec() });
      const old = await stored("web");
      assert.ok(old);
      await manager.delete(undefined, "web", 0);
      const fresh = await manager.create({ name: "web", spec: spec() });
      assert.notEqual(fresh.metadata.uid, old.metadata.uid);
      const callsBefore = [...agent.calls];
      const releasedBefore = [...released];

      const staleCopy: Sandbox = { ...old, metadata: { ...old.metadata, deletionTimestamp: NOW.toISOString() } };
      await manager.finalize(staleCopy, 0);

      const current = await stored("web");
      assert.equal(current?.metadata.uid, fresh.metadata.uid);
      assert.deepEqual(current?.metadata.finalizers, [CLEANUP_FINALIZER]);
      assert.equal(current?.metadata.deletionTimestamp, undefined);
      assert.equal(current?.status?.phase, "Running");
      assert.equal(registry.placementOf("default/web")?.agent.name, AGENT);
      assert.equal(allocated(), 1);
      assert.deepEqual(agent.calls, callsBefore);
      assert.deepEqual(released, releasedBefore);
    });

    it("leaves the finalizer of a sandbox of the same name created while its cleanup ran (another replica finished it first)", async () => {
      await manager.create({ name: "web", spec: spec() });
      const marked = await store.delete("Sandbox", { namespace: "default", name: "web" });
      assert.ok(marked?.metadata.deletionTimestamp);
      let fresh: Sandbox | undefined;
      agent.onDelete = async () => {
        agent.onDelete = undefined;
        // Meanwhile another replica's cleanup removed the finalizer, and the name was created again.
        const current = await stored("web");
        assert.ok(current);
        await store.update("Sandbox", { ...current, metadata: { ...current.metadata, finalizers: [] } });
        fresh = await storeRecord("web", { phase: "Running", assignedPod: AGENT, sandboxID: "fresh000000000000000" });
      };
      await manager.finalize(marked, 0);
      assert.ok(fresh);
      const current = await stored("web");
      assert.equal(current?.metadata.uid, fresh.metadata.uid);
      assert.deepEqual(current?.metadata.finalizers, [CLEANUP_FINALIZER], "the new sandbox keeps its cleanup");
    });

    it("does nothing to a sandbox that is not being deleted", async () => {
      const sandbox = await manager.create({ name: "web", spec: spec() });
      const current = await stored("web");
      assert.ok(current);
      await manager.finalize(current);
      assert.deepEqual(agent.calls, [`create ${sandbox.status?.sandboxID}`]);
      assert.deepEqual((await stored("web"))?.metadata.finalizers, [CLEANUP_FINALIZER]);
      assert.equal(allocated(), 1);
    });

    it("of a sandbox whose agent is gone drops the record and the slot", async () => {
      await manager.create({ name: "web", spec: spec() });
      const marked = await store.delete("Sandbox", { namespace: "default", name: "web" });
      assert.ok(marked?.metadata.deletionTimestamp);
      fixture.connected = false;
      await manager.finalize(marked, 0);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.equal(agent.calls.filter((c) => c.startsWith("delete")).length, 0);
    });

    it("through the API waits while the sandbox's agent does not answer, and returns once the agent did the cleanup (not an error for a delete that finishes later)", async () => {
      const waiting = new SandboxManager({
        store,
        registry,
        agents: { get: (name) => fixture.agents.get(name), exists: () => true },
        logger: pino({ level: "silent" }),
        clock,
      });
      waiting.setPool(pool("default"));
      await waiting.create({ name: "web", spec: spec() });
      fixture.connected = false;
      let done = false;
      const deleting = waiting.delete(undefined, "web", 0, { waitForAgent: true }).then(() => (done = true));
      for (let second = 0; second < 5; second++) await clock.advanceAsync(DELETE_RETRY_MS);
      assert.equal(done, false, "still waiting for the agent");
      assert.ok((await stored("web"))?.metadata.deletionTimestamp);
      fixture.connected = true;
      for (let second = 0; second < 5 && !done; second++) await clock.advanceAsync(DELETE_RETRY_MS);
      await deleting;
      assert.equal(await stored("web"), undefined);
      assert.equal(agent.calls.filter((c) => c.startsWith("delete")).length, 1, "the agent removed it");
    });

    it("of a sandbox whose agent still exists but does not answer waits for it (Kubernetes: its Pod is there, not ready), unless it was given up as Lost", async () => {
      let exists = true;
      const waiting = new SandboxManager({
        store,
        registry,
        agents: { get: (name) => fixture.agents.get(name), exists: () => exists },
        logger: pino({ level: "silent" }),
        clock,
      });
      waiting.setPool(pool("default"));
      await waiting.create({ name: "web", spec: spec() });
      const marked = await store.delete("Sandbox", { namespace: "default", name: "web" });
      assert.ok(marked);
      fixture.connected = false;
      await assert.rejects(waiting.finalize(marked, 0), UnavailableError);
      assert.ok(await stored("web"), "the record stays while its agent may still hold the container");
      fixture.connected = true;
      await waiting.finalize(marked, 0);
      assert.equal(await stored("web"), undefined);
      assert.equal(agent.calls.filter((c) => c.startsWith("delete")).length, 1);

      await waiting.create({ name: "lost", spec: spec() });
      const current = await stored("lost");
      assert.ok(current);
      await store.updateStatus("Sandbox", {
        ...current,
        status: { ...current.status, phase: "Lost", conditions: [{ type: "Ready", status: "False", reason: "AgentLost" }] },
      });
      const lost = await store.delete("Sandbox", { namespace: "default", name: "lost" });
      assert.ok(lost);
      fixture.connected = false;
      await waiting.finalize(lost, 0);
      assert.equal(await stored("lost"), undefined, "a Lost sandbox's delete does not wait for its agent");
      exists = false;
      await waiting.drain();
    });
  });

  describe("update", () => {
    it("changes mutable fields", async () => {
      await manager.create({ name: "web", spec: spec() });
      const updated = await manager.update({
        name: "web",
        spec: spec({ expireTime: "2030-01-01T00:00:00Z", failurePolicy: "AutoRecreate" }),
        labels: { x: "y" },
      });
      assert.equal(updated.spec.expireTime, "2030-01-01T00:00:00Z");
      assert.equal((await stored("web"))?.spec.failurePolicy, "AutoRecreate");
      assert.deepEqual((await stored("web"))?.metadata.labels, { x: "y" });
    });

    const immutableChanges: [keyof SandboxSpec, Partial<SandboxSpec>][] = [
      ["image", { image: "node:22" }],
      ["command", { command: ["sh"] }],
      ["envs", { envs: [{ name: "A", value: "2" }] }],
      ["exposedPorts", { exposedPorts: [9090] }],
      ["poolRef", { poolRef: "other" }],
      ["egress", { egress: { policy: "denyAll" } }],
    ];
    for (const [field, change] of immutableChanges) {
      it(`refuses a change of spec.${field} with a ValidationError naming it`, async () => {
        await manager.create({ name: "web", spec: spec() });
        const error = await rejection(manager.update({ name: "web", spec: spec(change) }));
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, `spec.${field}`);
        assert.match(error.message, /immutable/);
        assert.equal((await stored("web"))?.spec[field], spec()[field]);
      });
    }

    it("refuses removing an immutable field that was set", async () => {
      await manager.create({ name: "web", spec: spec({ workingDir: "/srv" }) });
      const error = await rejection(manager.update({ name: "web", spec: spec() }));
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, "spec.workingDir");
    });

    it("fails with NotFound for a sandbox that does not exist", async () => {
      assert.ok((await rejection(manager.update({ name: "ghost", spec: spec() }))) instanceof NotFoundError);
    });

    it("refuses a reset of a Paused sandbox at once (it would wait for the resume, then throw away what the pause kept); its other fields still change", async () => {
      await manager.create({ name: "web", spec: spec() });
      const current = await stored("web");
      assert.ok(current);
      await store.updateStatus("Sandbox", { ...current, status: { phase: "Paused" } });
      const error = await rejection(manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) }));
      assert.ok(error instanceof FailedPreconditionError, String(error));
      assert.match(error.message, /sandbox web is Paused: only a running sandbox can be reset; resume it first \('fsb resume web'\)/);
      assert.equal((await stored("web"))?.spec.resetRevision, undefined, "no reset is left pending");
      const updated = await manager.update({ name: "web", spec: spec({ expireTime: "2030-01-01T00:00:00Z" }) });
      assert.equal(updated.spec.expireTime, "2030-01-01T00:00:00Z");
    });

    it("takes a spec sent back unchanged over the wire for a record stored with empty lists (kubectl's command: [])", async () => {
      await storeRecord("listed", { phase: "Running", assignedPod: AGENT, sandboxID: "listed00000000000000" }, { command: [], exposedPorts: [], envs: [] });
      const current = await stored("listed");
      assert.ok(current);
      const overTheWire = sandboxSpecFromMessage(sandboxSpecToMessage({ ...current.spec, expireTime: "2030-01-01T00:00:00Z" }));
      assert.equal("command" in overTheWire, false, "the wire drops the empty list");
      const updated = await manager.update({ name: "listed", spec: overTheWire });
      assert.equal(updated.spec.expireTime, "2030-01-01T00:00:00Z");
      // A real change is still one.
      const error = await rejection(manager.update({ name: "listed", spec: { ...overTheWire, command: ["sh"] } }));
      assert.ok(error instanceof ValidationError && error.field === "spec.command", String(error));
    });
  });

  describe("waiting for capacity", () => {
    let capacity: FakePoolCapacity;
    const usage = () => registry.poolUsage("default", "elastic");

    beforeEach(() => {
      capacity = new FakePoolCapacity();
      manager.setPoolCapacity(capacity);
      // Scaled to zero: no agent yet.
      manager.setPool(pool("elastic", { capacity: { poolMin: 0, poolMax: 2, wakeTimeoutSeconds: 5 }, maxSandboxesPerPod: 1 }));
    });

    it("a kubectl record one replica waits to place and another (the next leader) places meanwhile is created once: the waiting one gives way", async () => {
      const record = await storeRecord("applied", undefined, { poolRef: "elastic" });
      // This replica (the leader about to lose its Lease) waits for the pool to start an agent.
      const waiting = manager.placeStored(record);
      waiting.catch(() => undefined);
      await eventually(async () => (condition(await stored("applied"), "Scheduled")?.reason === "WaitingForCapacity" ? true : undefined));
      // The next leader, whose registry has the agent already, places it.
      const elastic = addAgent("elastic-0", "elastic", 2);
      registry.setAgentReady("elastic-0", false); // not yet in this replica's view
      const otherRegistry = new AgentRegistry();
      otherRegistry.upsertAgent({
        name: "elastic-0",
        namespace: "default",
        pool: "elastic",
        endpoint: "127.0.0.1:7100",
        capacity: 2,
        hostIP: "127.0.0.1",
        images: [],
      });
      const next = new SandboxManager({
        store,
        registry: otherRegistry,
        agents: { get: (name) => clients.get(name) },
        logger: pino({ level: "silent" }),
        clock,
      });
      next.setPool(pool("elastic", { capacity: { poolMin: 0, poolMax: 2, wakeTimeoutSeconds: 5 }, maxSandboxesPerPod: 2 }));
      const placed = await next.placeStored((await stored("applied"))!);
      assert.equal(placed?.status?.phase, "Running");
      const placedAs = placed?.status?.sandboxID;
      // The agent shows up in the first replica's view too: its wait ends, and its try must give way.
      registry.setAgentReady("elastic-0", true);
      await clock.advanceAsync(25);
      await assert.rejects(waiting, ConflictError);
      assert.equal(elastic.createRequests.length, 1, "one instance of the sandbox");
      const current = await stored("applied");
      assert.equal(current?.status?.phase, "Running");
      assert.equal(current?.status?.sandboxID, placedAs, "the placed instance stands");
      await next.drain();
    });

    it("a kubectl record placed by another replica just before this one's wait wrote its condition (rebased onto it) is still not placed twice", async () => {
      const record = await storeRecord("applied", undefined, { poolRef: "elastic" });
      const updateStatus = store.updateStatus.bind(store);
      let raced = false;
      // The other replica's Bound lands between this replica's read and its WaitingForCapacity write.
      store.updateStatus = (async (kind: "Sandbox", object: Sandbox, options?: Parameters<typeof store.updateStatus>[2]) => {
        if (!raced && kind === "Sandbox" && object.metadata.name === "applied") {
          raced = true;
          const current = await store.get("Sandbox", { namespace: "default", name: "applied" });
          assert.ok(current);
          await updateStatus("Sandbox", { ...current, status: { phase: "Bound", assignedPod: "elastic-9", sandboxID: "other000000000000000" } });
        }
        return updateStatus(kind, object, options);
      }) as typeof store.updateStatus;
      const waiting = manager.placeStored(record);
      waiting.catch(() => undefined);
      await eventually(async () => (condition(await stored("applied"), "Scheduled")?.reason === "WaitingForCapacity" ? true : undefined));
      const elastic = addAgent("elastic-0", "elastic", 2);
      await clock.advanceAsync(25);
      await assert.rejects(waiting, ConflictError);
      assert.equal(elastic.createRequests.length, 0, "no second instance");
      const after = await stored("applied");
      assert.equal(after?.status?.sandboxID, "other000000000000000", "the other replica's placement stands");
      assert.equal(after?.status?.phase, "Bound", "as it was written, not Pending (which no reconcile would ever place: it names an instance)");
    });

    it("when the pool can grow: wakes it, shows the create Pending/WaitingForCapacity while it waits, and places it once an agent is ready", async () => {
      const creating = manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) });
      const waiting = await eventually(async () => {
        const [listed] = await manager.list(undefined, "elastic");
        return condition(listed, "Scheduled")?.reason === "WaitingForCapacity" ? listed : undefined;
      });
      assert.equal(waiting.status?.phase, "Pending");
      assert.equal(condition(waiting, "Scheduled")?.status, "False");
      assert.match(condition(waiting, "Scheduled")?.message ?? "", /default\/elastic.*waiting up to 5s/);
      assert.equal(waiting.status?.assignedPod, undefined);
      assert.deepEqual(capacity.wakes, ["default/elastic"]);
      assert.equal(manager.waitingFor("default", "elastic"), 1);
      assert.equal(manager.waitingFor("default", "default"), 0);

      const woken = addAgent("elastic-0", "elastic", 1);
      // The wait looks for a free slot every 25 ms.
      await clock.advanceAsync(25);
      const sandbox = await creating;
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.status?.assignedPod, "elastic-0");
      assert.equal(condition(sandbox, "Scheduled")?.status, "True");
      assert.equal(condition(sandbox, "Ready")?.status, "True");
      const record = await stored("web");
      assert.equal(record?.metadata.uid, waiting.metadata.uid, "the waiting record is the one that runs");
      assert.equal(record?.status?.phase, "Running");
      assert.equal(condition(record, "Scheduled")?.status, "True");
      assert.deepEqual(woken.calls, [`create ${sandbox.status?.sandboxID}`]);
      assert.equal(usage().allocated, 1);
      assert.equal(manager.waitingFor("default", "elastic"), 0);
    });

    it("when the pool cannot grow: refuses at once with NoCapacity naming poolMax, storing nothing", async () => {
      capacity.growable = false;
      const error = await rejection(manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) }));
      assert.ok(error instanceof NoCapacityError);
      assert.match(error.message, /poolMax of 2 agents/);
      assert.equal(await stored("web"), undefined);
      assert.deepEqual(capacity.wakes, []);
      assert.equal(manager.waitingFor("default", "elastic"), 0);
    });

    it("when no agent starts for the pool (its template or namespace refused): refuses at once saying why, not blaming poolMax", async () => {
      capacity.growable = false;
      capacity.blocked = "namespace default runs no pools: the controller's FSB_POOL_NAMESPACES allows pools only in sandboxes";
      const error = await rejection(manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) }));
      assert.ok(error instanceof NoCapacityError);
      assert.equal(
        error.message,
        "pool default/elastic has no ready agents (none registered); namespace default runs no pools: the controller's FSB_POOL_NAMESPACES allows pools only in sandboxes",
      );
      assert.equal(await stored("web"), undefined);
    });

    it("while the pool can grow but the API server refuses its agent Pods: the waiting create and its timeout say why", async () => {
      manager.setPool(pool("elastic", { capacity: { poolMin: 0, poolMax: 2, wakeTimeoutSeconds: 1 }, maxSandboxesPerPod: 1 }));
      capacity.blocked =
        'its agent Pods are refused (Forbidden, tried again): pods "elastic-agent-x" is forbidden: error looking up service account ns3/fast-sandbox-agent';
      const creating = rejection(manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) }));
      const waiting = await eventually(async () => {
        const record = await stored("web");
        return condition(record, "Scheduled")?.reason === "WaitingForCapacity" ? record : undefined;
      });
      assert.match(
        condition(waiting, "Scheduled")?.message ?? "",
        /waiting up to 1s; its agent Pods are refused \(Forbidden, tried again\): .*service account/,
      );
      await clock.advanceAsync(1000);
      const error = await creating;
      assert.ok(error instanceof NoCapacityError, String(error));
      assert.match(error.message, /became ready within 1s \(wakeTimeoutSeconds\); its agent Pods are refused \(Forbidden, tried again\): .*service account/);
    });

    it("when free slots exist but their ports are taken: refuses at once, however the pool could grow", async () => {
      await manager.create({ name: "a", spec: spec({ exposedPorts: [8080] }) });
      const error = await rejection(manager.create({ name: "b", spec: spec({ exposedPorts: [8080] }) }));
      assert.ok(error instanceof NoCapacityError);
      assert.match(error.message, /port 8080/);
      assert.equal(await stored("b"), undefined);
      assert.deepEqual(capacity.wakes, []);
    });

    it("gives up after wakeTimeoutSeconds with NoCapacity, removing the record and holding no slot", async () => {
      manager.setPool(pool("elastic", { capacity: { poolMin: 0, poolMax: 2, wakeTimeoutSeconds: 1 }, maxSandboxesPerPod: 1 }));
      // An agent that is starting (registered, not ready) never becomes ready in time.
      addAgent("elastic-0", "elastic", 1);
      registry.setAgentReady("elastic-0", false);
      const creating = rejection(manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) }));
      await eventually(async () => ((await stored("web"))?.status?.phase === "Pending" ? true : undefined));
      await clock.advanceAsync(999);
      assert.equal(await isSettled(creating), false, "it waits for the timeout");
      assert.equal(manager.waitingFor("default", "elastic"), 1);
      await clock.advanceAsync(1);
      const error = await creating;
      assert.ok(error instanceof NoCapacityError);
      assert.match(error.message, /within 1s \(wakeTimeoutSeconds\)/);
      assert.equal(await stored("web"), undefined);
      assert.equal(usage().allocated, 0);
      assert.equal(manager.waitingFor("default", "elastic"), 0);
      // The slot it never got is there for the next create once the agent is ready.
      registry.setAgentReady("elastic-0", true);
      assert.equal((await manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) })).status?.assignedPod, "elastic-0");
    });

    it("stops waiting as soon as the pool can no longer grow", async () => {
      const creating = rejection(manager.create({ name: "web", spec: spec({ poolRef: "elastic" }) }));
      await eventually(async () => ((await stored("web"))?.status?.phase === "Pending" ? true : undefined));
      capacity.growable = false;
      // At its next look (every 25 ms), not after wakeTimeoutSeconds.
      await clock.advanceAsync(25);
      const error = await creating;
      assert.ok(error instanceof NoCapacityError);
      assert.equal(clock.pendingTimers, 0);
      assert.equal(await stored("web"), undefined);
      assert.equal(manager.waitingFor("default", "elastic"), 0);
    });
  });

  describe("placement retries", () => {
    it("places a create again on another agent when its agent is unreachable, taking one slot and deleting the id on the first agent", async () => {
      const other = addAgent("default-1");
      agent.createError = new UnavailableError("agent at 127.0.0.1:7001 dropped the connection");
      // Like the heartbeat that notices the dying agent before the retry.
      agent.onCreate = () => registry.setAgentReady(AGENT, false);
      const creating = manager.create({ name: "web", spec: spec() });
      // The second try waits 300 ms: long enough for a heartbeat to mark the lost agent unready.
      await clock.advanceAsync(299);
      assert.equal(other.calls.length, 0);
      await clock.advanceAsync(1);
      const sandbox = await creating;
      const firstId = agent.createRequests[0]?.sandboxId;
      assert.ok(firstId);
      assert.deepEqual(agent.calls, [`create ${firstId}`, `delete ${firstId} 0`]);
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.status?.assignedPod, "default-1");
      assert.notEqual(sandbox.status?.sandboxID, firstId);
      assert.deepEqual(other.calls, [`create ${sandbox.status?.sandboxID}`]);
      const record = await stored("web");
      assert.equal(record?.status?.assignedPod, "default-1");
      assert.equal(record?.status?.sandboxID, sandbox.status?.sandboxID);
      assert.equal(registry.placementOf("default/web")?.agent.name, "default-1");
      assert.equal(allocated(), 1);
      assert.equal((await store.list("Sandbox")).items.length, 1);
    });

    it("passes over an agent that refused the create as unavailable (retired by its pool) while the registry still counts it ready", async () => {
      // Retired because it was idle: it has the most free slots, so the registry would pick it every time.
      const other = addAgent("default-1", "default", 1);
      // Another replica's leader retired it a moment ago; this registry has not heard a heartbeat since.
      agent.createError = new UnavailableError("agent default-0 is retired (its pool is stopping it); place the sandbox on another agent");
      const creating = manager.create({ name: "web", spec: spec() });
      await clock.advanceAsync(300);
      const sandbox = await creating;
      assert.equal(registry.getAgent(AGENT)?.ready, true);
      assert.equal(agent.createRequests.length, 1);
      assert.equal(sandbox.status?.assignedPod, "default-1");
      assert.deepEqual(other.calls, [`create ${sandbox.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });

    it("tries an agent it passed over again when no other agent can take the create", async () => {
      agent.createError = new UnavailableError("agent default-0 dropped the connection");
      agent.onCreate = () => {
        if (agent.createRequests.length === 2) agent.createError = undefined;
      };
      const creating = manager.create({ name: "web", spec: spec() });
      await clock.advanceAsync(300);
      const sandbox = await creating;
      assert.equal(agent.createRequests.length, 2);
      assert.equal(sandbox.status?.assignedPod, AGENT);
      assert.equal(allocated(), 1);
    });

    it("does not place a create again when its agent answered that the image's registry is unreachable: fails at once, the agent not passed over", async () => {
      const other = addAgent("default-1");
      agent.createError = new UpstreamUnavailableError("registry nosuch.invalid is unreachable at https://nosuch.invalid (ENOTFOUND)");
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
      assert.ok(error instanceof UpstreamUnavailableError, String(error));
      assert.equal(agent.createRequests.length, 1);
      assert.deepEqual(other.calls, []);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.equal(clock.pendingTimers, 0, "no pause before another try");
    });

    it("does not take a store that cannot be written (a full disk, a locked database) for an unreachable agent: fails once, no agent asked or passed over", async () => {
      const other = addAgent("default-1");
      const updateStatus = store.updateStatus.bind(store);
      let writes = 0;
      store.updateStatus = (async (kind: "Sandbox", object: Sandbox, options?: Parameters<typeof store.updateStatus>[2]) => {
        if (kind === "Sandbox" && object.status?.phase === "Bound") {
          writes++;
          throw new UnavailableError("database or disk is full (SQLITE_FULL)");
        }
        return updateStatus(kind, object, options);
      }) as typeof store.updateStatus;
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /SQLITE_FULL/);
      assert.equal(writes, 1, "tried once: placing it on another agent would meet the same store");
      assert.equal(clock.pendingTimers, 0, "no pause before another try");
      assert.equal(agent.createRequests.length + other.createRequests.length, 0);
      assert.equal(allocated(), 0);
    });

    it("gives up with Unavailable after three unreachable agents, each attempt undone", async () => {
      agent.createError = new UnavailableError("agent default-0 timed out");
      const creating = rejection(manager.create({ name: "web", spec: spec() }));
      await clock.advanceAsync(300 + 600);
      const error = await creating;
      assert.ok(error instanceof UnavailableError);
      const ids = agent.createRequests.map((r) => r.sandboxId);
      assert.equal(ids.length, 3);
      assert.deepEqual(
        agent.calls,
        ids.flatMap((id) => [`create ${id}`, `delete ${id} 0`]),
      );
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(released, ["default/web", "default/web", "default/web"]);
    });

    it("does not retry an error that another agent would give too", async () => {
      addAgent("default-1");
      agent.createError = new FailedPreconditionError("image python:3.12 not found");
      assert.ok((await rejection(manager.create({ name: "web", spec: spec() }))) instanceof FailedPreconditionError);
      assert.equal(agent.createRequests.length + (clients.get("default-1")?.createRequests.length ?? 0), 1);
    });

    it("places a create again when its agent refuses it for want of a slot (another replica filled it), and succeeds once one is free", async () => {
      agent.createError = new NoCapacityError("agent default-0 is full: 2 of 2 slots in use");
      agent.onCreate = () => {
        if (agent.createRequests.length === 3) agent.createError = undefined;
      };
      const creating = manager.create({ name: "web", spec: spec({ exposedPorts: [8080] }) });
      await clock.advanceAsync(50 + 100);
      const sandbox = await creating;
      const ids = agent.createRequests.map((r) => r.sandboxId);
      assert.equal(ids.length, 3);
      assert.equal(new Set(ids).size, 3, "each try is a new instance id");
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.status?.sandboxID, ids[2]);
      assert.equal((await stored("web"))?.status?.sandboxID, ids[2]);
      assert.equal((await store.list("Sandbox")).items.length, 1);
      assert.equal(allocated(), 1);
      assert.deepEqual(released, ["default/web", "default/web"]);
    });

    it("places a create its agent refused on another agent that can take it, not on the refusing one again", async () => {
      // The refusing agent has the most free slots: the registry alone would pick it every time.
      const other = addAgent("default-1", "default", 1);
      agent.createError = new NoCapacityError("port 8080 is already exposed by sandbox default/other on agent default-0");
      const creating = manager.create({ name: "web", spec: spec({ exposedPorts: [8080] }) });
      await clock.advanceAsync(50);
      const sandbox = await creating;
      assert.equal(agent.createRequests.length, 1);
      assert.equal(sandbox.status?.assignedPod, "default-1");
      assert.deepEqual(other.calls, [`create ${sandbox.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });

    it("gives up with NoCapacity, the agent's reason in it, after five refusals, each try undone: no record, no slot, no container", async () => {
      agent.createError = new NoCapacityError("port 8080 is already exposed by sandbox default/other on agent default-0");
      const creating = rejection(manager.create({ name: "web", spec: spec({ exposedPorts: [8080] }) }));
      // Paused between tries (50 ms × try): the other replica's sandboxes may go away meanwhile.
      await clock.advanceAsync(50 + 100 + 150 + 199);
      assert.equal(agent.createRequests.length, 4);
      assert.equal(await isSettled(creating), false);
      await clock.advanceAsync(1);
      const error = await creating;
      assert.ok(error instanceof NoCapacityError);
      assert.equal(error.constructor, NoCapacityError);
      assert.equal(error.message, "port 8080 is already exposed by sandbox default/other on agent default-0");
      const ids = agent.createRequests.map((r) => r.sandboxId);
      assert.equal(ids.length, 5);
      assert.deepEqual(
        agent.calls,
        ids.flatMap((id) => [`create ${id}`, `delete ${id} 0`]),
      );
      assert.equal(await stored("web"), undefined);
      assert.equal((await store.list("Sandbox")).items.length, 0);
      assert.equal(allocated(), 0);
      assert.equal(registry.placementOf("default/web"), undefined);
      assert.deepEqual(released, Array(5).fill("default/web"));
      assert.deepEqual(
        registry.listAgents().flatMap((a) => a.usedPorts),
        [],
      );
    });

    it("answers the registry's own NoCapacity at once, asking no agent", async () => {
      await manager.create({ name: "a", spec: spec() });
      await manager.create({ name: "b", spec: spec() });
      // The clock does not move: a create that waited would never settle.
      assert.ok((await rejection(manager.create({ name: "c", spec: spec() }))) instanceof NoCapacityError);
      assert.equal(clock.pendingTimers, 0);
      assert.equal(agent.createRequests.length, 2);
    });
  });

  describe("replaceInstance", () => {
    it("Reset: deletes the old instance on its agent, runs a new id with recreations 1, a Recreated condition and the accepted resetRevision", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const oldId = created.status?.sandboxID ?? "";
      assert.equal((await stored("web"))?.status?.startTime, clock.now().toISOString(), "started when it runs");
      clock.advance(60_000);
      const updated = await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) });
      const replaced = await manager.replaceInstance(updated, "Reset");
      assert.ok(replaced);
      const newId = replaced.status?.sandboxID ?? "";
      assert.notEqual(newId, oldId);
      assert.match(newId, /^[a-z0-9]{20}$/);
      assert.deepEqual(agent.calls, [`create ${oldId}`, `delete ${oldId} 2000`, `create ${newId}`]);
      const record = await stored("web");
      assert.equal(record?.metadata.uid, created.metadata.uid, "same sandbox, new instance");
      assert.equal(record?.status?.phase, "Running");
      assert.equal(record?.status?.sandboxID, newId);
      assert.equal(record?.status?.recreations, 1);
      assert.equal(record?.status?.startTime, clock.now().toISOString(), "the new instance's start");
      assert.equal(record?.status?.acceptedResetRevision, "r1");
      assert.equal(condition(record, "Recreated")?.status, "True");
      assert.equal(condition(record, "Recreated")?.reason, "Reset");
      assert.match(condition(record, "Recreated")?.message ?? "", /recreated 1 time;/);
      assert.equal(condition(record, "Ready")?.status, "True");
      assert.equal(allocated(), 1);
      assert.equal(registry.placementOf("default/web")?.agent.name, AGENT);
    });

    it("Reset of a sandbox its pool's network no longer allows: refused, the running instance kept, the record says why", async () => {
      manager.setPool(pool("default", { network: { mode: "Isolated", egress: { policy: "allowAll" } } }));
      const created = await manager.create({ name: "web", spec: spec({ egress: { policy: "allowAll" } }) });
      const oldId = created.status?.sandboxID ?? "";
      // The pool narrows its egress under the sandbox: a new instance of it could not be made.
      manager.setPool(pool("default", { network: { mode: "Isolated", egress: { policy: "denyAll" } } }));
      const updated = await manager.update({ name: "web", spec: spec({ egress: { policy: "allowAll" }, resetRevision: "r1" }) });
      const error = await rejection(manager.replaceInstance(updated, "Reset"));
      assert.ok(error instanceof ValidationError, String(error));
      assert.deepEqual(agent.calls, [`create ${oldId}`], "the old instance is not deleted");
      const record = await stored("web");
      assert.equal(record?.status?.phase, "Running");
      assert.equal(record?.status?.sandboxID, oldId);
      assert.equal(condition(record, "Recreated")?.status, "False");
      assert.equal(condition(record, "Recreated")?.reason, "InvalidSpec");
      assert.match(condition(record, "Recreated")?.message ?? "", /cannot recreate it \(resetRevision changed to "r1"\): .*egress.*delete the sandbox/);
      assert.equal(registry.placementOf("default/web")?.agent.name, AGENT, "its slot is still held");
      // Tried again: the same refusal, no second status write.
      const version = record?.metadata.resourceVersion;
      await rejection(manager.replaceInstance(record ?? updated, "Reset"));
      assert.equal((await stored("web"))?.metadata.resourceVersion, version);
    });

    it("sends the new instance's slots and exposed ports to the agent as a create does", async () => {
      const created = await manager.create({ name: "web", spec: spec({ exposedPorts: [8080] }) });
      await manager.replaceInstance(created, "AgentLost");
      assert.deepEqual(agent.createRequests[1] && [agent.createRequests[1].slots, agent.createRequests[1].exposedPorts], [2, [8080]]);
    });

    it("counts recreations across replacements", async () => {
      await manager.create({ name: "web", spec: spec() });
      await manager.replaceInstance(await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) }), "Reset");
      const second = await manager.replaceInstance(await manager.update({ name: "web", spec: spec({ resetRevision: "r2" }) }), "Reset");
      assert.equal(second?.status?.recreations, 2);
      assert.equal(second?.status?.acceptedResetRevision, "r2");
      assert.match(condition(second, "Recreated")?.message ?? "", /recreated 2 times/);
      assert.equal(allocated(), 1);
    });

    it("when no agent has a slot for the new instance: Lost/RecreateFailed, and the pool is woken to size itself for it", async () => {
      const capacity = new FakePoolCapacity();
      manager.setPoolCapacity(capacity);
      const created = await manager.create({ name: "web", spec: spec({ failurePolicy: "AutoRecreate" }) });
      // Its agent is gone, and with it the pool's only slots (a pool sized to what it held).
      registry.removeAgent(created.status?.assignedPod ?? "");
      const error = await rejection(manager.replaceInstance(created, "AgentLost"));
      assert.ok(error instanceof NoCapacityError, String(error));
      assert.equal((await stored("web"))?.status?.phase, "Lost");
      assert.deepEqual(capacity.wakes, ["default/default"], "the pool is told a sandbox waits for a slot");
    });

    it("when the new instance cannot be created: Lost with Ready=False/RecreateFailed, no slot held, the new id deleted", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const oldId = created.status?.sandboxID ?? "";
      agent.createError = new FailedPreconditionError("image python:3.12 not found");
      const error = await rejection(manager.replaceInstance(created, "AgentLost"));
      assert.ok(error instanceof FailedPreconditionError);
      const newId = agent.createRequests[1]?.sandboxId ?? "";
      assert.ok(newId && newId !== oldId);
      assert.deepEqual(agent.calls, [`create ${oldId}`, `delete ${oldId} 2000`, `create ${newId}`, `delete ${newId} 0`]);
      const record = await stored("web");
      assert.equal(record?.status?.phase, "Lost");
      assert.deepEqual(record?.status?.endpoints, []);
      assert.equal(condition(record, "Ready")?.status, "False");
      assert.equal(condition(record, "Ready")?.reason, "RecreateFailed");
      assert.match(condition(record, "Ready")?.message ?? "", /image python:3\.12 not found/);
      assert.equal(registry.placementOf("default/web"), undefined);
      assert.equal(allocated(), 0);
    });

    it("Reset that fails leaves the previous revision accepted, so the reset is still pending", async () => {
      await manager.create({ name: "web", spec: spec({ resetRevision: "r1" }) });
      assert.equal((await stored("web"))?.status?.acceptedResetRevision, "r1");
      const updated = await manager.update({ name: "web", spec: spec({ resetRevision: "r2" }) });
      agent.createError = new FailedPreconditionError("image python:3.12 not found");
      await rejection(manager.replaceInstance(updated, "Reset"));
      const record = await stored("web");
      assert.equal(record?.status?.phase, "Lost");
      assert.equal(record?.status?.acceptedResetRevision, "r1");
      assert.equal(record?.status?.recreations, undefined, "no recreation happened");
    });

    it("of a sandbox deleted since it was seen does nothing", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      await manager.delete(undefined, "web", 0);
      assert.equal(await manager.replaceInstance(created, "Reset"), undefined);
      assert.equal(agent.createRequests.length, 1);
      assert.equal(await stored("web"), undefined);
    });
  });

  describe("unfinished creates", () => {
    it("placeStored places a Pending record written directly to the store, keeping its identity", async () => {
      const record = await storeRecord("applied", undefined, { exposedPorts: [8080] });
      const placed = await manager.placeStored(record);
      assert.equal(placed?.status?.phase, "Running");
      assert.equal(placed?.status?.assignedPod, AGENT);
      assert.deepEqual(placed?.status?.endpoints, [`http://8080-${placed?.status?.sandboxID ?? "?"}.localhost:7072/`]);
      // Written with kubectl: a token nobody is told, until 'fsb token' rotates it.
      assert.match(placed?.status?.accessTokenHash ?? "", /^sha256:[0-9a-f]{64}$/);
      const current = await stored("applied");
      assert.equal(current?.metadata.uid, record.metadata.uid);
      assert.equal(current?.status?.phase, "Running");
      assert.deepEqual(agent.calls, [`create ${current?.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });

    it("placeStored leaves alone a record that is no longer Pending or was replaced by another of the same name", async () => {
      const running = await manager.create({ name: "web", spec: spec() });
      assert.equal(await manager.placeStored(running), undefined);
      const pending = await storeRecord("later");
      await store.update("Sandbox", { ...pending, metadata: { ...pending.metadata, finalizers: [] } });
      await store.delete("Sandbox", { namespace: "default", name: "later" });
      await storeRecord("later");
      assert.equal(await manager.placeStored(pending), undefined, "stale uid");
      assert.equal(agent.createRequests.length, 1);
      assert.equal(allocated(), 1);
    });

    it("adoptRunning turns a Bound record its agent runs into Running and restores its slot", async () => {
      const bound = await storeRecord("cut-short", { phase: "Bound", assignedPod: AGENT, sandboxID: "cutshort00000000abc1" }, { exposedPorts: [8080] });
      const adopted = await manager.adoptRunning(bound);
      assert.equal(adopted?.status?.phase, "Running");
      assert.equal(adopted?.status?.sandboxID, "cutshort00000000abc1");
      assert.deepEqual(adopted?.status?.endpoints, ["http://8080-cutshort00000000abc1.localhost:7072/"]);
      assert.equal(condition(adopted, "Ready")?.status, "True");
      assert.equal((await stored("cut-short"))?.status?.phase, "Running");
      assert.equal(registry.placementOf("default/cut-short")?.agent.name, AGENT);
      assert.deepEqual(registry.getAgent(AGENT)?.usedPorts, [8080]);
      assert.equal(allocated(), 1);
      assert.deepEqual(agent.calls, [], "the agent already runs it");
    });

    it("adoptRunning of a recreation cut short counts it", async () => {
      const bound = await storeRecord("recreated", {
        phase: "Bound",
        assignedPod: AGENT,
        sandboxID: "default.recreated.abc123",
        recreations: 1,
        conditions: [{ type: "Recreated", status: "Unknown", reason: "AgentLost", message: "recreating", lastTransitionTime: NOW.toISOString() }],
      });
      const adopted = await manager.adoptRunning(bound);
      assert.equal(adopted?.status?.recreations, 2);
      assert.equal(condition(adopted, "Recreated")?.status, "True");
    });

    it("adoptRunning leaves a record that is not Bound alone", async () => {
      const pending = await storeRecord("pending");
      assert.equal(await manager.adoptRunning(pending), undefined);
      assert.equal((await stored("pending"))?.status?.phase, undefined);
      assert.equal(allocated(), 0);
    });

    it("abandon removes a fast-path create's Bound record, tells its agent to delete the id and releases its slot", async () => {
      const bound = await fixture.storeRecord(
        "orphan",
        { phase: "Bound", assignedPod: AGENT, sandboxID: "default.orphan.abc123" },
        {},
        { [FAST_PATH_ANNOTATION]: "true" },
      );
      registry.restore({ sandboxKey: "default/orphan", agentName: AGENT, ports: [] });
      await manager.abandon(bound, "agent default-0 does not run it");
      assert.deepEqual(agent.calls, ["delete default.orphan.abc123 0"]);
      assert.equal(await stored("orphan"), undefined);
      assert.equal(allocated(), 0);
      assert.deepEqual(released, ["default/orphan"]);
    });

    it("abandon keeps a record its user wrote (kubectl apply): Pending again, nothing of the cut-short try left, its agent told to delete the id", async () => {
      const bound = await storeRecord("applied", { phase: "Bound", assignedPod: AGENT, sandboxID: "default.applied.abc123", sandboxIP: "10.213.0.9" });
      registry.restore({ sandboxKey: "default/applied", agentName: AGENT, ports: [] });
      await manager.abandon(bound, "agent default-0 does not run it");
      assert.deepEqual(agent.calls, ["delete default.applied.abc123 0"]);
      const kept = await stored("applied");
      assert.equal(kept?.metadata.uid, bound.metadata.uid, "the user's object is not deleted");
      assert.equal(kept?.status?.phase, "Pending");
      assert.equal(kept?.status?.sandboxID, undefined);
      assert.equal(kept?.status?.assignedPod, undefined);
      assert.equal(kept?.status?.sandboxIP, undefined);
      assert.equal(allocated(), 0);
    });

    it("abandon removes a fast-path create's Pending record (cut short before it was placed) unless a retry of its request waits for it; a user's stays", async () => {
      const unanswered = await fixture.storeRecord("unanswered", { phase: "Pending" }, {}, { [FAST_PATH_ANNOTATION]: "true" });
      await manager.abandon(unanswered, "nobody waits for it");
      assert.equal(await stored("unanswered"), undefined);

      const annotations = { [FAST_PATH_ANNOTATION]: "true", [REQUEST_ID_ANNOTATION]: "req-awaited" };
      const awaited = await fixture.storeRecord(requestName("default", "req-awaited"), undefined, {}, annotations);
      const call = manager.create({ spec: spec(), requestId: "req-awaited" });
      await eventually(() => manager.awaitedByRetry("default", awaited.metadata.name) || undefined);
      await manager.abandon(awaited, "a retry waits for it");
      assert.equal((await stored(awaited.metadata.name))?.metadata.uid, awaited.metadata.uid, "kept, to be placed for the retry");
      await manager.placeStored(awaited);
      await clock.advanceAsync(100);
      assert.equal((await call).status?.phase, "Running");

      const applied = await storeRecord("applied");
      await manager.abandon(applied, "written by its user");
      assert.equal((await stored("applied"))?.metadata.uid, applied.metadata.uid, "a record its user wrote is placed, never removed");
      assert.equal(allocated(), 1, "the slot of the sandbox placed for the retry, nothing else");
    });

    it("abandon leaves a record that is Running (its create finished meanwhile) alone", async () => {
      const running = await manager.create({ name: "web", spec: spec() });
      await manager.abandon(running, "stale view");
      assert.equal((await stored("web"))?.status?.phase, "Running");
      assert.deepEqual(agent.calls, [`create ${running.status?.sandboxID}`]);
      assert.equal(allocated(), 1);
    });
  });

  describe("network", () => {
    const tenNet: EgressPolicy = { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }] };

    /** A pool `name` with `network`, known to the manager, and one agent of it (`<name>-0`, 2 slots), whose client it returns. */
    function poolWithNetwork(name: string, network: SandboxPool["spec"]["network"]): FakeAgentClient {
      manager.setPool(pool(name, network ? { network } : {}));
      return addAgent(`${name}-0`, name);
    }

    it("sends an Isolated pool's network to the agent and records the address the agent gives the sandbox", async () => {
      const isolated = poolWithNetwork("iso", { mode: "Isolated", egress: tenNet, allowSandboxToSandbox: true });
      const sandbox = await manager.create({ name: "web", spec: spec({ poolRef: "iso" }) });
      assert.deepEqual(isolated.createRequests[0]?.network, { mode: "Isolated", egress: tenNet, allowSandboxToSandbox: true });
      assert.equal(sandbox.status?.sandboxIP, "10.88.0.1");
      assert.equal((await stored("web"))?.status?.sandboxIP, "10.88.0.1");
    });

    it("sends an Isolated pool's default egress (allowAll) and no sandbox-to-sandbox traffic when the pool sets neither", async () => {
      const isolated = poolWithNetwork("iso", { mode: "Isolated" });
      await manager.create({ name: "web", spec: spec({ poolRef: "iso" }) });
      assert.deepEqual(isolated.createRequests[0]?.network, { mode: "Isolated", egress: { policy: "allowAll" }, allowSandboxToSandbox: false });
    });

    it("sends the sandbox's own egress policy when it narrows the pool's", async () => {
      const isolated = poolWithNetwork("iso", { mode: "Isolated", egress: tenNet });
      const narrower: EgressPolicy = { policy: "allowList", allow: [{ cidr: "10.1.2.0/24", ports: [443], protocol: "tcp" }] };
      await manager.create({ name: "narrow", spec: spec({ poolRef: "iso", egress: narrower }) });
      await manager.create({ name: "closed", spec: spec({ poolRef: "iso", egress: { policy: "denyAll" } }) });
      assert.deepEqual(
        isolated.createRequests.map((request) => request.network.mode === "Isolated" && request.network.egress),
        [narrower, { policy: "denyAll" }],
      );
    });

    it("sends a Shared network and records no address", async () => {
      const shared = poolWithNetwork("shared", { mode: "Shared" });
      const sandbox = await manager.create({ name: "web", spec: spec({ poolRef: "shared" }) });
      assert.deepEqual(shared.createRequests[0]?.network, { mode: "Shared" });
      assert.equal(sandbox.status?.sandboxIP, undefined);
    });

    it("gives a pool without a network mode DEFAULT_NETWORK_MODE", async () => {
      const plain = poolWithNetwork("plain", undefined);
      await manager.create({ name: "web", spec: spec({ poolRef: "plain" }) });
      assert.equal(plain.createRequests[0]?.network.mode, DEFAULT_NETWORK_MODE);
    });

    it("refuses an egress policy wider than the pool's before storing or placing anything, saying what the pool allows", async () => {
      const isolated = poolWithNetwork("iso", { mode: "Isolated", egress: tenNet });
      const error = await rejection(manager.create({ name: "web", spec: spec({ poolRef: "iso", egress: { policy: "allowAll" } }) }));
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, "spec.egress.policy");
      assert.match(
        error.message,
        /the egress policy of pool default\/iso is allowList \(10\.0\.0\.0\/8 tcp port 443\); allowed here: denyAll, or an allowList/,
      );
      assert.equal(await stored("web"), undefined);
      assert.deepEqual(isolated.calls, []);
      assert.equal(fixture.allocated("iso"), 0);
    });

    it("refuses an egress policy on a Shared network, before storing anything", async () => {
      const shared = poolWithNetwork("shared", { mode: "Shared" });
      const error = await rejection(manager.create({ name: "web", spec: spec({ poolRef: "shared", egress: { policy: "denyAll" } }) }));
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, "spec.egress");
      assert.match(
        error.message,
        /pool default\/shared has a Shared network .* where egress cannot be restricted; leave egress out, or use a pool with network\.mode: Isolated/,
      );
      assert.equal(await stored("web"), undefined);
      assert.deepEqual(shared.calls, []);
    });

    it("keeps a stored sandbox whose egress its pool does not allow Pending, saying why (kubectl apply)", async () => {
      poolWithNetwork("iso", { mode: "Isolated", egress: { policy: "denyAll" } });
      const record = await storeRecord("applied", undefined, { poolRef: "iso", egress: tenNet });
      const error = await rejection(manager.placeStored(record));
      assert.ok(error instanceof ValidationError);
      assert.match(error.message, /^spec\.egress\.policy: allowList allows more than the pool does/);
      assert.equal((await stored("applied"))?.status?.phase ?? "Pending", "Pending");
      assert.equal(fixture.allocated("iso"), 0);
    });

    it("takes exposed ports exclusively on a Shared agent only: an Isolated one holds two sandboxes on the same port", async () => {
      const shared = poolWithNetwork("shared", { mode: "Shared" });
      await manager.create({ name: "a", spec: spec({ poolRef: "shared", exposedPorts: [8080] }) });
      const refused = await rejection(manager.create({ name: "b", spec: spec({ poolRef: "shared", exposedPorts: [8080] }) }));
      assert.ok(refused instanceof NoCapacityError);
      assert.match(refused.message, /port 8080/);
      assert.deepEqual(registry.getAgent("shared-0")?.usedPorts, [8080]);
      assert.equal(shared.createRequests.length, 1);

      const isolated = poolWithNetwork("iso", { mode: "Isolated" });
      await manager.create({ name: "c", spec: spec({ poolRef: "iso", exposedPorts: [8080] }) });
      await manager.create({ name: "d", spec: spec({ poolRef: "iso", exposedPorts: [8080] }) });
      assert.deepEqual(
        isolated.createRequests.map((request) => request.exposedPorts),
        [[8080], [8080]],
        "the agent still learns the ports the sandbox listens on",
      );
      assert.equal(registry.getAgent("iso-0")?.allocated, 2);
      assert.deepEqual(registry.getAgent("iso-0")?.usedPorts, []);
    });

    it("replaceInstance records the new instance's address, and clears it when the new instance has none", async () => {
      poolWithNetwork("iso", { mode: "Isolated" });
      const created = await manager.create({ name: "web", spec: spec({ poolRef: "iso", exposedPorts: [8080] }) });
      assert.equal(created.status?.sandboxIP, "10.88.0.1");
      const reset = await manager.replaceInstance(
        await manager.update({ name: "web", spec: spec({ poolRef: "iso", exposedPorts: [8080], resetRevision: "r1" }) }),
        "Reset",
      );
      assert.equal(reset?.status?.sandboxIP, "10.88.0.2");
      // The pool turned Shared: the next instance runs in its agent's network, takes its port there, and has no address of its own.
      manager.setPool(pool("iso", { network: { mode: "Shared" } }));
      const shared = await manager.replaceInstance(
        await manager.update({ name: "web", spec: spec({ poolRef: "iso", exposedPorts: [8080], resetRevision: "r2" }) }),
        "Reset",
      );
      assert.equal(shared?.status?.phase, "Running");
      assert.equal("sandboxIP" in ((await stored("web"))?.status ?? {}), false);
      assert.deepEqual(registry.getAgent("iso-0")?.usedPorts, [8080]);
    });

    it("replaceInstance that fails leaves the sandbox Lost without an address", async () => {
      const isolated = poolWithNetwork("iso", { mode: "Isolated" });
      await manager.create({ name: "web", spec: spec({ poolRef: "iso" }) });
      isolated.createError = new FailedPreconditionError("image gone");
      const seen = await manager.update({ name: "web", spec: spec({ poolRef: "iso", resetRevision: "r1" }) });
      await rejection(manager.replaceInstance(seen, "Reset"));
      const record = await stored("web");
      assert.equal(record?.status?.phase, "Lost");
      assert.equal(record?.status?.sandboxIP, undefined);
    });

    it("adoptRunning records the address the agent reports and holds no port for an Isolated instance", async () => {
      poolWithNetwork("iso", { mode: "Isolated" });
      const bound = await storeRecord(
        "cut-short",
        { phase: "Bound", assignedPod: "iso-0", sandboxID: "cutshort0000000000aa" },
        { poolRef: "iso", exposedPorts: [8080] },
      );
      const adopted = await manager.adoptRunning(bound, { address: "10.88.0.42" });
      assert.equal(adopted?.status?.sandboxIP, "10.88.0.42");
      assert.equal((await stored("cut-short"))?.status?.sandboxIP, "10.88.0.42");
      assert.equal(registry.getAgent("iso-0")?.allocated, 1);
      assert.deepEqual(registry.getAgent("iso-0")?.usedPorts, []);
    });

    it("portsHeldBy: what a record's instance holds on its agent's address, by the pool this manager knows", async () => {
      poolWithNetwork("iso", { mode: "Isolated" });
      poolWithNetwork("shared", { mode: "Shared" });
      const bound = (poolRef: string): Sandbox => ({
        apiVersion: "sandbox.fast.io/v1alpha1",
        kind: "Sandbox",
        metadata: { name: "x", namespace: "default" },
        spec: spec({ poolRef, exposedPorts: [8080] }),
        status: { phase: "Bound" },
      });
      assert.deepEqual(manager.portsHeldBy(bound("iso")), []);
      assert.deepEqual(manager.portsHeldBy(bound("shared")), [8080]);
      assert.deepEqual(manager.portsHeldBy(bound("unknown")), [8080]);
    });
  });

  describe("access tokens", () => {
    it("stores the hash of the token the caller hands out, and keeps it across a new instance", async () => {
      const hash = hashAccessToken("the-token");
      const created = await manager.create({ name: "web", spec: spec(), accessTokenHash: hash });
      assert.equal(created.status?.accessTokenHash, hash);
      assert.equal((await stored("web"))?.status?.accessTokenHash, hash);
      const replaced = await manager.replaceInstance(await manager.update({ name: "web", spec: spec({ resetRevision: "r1" }) }), "Reset");
      assert.ok(replaced?.status?.sandboxID);
      assert.notEqual(replaced.status.sandboxID, created.status?.sandboxID);
      assert.equal(replaced?.status?.accessTokenHash, hash);
    });

    it("rotates: a new token whose hash replaces the old one, told only to the caller", async () => {
      await manager.create({ name: "web", spec: spec(), accessTokenHash: hashAccessToken("old") });
      const { accessToken, sandbox } = await manager.rotateAccessToken(undefined, "web");
      assert.notEqual(accessToken, "old");
      assert.equal(sandbox.status?.accessTokenHash, hashAccessToken(accessToken));
      assert.equal((await stored("web"))?.status?.accessTokenHash, hashAccessToken(accessToken));
      assert.ok(!JSON.stringify(await stored("web")).includes(accessToken));
      await assert.rejects(manager.rotateAccessToken(undefined, "nosuch"), NotFoundError);
    });
  });

  describe("exec", () => {
    it("runs the command on the sandbox's agent and streams its events as the agent sends them", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const output = new TextEncoder().encode("hello\n");
      agent.execEvents = [
        { type: "stdout", data: output },
        { type: "exit", exitCode: 7 },
      ];
      const events = [];
      for await (const event of manager.exec({ name: "web", command: ["sh", "-c", "echo hello"], envs: [{ name: "A", value: "1" }], workingDir: "/srv" })) {
        events.push(event);
      }
      assert.deepEqual(events, [
        { type: "stdout", data: output },
        { type: "exit", exitCode: 7 },
      ]);
      assert.deepEqual(agent.execRequests, [
        { sandboxId: created.status?.sandboxID, command: ["sh", "-c", "echo hello"], envs: [{ name: "A", value: "1" }], workingDir: "/srv" },
      ]);
    });

    it("says why a sandbox whose instance ended or whose agent is gone cannot run a command, and what comes, instead of 'retry shortly'", async () => {
      const created = await manager.create({ name: "web", spec: spec() });
      const refusal = (name: string) =>
        manager
          .exec({ name, command: ["true"] })
          .next()
          .then(
            () => assert.fail("expected a refusal"),
            (error: unknown) => error,
          );
      // Its agent not connected right now, but still there: that passes.
      fixture.connected = false;
      const away = await refusal("web");
      assert.ok(away instanceof UnavailableError, String(away));
      assert.match(away.message, /is not connected; retry shortly/);
      // Its agent gone for good (its Pod deleted): no retry helps.
      (fixture.agents as { exists?: (name: string) => boolean }).exists = () => false;
      const gone = await refusal("web");
      assert.ok(gone instanceof UnavailableError, String(gone));
      assert.match(
        gone.message,
        /^sandbox web cannot be reached: its agent \S+ is gone; it turns Lost once its recovery timeout \(30s\) has passed \(failurePolicy Manual\): reset it/,
      );
      // The instance lost (process 1 killed): the phase and why, by name, and what to do.
      fixture.connected = true;
      assert.ok(created.status);
      const running = await store.get("Sandbox", { namespace: "default", name: "web" });
      assert.ok(running?.status);
      await store.updateStatus("Sandbox", {
        ...running,
        status: {
          ...running.status,
          phase: "Lost",
          conditions: [
            { type: "Ready", status: "False", reason: "SandboxStopped", message: "its process 1 exited", lastTransitionTime: new Date().toISOString() },
          ],
        },
      });
      const lost = await refusal("web");
      assert.ok(lost instanceof FailedPreconditionError, String(lost));
      assert.equal(lost.message, "sandbox web does not run (phase Lost: its process 1 exited); reset it ('fsb reset web') or delete it");
      assert.deepEqual(agent.execRequests, []);
    });

    it("refuses an empty command before calling the agent", async () => {
      await manager.create({ name: "web", spec: spec() });
      await assert.rejects(manager.exec({ name: "web", command: [] }).next(), ValidationError);
      assert.deepEqual(agent.execRequests, []);
    });

    it("refuses what a create's spec may not hold before calling the agent, naming the field and what is allowed", async () => {
      await manager.create({ name: "web", spec: spec() });
      const refused = async (input: Partial<ExecInput>, field: string, message: RegExp) => {
        const error = await manager
          .exec({ name: "web", command: ["env"], ...input })
          .next()
          .then(
            () => assert.fail(`expected ${field} to be refused`),
            (error: unknown) => error,
          );
        assert.ok(error instanceof ValidationError, String(error));
        assert.equal(error.field, field);
        assert.match(error.message, message);
      };
      // A name with '=' would set another variable (A="B=c"), an empty one a variable "=c".
      await refused(
        { envs: [{ name: "A=B", value: "c" }] },
        "envs[0].name",
        /^envs\[0\]\.name: "A=B" is not valid \(Variable name; must not be empty or contain '=' or NUL bytes\.\)$/,
      );
      await refused({ envs: [{ name: "", value: "c" }] }, "envs[0].name", /must not be empty/);
      await refused({ envs: [{ name: "A", value: "x\0y" }] }, "envs[0].value", /must not contain NUL bytes/);
      await refused({ command: ["sh", "-c", "a\0b"] }, "command[2]", /is not valid \(must not contain NUL bytes\)/);
      await refused({ workingDir: "srv" }, "workingDir", /^workingDir: "srv" is not valid \(Absolute path, without NUL bytes\.\)$/);
      await refused({ workingDir: "/srv\0" }, "workingDir", /without NUL bytes/);
      await refused({ command: Array(257).fill("x") }, "command", /has 257 entries; at most 256 are allowed$/);
      // A command of 20 MB would exceed containerd's 16 MiB requests; 1 MiB in all is allowed, as for a create.
      await refused(
        { command: ["echo", ...Array(160).fill("x".repeat(128 * 1024 - 1))] },
        "command",
        /together \(.*\); at most 1048576 \(1 MiB\) together are allowed$/,
      );
      await refused({ envs: [{ name: "A", value: "x".repeat(20 << 20) }] }, "envs[0].value", /has 20971520 characters; at most 131071 are allowed$/);
      assert.deepEqual(agent.execRequests, []);
      // An empty working directory is unset, as before.
      for await (const _event of manager.exec({ name: "web", command: ["pwd"], workingDir: "" }));
      assert.equal(agent.execRequests.length, 1);
    });
  });
});
