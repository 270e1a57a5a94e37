import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import {
  API_VERSION,
  AlreadyExistsError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  UnavailableError,
  ValidationError,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type pb,
} from "@fast-sandbox/api";
import { pino } from "pino";
import type { AgentClient } from "../agent-client/agent-client.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { CLEANUP_FINALIZER, SandboxManager, runtimeId } from "./sandbox-manager.js";

type CreateRequest = Parameters<AgentClient["createSandbox"]>[0];

function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** An AgentClient that records every call; it can be told to fail or to hold a create until released. */
class FakeAgentClient implements AgentClient {
  readonly calls: string[] = [];
  readonly createRequests: CreateRequest[] = [];
  createError: Error | undefined;
  /** When set, createSandbox waits for it (after recording the call). */
  createGate: Promise<void> | undefined;
  /** Resolved each time createSandbox is entered. */
  createEntered = deferred();

  async status(): Promise<pb.AgentStatus> {
    throw new Error("not used");
  }

  async createSandbox(request: CreateRequest): Promise<pb.AgentSandbox> {
    this.calls.push(`create ${request.sandboxId}`);
    this.createRequests.push(request);
    this.createEntered.resolve();
    if (this.createGate) await this.createGate;
    if (this.createError) throw this.createError;
    return {
      $typeName: "fastsandbox.v1alpha1.AgentSandbox",
      sandboxId: request.sandboxId,
      namespace: request.namespace,
      name: request.name,
      image: request.image,
      state: "running",
      pid: 100,
    };
  }

  async deleteSandbox(sandboxId: string, gracePeriodMs: number): Promise<void> {
    this.calls.push(`delete ${sandboxId} ${gracePeriodMs}`);
  }

  async listSandboxes(): Promise<pb.AgentSandbox[]> {
    return [];
  }

  async *logs(): AsyncIterable<Uint8Array> {}

  async *exec(): AsyncIterable<pb.ExecResponse> {}

  close(): void {}
}

const NOW = new Date("2026-03-04T05:06:07.000Z");
const AGENT = "default-0";

function pool(name: string, overrides: Partial<SandboxPool["spec"]> = {}): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace: "default" },
    spec: { capacity: { poolMin: 1, poolMax: 1 }, maxSandboxesPerPod: 2, ...overrides },
  };
}

function spec(overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  return { image: "python:3.12", poolRef: "default", consistencyMode: "strong", ...overrides };
}

let store: SqliteResourceStore;
let registry: AgentRegistry;
let agent: FakeAgentClient;
let connected: boolean;
let manager: SandboxManager;
let released: string[];

beforeEach(() => {
  store = openSqliteResourceStore({ path: ":memory:" });
  registry = new AgentRegistry();
  registry.upsertAgent({
    name: AGENT,
    namespace: "default",
    pool: "default",
    endpoint: "127.0.0.1:7001",
    capacity: 2,
    hostIP: "127.0.0.1",
    nodeName: "node-1",
    images: [],
  });
  released = [];
  const release = registry.release.bind(registry);
  registry.release = (key: string) => {
    const placement = release(key);
    if (placement) released.push(key);
    return placement;
  };
  agent = new FakeAgentClient();
  connected = true;
  manager = new SandboxManager({
    store,
    registry,
    agents: { get: (name) => (connected && name === AGENT ? agent : undefined) },
    logger: pino({ level: "silent" }),
    clock: () => NOW,
  });
  manager.setPool(pool("default", { runtimeType: "gvisor", sandboxResources: { cpu: "500m", memory: "256Mi", pids: 64 } }));
});

afterEach(async () => {
  await manager.drain();
  await store.close();
});

const allocated = () => registry.poolUsage("default", "default").allocated;
const stored = (name: string) => store.get("Sandbox", { namespace: "default", name });

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
      assert.match(sandboxId, /^default\.web\.[0-9a-f]{6}$/);
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.status?.assignedPod, AGENT);
      assert.equal(sandbox.status?.nodeName, "node-1");
      assert.deepEqual(sandbox.status?.endpoints, ["127.0.0.1:8080"]);
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
      assert.equal(request.memoryBytes, 256n * 1024n * 1024n);
      assert.equal(request.pids, 64);
    });

    it("fast mode answers Running and the stored status catches up", async () => {
      const sandbox = await manager.create({ name: "quick", spec: spec({ consistencyMode: "fast" }) });
      assert.equal(sandbox.status?.phase, "Running");
      const read = await manager.get(undefined, "quick");
      assert.equal(read.status?.phase, "Running");
      assert.equal(read.status?.sandboxID, sandbox.status?.sandboxID);
    });

    it("gives a sandbox without a name a generated one", async () => {
      const sandbox = await manager.create({ spec: spec() });
      assert.match(sandbox.metadata.name, /^sb-[0-9a-f]{10}$/);
      assert.ok(await stored(sandbox.metadata.name));
    });

    it("on an agent failure releases the slot, deletes the record and deletes the id on the agent", async () => {
      agent.createError = new UnavailableError("agent default-0 timed out");
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
      assert.ok(error instanceof FsbError);
      assert.equal(error.code, "unavailable");
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
      connected = false;
      const error = await rejection(manager.create({ name: "web", spec: spec() }));
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

    it("scopes request ids to their namespace", async () => {
      const mine = await manager.create({ spec: spec(), requestId: "shared-id" });
      // Another namespace with the same id gets its own create (here: refused, it has no pool), never ours.
      await assert.rejects(manager.create({ namespace: "team-b", spec: spec(), requestId: "shared-id" }), NotFoundError);
      assert.equal((await manager.create({ spec: spec(), requestId: "shared-id" })).metadata.uid, mine.metadata.uid);
    });

    it("lets a requestId whose attempt failed be retried", async () => {
      agent.createError = new UnavailableError("flaky");
      await rejection(manager.create({ name: "web", spec: spec(), requestId: "req-2" }));
      agent.createError = undefined;
      const sandbox = await manager.create({ name: "web", spec: spec(), requestId: "req-2" });
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(agent.createRequests.length, 2);
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
      connected = false;
      await manager.finalize(marked, 0);
      assert.equal(await stored("web"), undefined);
      assert.equal(allocated(), 0);
      assert.equal(agent.calls.filter((c) => c.startsWith("delete")).length, 0);
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
  });
});

describe("runtimeId", () => {
  it("is namespace.name.<6 hex> for ordinary names", () => {
    assert.match(runtimeId("default", "web"), /^default\.web\.[0-9a-f]{6}$/);
    assert.match(runtimeId("team-a", "my-app-2"), /^team-a\.my-app-2\.[0-9a-f]{6}$/);
  });

  it("is random for names containerd would refuse (a '--' run)", () => {
    assert.match(runtimeId("default", "a--b"), /^sb-[0-9a-f]{16}$/);
    assert.match(runtimeId("x--y", "web"), /^sb-[0-9a-f]{16}$/);
  });

  it("is readable up to 76 characters and random beyond", () => {
    // default + . + name + . + 6 hex = name length + 15.
    assert.match(runtimeId("default", "n".repeat(61)), new RegExp(`^default\\.n{61}\\.[0-9a-f]{6}$`));
    assert.equal(runtimeId("default", "n".repeat(61)).length, 76);
    assert.match(runtimeId("default", "n".repeat(62)), /^sb-[0-9a-f]{16}$/);
  });

  it("differs between calls for the same name", () => {
    const ids = new Set(Array.from({ length: 20 }, () => runtimeId("default", "web")));
    assert.ok(ids.size > 1);
  });
});
