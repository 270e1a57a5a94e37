import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout } from "node:timers/promises";
import { UnavailableError } from "@fast-sandbox/api";
import { pino } from "pino";
import type { AgentCheckpoint } from "../agent-client/agent-checkpoints.js";
import { FakeCheckpointingAgent, NodeCheckpoints } from "../fastpath/checkpoint-agents.fixture.js";
import { CheckpointManager, forkCheckpointName, isForkCheckpointName } from "../fastpath/checkpoint-manager.js";
import { isPauseCheckpointName, PAUSED_CHECKPOINT_ANNOTATION, pauseCheckpointName } from "../fastpath/checkpoint-pauses.js";
import { SandboxManager } from "../fastpath/sandbox-manager.js";
import { SandboxManagerFixture, deferred, poolOf, sandboxSpec } from "../fastpath/sandbox-manager.fixture.js";
import { CheckpointCollector, DEFAULT_FORK_CHECKPOINT_GRACE_MS, DEFAULT_PAUSE_CHECKPOINT_GRACE_MS } from "./checkpoint-collector.js";

const MINUTE_MS = 60_000;

/** Waits until `done()` holds (a timed pass is not awaited by anyone). */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !done(); waited += 5) {
    if (waited > 5_000) assert.fail(`timed out waiting for ${what}`);
    await setTimeout(5);
  }
}

describe("CheckpointCollector", () => {
  let fixture: SandboxManagerFixture;
  let checkpoints: CheckpointManager;
  let collector: CheckpointCollector;
  const nodeA = new NodeCheckpoints();
  const nodeB = new NodeCheckpoints();

  /** A ready agent of the default pool, on `node`. */
  const addAgent = (name: string, node: NodeCheckpoints, capacity = 4): FakeCheckpointingAgent => {
    fixture.addAgent(name, { capacity });
    const client = new FakeCheckpointingAgent(name, node);
    fixture.clients.set(name, client);
    return client;
  };

  /** A checkpoint of sandbox `source` on `node`, saved `ageMs` before the fixture's now. */
  const saved = (node: NodeCheckpoints, name: string, source: string, ageMs: number): void => {
    const checkpoint: AgentCheckpoint = {
      checkpointId: `id-${name}`,
      namespace: "default",
      name,
      pool: "default",
      sourceSandboxId: `id-of-${source}`,
      sourceName: source,
      image: "python:3.12",
      runtimeType: "gvisor",
      networkMode: "isolated",
      command: ["sh"],
      workingDir: "/",
      createdAt: new Date(fixture.clock.now().getTime() - ageMs).toISOString(),
      sizeBytes: 4_000_000_000,
    };
    node.byId.set(checkpoint.checkpointId, checkpoint);
  };
  const names = (node: NodeCheckpoints): string[] => [...node.byId.values()].map((checkpoint) => checkpoint.name).sort();

  beforeEach(async () => {
    nodeA.byId.clear();
    nodeB.byId.clear();
    const pool = poolOf("default", { runtimeType: "gvisor" });
    fixture = new SandboxManagerFixture({ pool });
    await fixture.store.create("SandboxPool", pool);
    const logger = pino({ level: "silent" });
    checkpoints = new CheckpointManager({ manager: fixture.manager, store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger });
    collector = new CheckpointCollector({ checkpoints, store: fixture.store, logger, clock: fixture.clock });
  });

  afterEach(async () => {
    await collector.stop();
    checkpoints.close();
    await fixture.close();
  });

  it("recognizes the names forks and pauses give their checkpoints, of long sandbox names too, and no others", () => {
    for (const source of ["src", "a".repeat(63)]) {
      assert.ok(isForkCheckpointName(forkCheckpointName(source), source));
      assert.ok(isPauseCheckpointName(pauseCheckpointName(source), source));
      assert.ok(!isForkCheckpointName(pauseCheckpointName(source), source));
      assert.ok(!isPauseCheckpointName(forkCheckpointName(source), source));
    }
    // A user's unnamed checkpoint of a sandbox named `x-fork` is `x-fork-<10 hex digits>`: not a fork's.
    assert.ok(!isForkCheckpointName("x-fork-0123456789", "x-fork"));
    assert.ok(!isForkCheckpointName("src-fork-0123456789", "other"));
    assert.ok(!isForkCheckpointName("src-fork-012345678z", "src"));
    assert.ok(!isForkCheckpointName("-fork-0123456789", ""));
    assert.ok(!isPauseCheckpointName("src-pause-0a1b2c3", "src"));
    assert.ok(!isPauseCheckpointName("src-0a1b2c", "src"));
  });

  it("removes an old fork's checkpoint and an old pause's no record names; keeps users', young ones and those records name", async () => {
    addAgent("agent-a", nodeA);
    saved(nodeA, "src-fork-0123456789", "src", DEFAULT_FORK_CHECKPOINT_GRACE_MS + MINUTE_MS);
    saved(nodeA, "src-fork-89abcdef01", "src", DEFAULT_FORK_CHECKPOINT_GRACE_MS - MINUTE_MS);
    saved(nodeA, "gone-pause-0a1b2c", "gone", DEFAULT_PAUSE_CHECKPOINT_GRACE_MS + MINUTE_MS);
    saved(nodeA, "young-pause-abcdef", "young", DEFAULT_PAUSE_CHECKPOINT_GRACE_MS - MINUTE_MS);
    saved(nodeA, "sb-pause-0a1b2c", "sb", 3 * 24 * 60 * MINUTE_MS);
    saved(nodeA, "bye-pause-0a1b2c", "bye", 3 * 24 * 60 * MINUTE_MS);
    // The user's: named (`fsb checkpoint NAME`), unnamed (`fsb checkpoint`), and one named like another sandbox's fork.
    saved(nodeA, "golden", "src", 30 * 24 * 60 * MINUTE_MS);
    saved(nodeA, "src-0123456789", "src", 30 * 24 * 60 * MINUTE_MS);
    saved(nodeA, "other-fork-0123456789", "src", 30 * 24 * 60 * MINUTE_MS);
    await fixture.storeRecord("sb", { phase: "Paused", sandboxID: "id-of-sb", nodeName: "node-1" }, {}, { [PAUSED_CHECKPOINT_ANNOTATION]: "sb-pause-0a1b2c" });
    // A paused sandbox being deleted names its checkpoint until its cleanup removes it.
    await fixture.storeRecord(
      "bye",
      { phase: "Paused", sandboxID: "id-of-bye", nodeName: "node-1" },
      {},
      { [PAUSED_CHECKPOINT_ANNOTATION]: "bye-pause-0a1b2c" },
    );
    await fixture.store.delete("Sandbox", { namespace: "default", name: "bye" });

    const collected = await collector.pass();

    assert.deepEqual(
      collected.map(({ name, agents, reason }) => ({ name, agents, reason })),
      [
        { name: "src-fork-0123456789", agents: ["agent-a"], reason: "a fork's checkpoint older than 60 min, whose fork did not remove it" },
        { name: "gone-pause-0a1b2c", agents: ["agent-a"], reason: "a pause's checkpoint older than 10 min that no sandbox record names" },
      ],
    );
    assert.deepEqual(names(nodeA), [
      "bye-pause-0a1b2c",
      "golden",
      "other-fork-0123456789",
      "sb-pause-0a1b2c",
      "src-0123456789",
      "src-fork-89abcdef01",
      "young-pause-abcdef",
    ]);
  });

  it("leaves a fork's checkpoint alone while the fork runs, however old it is", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const restoring = deferred();
    agent.createEntered = deferred();
    agent.createGate = restoring.promise;
    const forking = checkpoints.fork({ name: "source", count: 1 });
    await agent.createEntered.promise;
    const [forkCheckpoint] = names(nodeA);
    assert.ok(forkCheckpoint && isForkCheckpointName(forkCheckpoint, "source"));
    // The fake agent dates it 2026-01-01, two months before the fixture's now: well past the grace period.
    fixture.clock.advance(DEFAULT_FORK_CHECKPOINT_GRACE_MS);

    assert.deepEqual(await collector.pass(), []);
    assert.deepEqual(names(nodeA), [forkCheckpoint]);

    agent.createGate = undefined;
    restoring.resolve();
    assert.equal((await forking).sandboxes.length, 1);
    assert.deepEqual(names(nodeA), [], "the fork removed its checkpoint itself");
  });

  it("deletes the copies a fork cut short made and handed to nobody, with the checkpoint that fork left", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    const source = await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    // The second copy's restore never answers: the control plane stops there, one copy made.
    const never = deferred();
    let restores = 0;
    agent.onCreate = (spec) => {
      if (spec.fromCheckpoint && ++restores === 2) agent.createGate = never.promise;
    };
    const forking = checkpoints.fork({ name: "source", count: 2 });
    const copies = async () => (await fixture.store.list("Sandbox", { namespace: "default" })).items.filter((s) => s.metadata.name !== "source");
    await until(() => restores === 2, "the second restore");
    for (let waited = 0; !(await copies()).some((s) => s.status?.phase === "Running"); waited += 5) {
      if (waited > 5_000) assert.fail("timed out waiting for the first copy to run");
      await setTimeout(5);
    }
    const [forkCheckpoint] = names(nodeA);
    assert.ok(forkCheckpoint && isForkCheckpointName(forkCheckpoint, "source"));
    const made = (await copies()).map((s) => s.metadata.name).sort();
    assert.equal(made.length, 2);
    const running = (await copies()).find((s) => s.status?.phase === "Running");
    assert.ok(running?.status?.sandboxID && agent.sandboxes.has(running.status.sandboxID));

    // The control plane restarts: what its fork was doing is forgotten; its records and the checkpoint
    // stay. The fake agent dated that checkpoint two months before the fixture's now: past the grace period.
    const logger = pino({ level: "silent" });
    const manager = new SandboxManager({ store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger, clock: fixture.clock });
    manager.setPool(poolOf("default", { runtimeType: "gvisor" }));
    const restarted = new CheckpointManager({ manager, store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger });
    const restartedCollector = new CheckpointCollector({ checkpoints: restarted, store: fixture.store, logger, clock: fixture.clock });
    try {
      const collected = await restartedCollector.pass();
      assert.deepEqual(
        collected.map(({ name, forkCopies }) => ({ name, forkCopies: forkCopies?.sort() })),
        [{ name: forkCheckpoint, forkCopies: made }],
      );
      assert.deepEqual(names(nodeA), []);
      assert.deepEqual(await copies(), [], "no copy of the unfinished fork is left");
      assert.ok(!agent.sandboxes.has(running.status.sandboxID), "the copy that ran is removed from its agent");
      assert.equal((await fixture.stored("source"))?.status?.phase, "Running");
      assert.ok(source.status?.sandboxID && agent.sandboxes.has(source.status.sandboxID), "the source runs on");
    } finally {
      await restartedCollector.stop();
      restarted.close();
      // The stopped process's fork is let go, so the fixture can close.
      agent.createGate = undefined;
      never.resolve();
      await forking.catch(() => undefined);
    }
  });

  it("never deletes the copies of a fork that answered, even when it removes the checkpoint that fork could not", async () => {
    const agent = addAgent("agent-a", nodeA, 8);
    await fixture.manager.create({ name: "source", spec: sandboxSpec() });
    const deleteCheckpoint = agent.deleteCheckpoint.bind(agent);
    agent.deleteCheckpoint = () => Promise.reject(new UnavailableError("agent-a lost its connection"));
    const fork = await checkpoints.fork({ name: "source", count: 2 });
    agent.deleteCheckpoint = deleteCheckpoint;
    const [forkCheckpoint] = names(nodeA);
    assert.ok(forkCheckpoint && isForkCheckpointName(forkCheckpoint, "source"), "the fork could not delete its checkpoint");

    const collected = await collector.pass();

    assert.deepEqual(
      collected.map(({ name, forkCopies }) => ({ name, forkCopies })),
      [{ name: forkCheckpoint, forkCopies: undefined }],
    );
    assert.deepEqual(names(nodeA), []);
    // The copies' statuses land just after the fork answered (fast consistency).
    await fixture.manager.list(undefined);
    for (const { sandbox } of fork.sandboxes) {
      const stored = await fixture.stored(sandbox.metadata.name);
      assert.equal(stored?.status?.phase, "Running", `${sandbox.metadata.name} runs on`);
      assert.equal(stored?.metadata.deletionTimestamp, undefined);
      assert.ok(sandbox.status?.sandboxID && agent.sandboxes.has(sandbox.status.sandboxID));
    }
  });

  it("keeps a user's unnamed checkpoint of a sandbox whose long name has `-fork` where the name is cut", async () => {
    addAgent("agent-a", nodeA);
    const sandbox = `${"a".repeat(47)}-fork-worker`;
    await fixture.manager.create({ name: sandbox, spec: sandboxSpec() });
    const checkpoint = await checkpoints.checkpoint({ sandbox });
    fixture.clock.advance(30 * 24 * 60 * MINUTE_MS);
    assert.deepEqual(await collector.pass(), []);
    assert.deepEqual(names(nodeA), [checkpoint.name]);
  });

  it("goes on with the other agents when one cannot list or delete, and removes that one's at a later pass", async () => {
    const failing = addAgent("agent-a", nodeA);
    addAgent("agent-b", nodeB);
    const silent = addAgent("agent-c", new NodeCheckpoints());
    silent.listCheckpoints = () => Promise.reject(new UnavailableError("agent-c is restarting"));
    const deleteCheckpoint = failing.deleteCheckpoint.bind(failing);
    failing.deleteCheckpoint = () => Promise.reject(new UnavailableError("agent-a lost its connection"));
    saved(nodeA, "a-fork-0123456789", "a", 2 * DEFAULT_FORK_CHECKPOINT_GRACE_MS);
    saved(nodeB, "b-fork-0123456789", "b", 2 * DEFAULT_FORK_CHECKPOINT_GRACE_MS);
    saved(nodeB, "b-pause-0a1b2c", "b", 2 * DEFAULT_PAUSE_CHECKPOINT_GRACE_MS);

    const first = await collector.pass();
    assert.deepEqual(first.map((c) => c.name).sort(), ["b-fork-0123456789", "b-pause-0a1b2c"]);
    assert.deepEqual(names(nodeA), ["a-fork-0123456789"]);
    assert.deepEqual(names(nodeB), []);

    failing.deleteCheckpoint = deleteCheckpoint;
    assert.deepEqual(
      (await collector.pass()).map((c) => c.name),
      ["a-fork-0123456789"],
    );
    assert.deepEqual(names(nodeA), []);
  });

  it("runs a pass every interval once started, and none once stopped", async () => {
    addAgent("agent-a", nodeA);
    collector = new CheckpointCollector({
      checkpoints,
      store: fixture.store,
      logger: pino({ level: "silent" }),
      clock: fixture.clock,
      intervalMs: 5 * MINUTE_MS,
      forkGraceMs: 30 * MINUTE_MS,
    });
    saved(nodeA, "src-fork-0123456789", "src", 30 * MINUTE_MS);
    collector.start();
    await fixture.clock.advanceAsync(5 * MINUTE_MS - 1);
    assert.deepEqual(names(nodeA), ["src-fork-0123456789"]);
    await fixture.clock.advanceAsync(1);
    await until(() => nodeA.byId.size === 0, "the timed pass");

    await collector.stop();
    saved(nodeA, "src-fork-89abcdef01", "src", 60 * MINUTE_MS);
    await fixture.clock.advanceAsync(20 * MINUTE_MS);
    await setTimeout(20);
    assert.deepEqual(names(nodeA), ["src-fork-89abcdef01"]);
  });
});
