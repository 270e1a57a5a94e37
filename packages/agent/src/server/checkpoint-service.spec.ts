import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, beforeEach, describe, it } from "node:test";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { pb } from "@fast-sandbox/api";
import { FailedPreconditionError } from "@fast-sandbox/api/core";
import type { Runtime, RuntimeSandbox, RuntimeSandboxSpec } from "../runtime/runtime.js";
import type { CheckpointRequest, RuntimeCheckpoint, RuntimeCheckpoints } from "../runtime/checkpoint.js";
import { LogGenerations } from "../log-rotation.js";
import { createAgentService } from "./agent-service.js";
import { CheckpointsInFlight, guardCheckpoints } from "./checkpoint-service.js";

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

function checkpointOf(request: CheckpointRequest): RuntimeCheckpoint {
  return {
    checkpointId: request.checkpointId,
    namespace: request.namespace,
    name: request.name,
    pool: "gv",
    sourceSandboxId: request.sandboxId,
    sourceName: "source",
    image: "img",
    runtimeType: "gvisor",
    networkMode: "isolated",
    command: ["sh"],
    workingDir: "/",
    createdAt: "2026-12-01T00:00:00.000Z",
    sizeBytes: 4096,
  };
}

/** A runtime whose one sandbox `sb` stops while a checkpoint of it is held open (`checkpointGate`), as runsc's does. */
class FakeCheckpointingRuntime implements Runtime {
  readonly sandbox: RuntimeSandbox = { sandboxId: "sb", namespace: "default", name: "source", pool: "gv", image: "img", state: "running", labels: {} };
  checkpointGate: Promise<void> | undefined;
  /** Holds a delete open, as a grace period or a slow teardown does. */
  deleteGate: Promise<void> | undefined;
  readonly restored: RuntimeSandboxSpec[] = [];
  readonly order: string[] = [];
  /** What `wait` answers: the exit of the task that is there when it is called. */
  private taskExit = gate();

  checkpoints: RuntimeCheckpoints | undefined = {
    checkpoint: (request) => this.checkpoint(request),
    restore: async (spec) => {
      this.restored.push(spec);
      return { ...this.sandbox, sandboxId: spec.sandboxId, name: spec.name };
    },
    resume: async () => undefined,
    list: async () => [],
    get: async () => undefined,
    delete: async () => undefined,
  };

  async checkpoint(request: CheckpointRequest): Promise<RuntimeCheckpoint> {
    this.order.push("checkpoint");
    // The task stops, as containerd then reports it…
    Object.assign(this.sandbox, { state: "stopped", exitCode: 0 });
    const exited = this.taskExit;
    this.taskExit = gate();
    exited.open();
    await this.checkpointGate;
    // …and is restored in place.
    Object.assign(this.sandbox, { state: "running" });
    delete this.sandbox.exitCode;
    this.order.push("checkpointed");
    return checkpointOf(request);
  }
  async get(sandboxId: string): Promise<RuntimeSandbox | undefined> {
    return sandboxId === "sb" ? { ...this.sandbox } : undefined;
  }
  async stats(): Promise<never> {
    throw new Error("not used");
  }
  async evict(): Promise<never> {
    throw new Error("not used");
  }
  async list(): Promise<RuntimeSandbox[]> {
    return [{ ...this.sandbox }];
  }
  async delete(sandboxId: string): Promise<void> {
    this.order.push(`delete ${sandboxId}`);
    await this.deleteGate;
    this.order.push(`deleted ${sandboxId}`);
  }
  async exec(sandboxId: string): Promise<number> {
    this.order.push(`exec ${sandboxId}`);
    return 0;
  }
  async wait(): Promise<number> {
    await this.taskExit.promise;
    return 0;
  }
  async create(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox> {
    this.order.push(`create ${spec.sandboxId}`);
    return { ...this.sandbox, sandboxId: spec.sandboxId };
  }
  async prepare(): Promise<void> {}
  async unprepare(): Promise<void> {}
  async listImages(): Promise<string[]> {
    return ["img"];
  }
  async pullImage(): Promise<{ image: string; digest: string }> {
    return { image: "img", digest: "sha256:0" };
  }
  close(): void {}
  /** The sandbox's command exits for real (the next wait answers). */
  commandExits(): void {
    this.taskExit.open();
  }
}

const logDir = mkdtempSync(join(tmpdir(), "fsb-checkpoint-service-"));
after(() => rmSync(logDir, { recursive: true, force: true }));

describe("the agent's runtime while a sandbox is checkpointed", () => {
  let runtime: FakeCheckpointingRuntime;
  let inFlight: CheckpointsInFlight;
  let guarded: Runtime;

  beforeEach(() => {
    runtime = new FakeCheckpointingRuntime();
    inFlight = new CheckpointsInFlight();
    guarded = guardCheckpoints(runtime, inFlight);
  });

  it("reports the sandbox running, without an exit code, and checkpointing, while its task is stopped for the checkpoint", async () => {
    const held = gate();
    runtime.checkpointGate = held.promise;
    const checkpointing = inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "ck" }));
    assert.equal((await runtime.get("sb"))?.state, "stopped", "the runtime itself says stopped");
    assert.deepEqual(
      (await guarded.list()).map((s) => [s.state, s.exitCode, s.checkpointing]),
      [["running", undefined, true]],
    );
    assert.equal((await guarded.get("sb"))?.state, "running");
    held.open();
    await checkpointing;
    assert.equal((await guarded.get("sb"))?.checkpointing, undefined, "no longer once it is over");
  });

  it("lets a delete and an exec wait until the checkpoint is over", async () => {
    const held = gate();
    runtime.checkpointGate = held.promise;
    const checkpointing = inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "ck" }));
    const exec = guarded.exec("sb", { command: ["true"] }, { onStdout: () => undefined, onStderr: () => undefined });
    const deleted = guarded.delete("sb", { gracePeriodMs: 0 });
    await new Promise((resolve) => setImmediate(resolve));
    held.open();
    await Promise.all([checkpointing, exec, deleted]);
    assert.deepEqual(runtime.order, ["checkpoint", "checkpointed", "exec sb", "delete sb", "deleted sb"]);
  });

  it("refuses a checkpoint or resume of a sandbox being deleted, and takes them again once the delete is over", async () => {
    const held = gate();
    runtime.deleteGate = held.promise;
    const deleted = guarded.delete("sb", { gracePeriodMs: 0 });
    await new Promise((resolve) => setImmediate(resolve));
    const beingDeleted = (error: Error) => error instanceof FailedPreconditionError && error.message === "sandbox sb is being deleted";
    await assert.rejects(
      inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "ck" })),
      beingDeleted,
    );
    await assert.rejects(
      inFlight.run("sb", () => Promise.resolve()),
      beingDeleted,
    );
    held.open();
    await deleted;
    assert.deepEqual(runtime.order, ["delete sb", "deleted sb"], "nothing of the checkpoint ran");
    await inFlight.run("sb", () => Promise.resolve());
  });

  it("a delete waiting for a checkpoint in flight lets no other checkpoint start before it runs", async () => {
    const held = gate();
    runtime.checkpointGate = held.promise;
    const checkpointing = inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "ck" }));
    const deleted = guarded.delete("sb", { gracePeriodMs: 0 });
    held.open();
    await checkpointing;
    // The checkpoint is over and the delete has not run yet: a second checkpoint now would race it.
    await assert.rejects(
      inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck-2", namespace: "default", name: "ck-2" })),
      (error: Error) => error instanceof FailedPreconditionError && /sandbox sb is being deleted/.test(error.message),
    );
    await deleted;
    assert.deepEqual(runtime.order, ["checkpoint", "checkpointed", "delete sb", "deleted sb"]);
  });

  it("keeps a waiter (logs -f) waiting across a checkpoint, for the command's real exit", async () => {
    let waited = false;
    const waiting = guarded.wait("sb").then((code) => {
      waited = true;
      return code;
    });
    await inFlight.run("sb", () => runtime.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "ck" }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(waited, false, "the checkpoint's stop is not the command's exit");
    runtime.commandExits();
    assert.equal(await waiting, 0);
  });

  it("sends a create from a checkpoint to the checkpoints, and any other to the runtime", async () => {
    const spec: RuntimeSandboxSpec = {
      sandboxId: "copy",
      namespace: "default",
      name: "copy",
      pool: "gv",
      image: "",
      command: [],
      args: [],
      env: [],
      runtimeType: "gvisor",
      logPath: "/l",
    };
    await guarded.create({ ...spec, fromCheckpoint: "ck" });
    await guarded.create({ ...spec, sandboxId: "fresh" });
    assert.deepEqual(
      runtime.restored.map((s) => s.sandboxId),
      ["copy"],
    );
    assert.deepEqual(runtime.order, ["create fresh"]);
  });
});

describe("the agent API's checkpoint calls", () => {
  let runtime: FakeCheckpointingRuntime;
  let client: Client<typeof pb.AgentService>;

  beforeEach(() => {
    runtime = new FakeCheckpointingRuntime();
    const service = createAgentService({ identity: { name: "gv-0", namespace: "default", pool: "gv", nodeName: "n" }, runtime, logDir });
    client = createClient(
      pb.AgentService,
      createRouterTransport(({ service: register }) => register(pb.AgentService, service)),
    );
  });

  it("checkpoints, lists nothing it does not have, and refuses a second checkpoint of a sandbox in flight", async () => {
    const held = gate();
    runtime.checkpointGate = held.promise;
    const first = client.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck-1", namespace: "default", name: "one" });
    await new Promise((resolve) => setImmediate(resolve));
    await assert.rejects(
      client.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck-2", namespace: "default", name: "two" }),
      (error: unknown) => error instanceof ConnectError && error.code === Code.FailedPrecondition && /being checkpointed already/.test(error.rawMessage),
    );
    held.open();
    const made = await first;
    assert.deepEqual([made.checkpointId, made.name, made.sizeBytes], ["ck-1", "one", 4096n]);
  });

  it("refuses a checkpoint (or the checkpoint of a fork) of a sandbox while it is being deleted", async () => {
    const held = gate();
    runtime.deleteGate = held.promise;
    const deleted = client.deleteSandbox({ sandboxId: "sb", gracePeriodMs: 0 });
    while (!runtime.order.includes("delete sb")) await new Promise((resolve) => setImmediate(resolve));
    await assert.rejects(
      client.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "fork" }),
      (error: unknown) => error instanceof ConnectError && error.code === Code.FailedPrecondition && error.rawMessage === "sandbox sb is being deleted",
    );
    held.open();
    await deleted;
    assert.deepEqual(runtime.order, ["delete sb", "deleted sb"]);
  });

  it("marks the log of a sandbox restored in place (a checkpoint that runs on, a resume) hot, as a create does", async () => {
    const marked: string[] = [];
    const service = createAgentService({
      identity: { name: "gv-0", namespace: "default", pool: "gv", nodeName: "n" },
      runtime,
      logDir,
      logRotation: { markHot: (path) => marked.push(path), generations: new LogGenerations(logDir) },
    });
    const marking = createClient(
      pb.AgentService,
      createRouterTransport(({ service: register }) => register(pb.AgentService, service)),
    );
    await marking.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck-1", namespace: "default", name: "one" });
    assert.deepEqual(marked, [join(logDir, "sb.log")]);
    await marking.resumeSandbox({ sandboxId: "sb", checkpointId: "ck-1" });
    assert.deepEqual(marked, [join(logDir, "sb.log"), join(logDir, "sb.log")]);
  });

  it("refuses bad ids, and says so when the runtime cannot checkpoint", async () => {
    await assert.rejects(
      client.checkpointSandbox({ sandboxId: "sb", checkpointId: "Bad/Id", namespace: "default", name: "x" }),
      (error: unknown) => error instanceof ConnectError && error.code === Code.InvalidArgument,
    );
    runtime.checkpoints = undefined;
    await assert.rejects(
      client.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "x" }),
      (error: unknown) => error instanceof ConnectError && error.code === Code.FailedPrecondition && /cannot checkpoint or restore/.test(error.rawMessage),
    );
    assert.deepEqual((await client.listCheckpoints({})).checkpoints, []);
  });
});
