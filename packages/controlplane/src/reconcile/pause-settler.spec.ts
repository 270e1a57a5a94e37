import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { TimeoutError, type Sandbox } from "@fast-sandbox/api";
import { pino } from "pino";
import { NoAnswerError } from "../agent-client/agent-client.js";
import { FakeCheckpointingAgent, NodeCheckpoints } from "../fastpath/checkpoint-agents.fixture.js";
import { CheckpointManager } from "../fastpath/checkpoint-manager.js";
import {
  CONDITION_PAUSED,
  DEFAULT_SETTLE_AFTER_NO_ANSWER_MS,
  END_BEFORE_PAUSE_ANNOTATION,
  PAUSED_CHECKPOINT_ANNOTATION,
  PAUSE_TAKES_AT_MOST_MS,
  PAUSE_UNANSWERED_ANNOTATION,
  RESUMING_ANNOTATION,
  SETTLING_ANNOTATION,
  SandboxPauses,
  isPauseUndecided,
  type SandboxPausesOptions,
} from "../fastpath/checkpoint-pauses.js";
import { FIXTURE_NOW, SandboxManagerFixture, poolOf, sandboxSpec } from "../fastpath/sandbox-manager.fixture.js";
import { AllocationSync } from "./allocation-sync.js";
import { PauseSettler } from "./pause-settler.js";
import { sandboxInformer } from "./sandbox-informer.js";

const END = new Date(FIXTURE_NOW.getTime() + 3_600_000).toISOString();
/** A replica's grace for another's pause or resume, as the Kubernetes root gives it. */
const GRACE_MS = 180_000;
const BOOKKEEPING = [END_BEFORE_PAUSE_ANNOTATION, PAUSE_UNANSWERED_ANNOTATION, SETTLING_ANNOTATION];

describe("PauseSettler: a pause whose outcome is not known converges by itself", () => {
  const logger = pino({ level: "silent" });
  const node = new NodeCheckpoints();
  let fixture: SandboxManagerFixture;
  let agent: FakeCheckpointingAgent;
  let pauses: SandboxPauses;
  let allocations: AllocationSync;
  let settler: PauseSettler;

  /** The control plane's pauses, its settler and its allocation sync (which keeps the registry in step with the records), over the fixture. */
  const startControlPlane = async (options: Partial<SandboxPausesOptions> = {}): Promise<void> => {
    const { store, registry, manager, clock } = fixture;
    const checkpoints = new CheckpointManager({ manager, store, registry, agents: fixture.agents, logger });
    pauses = new SandboxPauses({ manager, store, registry, agents: fixture.agents, checkpoints, logger, clock, ...options });
    manager.setSavedStateCleanup((sandbox) => pauses.removeSavedState(sandbox));
    const informer = sandboxInformer({ store, logger, clock });
    allocations = new AllocationSync({
      store,
      registry,
      informer,
      logger,
      clock,
      isBusy: (namespace, name) => manager.isBusy(namespace, name),
      portsHeldBy: (sandbox) => manager.portsHeldBy(sandbox),
    });
    settler = new PauseSettler({ pauses, store, logger, clock, informer });
    await allocations.start();
    await settler.start();
  };

  beforeEach(async () => {
    node.byId.clear();
    const pool = poolOf("default", { runtimeType: "gvisor", maxSandboxesPerPod: 4 });
    fixture = new SandboxManagerFixture({ pool });
    await fixture.store.create("SandboxPool", pool);
    fixture.addAgent("agent-a", { capacity: 4 });
    agent = new FakeCheckpointingAgent("agent-a", node);
    fixture.clients.set("agent-a", agent);
  });

  afterEach(async () => {
    await settler.stop();
    await allocations.stop();
    await fixture.close();
  });

  /** Every change so far is looked at by the settler and the allocation sync. */
  const idle = async (): Promise<void> => {
    await settler.whenIdle();
    await allocations.whenIdle();
  };
  /** Time passes (timed requeues fall due), then every change is looked at. */
  const after = async (ms: number): Promise<void> => {
    fixture.clock.advance(ms);
    await idle();
  };
  const stored = async (name = "sb"): Promise<Sandbox> => (await fixture.stored(name)) ?? assert.fail(`${name} is not stored`);
  const condition = (sandbox: Sandbox, type: string) => sandbox.status?.conditions?.find((c) => c.type === type);
  const assertNoBookkeeping = (sandbox: Sandbox) => {
    for (const annotation of BOOKKEEPING) assert.equal(sandbox.metadata.annotations?.[annotation], undefined, annotation);
  };

  /** A Running sandbox with an end, whose pause then gets no answer (`error`); returns its sandbox id. */
  const pauseUnanswered = async (error: Error): Promise<string> => {
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    agent.checkpointError = error;
    await assert.rejects(pauses.pause(undefined, "sb"), /got no answer/);
    agent.checkpointError = undefined;
    await idle();
    const record = await stored();
    assert.ok(isPauseUndecided(record), "Paused=Unknown: its outcome is not known");
    assert.equal(record.spec.expireTime, END, "its end goes only once its pause is decided (a Paused record does not expire)");
    assert.equal(fixture.allocated(), 1, "its slot is held while its instance may run on");
    return running.status?.sandboxID ?? "";
  };

  /**
   * The record as a pause's intent leaves it when the control plane running that pause died (or is
   * another replica, its call not answered yet): its checkpoint named, its end kept aside, Paused=Unknown since now.
   */
  const pauseIntentLeft = async (): Promise<{ sandboxId: string; checkpoint: string }> => {
    const running = await fixture.manager.create({ name: "sb", spec: sandboxSpec({ expireTime: END }) });
    const checkpoint = "sb-pause-abc123";
    const { expireTime: _end, ...spec } = running.spec;
    const annotations = { ...running.metadata.annotations, [PAUSED_CHECKPOINT_ANNOTATION]: checkpoint, [END_BEFORE_PAUSE_ANNOTATION]: END };
    const intent = await fixture.store.update("Sandbox", { ...running, metadata: { ...running.metadata, annotations }, spec });
    const pausing = { type: CONDITION_PAUSED, status: "Unknown" as const, reason: "Pausing", lastTransitionTime: fixture.clock.now().toISOString() };
    await fixture.store.updateStatus("Sandbox", {
      ...intent,
      status: { ...intent.status, phase: "Paused", conditions: [...(intent.status?.conditions ?? []), pausing] },
    });
    return { sandboxId: running.status?.sandboxID ?? "", checkpoint };
  };

  it("finishes a pause whose call got no answer once its agent has saved the checkpoint: Paused=True, its stopped instance removed, its slot released", async () => {
    await startControlPlane();
    // The call times out while the agent saves on.
    agent.savesLate = true;
    const sandboxId = await pauseUnanswered(new TimeoutError("CreateCheckpoint did not answer within 240000 ms"));
    await after(DEFAULT_SETTLE_AFTER_NO_ANSWER_MS - 1);
    assert.ok(isPauseUndecided(await stored()), "left alone while the agent may still be saving");
    await after(1);
    assert.ok(isPauseUndecided(await stored()), "the agent reports the save still going on: not decided yet");
    assert.equal(fixture.allocated(), 1);

    agent.finishLateSave();
    await after(15_000);
    const record = await stored();
    assert.equal(record.status?.phase, "Paused");
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "True");
    assert.equal(record.status?.assignedPod, undefined);
    assert.equal(record.status?.nodeName, "node-1", "where its checkpoint is");
    assert.equal(record.spec.expireTime, undefined, "no end while paused");
    assert.match(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION] ?? "", /^sb-pause-[0-9a-f]{6}$/);
    assertNoBookkeeping(record);
    assert.ok(agent.calls.includes(`delete ${sandboxId} 0`), "its stopped instance is removed");
    assert.equal(agent.sandboxes.size, 0);
    assert.equal(node.byId.size, 1, "its checkpoint is kept");
    assert.equal(fixture.allocated(), 0, "its slot is free");
    assert.equal((await pauses.resume(undefined, "sb", { expireTime: END })).sandbox.status?.phase, "Running", "and it resumes from it");
  });

  it("brings back to Running, with the end it had and its slot held, a sandbox whose pause got no answer and saved nothing", async () => {
    await startControlPlane();
    const sandboxId = await pauseUnanswered(
      new NoAnswerError("agent at 127.0.0.1:7001 dropped the connection: http/2 stream closed with error code CANCEL (0x8)"),
    );
    // Its agent cannot be asked for a while: nothing is decided without it.
    fixture.connected = false;
    await after(DEFAULT_SETTLE_AFTER_NO_ANSWER_MS);
    assert.ok(isPauseUndecided(await stored()));
    fixture.connected = true;
    await after(15_000);

    const record = await stored();
    assert.equal(record.status?.phase, "Running");
    assert.equal(record.status?.assignedPod, "agent-a");
    assert.equal(record.status?.sandboxID, sandboxId);
    assert.equal(record.spec.expireTime, END, "its end is back");
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "False");
    assert.equal(condition(record, CONDITION_PAUSED)?.reason, "PauseInterrupted");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    assertNoBookkeeping(record);
    assert.equal(agent.sandboxes.get(sandboxId)?.state, "running", "its instance runs on, untouched");
    assert.equal(fixture.registry.placementOf("default/sb")?.agent.name, "agent-a", "its slot is held on its agent");
    assert.equal(fixture.allocated(), 1);
  });

  it("marks Lost, with its end, a sandbox whose pause got no answer, saved nothing and left no running instance: its failurePolicy takes it from there", async () => {
    await startControlPlane();
    const sandboxId = await pauseUnanswered(new NoAnswerError("agent at 127.0.0.1:7001 dropped the connection"));
    // The instance vanished meanwhile (removed behind the agent's back).
    agent.sandboxes.delete(sandboxId);
    await after(DEFAULT_SETTLE_AFTER_NO_ANSWER_MS);

    const record = await stored();
    assert.equal(record.status?.phase, "Lost");
    assert.equal(condition(record, "Ready")?.reason, "SandboxMissing", "as a vanished instance of a Running sandbox is");
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "False");
    assert.equal(record.status?.assignedPod, "agent-a", "its agent stays named: the failure policy acts on it");
    assert.equal(record.spec.expireTime, END, "it ends when it would have");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    assertNoBookkeeping(record);
    assert.equal(fixture.allocated(), 0, "a Lost sandbox holds no slot");
  });

  it("settles a pause a crash left undecided once it is older than PAUSE_TAKES_AT_MOST_MS: the record alone says so", async () => {
    // The pause's intent is written, its checkpoint saved and the sandbox left stopped; then the control plane died.
    const { sandboxId, checkpoint } = await pauseIntentLeft();
    await agent.checkpointSandbox({ sandboxId, checkpointId: "cp-1", namespace: "default", name: checkpoint, leaveStopped: true });
    // A control plane started again over the same store: nothing of that pause is in its memory.
    await startControlPlane();
    await idle();
    assert.equal(fixture.allocated(), 1, "its stopped instance holds its slot until the pause is decided");
    await after(PAUSE_TAKES_AT_MOST_MS - 1);
    assert.ok(isPauseUndecided(await stored()), "a pause may take that long");
    await after(1);

    const record = await stored();
    assert.equal(record.status?.phase, "Paused");
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "True");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], checkpoint);
    assertNoBookkeeping(record);
    assert.equal(agent.sandboxes.has(sandboxId), false, "its stopped instance is removed");
    assert.equal(fixture.allocated(), 0);
  });

  it("leaves alone a pause another replica runs while it may still be under way, however long its grace, then settles what that replica left", async () => {
    // Another replica's pause: its intent is written and its call has not come back (the agent has not begun saving).
    const { sandboxId } = await pauseIntentLeft();
    await startControlPlane({ inFlightElsewhereMs: GRACE_MS });
    await after(GRACE_MS);
    await after(PAUSE_TAKES_AT_MOST_MS - GRACE_MS - 1);
    let record = await stored();
    assert.ok(isPauseUndecided(record), "still the other replica's: its checkpoint call may yet be answered");
    assert.equal(record.metadata.annotations?.[SETTLING_ANNOTATION], undefined, "not touched");
    assert.equal(agent.sandboxes.get(sandboxId)?.state, "running");

    // That replica died before its call reached the agent: nothing was saved, the sandbox runs on.
    await after(1);
    record = await stored();
    assert.equal(record.status?.phase, "Running");
    assert.equal(record.spec.expireTime, END, "the end it had before the pause, kept aside by the intent");
    assertNoBookkeeping(record);
    assert.equal(fixture.allocated(), 1);
  });

  it("leaves an undecided pause to a resume another replica began, for that replica's grace", async () => {
    await pauseIntentLeft();
    await startControlPlane({ inFlightElsewhereMs: GRACE_MS });
    // Shortly before the pause is past its time, another replica begins to resume the sandbox: its intent.
    await after(PAUSE_TAKES_AT_MOST_MS - 1000);
    const record = await stored();
    const annotations = { ...record.metadata.annotations, [RESUMING_ANNOTATION]: fixture.clock.now().toISOString() };
    await fixture.store.update("Sandbox", { ...record, metadata: { ...record.metadata, annotations } });
    await after(1000);
    assert.ok(isPauseUndecided(await stored()), "past its time, the pause is the resume's to settle");
    await after(GRACE_MS - 1000 - 1);
    assert.ok(isPauseUndecided(await stored()));
    // That resume did not finish within its grace either.
    await after(1);
    assert.equal((await stored()).status?.phase, "Running");
  });

  /** The agent goes away for good (its Pod deleted, the embedded agent gone): unregistered, with no client. */
  const agentGone = (name = "agent-a"): void => {
    fixture.registry.removeAgent(name);
    fixture.clients.delete(name);
  };

  it("decides, once its agent has been gone for recoveryTimeoutSeconds, a pause that saved nothing: Lost (AgentLost), with its end, no slot, and deletable", async () => {
    await startControlPlane();
    await pauseUnanswered(new NoAnswerError("agent at 127.0.0.1:7001 dropped the connection"));
    agentGone();
    await after(DEFAULT_SETTLE_AFTER_NO_ANSWER_MS);
    assert.ok(isPauseUndecided(await stored()), "an agent away for less than recoveryTimeoutSeconds may come back");
    await after(15_000);
    assert.ok(isPauseUndecided(await stored()));

    // recoveryTimeoutSeconds (30 s by default) since the settle first found it gone.
    await after(15_000);
    const record = await stored();
    assert.equal(record.status?.phase, "Lost", "not left Paused=Unknown for ever");
    assert.equal(condition(record, "Ready")?.reason, "AgentLost", "as a Running sandbox whose agent is lost is");
    assert.match(condition(record, "Ready")?.message ?? "", /agent agent-a .*no agent lists checkpoint sb-pause-[0-9a-f]{6}/);
    assert.equal(condition(record, "AgentConnected")?.status, "False");
    assert.equal(
      condition(record, "AgentConnected")?.lastTransitionTime,
      new Date(FIXTURE_NOW.getTime() + DEFAULT_SETTLE_AFTER_NO_ANSWER_MS).toISOString(),
      "dated from when its agent was found away: the failure policy acts at once",
    );
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "False");
    assert.equal(condition(record, CONDITION_PAUSED)?.reason, "PauseFailed");
    assert.equal(record.status?.assignedPod, "agent-a", "its agent stays named: the failure policy acts on it");
    assert.equal(record.spec.expireTime, END, "it ends when it would have");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
    assertNoBookkeeping(record);
    assert.equal(fixture.registry.placementOf("default/sb"), undefined, "a Lost sandbox holds no slot");
    await fixture.manager.delete(undefined, "sb");
    assert.equal(await fixture.stored("sb"), undefined, "and it can be deleted");
  });

  it("decides, once its agent has been gone for recoveryTimeoutSeconds, a pause whose checkpoint another agent lists: Paused from it", async () => {
    const { sandboxId, checkpoint } = await pauseIntentLeft();
    await agent.checkpointSandbox({ sandboxId, checkpointId: "cp-1", namespace: "default", name: checkpoint, leaveStopped: true });
    // Another agent of the pool shares the checkpoints' directory (NodeCheckpoints); then the pause's agent goes for good.
    fixture.addAgent("agent-b", { capacity: 4 });
    fixture.clients.set("agent-b", new FakeCheckpointingAgent("agent-b", node));
    agentGone();
    await startControlPlane();
    await after(PAUSE_TAKES_AT_MOST_MS);
    assert.ok(isPauseUndecided(await stored()), "its agent may come back");
    await after(30_000);

    const record = await stored();
    assert.equal(record.status?.phase, "Paused");
    assert.equal(condition(record, CONDITION_PAUSED)?.status, "True");
    assert.equal(record.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], checkpoint);
    assert.equal(record.status?.assignedPod, undefined);
    assert.equal(record.status?.nodeName, "node-2", "where the agent that lists it is");
    assert.equal(record.spec.expireTime, undefined, "no end while paused");
    assertNoBookkeeping(record);
    assert.equal(fixture.registry.placementOf("default/sb"), undefined);
    assert.equal((await pauses.resume(undefined, "sb", { expireTime: END })).sandbox.status?.assignedPod, "agent-b", "and it resumes from it");
  });
});
