import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { ConflictError, FailedPreconditionError, NoCapacityError, TimeoutError, UnavailableError, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import { pino } from "pino";
import { NoAnswerError } from "../agent-client/agent-client.js";
import { FakeCheckpointingAgent, NodeCheckpoints } from "./checkpoint-agents.fixture.js";
import { CheckpointManager } from "./checkpoint-manager.js";
import {
  CONDITION_PAUSED,
  END_BEFORE_PAUSE_ANNOTATION,
  PAUSED_CHECKPOINT_ANNOTATION,
  PAUSE_TAKES_AT_MOST_MS,
  PAUSE_UNANSWERED_ANNOTATION,
  RESUMING_ANNOTATION,
  RESUME_AFTER_WAKE_TAKES_AT_MOST_MS,
  SandboxPauses,
  type SandboxPausesOptions,
  isPauseUndecided,
  isPaused,
  pausedAtOf,
} from "./checkpoint-pauses.js";
import { SandboxManager } from "./sandbox-manager.js";
import { FIXTURE_NOW, SandboxManagerFixture, deferred, poolOf, sandboxSpec } from "./sandbox-manager.fixture.js";

const END = new Date(FIXTURE_NOW.getTime() + 600_000).toISOString();
const LATER_END = new Date(FIXTURE_NOW.getTime() + 900_000).toISOString();

describe("SandboxPauses: pause and resume over gVisor checkpoints", () => {
  let fixture: SandboxManagerFixture;
  let checkpoints: CheckpointManager;
  let pauses: SandboxPauses;
  const node = new NodeCheckpoints();

  const addAgent = (name: string, capacity = 4): FakeCheckpointingAgent => {
    fixture.addAgent(name, { capacity });
    const client = new FakeCheckpointingAgent(name, node);
    fixture.clients.set(name, client);
    return client;
  };
  const stored = async (name: string): Promise<Sandbox> => (await fixture.stored(name)) ?? assert.fail(`${name} is not stored`);
  const paused = (name: string) => pauses.pause(undefined, name);
  /** Whether `work` has settled, after the promise callbacks pending now ran. */
  const settled = async (work: Promise<unknown>): Promise<boolean> => {
    let done = false;
    work.then(
      () => (done = true),
      () => (done = true),
    );
    await new Promise<void>((resolve) => setImmediate(resolve));
    return done;
  };
  /** Moves the fixture's clock on, a second at a time, until `work` settles (a wait of its for an agent ends): fake time, no real waiting. */
  const onFakeTime = async <T>(work: Promise<T>, limitMs = 600_000): Promise<T> => {
    for (let movedMs = 0; !(await settled(work)) && movedMs < limitMs; movedMs += 1000) await fixture.clock.advanceAsync(1000);
    return work;
  };

  /** The options of this control plane's SandboxPauses. */
  const pausesOptions = (): SandboxPausesOptions => ({
    manager: fixture.manager,
    store: fixture.store,
    registry: fixture.registry,
    agents: fixture.agents,
    checkpoints,
    logger: pino({ level: "silent" }),
    clock: fixture.clock,
  });

  beforeEach(async () => {
    node.byId.clear();
    const pool = poolOf("default", { runtimeType: "gvisor", maxSandboxesPerPod: 4 });
    fixture = new SandboxManagerFixture({ pool });
    fixture.manager.setPool(poolOf("plain"));
    await fixture.store.create("SandboxPool", pool);
    await fixture.store.create("SandboxPool", poolOf("plain"));
    const logger = pino({ level: "silent" });
    checkpoints = new CheckpointManager({ manager: fixture.manager, store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger });
    pauses = new SandboxPauses(pausesOptions());
    fixture.manager.setSavedStateCleanup((sandbox) => pauses.removeSavedState(sandbox));
  });

  afterEach(() => fixture.close());

  it("pauses a Running gVisor sandbox: checkpointed and left stopped, its instance removed and slot freed, the record kept as Paused", async () => {
    const agent = addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    const sandboxId = running.status?.sandboxID ?? "";
    assert.equal(fixture.allocated(), 1);

    const result = await paused("sb");
    assert.deepEqual(
      agent.checkpointCalls.map((call) => ({ sandboxId: call.sandboxId, leaveStopped: call.leaveStopped })),
      [{ sandboxId, leaveStopped: true }],
    );
    assert.ok(agent.calls.includes(`delete ${sandboxId} 0`), "the stopped instance is removed");
    assert.equal(agent.sandboxes.size, 0);
    assert.equal(fixture.allocated(), 0, "its slot is free");
    const record = await stored("sb");
    assert.deepEqual(record, result);
    assert.ok(isPaused(record));
    assert.equal(record.status?.sandboxID, sandboxId, "the same sandbox id");
    assert.equal(record.status?.assignedPod, undefined);
    assert.equal(record.status?.sandboxIP, undefined);
    assert.equal(record.status?.nodeName, "node-1", "where its checkpoint is");
    assert.equal(record.spec.expireTime, undefined, "no end while paused");
    const checkpointName = record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? "";
    assert.match(checkpointName, /^sb-pause-[0-9a-f]{6}$/);
    assert.deepEqual(
      [...node.byId.values()].map((c) => c.name),
      [checkpointName],
    );
    const condition = record.status?.conditions?.find((c) => c.type === CONDITION_PAUSED);
    assert.equal(condition?.status, "True");
    assert.equal(pausedAtOf(record), FIXTURE_NOW.toISOString());
    assert.equal(record.metadata.annotations?.[END_BEFORE_PAUSE_ANNOTATION], undefined, "the end kept aside while the pause was under way is gone");
  });

  /** Pauses over the fixture's store with its Sandbox `update` replaced. */
  const pausesWithUpdate = (update: SandboxManagerFixture["store"]["update"]) => {
    const store = fixture.store;
    const replaced = new Proxy(store, {
      get: (target, property) => {
        if (property === "update") return update;
        const value = Reflect.get(target, property) as unknown;
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    return new SandboxPauses({
      manager: fixture.manager,
      store: replaced,
      registry: fixture.registry,
      agents: fixture.agents,
      checkpoints,
      logger: pino({ level: "silent" }),
      clock: fixture.clock,
    });
  };

  /** Pauses over a store whose first Sandbox update is preceded by `compete`'s write (another writer, in between). */
  const pausesRacing = (compete: (current: Sandbox) => Promise<unknown>) => {
    const store = fixture.store;
    const state = { raced: false };
    const racingUpdate = (async (kind, object, options) => {
      if (!state.raced && kind === "Sandbox") {
        state.raced = true;
        const current = await store.get("Sandbox", { namespace: "default", name: "sb" });
        assert.ok(current);
        await compete(current);
      }
      return store.update(kind, object, options);
    }) as typeof store.update;
    return { pauses: pausesWithUpdate(racingUpdate), state };
  };

  it("pauses a sandbox whose name has the most characters a name may have (its checkpoint's name fits too)", async () => {
    addAgent("agent-a");
    const name = "a".repeat(63);
    await fixture.manager.create({ name, spec: sandboxSpec({ expireTime: END }) });
    const record = await paused(name);
    assert.ok(isPaused(record));
    const checkpointName = record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? "";
    assert.match(checkpointName, /^a{50}-pause-[0-9a-f]{6}$/);
  });

  it("pauses a sandbox whose record another writer changed between the pause's read and its write (a status update)", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    // The first saved-state write meets a record another writer has just changed (as the Kubernetes
    // store does when the sandbox's CommandExited condition lands first): a stale resourceVersion.
    const racing = pausesRacing((current) => {
      const conditions = [
        ...(current.status?.conditions ?? []),
        { type: "CommandExited", status: "True" as const, reason: "Succeeded", lastTransitionTime: END },
      ];
      return fixture.store.updateStatus("Sandbox", { ...current, status: { ...current.status, conditions } });
    });
    const record = await racing.pauses.pause(undefined, "sb");
    assert.ok(racing.state.raced, "the competing write happened");
    assert.ok(isPaused(record));
    assert.ok(
      record.status?.conditions?.some((c) => c.type === "CommandExited"),
      "the other writer's change is kept",
    );
  });

  it("refuses a pause whose write meets another pause's intent (another replica), leaving that pause's checkpoint named", async () => {
    const agent = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    // Another replica's pause wrote its intent (its checkpoint's name, no end) and has yet to write Paused.
    const racing = pausesRacing((current) => {
      const { expireTime: _end, ...spec } = current.spec;
      const annotations = { ...current.metadata.annotations, [PAUSED_CHECKPOINT_ANNOTATION]: "sb-pause-other" };
      return fixture.store.update("Sandbox", { ...current, metadata: { ...current.metadata, annotations }, spec });
    });
    await assert.rejects(
      racing.pauses.pause(undefined, "sb"),
      (error: unknown) => error instanceof ConflictError && /another pause of it began/.test(error.message),
    );
    assert.ok(racing.state.raced, "the competing write happened");
    const record = await stored("sb");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], "sb-pause-other", "the other pause's checkpoint stays named");
    assert.equal(agent.checkpointCalls.length, 0, "nothing was checkpointed by the refused pause");
  });

  it("refuses to pause a paused sandbox (Conflict), a runc sandbox (saying pause needs gVisor) and one that does not run, changing nothing", async () => {
    addAgent("agent-a");
    fixture.addAgent("runc-agent", { pool: "plain" });
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    await assert.rejects(paused("sb"), (error: unknown) => error instanceof ConflictError && /sandbox default\/sb is paused already/.test(error.message));

    await fixture.manager.create({ name: "on-runc", spec: sandboxSpec({ poolRef: "plain", expireTime: END }) });
    const before = await stored("on-runc");
    await assert.rejects(paused("on-runc"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.match(
        error.message,
        /pause needs runtimeType gvisor: sandbox default\/on-runc is in pool plain, whose runtimeType is container; only sandboxes of gVisor pools/,
      );
      return true;
    });
    assert.deepEqual(await stored("on-runc"), before);

    await fixture.storeRecord("pending", { phase: "Pending" });
    await assert.rejects(paused("pending"), /sandbox default\/pending is Pending: only a Running sandbox can be paused/);

    await fixture.manager.create({ name: "away", spec: sandboxSpec({ expireTime: END }) });
    const away = await stored("away");
    fixture.connected = false;
    await assert.rejects(
      paused("away"),
      (error: unknown) => error instanceof UnavailableError && /agent agent-a of sandbox default\/away is not connected/.test(error.message),
    );
    fixture.connected = true;
    assert.deepEqual(await stored("away"), away, "nothing changed");
  });

  it("resumes a paused sandbox from its checkpoint under the same sandbox id, on an agent that holds it, with the end it is given", async () => {
    const a = addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    const sandboxId = running.status?.sandboxID ?? "";
    const before = await paused("sb");
    const checkpointId = [...node.byId.keys()][0];

    const { sandbox, resumed } = await pauses.resume(undefined, "sb", { expireTime: LATER_END });
    assert.equal(resumed, true);
    const request = a.createRequests.at(-1);
    assert.equal(request?.sandboxId, sandboxId, "restored under its own id");
    assert.equal(request?.fromCheckpoint, checkpointId);
    assert.equal(request?.name, "sb");
    assert.deepEqual(await stored("sb"), sandbox);
    assert.equal(sandbox.status?.phase, "Running");
    assert.equal(sandbox.status?.sandboxID, sandboxId);
    assert.equal(sandbox.status?.assignedPod, "agent-a");
    assert.match(sandbox.status?.sandboxIP ?? "", /^10\.88\.0\.\d+$/);
    assert.equal(sandbox.status?.accessTokenHash, before.status?.accessTokenHash, "the same access token");
    assert.equal(sandbox.spec.expireTime, LATER_END);
    assert.equal(sandbox.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    assert.equal(sandbox.status?.conditions?.find((c) => c.type === CONDITION_PAUSED)?.status, "False");
    assert.equal(node.byId.size, 0, "the checkpoint is deleted once the sandbox runs");
    assert.equal(fixture.allocated(), 1);

    const again = await pauses.resume(undefined, "sb", { expireTime: END });
    assert.equal(again.resumed, false, "a running sandbox is left as it is");
    assert.equal(again.sandbox.spec.expireTime, LATER_END);
    // fsb resume --expire of a running sandbox: the end asked for is its end (it was ignored).
    const ended = await pauses.resume(undefined, "sb", { expireTime: END, endRunning: true });
    assert.equal(ended.resumed, false);
    assert.equal(ended.sandbox.spec.expireTime, END);
    assert.equal((await stored("sb"))?.spec.expireTime, END);
    assert.equal(a.createRequests.length, 2, "nothing restored for it");
  });

  it("gives a resumed sandbox its end with the resume's intent: a resume whose last write fails leaves no sandbox running without an end", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    await paused("sb");
    const store = fixture.store;
    const failing = pausesWithUpdate(async (kind, object, options) => {
      if (kind === "Sandbox" && (object as Sandbox).status?.phase === "Running") throw new UnavailableError("the store is away");
      return store.update(kind, object, options);
    });
    await assert.rejects(failing.resume(undefined, "sb", { expireTime: LATER_END }), /the store is away/);
    const record = await stored("sb");
    assert.equal(record.status?.phase, "Running");
    assert.equal(record.spec.expireTime, LATER_END, "the end came with the resume's intent");
  });

  it("removes a failed resume's end with its intent: a Paused sandbox keeps no end", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    await paused("sb");
    a.createError = new UnavailableError("containerd is restarting");
    await assert.rejects(pauses.resume(undefined, "sb", { expireTime: LATER_END }), /containerd is restarting/);
    const record = await stored("sb");
    assert.ok(isPaused(record));
    assert.equal(record.spec.expireTime, undefined);
    assert.equal(record.metadata.annotations?.[RESUMING_ANNOTATION], undefined);
  });

  it("goes on from what a pause cut short left: a stopped instance on the node is removed before the restore", async () => {
    const a = addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    const sandboxId = running.status?.sandboxID ?? "";
    await paused("sb");
    // As if the control plane had died before it removed the stopped instance.
    a.sandboxes.set(sandboxId, { sandboxId, namespace: "default", name: "sb", image: "python:3.12", state: "stopped", oomKilled: false });
    a.calls.length = 0;
    await pauses.resume(undefined, "sb");
    assert.deepEqual(a.calls.slice(0, 2), [`delete ${sandboxId} 0`, `create ${sandboxId}`]);
  });

  it("brings back to Running a sandbox whose pause was cut short before anything was saved", async () => {
    addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    // The record says Paused (the pause's first write), the agent still runs it, no checkpoint exists.
    await fixture.store.updateStatus("Sandbox", { ...running, status: { ...running.status, phase: "Paused" } });
    const current = await stored("sb");
    await fixture.store.update("Sandbox", {
      ...current,
      metadata: { ...current.metadata, annotations: { [PAUSED_CHECKPOINT_ANNOTATION]: "sb-pause-000000" } },
    });
    fixture.registry.release("default/sb");
    const { sandbox, resumed } = await pauses.resume(undefined, "sb", { expireTime: END });
    assert.equal(resumed, true);
    assert.equal(sandbox.status?.phase, "Running");
    assert.equal(sandbox.status?.sandboxID, running.status?.sandboxID);
    assert.equal(sandbox.spec.expireTime, END);
    assert.equal(sandbox.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    assert.equal(fixture.allocated(), 1, "its slot is held again");
  });

  it("keeps its end on a sandbox whose pause stopped between its intent and its Paused status (a failed write, a crash)", async () => {
    addAgent("agent-a");
    for (const stop of ["failed write", "crash"] as const) {
      await fixture.manager.create({ name: stop === "crash" ? "crashed" : "failed", spec: sandboxSpec({ expireTime: END }) });
      // The store answers the pause's Paused status write with an error; after a crash, every write after it too.
      let down = false;
      const store = new Proxy(fixture.store, {
        get: (target, property) => {
          const value = Reflect.get(target, property) as unknown;
          if (typeof value !== "function") return value;
          const call = (value as (...args: unknown[]) => unknown).bind(target);
          if (property !== "update" && property !== "updateStatus") return call;
          return async (...args: unknown[]) => {
            if (property === "updateStatus") down = true;
            if (down && (property === "updateStatus" || stop === "crash")) throw new Error("the control plane died here");
            return call(...args);
          };
        },
      });
      const dying = new SandboxPauses({ ...pausesOptions(), store });
      await assert.rejects(dying.pause(undefined, stop === "crash" ? "crashed" : "failed"), /the control plane died here/);
    }
    for (const name of ["failed", "crashed"]) {
      const record = await stored(name);
      assert.equal(record.status?.phase, "Running", name);
      assert.equal(record.spec.expireTime, END, `${name}: it still ends (nothing else would give it its end back)`);
      assert.equal(pauses.settleDueInMs(record), undefined, "no pause of it to settle");
    }
    assert.equal((await stored("failed")).metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined, "the intent of a pause that did not begin goes");
    assert.equal(node.byId.size, 0, "nothing was saved");
  });

  for (const operation of ["checkpoint", "fork"] as const) {
    it(`leaves Paused a sandbox whose pause overtook a ${operation} of it (not Failed: its instance is gone because it is paused)`, async () => {
      const agent = addAgent("agent-a");
      await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
      // The operation's first lookup (its name's) waits until the pause is done: its agent call then finds no instance.
      const pauseDone = deferred();
      const lookup = deferred();
      const list = agent.listCheckpoints.bind(agent);
      let first = true;
      agent.listCheckpoints = async () => {
        if (first) {
          first = false;
          lookup.resolve();
          await pauseDone.promise;
        }
        return list();
      };
      const work = operation === "checkpoint" ? checkpoints.checkpoint({ sandbox: "sb", checkpoint: "mine" }) : checkpoints.fork({ name: "sb", count: 1 });
      const outcome = work.then(
        () => undefined,
        (error: unknown) => error,
      );
      await lookup.promise;
      assert.ok(isPaused(await paused("sb")));
      pauseDone.resolve();
      assert.match(String(await outcome), /does not exist/);
      const record = await stored("sb");
      assert.equal(record.status?.phase, "Paused");
      assert.equal(
        record.status?.conditions?.find((c) => c.type === "Ready" && c.reason === "CheckpointFailed"),
        undefined,
      );
      assert.equal((await pauses.resume(undefined, "sb")).sandbox.status?.phase, "Running", "and it resumes");
    });
  }

  it("answers a resume whose checkpoint's agent did not list its checkpoints in time as Unavailable (retry), never as a checkpoint gone for good", async () => {
    const agent = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    const list = agent.listCheckpoints.bind(agent);
    agent.listCheckpoints = () => Promise.reject(new UnavailableError("ListCheckpoints: deadline exceeded"));
    await assert.rejects(
      pauses.resume(undefined, "sb"),
      (error: unknown) =>
        error instanceof UnavailableError && /on node node-1, whose agent agent-a did not list its checkpoints in time; retry/.test(error.message),
    );
    assert.ok(isPaused(await stored("sb")));
    assert.equal(node.byId.size, 1, "its checkpoint is there");
    agent.listCheckpoints = list;
    assert.equal((await pauses.resume(undefined, "sb")).sandbox.status?.phase, "Running");
  });

  it("keeps a sandbox running, with its end, when runsc refuses to save it", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    a.checkpointError = new FailedPreconditionError("sandbox holds TCP sockets this gVisor cannot save; the sandbox runs on");
    await assert.rejects(paused("sb"), /holds TCP sockets/);
    const record = await stored("sb");
    assert.equal(record.status?.phase, "Running");
    assert.equal(record.spec.expireTime, END);
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    const condition = record.status?.conditions?.find((c) => c.type === CONDITION_PAUSED);
    assert.equal(condition?.reason, "PauseFailed");
    assert.match(condition?.message ?? "", /the sandbox runs on: .*holds TCP sockets/);
    assert.equal(fixture.allocated(), 1);
  });

  it("leaves Paused, holding its slot, a sandbox whose pause got no answer, and a resume before it is settled finds out: the checkpoint saved late, or the sandbox running on", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    // The call times out while the agent saves on; the checkpoint appears afterwards.
    a.checkpointError = new TimeoutError("CreateCheckpoint did not answer within 120000 ms");
    a.savesLate = true;
    await assert.rejects(
      paused("sb"),
      (error: unknown) => error instanceof UnavailableError && /got no answer .*stays Paused until the control plane finds out/.test(error.message),
    );
    const unanswered = await stored("sb");
    assert.ok(isPauseUndecided(unanswered));
    assert.equal(unanswered.metadata.annotations?.[PAUSE_UNANSWERED_ANNOTATION], FIXTURE_NOW.toISOString(), "when the call came back unanswered");
    assert.equal(unanswered.metadata.annotations?.[END_BEFORE_PAUSE_ANNOTATION], END, "the end it had, kept aside");
    // A resume while the agent still saves: refused (retry), not taken for a pause cut short.
    await assert.rejects(pauses.resume(undefined, "sb"), (error: unknown) => error instanceof UnavailableError && /still being paused/.test(error.message));
    assert.ok(isPaused(await stored("sb")));
    a.finishLateSave();
    let record = await stored("sb");
    assert.ok(isPaused(record), "not undone over a sandbox the agent may be stopping");
    assert.match(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? "", /^sb-pause-/);
    assert.equal(fixture.allocated(), 1, "its slot held while its instance may run on");
    a.checkpointError = undefined;
    const { resumed, sandbox } = await pauses.resume(undefined, "sb");
    assert.equal(resumed, true);
    assert.equal(sandbox.status?.phase, "Running", "restored from the checkpoint saved after the timeout");

    // Nothing saved, the sandbox still running: the resume brings the record back to Running.
    a.checkpointError = new NoAnswerError("agent at 127.0.0.1:7001 dropped the connection: http/2 stream closed with error code CANCEL (0x8)");
    a.savesLate = false;
    await assert.rejects(paused("sb"), UnavailableError);
    record = await stored("sb");
    assert.ok(isPaused(record));
    a.checkpointError = undefined;
    const again = await pauses.resume(undefined, "sb");
    assert.equal(again.sandbox.status?.phase, "Running");
    assert.equal(fixture.allocated(), 1, "its slot is held again");
  });

  it("undoes a pause whose checkpoint call never reached the agent (not connected, connection refused) or that the agent refused as unavailable: the sandbox runs on, Running", async () => {
    const a = addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    for (const refusal of [
      new UnavailableError("agent at 127.0.0.1:7001 is unreachable: connect ECONNREFUSED 127.0.0.1:7001"),
      new UnavailableError("containerd is restarting"),
    ]) {
      a.checkpointError = refusal;
      await assert.rejects(paused("sb"), (error: unknown) => error === refusal);
      const record = await stored("sb");
      assert.equal(record.status?.phase, "Running", refusal.message);
      assert.equal(record.status?.assignedPod, "agent-a");
      assert.equal(record.status?.sandboxID, running.status?.sandboxID);
      assert.equal(record.spec.expireTime, END, "its end back");
      assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
      assert.equal(record.status?.conditions?.find((c) => c.type === CONDITION_PAUSED)?.reason, "PauseFailed");
      assert.equal(fixture.allocated(), 1, "its slot is held all along");
    }

    // The agent's client went between the pause's check and its checkpoint call: nothing was sent.
    a.checkpointError = undefined;
    const get = fixture.agents.get.bind(fixture.agents);
    let asked = 0;
    fixture.agents.get = (name) => (++asked > 1 ? undefined : get(name));
    await assert.rejects(paused("sb"), (error: unknown) => error instanceof UnavailableError && /agent agent-a is not connected/.test(error.message));
    fixture.agents.get = get;
    assert.equal((await stored("sb")).status?.phase, "Running");
    assert.equal(a.checkpointCalls.length, 2, "the third call never went out");
  });

  it("marks Failed a sandbox that stopped in a pause whose checkpoint could not be saved", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    a.checkpointError = new Error("no space left on device");
    a.stopsOnFailure = true;
    await assert.rejects(paused("sb"), /no space left on device/);
    const record = await stored("sb");
    assert.equal(record.status?.phase, "Failed");
    assert.match(
      record.status?.conditions?.find((c) => c.type === "Ready")?.message ?? "",
      /could not be saved \(no space left on device\); reset it to start it afresh from its image .*, or delete it/,
    );
  });

  it("leaves a sandbox Paused, with its checkpoint and no slot, when its resume fails, and says why", async () => {
    const a = addAgent("agent-a", 1);
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    // The one agent that holds the checkpoint is full now.
    await fixture.manager.create({ name: "other", spec: sandboxSpec() });
    await assert.rejects(pauses.resume(undefined, "sb"), NoCapacityError);
    assert.ok(isPaused(await stored("sb")));
    assert.equal(node.byId.size, 1);
    await fixture.manager.delete(undefined, "other", 0);

    a.createError = new FailedPreconditionError("runsc could not restore it");
    await assert.rejects(pauses.resume(undefined, "sb"), /runsc could not restore it/);
    assert.ok(isPaused(await stored("sb")));
    assert.equal(node.byId.size, 1);
    assert.equal(fixture.allocated(), 0);
    a.createError = undefined;
    assert.equal((await pauses.resume(undefined, "sb")).sandbox.status?.phase, "Running");
  });

  it("says so when the checkpoint is gone, or when no agent of its node is ready to restore it", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    fixture.registry.setAgentReady("agent-a", false);
    // It waits for one up to the pool's wakeTimeoutSeconds (30 s), then says so.
    const resume = pauses.resume(undefined, "sb");
    const startedAt = fixture.clock.now().getTime();
    await assert.rejects(
      onFakeTime(resume),
      (error: unknown) =>
        error instanceof UnavailableError && /on node node-1, where no agent of pool default is ready now; retry once one is/.test(error.message),
    );
    assert.ok(fixture.clock.now().getTime() - startedAt >= 30_000, "it waited the pool's wakeTimeoutSeconds");
    assert.ok(isPaused(await stored("sb")));
    assert.equal((await stored("sb")).metadata.annotations?.[RESUMING_ANNOTATION], undefined, "its intent (the demand) is gone with it");
    fixture.registry.setAgentReady("agent-a", true);
    node.byId.clear();
    await assert.rejects(
      pauses.resume(undefined, "sb"),
      (error: unknown) => error instanceof FailedPreconditionError && /which no agent of pool default holds any more .* delete the sandbox/.test(error.message),
    );
  });

  it("resumes a sandbox whose pool went down to no agent while it was paused: it waits for the agent the pool starts on its checkpoint's node", async () => {
    addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    // Scaled down: the idle agent is stopped and gone from the registry; its node keeps the checkpoint.
    fixture.registry.removeAgent("agent-a");
    fixture.clients.delete("agent-a");

    const resume = pauses.resume(undefined, "sb", { expireTime: END });
    await fixture.clock.advanceAsync(5000);
    assert.equal(await settled(resume), false, "it waits for an agent, as a create of a pool at zero does");
    const waiting = await stored("sb");
    assert.ok(isPaused(waiting));
    assert.ok(waiting.metadata.annotations?.[RESUMING_ANNOTATION], "its intent: what the pool counts as waiting for an agent");

    // The agent the pool starts for it, on the same node (embedded: the host).
    fixture.registry.upsertAgent({
      name: "agent-b",
      namespace: "default",
      pool: "default",
      endpoint: "127.0.0.1:7009",
      capacity: 4,
      hostIP: "127.0.0.1",
      nodeName: "node-1",
      images: [],
    });
    const b = new FakeCheckpointingAgent("agent-b", node);
    fixture.clients.set("agent-b", b);
    const { sandbox, resumed } = await onFakeTime(resume);
    assert.equal(resumed, true);
    assert.equal(sandbox.status?.phase, "Running");
    assert.equal(sandbox.status?.assignedPod, "agent-b");
    assert.equal(sandbox.status?.sandboxID, running.status?.sandboxID);
    assert.equal(b.createRequests.at(-1)?.fromCheckpoint !== undefined, true, "restored from its checkpoint");
    assert.equal(node.byId.size, 0);
  });

  it("resumes once for concurrent resumes, and pauses after a resume in flight", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    const restores = () => a.createRequests.filter((r) => r.fromCheckpoint).length;
    const [first, second] = await Promise.all([pauses.resume(undefined, "sb"), pauses.resume(undefined, "sb")]);
    assert.deepEqual([first.resumed, second.resumed], [true, false]);
    assert.equal(restores(), 1);
    const [, again] = await Promise.all([pauses.resume(undefined, "sb"), paused("sb")]);
    assert.ok(isPaused(again));
  });

  it("deletes a paused sandbox's checkpoint with the sandbox, and refuses to delete it before", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    const record = await paused("sb");
    assert.equal(node.byId.size, 1);
    await assert.rejects(
      checkpoints.delete(undefined, record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? ""),
      (error: unknown) => error instanceof FailedPreconditionError && /holds paused sandbox sb .*resume or delete that sandbox instead/.test(error.message),
    );
    await fixture.manager.delete(undefined, "sb", 0, { waitForAgent: true });
    assert.equal(await fixture.stored("sb"), undefined);
    assert.equal(node.byId.size, 0);
  });

  it("removes with a deleted paused sandbox what its pause could not: the stopped instance left on its agent", async () => {
    const a = addAgent("agent-a");
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    const sandboxId = running.status?.sandboxID ?? "";
    // The pause's removal of the stopped instance fails (the agent's containerd was away).
    const remove = a.deleteSandbox.bind(a);
    let refusals = 1;
    a.deleteSandbox = async (id, grace) => {
      if (refusals-- > 0) throw new UnavailableError("containerd is restarting");
      return remove(id, grace);
    };
    await paused("sb");
    assert.ok(a.sandboxes.has(sandboxId), "the stopped instance is left");
    await fixture.manager.delete(undefined, "sb", 0, { waitForAgent: true });
    assert.equal(await fixture.stored("sb"), undefined);
    assert.equal(a.sandboxes.has(sandboxId), false, "removed with the sandbox");
    assert.equal(node.byId.size, 0);
  });

  it("keeps a deleted paused sandbox whose node's agent is ready but does not list its checkpoints, until it does", async () => {
    const a = addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    const list = a.listCheckpoints.bind(a);
    a.listCheckpoints = () => Promise.reject(new UnavailableError("containerd is restarting"));
    const deleting = fixture.manager.delete(undefined, "sb", 0, { waitForAgent: true });
    await fixture.clock.advanceAsync(3000);
    assert.equal(await settled(deleting), false, "the delete waits for the agent");
    await assert.rejects(
      fixture.manager.finalize(await stored("sb"), 0),
      (error: unknown) =>
        error instanceof UnavailableError && /is on node node-1, whose agent agent-a did not list its checkpoints in time/.test(error.message),
    );
    assert.ok((await fixture.stored("sb"))?.metadata.deletionTimestamp, "the delete is under way, the record kept");
    assert.equal(node.byId.size, 1, "the checkpoint is kept");
    a.listCheckpoints = list;
    await onFakeTime(deleting);
    assert.equal(await fixture.stored("sb"), undefined);
    assert.equal(node.byId.size, 0, "the checkpoint is removed once the agent answers");
  });

  it("keeps a deleted paused sandbox until an agent of its checkpoint's node can remove the checkpoint (for a while), and its delete waits as long", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    fixture.registry.setAgentReady("agent-a", false);
    const deleting = fixture.manager.delete(undefined, "sb", 0, { waitForAgent: true });
    await fixture.clock.advanceAsync(5000);
    assert.equal(await settled(deleting), false, "the delete waits for an agent of the checkpoint's node");
    await assert.rejects(
      fixture.manager.finalize(await stored("sb"), 0),
      (error: unknown) => error instanceof UnavailableError && /on node node-1, where no agent of pool default is ready to remove it/.test(error.message),
      "the reconciler's cleanup says why",
    );
    assert.ok((await fixture.stored("sb"))?.metadata.deletionTimestamp, "the delete is under way, the record kept");
    assert.equal(node.byId.size, 1);
    fixture.registry.setAgentReady("agent-a", true);
    await onFakeTime(deleting);
    assert.equal(await fixture.stored("sb"), undefined);
    assert.equal(node.byId.size, 0, "the checkpoint is removed once its node's agent is back");

    // Out of reach for longer than the patience: the record goes, the files stay (logged).
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    fixture.registry.setAgentReady("agent-a", false);
    const givingUp = fixture.manager.delete(undefined, "sb", 0, { waitForAgent: true });
    await fixture.clock.advanceAsync(1000);
    assert.equal(await settled(givingUp), false);
    // The store stamps the deletion with the real time; the pauses' clock (the fixture's) moves past it by the patience.
    const deletedAt = Date.parse((await stored("sb")).metadata.deletionTimestamp ?? "");
    fixture.clock.advance(deletedAt - fixture.clock.now().getTime() + 10 * 60_000);
    await onFakeTime(givingUp);
    assert.equal(await fixture.stored("sb"), undefined);
    assert.equal(node.byId.size, 1);
  });

  it("knows a paused sandbox after a restart: a new control plane over the same store resumes it", async () => {
    addAgent("agent-a");
    await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
    await paused("sb");
    const logger = pino({ level: "silent" });
    const restarted = new SandboxPauses({
      manager: fixture.manager,
      store: fixture.store,
      registry: fixture.registry,
      agents: fixture.agents,
      checkpoints,
      logger,
    });
    assert.equal((await restarted.resume(undefined, "sb")).sandbox.status?.phase, "Running");
  });

  describe("several replicas over one store (Kubernetes mode)", () => {
    const GRACE_MS = 180_000;
    /** Another replica: its own manager and pauses over the same store, registry and agents. */
    const replica = (pool: Partial<SandboxPool["spec"]> = {}): SandboxPauses => {
      const logger = pino({ level: "silent" });
      const manager = new SandboxManager({ store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger, clock: fixture.clock });
      manager.setPool(poolOf("default", { runtimeType: "gvisor", maxSandboxesPerPod: 4, ...pool }));
      const ownCheckpoints = new CheckpointManager({ manager, store: fixture.store, registry: fixture.registry, agents: fixture.agents, logger });
      return new SandboxPauses({
        manager,
        store: fixture.store,
        registry: fixture.registry,
        agents: fixture.agents,
        checkpoints: ownCheckpoints,
        logger,
        clock: fixture.clock,
        inFlightElsewhereMs: GRACE_MS,
      });
    };

    it("refuses a resume while another replica resumes the sandbox, and that one resumes it alone", async () => {
      const a = addAgent("agent-a");
      await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
      await paused("sb");
      const [one, two] = [replica(), replica()];
      let release = () => {};
      a.createGate = new Promise<void>((resolve) => (release = resolve));
      a.createEntered = deferred();
      const first = one.resume(undefined, "sb");
      await a.createEntered.promise;
      const during = await stored("sb");
      assert.ok(isPaused(during), "Paused until the restored instance runs");
      assert.equal(during.metadata.annotations?.[RESUMING_ANNOTATION], fixture.clock.now().toISOString(), "the resume's intent, dated");
      await assert.rejects(
        two.resume(undefined, "sb"),
        (error: unknown) =>
          error instanceof FailedPreconditionError && /is being resumed by another replica of the control plane .*retry in a moment/.test(error.message),
      );
      release();
      const { sandbox, resumed } = await first;
      assert.equal(resumed, true);
      assert.equal(sandbox.status?.phase, "Running");
      assert.equal(sandbox.metadata.annotations?.[RESUMING_ANNOTATION], undefined, "the intent goes with the resume");
      assert.equal(a.createRequests.filter((r) => r.fromCheckpoint).length, 1, "one restore");
      assert.equal(a.sandboxes.size, 1, "the restored instance runs on");
      assert.equal((await two.resume(undefined, "sb")).resumed, false, "the other replica then finds it running");
    });

    it("leaves a pause or resume another replica started to it for the grace, and goes on from what it left after that", async () => {
      addAgent("agent-a");
      const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
      // Another replica's pause: its first writes are in the store, its checkpoint is being taken.
      const pausing = await fixture.store.update("Sandbox", {
        ...running,
        metadata: { ...running.metadata, annotations: { [PAUSED_CHECKPOINT_ANNOTATION]: "sb-pause-000000" } },
      });
      await fixture.store.updateStatus("Sandbox", {
        ...pausing,
        status: {
          ...pausing.status,
          phase: "Paused",
          conditions: [{ type: CONDITION_PAUSED, status: "Unknown", reason: "Pausing", lastTransitionTime: fixture.clock.now().toISOString() }],
        },
      });
      fixture.registry.release("default/sb");
      const other = replica();
      await assert.rejects(
        other.resume(undefined, "sb"),
        (error: unknown) => error instanceof FailedPreconditionError && /is being paused by another replica/.test(error.message),
      );
      assert.ok(isPaused(await stored("sb")), "a refused resume changes nothing");
      // A pause is left to its replica for as long as its checkpoint call may wait for the agent, whatever the grace.
      fixture.clock.advance(GRACE_MS);
      await assert.rejects(other.resume(undefined, "sb"), /is being paused by another replica/);
      // That replica died: past the longest a pause takes, it counts as cut short (nothing was saved; the agent runs it).
      fixture.clock.advance(PAUSE_TAKES_AT_MOST_MS - GRACE_MS);
      const { sandbox, resumed } = await other.resume(undefined, "sb");
      assert.equal(resumed, true);
      assert.equal(sandbox.status?.phase, "Running");

      // A resume another replica started and never finished: its intent, then the grace.
      await paused("sb");
      const record = await stored("sb");
      await fixture.store.update("Sandbox", {
        ...record,
        metadata: { ...record.metadata, annotations: { ...record.metadata.annotations, [RESUMING_ANNOTATION]: fixture.clock.now().toISOString() } },
      });
      await assert.rejects(other.resume(undefined, "sb"), /is being resumed by another replica/);
      fixture.clock.advance(GRACE_MS);
      const later = await other.resume(undefined, "sb");
      assert.equal(later.sandbox.status?.phase, "Running");
      assert.equal(later.sandbox.metadata.annotations?.[RESUMING_ANNOTATION], undefined);
    });

    it("leaves another replica's resume to it as long as it may wait for an agent of its checkpoint's node (the pool's wakeTimeoutSeconds) and restore", async () => {
      addAgent("agent-a");
      await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
      await paused("sb");
      // Another replica's resume: its intent is in the store, it waits for the pool to start an agent on the node.
      const record = await stored("sb");
      await fixture.store.update("Sandbox", {
        ...record,
        metadata: { ...record.metadata, annotations: { ...record.metadata.annotations, [RESUMING_ANNOTATION]: fixture.clock.now().toISOString() } },
      });
      const other = replica({ capacity: { poolMin: 0, poolMax: 2, wakeTimeoutSeconds: 600 } });
      fixture.clock.advance(GRACE_MS + 1000);
      await assert.rejects(other.resume(undefined, "sb"), /is being resumed by another replica/);
      fixture.clock.advance(600_000 - GRACE_MS);
      await assert.rejects(other.resume(undefined, "sb"), /is being resumed by another replica/, "its restore call may still be under way");
      // Past its wait and its restore: it was cut short.
      fixture.clock.advance(RESUME_AFTER_WAKE_TAKES_AT_MOST_MS);
      assert.equal((await other.resume(undefined, "sb")).sandbox.status?.phase, "Running");
    });

    it("removes a failed resume's intent: the sandbox stays Paused and a resume right after goes ahead", async () => {
      const a = addAgent("agent-a");
      await fixture.manager.create({ name: "sb", spec: sandboxSpec() });
      await paused("sb");
      const other = replica();
      a.createError = new FailedPreconditionError("runsc could not restore it");
      await assert.rejects(other.resume(undefined, "sb"), /runsc could not restore it/);
      const after = await stored("sb");
      assert.ok(isPaused(after));
      assert.equal(after.metadata.annotations?.[RESUMING_ANNOTATION], undefined);
      a.createError = undefined;
      assert.equal((await other.resume(undefined, "sb")).sandbox.status?.phase, "Running");
    });
  });
});
