import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import { API_VERSION, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import type { AgentClient, AgentStatus, PullProgress } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import type { ResourceStore } from "../store/resource-store.js";
import { HotImagesReconciler } from "./hot-images-reconciler.js";

class FakeAgent implements Partial<AgentClient> {
  readonly pulls: string[] = [];

  async status(): Promise<AgentStatus> {
    return { name: "agent-0", namespace: "default", pool: "web", nodeName: "node-0", images: [], sandboxes: [], pid: 1 };
  }

  async *pullImage(image: string): AsyncIterable<PullProgress> {
    this.pulls.push(image);
    yield { image, phase: "done", layersTotal: 1, layersDone: 1, bytesTotal: 10, bytesDone: 10, digest: "sha256:0" };
  }
}

function pool(name: string, prewarmImages?: string[]): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace: "default" },
    spec: { capacity: { poolMin: 1, poolMax: 2 }, maxSandboxesPerPod: 4, ...(prewarmImages ? { prewarmImages } : {}) },
  };
}

/** Creates the sandbox and records it Running, as its start does: only a create that ran counts. */
async function ran(store: ResourceStore, object: Sandbox): Promise<Sandbox> {
  const created = await store.create("Sandbox", object);
  return store.updateStatus("Sandbox", { ...created, status: { phase: "Running", startTime: new Date().toISOString() } });
}

function sandbox(name: string, image: string, poolRef = "web"): Sandbox {
  return { apiVersion: API_VERSION, kind: "Sandbox", metadata: { name, namespace: "default" }, spec: { image, poolRef } };
}

describe("HotImagesReconciler", () => {
  let store: SqliteResourceStore;
  let registry: AgentRegistry;
  let agents: Map<string, FakeAgent>;
  let reconciler: HotImagesReconciler;

  const addAgent = (name: string, images: string[], ready = true) => {
    registry.upsertAgent({ name, namespace: "default", pool: "web", endpoint: "127.0.0.1:1", capacity: 4, hostIP: "127.0.0.1", images });
    registry.setAgentReady(name, ready);
    agents.set(name, new FakeAgent());
  };
  const hotImages = async (name = "web") => (await store.get("SandboxPool", { namespace: "default", name }))?.status?.hotImages;
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

  beforeEach(async () => {
    store = openSqliteResourceStore({ path: ":memory:" });
    registry = new AgentRegistry();
    agents = new Map();
    await store.create("SandboxPool", pool("web"));
    reconciler = new HotImagesReconciler({
      store,
      registry,
      agents: { get: (name) => agents.get(name) as AgentClient | undefined },
      logger: pino({ level: "silent" }),
      intervalMs: 3_600_000,
    });
  });

  afterEach(async () => {
    reconciler.stop();
    await store.close();
  });

  it("writes the images created at least twice in the pool to status.hotImages, most used first", async () => {
    await reconciler.start();
    for (const [i, image] of ["python:3.12", "python:3.12", "python:3.12", "busybox", "docker.io/library/busybox:latest", "node:22"].entries()) {
      await ran(store, sandbox(`s${i}`, image));
    }
    await settle();
    await reconciler.pass();
    assert.deepEqual(await hotImages(), ["docker.io/library/python:3.12", "docker.io/library/busybox:latest"]);
  });

  it("runs a pass every intervalMs on its clock", async () => {
    reconciler.stop();
    // The store stamps creationTimestamp with the real time: this clock starts there.
    const clock = new FakeClock(new Date());
    reconciler = new HotImagesReconciler({
      store,
      registry,
      agents: { get: (name) => agents.get(name) as AgentClient | undefined },
      logger: pino({ level: "silent" }),
      intervalMs: 5000,
      clock,
    });
    await reconciler.start();
    await ran(store, sandbox("a", "python:3.12"));
    await ran(store, sandbox("b", "python:3.12"));
    await settle();
    await clock.advanceAsync(4999);
    assert.equal(await hotImages(), undefined);
    await clock.advanceAsync(1);
    assert.deepEqual(await hotImages(), ["docker.io/library/python:3.12"]);
    reconciler.stop();
    assert.equal(clock.pendingTimers, 0, "stop() ends the passes");
  });

  it("counts the creates of the last minutes that happened before it started", async () => {
    await ran(store, sandbox("a", "python:3.12"));
    await ran(store, sandbox("b", "python:3.12"));
    await reconciler.start();
    await reconciler.pass();
    assert.deepEqual(await hotImages(), ["docker.io/library/python:3.12"]);
  });

  it("pre-pulls hot images on ready agents of the pool that lack them, and only there", async () => {
    addAgent("web-0", []);
    addAgent("web-1", ["docker.io/library/python:3.12"]);
    addAgent("web-2", [], false);
    await ran(store, sandbox("a", "python:3.12"));
    await ran(store, sandbox("b", "python:3.12"));
    await reconciler.start();
    await reconciler.pass();
    await settle();
    assert.deepEqual(agents.get("web-0")?.pulls, ["docker.io/library/python:3.12"]);
    assert.deepEqual(agents.get("web-1")?.pulls, []);
    assert.deepEqual(agents.get("web-2")?.pulls, []);
  });

  it("also pulls the pool's prewarmImages where they are missing (an agent whose prewarm failed)", async () => {
    await store.delete("SandboxPool", { namespace: "default", name: "web" });
    await store.create("SandboxPool", pool("web", ["r.io/tools:v1"]));
    addAgent("web-0", []);
    await reconciler.start();
    await reconciler.pass();
    await settle();
    assert.deepEqual(agents.get("web-0")?.pulls, ["r.io/tools:v1"]);
    assert.equal(await hotImages(), undefined);
  });

  it("goes on counting creates after the store ended its watch (the API server ends watches every so often)", async () => {
    const memory = new MemoryResourceStore();
    await memory.create("SandboxPool", pool("web"));
    const counting = new HotImagesReconciler({
      store: memory,
      registry,
      agents: { get: (name) => agents.get(name) as AgentClient | undefined },
      logger: pino({ level: "silent" }),
      intervalMs: 3_600_000,
    });
    try {
      await counting.start();
      memory.endWatches();
      for (const name of ["a", "b"]) await ran(memory, sandbox(name, "python:3.12"));
      const written = async () => (await memory.get("SandboxPool", { namespace: "default", name: "web" }))?.status?.hotImages;
      // The informer watches again (or lists again) on its own: give it a moment, pass after pass.
      for (let attempt = 0; attempt < 100 && !(await written()); attempt++) {
        await settle();
        await counting.pass();
      }
      assert.deepEqual(await written(), ["docker.io/library/python:3.12"]);
    } finally {
      counting.stop();
    }
  });

  it("counts a create once its sandbox ran, once however often its record changes, and never one that failed (its record deleted before it ran)", async () => {
    await reconciler.start();
    for (const name of ["f1", "f2", "f3"]) {
      const failed = await store.create("Sandbox", sandbox(name, "nosuch.invalid/x:1"));
      await store.updateStatus("Sandbox", { ...failed, status: { phase: "Pending" } });
      await store.delete("Sandbox", { namespace: "default", name });
    }
    const once = await ran(store, sandbox("once", "python:3.12"));
    await store.updateStatus("Sandbox", { ...once, status: { ...once.status, phase: "Running", sandboxID: "x".repeat(20) } });
    await settle();
    await reconciler.pass();
    assert.equal(await hotImages(), undefined, "no image ran twice");
    await ran(store, sandbox("twice", "python:3.12"));
    await settle();
    await reconciler.pass();
    assert.deepEqual(await hotImages(), ["docker.io/library/python:3.12"]);
  });

  it("keeps other pools' creates out of a pool's hot images", async () => {
    await store.create("SandboxPool", pool("jobs"));
    await ran(store, sandbox("a", "python:3.12", "jobs"));
    await ran(store, sandbox("b", "python:3.12", "jobs"));
    await reconciler.start();
    await reconciler.pass();
    assert.equal(await hotImages("web"), undefined);
    assert.deepEqual(await hotImages("jobs"), ["docker.io/library/python:3.12"]);
  });
});
