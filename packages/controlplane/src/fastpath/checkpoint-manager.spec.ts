import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout } from "node:timers/promises";
import {
  AlreadyExistsError,
  TimeoutError,
  FailedPreconditionError,
  NoCapacityError,
  NotFoundError,
  UnavailableError,
  ValidationError,
} from "@fast-sandbox/api";
import { pino } from "pino";
import { FakeCheckpointingAgent, NodeCheckpoints } from "./checkpoint-agents.fixture.js";
import { CheckpointManager, FORK_IN_PROGRESS_ANNOTATION, RESTORED_FROM_ANNOTATION, defaultCheckpointName, isForkCheckpointName } from "./checkpoint-manager.js";
import { isPauseCheckpointName } from "./checkpoint-pauses.js";
import { CheckpointCollector } from "../reconcile/checkpoint-collector.js";
import { SandboxManagerFixture, deferred, poolOf, sandboxSpec } from "./sandbox-manager.fixture.js";

/** Waits until `done()` holds (a background removal is not awaited by anyone). */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !done(); waited += 5) {
    if (waited > 5_000) assert.fail(`timed out waiting for ${what}`);
    await setTimeout(5);
  }
}

describe("CheckpointManager", () => {
  let fixture: SandboxManagerFixture;
  let checkpoints: CheckpointManager;
  const nodeA = new NodeCheckpoints();
  const nodeB = new NodeCheckpoints();

  /** A ready agent of the default pool, on `node`. */
  const addAgent = (name: string, node: NodeCheckpoints, capacity = 4): FakeCheckpointingAgent => {
    fixture.addAgent(name, { capacity });
    const client = new FakeCheckpointingAgent(name, node);
    fixture.clients.set(name, client);
    return client;
  };

  beforeEach(async () => {
    nodeA.byId.clear();
    nodeB.byId.clear();
    const pool = poolOf("default", { runtimeType: "gvisor" });
    fixture = new SandboxManagerFixture({ pool });
    fixture.manager.setPool(poolOf("plain"));
    await fixture.store.create("SandboxPool", pool);
    await fixture.store.create("SandboxPool", poolOf("plain"));
    checkpoints = new CheckpointManager({
      manager: fixture.manager,
      store: fixture.store,
      registry: fixture.registry,
      agents: fixture.agents,
      logger: pino({ level: "silent" }),
    });
  });

  afterEach(() => fixture.close());

  it("checkpoints a running sandbox of a gVisor pool on its agent, under a generated name when none is given", async () => {
    const agent = addAgent("agent-a", nodeA);
    const source = await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const named = await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    assert.deepEqual(agent.checkpointCalls[0], { sandboxId: source.status?.sandboxID, checkpointId: named.id, namespace: "default", name: "ck1" });
    assert.deepEqual(
      { name: named.name, sandbox: named.sandbox, agents: named.agents, nodeName: named.nodeName },
      {
        name: "ck1",
        sandbox: "source",
        agents: ["agent-a"],
        nodeName: "node-1",
      },
    );
    const generated = await checkpoints.checkpoint({ sandbox: "source" });
    assert.match(generated.name, /^source-[0-9a-f]{10}$/);
    assert.deepEqual(
      (await checkpoints.list()).map((c) => c.name),
      ["ck1", generated.name],
    );
  });

  it("never names an unnamed checkpoint as a fork's or a pause's, which the collector would remove; others keep the usual name", async () => {
    addAgent("agent-a", nodeA);
    // Cut to 52 characters and given `-<10 hex digits>`, this name would read `a…a-fork-<10 hex digits>`.
    const forkLike = `${"a".repeat(47)}-fork-worker`;
    const long = "b".repeat(63);
    await fixture.manager.create({ name: forkLike, spec: sandboxSpec() });
    await fixture.manager.create({ name: long, spec: sandboxSpec() });
    const ofForkLike = await checkpoints.checkpoint({ sandbox: forkLike });
    assert.ok(!isForkCheckpointName(ofForkLike.name, forkLike), `${ofForkLike.name} reads as a fork's checkpoint`);
    assert.ok(!isPauseCheckpointName(ofForkLike.name, forkLike));
    assert.match(ofForkLike.name, /^a{47}-for-[0-9a-f]{10}$/);
    assert.match((await checkpoints.checkpoint({ sandbox: long })).name, /^b{52}-[0-9a-f]{10}$/);
    for (let i = 0; i < 100; i++) {
      for (const source of [forkLike, long, "src", `${"c".repeat(50)}-p`, `${"d".repeat(46)}-pause-worker`]) {
        const name = defaultCheckpointName(source);
        assert.ok(name.length <= 63 && !isForkCheckpointName(name, source) && !isPauseCheckpointName(name, source), name);
      }
    }
  });

  it("refuses a runc sandbox, a taken or bad name, and a sandbox that does not exist, saying why", async () => {
    addAgent("agent-a", nodeA);
    fixture.addAgent("runc-agent", { pool: "plain" });
    await fixture.manager.create({ name: "on-runc", spec: sandboxSpec({ poolRef: "plain" }) });
    await assert.rejects(checkpoints.checkpoint({ sandbox: "on-runc" }), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.match(error.message, /checkpoint needs runtimeType gvisor: sandbox default\/on-runc is in pool plain, whose runtimeType is container/);
      return true;
    });
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    await assert.rejects(checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" }), AlreadyExistsError);
    await assert.rejects(checkpoints.checkpoint({ sandbox: "source", checkpoint: "Not_A_Name" }), ValidationError);
    await assert.rejects(checkpoints.checkpoint({ sandbox: "missing" }), NotFoundError);
    await assert.rejects(checkpoints.get(undefined, "missing"), /checkpoint default\/missing not found; 'fsb checkpoint ls' lists the checkpoints/);
  });

  it("restores on an agent that holds the checkpoint, with the checkpoint's image, pool and command", async () => {
    const a = addAgent("agent-a", nodeA);
    const b = addAgent("agent-b", nodeB);
    // agent-a has more free slots: only the checkpoint keeps the restore on agent-b.
    await fixture.manager.create({ name: "source", spec: sandboxSpec({ image: "base:1" }) });
    const placedOn = a.sandboxes.size === 1 ? a : b;
    const other = placedOn === a ? b : a;
    const checkpoint = await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    await fixture.manager.create({ name: "filler", spec: sandboxSpec() });
    const restored = await checkpoints.createFrom({ name: "copy", fromCheckpoint: "ck1", spec: { poolRef: "", image: "" } });
    const request = placedOn.createRequests.at(-1);
    assert.equal(request?.name, "copy");
    assert.equal(request?.fromCheckpoint, checkpoint.id);
    assert.ok(!other.createRequests.some((r) => r.name === "copy"));
    assert.deepEqual(
      { image: restored.spec.image, pool: restored.spec.poolRef, command: restored.spec.command, workingDir: restored.spec.workingDir },
      {
        image: "base:1",
        pool: "default",
        command: ["sh", "-c", "loop"],
        workingDir: "/work",
      },
    );
    assert.equal(restored.metadata.annotations?.[RESTORED_FROM_ANNOTATION], "ck1");
    assert.equal(restored.status?.phase, "Running");
  });

  it("says what is wrong with a restore: an unknown checkpoint, a command, another pool, a full holder", async () => {
    addAgent("agent-a", nodeA, 1);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    await assert.rejects(checkpoints.createFrom({ fromCheckpoint: "nope" }), NotFoundError);
    await assert.rejects(checkpoints.createFrom({ fromCheckpoint: "ck1", spec: { command: ["sh"] } }), /spec\.command|leave command empty/);
    await assert.rejects(checkpoints.createFrom({ fromCheckpoint: "ck1", spec: { poolRef: "plain" } }), /is in pool default/);
    await assert.rejects(checkpoints.createFrom({ fromCheckpoint: "ck1", spec: { image: "other:2" } }), /leave the image empty/);
    // The one agent that holds it is full: no waiting for a new agent, which would not hold it.
    await assert.rejects(
      checkpoints.createFrom({ fromCheckpoint: "ck1" }),
      (error: unknown) => error instanceof NoCapacityError && /agent-a/.test(error.message),
    );
    assert.equal(await fixture.stored("copy"), undefined);
  });

  it("forks K running copies from one checkpoint and deletes that checkpoint, unless asked to keep it", async () => {
    addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const fork = await checkpoints.fork({ name: "source", count: 3 });
    assert.equal(fork.sandboxes.length, 3);
    assert.equal(new Set(fork.sandboxes.map((s) => s.sandbox.status?.sandboxID)).size, 3);
    assert.ok(fork.sandboxes.every((s) => s.accessToken && s.sandbox.metadata.name.startsWith("source-")));
    assert.deepEqual(await checkpoints.list(), []);
    const kept = await checkpoints.fork({ name: "source", count: 1, checkpoint: "golden" });
    assert.equal(kept.checkpoint?.name, "golden");
    assert.deepEqual(
      (await checkpoints.list()).map((c) => c.name),
      ["golden"],
    );
    await assert.rejects(checkpoints.fork({ name: "source", count: 0 }), ValidationError);
    await assert.rejects(checkpoints.fork({ name: "source", count: 33 }), ValidationError);
  });

  it("refuses a fork with a bad label before it checkpoints the source", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    await assert.rejects(checkpoints.fork({ name: "source", count: 2, labels: { "bad key!": "x" } }), (error: unknown) => {
      return error instanceof ValidationError && error.field === 'metadata.labels["bad key!"]' && /is not a label key/.test(error.message);
    });
    await assert.rejects(checkpoints.fork({ name: "source", count: 2, labels: { team: "not a value" } }), ValidationError);
    assert.deepEqual(agent.checkpointCalls, []);
    assert.deepEqual(await checkpoints.list(), []);
    assert.deepEqual(
      (await fixture.manager.list(undefined)).map((s) => s.metadata.name),
      ["source"],
    );
  });

  it("gives a fork's copies the egress their source narrowed from its pool's, not the pool's", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec({ egress: { policy: "denyAll" } }) });
    const fork = await checkpoints.fork({ name: "source", count: 2 });
    assert.deepEqual(
      fork.sandboxes.map((s) => s.sandbox.spec.egress),
      [{ policy: "denyAll" }, { policy: "denyAll" }],
    );
    const copies = agent.createRequests.filter((request) => request.fromCheckpoint);
    assert.equal(copies.length, 2);
    assert.deepEqual(
      copies.map((request) => (request.network.mode === "Isolated" ? request.network.egress.policy : request.network.mode)),
      ["denyAll", "denyAll"],
    );
  });

  it("makes all copies of a fork or none: a failed copy removes the others and the checkpoint", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    let creates = 0;
    agent.onCreate = (spec) => {
      if (spec.fromCheckpoint && ++creates === 2) agent.createError = new FailedPreconditionError("runsc could not restore it");
    };
    await assert.rejects(checkpoints.fork({ name: "source", count: 3 }), /fork of default\/source: \d of 3 copies ran before one failed \(all removed\)/);
    agent.createError = undefined;
    const left = await fixture.manager.list(undefined);
    assert.deepEqual(
      left.map((s) => s.metadata.name),
      ["source"],
    );
    assert.deepEqual(await checkpoints.list(), []);
  });

  it("keeps a failed fork's checkpoint while a copy it could not delete is left: the checkpoint collector removes that copy with it", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    let restores = 0;
    agent.onCreate = (spec) => {
      if (spec.fromCheckpoint && ++restores === 2) agent.createError = new FailedPreconditionError("runsc could not restore it");
    };
    // The delete of the copy that ran fails (the store is unreachable a moment).
    const remove = fixture.manager.delete.bind(fixture.manager);
    let failures = 0;
    fixture.manager.delete = (namespace, name, gracePeriodMs) =>
      name !== "source" && failures++ === 0 ? Promise.reject(new UnavailableError("the store is unreachable")) : remove(namespace, name, gracePeriodMs);
    try {
      await assert.rejects(
        checkpoints.fork({ name: "source", count: 2 }),
        /1 of 2 copies ran before one failed \(copies source-[0-9a-f]{10} could not be removed yet: they go with checkpoint source-fork-[0-9a-f]{10}, which the checkpoint collector removes\)/,
      );
    } finally {
      fixture.manager.delete = remove;
      agent.createError = undefined;
    }
    const [kept] = await checkpoints.list();
    assert.ok(kept && isForkCheckpointName(kept.name, "source"), "the fork's checkpoint stays");
    const copies = (await fixture.store.list("Sandbox", { namespace: "default" })).items.filter((s) => s.metadata.name !== "source");
    assert.deepEqual(
      copies.map((copy) => copy.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION]),
      [kept.name],
      "the copy left is marked with it",
    );
    const collector = new CheckpointCollector({ checkpoints, store: fixture.store, logger: pino({ level: "silent" }), clock: fixture.clock, forkGraceMs: 0 });
    assert.deepEqual(
      (await collector.pass()).map((collected) => collected.name),
      [kept.name],
    );
    assert.deepEqual(
      (await fixture.manager.list(undefined)).map((s) => s.metadata.name),
      ["source"],
    );
    assert.deepEqual(await checkpoints.list(), []);
  });

  it("marks a fork's copies with its checkpoint while it runs, and hands them over unmarked when it answers", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const restoring = deferred();
    let restores = 0;
    agent.onCreate = (spec) => {
      if (spec.fromCheckpoint && ++restores === 2) agent.createGate = restoring.promise;
    };
    const forking = checkpoints.fork({ name: "source", count: 2 });
    let forkCheckpoint: string | undefined;
    try {
      await until(() => restores === 2, "the second restore");
      [forkCheckpoint] = [...nodeA.byId.values()].map((c) => c.name);
      const copies = (await fixture.store.list("Sandbox", { namespace: "default" })).items.filter((s) => s.metadata.name !== "source");
      assert.equal(copies.length, 2);
      for (const copy of copies) assert.equal(copy.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION], forkCheckpoint);
      // Nothing of a fork that runs is deleted with its checkpoint: the collector leaves that checkpoint alone (inUse).
      assert.ok(checkpoints.inUse("default", forkCheckpoint ?? ""));
    } finally {
      agent.createGate = undefined;
      restoring.resolve();
    }
    const fork = await forking;
    await fixture.manager.list(undefined);
    for (const { sandbox } of fork.sandboxes) {
      assert.equal(sandbox.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION], undefined);
      assert.equal(sandbox.status?.phase, "Running");
      const stored = await fixture.stored(sandbox.metadata.name);
      assert.equal(stored?.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION], undefined);
      assert.equal(stored?.metadata.annotations?.[RESTORED_FROM_ANNOTATION], forkCheckpoint);
    }
    assert.deepEqual(await checkpoints.deleteUnfinishedForkCopies("default", forkCheckpoint ?? ""), []);
  });

  it("makes all copies of a fork or none: one it cannot hand over removes them all and the checkpoint", async () => {
    addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const update = fixture.store.update.bind(fixture.store);
    let handOvers = 0;
    fixture.store.update = (kind, object, options) => {
      const handOver = kind === "Sandbox" && object.metadata.name.startsWith("source-") && !object.metadata.annotations?.[FORK_IN_PROGRESS_ANNOTATION];
      if (handOver && !object.metadata.deletionTimestamp && ++handOvers === 2) return Promise.reject(new UnavailableError("the store is unreachable"));
      return update(kind, object, options);
    };
    try {
      await assert.rejects(
        checkpoints.fork({ name: "source", count: 3 }),
        /fork of default\/source: its 3 copies ran but one could not be handed over \(all removed\): the store is unreachable/,
      );
    } finally {
      fixture.store.update = update;
    }
    assert.deepEqual(
      (await fixture.manager.list(undefined)).map((s) => s.metadata.name),
      ["source"],
    );
    assert.deepEqual(await checkpoints.list(), []);
  });

  it("removes a fork's checkpoint that its agent saved after the call got no answer; a named one is the caller's", async () => {
    const agent = addAgent("agent-a", nodeA);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const patient = new CheckpointManager({
      manager: fixture.manager,
      store: fixture.store,
      registry: fixture.registry,
      agents: fixture.agents,
      logger: pino({ level: "silent" }),
      unansweredCheckpoints: { pollMs: 5, patienceMs: 10_000 },
    });
    try {
      agent.checkpointError = new TimeoutError("the checkpoint call's deadline passed");
      agent.savesLate = true;
      await assert.rejects(patient.fork({ name: "source", count: 2 }), TimeoutError);
      await setTimeout(50);
      agent.finishLateSave();
      assert.equal(nodeA.byId.size, 1, "saved after the call failed");
      await until(() => nodeA.byId.size === 0, "the fork's checkpoint to be removed");

      await assert.rejects(patient.fork({ name: "source", count: 2, checkpoint: "kept" }), TimeoutError);
      agent.finishLateSave();
      await setTimeout(50);
      assert.deepEqual(
        (await patient.list()).map((checkpoint) => checkpoint.name),
        ["kept"],
        "a checkpoint the caller named stays",
      );
    } finally {
      patient.close();
    }
  });

  it("a checkpoint saved before its sandbox failed to run on: the sandbox is Failed, and a fork's checkpoint is removed", async () => {
    const agent = addAgent("agent-a", nodeA);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    agent.checkpointError = new FailedPreconditionError("checkpoint x of sandbox y is saved, but the sandbox could not run on: start timed out");
    agent.savesBeforeFailure = true;
    agent.stopsOnFailure = true;
    await assert.rejects(checkpoints.fork({ name: "source", count: 2 }), FailedPreconditionError);
    assert.equal(nodeA.byId.size, 0, "the fork's checkpoint is not left behind");
    const source = await fixture.stored("source");
    assert.equal(source?.status?.phase, "Failed");
    const ready = source?.status?.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.reason, "CheckpointFailed");
    assert.match(ready?.message ?? "", /stopped in checkpoint source-fork-[0-9a-f]{10} and could not run on \(.*start timed out\)/);
  });

  it("a checkpoint runsc refused keeps its sandbox Running (it runs on)", async () => {
    const agent = addAgent("agent-a", nodeA);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    agent.checkpointError = new FailedPreconditionError("runsc refused: open connections");
    await assert.rejects(checkpoints.checkpoint({ sandbox: "source", checkpoint: "named" }), FailedPreconditionError);
    assert.equal((await fixture.stored("source"))?.status?.phase, "Running");
  });

  it("a restore naming a pool scaled to zero wakes it, counted as a create waiting, and finds the checkpoint on the agent it starts", async () => {
    addAgent("agent-a", nodeA);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    await fixture.manager.delete(undefined, "source", 0);
    fixture.registry.removeAgent("agent-a");
    const wakes: { pool: string; waiting: number }[] = [];
    let growable = true;
    let start: (() => void) | undefined;
    fixture.manager.setPoolCapacity({
      canGrow: () => growable,
      wake: (namespace, pool) => {
        wakes.push({ pool: `${namespace}/${pool}`, waiting: fixture.manager.waitingFor(namespace, pool) });
        start?.();
      },
    });
    // Without the pool named, nothing says which pool to wake: not found, as before.
    await assert.rejects(checkpoints.createFrom({ name: "copy", fromCheckpoint: "ck1" }), NotFoundError);
    assert.deepEqual(wakes, []);
    // A pool that cannot start an agent: not found once it says so, no agent started.
    start = () => (growable = false);
    await assert.rejects(checkpoints.createFrom({ name: "copy", fromCheckpoint: "ck1", spec: { poolRef: "default" } }), NotFoundError);
    assert.equal(fixture.manager.waitingFor("default", "default"), 0);
    // The pool starts an agent on the checkpoint's node when woken: the restore goes there.
    growable = true;
    start = () => void addAgent("agent-a2", nodeA);
    const restored = await checkpoints.createFrom({ name: "copy", fromCheckpoint: "ck1", spec: { poolRef: "default" } });
    assert.equal(restored.status?.assignedPod, "agent-a2");
    assert.equal(restored.status?.phase, "Running");
    assert.deepEqual(wakes, [
      { pool: "default/default", waiting: 1 },
      { pool: "default/default", waiting: 1 },
    ]);
    assert.equal(fixture.manager.waitingFor("default", "default"), 0);
  });

  it("deletes a checkpoint from its node, and a pool's checkpoints with the pool", async () => {
    addAgent("agent-a", nodeA);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck1" });
    await checkpoints.checkpoint({ sandbox: "source", checkpoint: "ck2" });
    await checkpoints.delete(undefined, "ck1");
    assert.deepEqual(
      [...nodeA.byId.values()].map((c) => c.name),
      ["ck2"],
    );
    await assert.rejects(checkpoints.delete(undefined, "ck1"), NotFoundError);
    assert.equal(await checkpoints.deletePoolCheckpoints("default", "other-pool"), 0);
    assert.equal(await checkpoints.deletePoolCheckpoints("default", "default"), 1);
    assert.equal(nodeA.byId.size, 0);
  });
});
