import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createContextValues } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, fromConnectError, pb, type Sandbox } from "@fast-sandbox/api";
import type { CheckpointManager } from "./checkpoint-manager.js";
import type { ResumeOptions, SandboxPauses } from "./checkpoint-pauses.js";
import { checkpointServiceMethods } from "./checkpoint-service.js";
import { KUBERNETES_CALLER } from "./kubernetes-caller.js";
import { CREATED_BY_ANNOTATION } from "./sandbox-manager.js";

const sandbox = (phase: "Paused" | "Running"): Sandbox => ({
  apiVersion: "sandbox.fast.io/v1alpha1",
  kind: "Sandbox",
  metadata: { name: "napper", namespace: "default" },
  spec: { poolRef: "gv", image: "img" },
  status: { phase },
});

/** SandboxPauses that records what the service asks of it. */
function recordingPauses() {
  const calls: { op: string; namespace: string | undefined; name: string; options?: ResumeOptions }[] = [];
  const pauses = {
    pause: async (namespace: string | undefined, name: string) => {
      calls.push({ op: "pause", namespace, name });
      return sandbox("Paused");
    },
    resume: async (namespace: string | undefined, name: string, options: ResumeOptions = {}) => {
      calls.push({ op: "resume", namespace, name, options });
      return { sandbox: sandbox("Running"), resumed: true };
    },
  } as unknown as SandboxPauses;
  return { pauses, calls };
}

async function failure(call: Promise<unknown>) {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError);
    return fromConnectError(error);
  }
  assert.fail("the call should have failed");
}

describe("PauseSandbox and ResumeSandbox", () => {
  const context = undefined as never;

  it("pause and resume go to SandboxPauses and answer the sandbox's record", async () => {
    const { pauses, calls } = recordingPauses();
    const methods = checkpointServiceMethods(undefined, pauses);
    const paused = await methods.pauseSandbox(create(pb.PauseSandboxRequestSchema, { namespace: "team", name: "napper" }), context);
    assert.equal(paused.status?.phase, "Paused");
    const inTenMinutes = new Date(Date.now() + 600_000).toISOString();
    const resumed = await methods.resumeSandbox(create(pb.ResumeSandboxRequestSchema, { name: "napper", expireTime: inTenMinutes }), context);
    assert.equal(resumed.status?.phase, "Running");
    await methods.resumeSandbox(create(pb.ResumeSandboxRequestSchema, { name: "napper" }), context);
    assert.deepEqual(calls, [
      { op: "pause", namespace: "team", name: "napper" },
      { op: "resume", namespace: "", name: "napper", options: { expireTime: inTenMinutes, endRunning: true } },
      { op: "resume", namespace: "", name: "napper", options: {} },
    ]);
  });

  it("refuses an expire time that is not RFC 3339 or has passed, saying what is allowed, before anything is resumed", async () => {
    const { pauses, calls } = recordingPauses();
    const methods = checkpointServiceMethods(undefined, pauses);
    for (const [expireTime, message] of [
      ["soon", /is not an RFC 3339 time/],
      ["1700000000", /is not an RFC 3339 time/],
      ["2001-01-01T00:00:00Z", /has passed/],
    ] as const) {
      const error = await failure(Promise.resolve(methods.resumeSandbox(create(pb.ResumeSandboxRequestSchema, { name: "napper", expireTime }), context)));
      assert.ok(error instanceof ValidationError, `${expireTime}: ${error.name}`);
      assert.equal(error.field, "expireTime");
      assert.match(error.message, message);
    }
    assert.deepEqual(calls, []);
  });

  it("a control plane without pauses answers FailedPrecondition", async () => {
    const methods = checkpointServiceMethods(undefined);
    const error = await failure(Promise.resolve(methods.pauseSandbox(create(pb.PauseSandboxRequestSchema, { name: "napper" }), context)));
    assert.ok(error instanceof FailedPreconditionError);
    assert.match(error.message, /does not pause sandboxes/);
  });
});

describe("CheckpointSandbox and ForkSandbox: checkpoint names", () => {
  // A call's context as the handlers read it: its values (who calls: nobody in particular here).
  const context = { values: createContextValues() } as never;

  /** A CheckpointManager that records the names it is asked to use. */
  function recordingCheckpoints() {
    const names: (string | undefined)[] = [];
    const made = {
      namespace: "default",
      name: "kept",
      id: "c1",
      sandbox: "web",
      sandboxId: "i1",
      pool: "gv",
      image: "img",
      command: [],
      workingDir: "/",
      networkMode: "isolated",
      createTime: "2026-12-01T10:00:00Z",
      sizeBytes: 1,
      nodeName: "n",
      agents: ["a"],
    };
    const checkpoints = {
      checkpoint: async (input: { checkpoint?: string }) => {
        names.push(input.checkpoint);
        return made;
      },
      fork: async (input: { checkpoint?: string }) => {
        names.push(input.checkpoint);
        return { sandboxes: [], checkpoint: made };
      },
    } as unknown as CheckpointManager;
    return { checkpoints, names };
  }

  it("refuses the names of the sandbox's own fork and pause temporaries, which the collector removes, before anything is saved", async () => {
    const { checkpoints, names } = recordingCheckpoints();
    const methods = checkpointServiceMethods(checkpoints);
    for (const reserved of ["web-fork-0123456789", "web-pause-abcdef"]) {
      const error = await failure(
        Promise.resolve(methods.checkpointSandbox(create(pb.CheckpointSandboxRequestSchema, { name: "web", checkpoint: reserved }), context)),
      );
      assert.ok(error instanceof ValidationError, `${reserved}: ${error.name}`);
      assert.equal(error.field, "checkpoint");
      assert.match(error.message, /is reserved: .*choose another name/);
      const forkError = await failure(
        Promise.resolve(methods.forkSandbox(create(pb.ForkSandboxRequestSchema, { name: "web", count: 1, checkpoint: reserved }), context)),
      );
      assert.ok(forkError instanceof ValidationError, `fork ${reserved}: ${forkError.name}`);
    }
    assert.deepEqual(names, []);
  });

  it("takes names that only look alike: another sandbox's temporaries, other lengths, a name left to the manager", async () => {
    const { checkpoints, names } = recordingCheckpoints();
    const methods = checkpointServiceMethods(checkpoints);
    for (const name of ["api-fork-0123456789", "web-fork-012345678", "web-pause-abcdefa", "web-pause-ABCDEF", "kept", ""]) {
      await methods.checkpointSandbox(create(pb.CheckpointSandboxRequestSchema, { name: "web", checkpoint: name }), context);
    }
    await methods.forkSandbox(create(pb.ForkSandboxRequestSchema, { name: "web", count: 1, checkpoint: "web-fork-keep" }), context);
    assert.deepEqual(names, ["api-fork-0123456789", "web-fork-012345678", "web-pause-abcdefa", "web-pause-ABCDEF", "kept", undefined, "web-fork-keep"]);
  });

  it("records a Kubernetes user who forks as the copies' creator; the API token's holder as nobody", async () => {
    const inputs: { annotations?: Record<string, string> }[] = [];
    const checkpoints = {
      fork: async (input: { annotations?: Record<string, string> }) => {
        inputs.push(input);
        return { sandboxes: [] };
      },
    } as unknown as CheckpointManager;
    const methods = checkpointServiceMethods(checkpoints);
    const values = createContextValues().set(KUBERNETES_CALLER, { username: "system:serviceaccount:team:ci", groups: [] });
    await methods.forkSandbox(create(pb.ForkSandboxRequestSchema, { name: "web", count: 1 }), { values } as never);
    await methods.forkSandbox(create(pb.ForkSandboxRequestSchema, { name: "web", count: 1 }), context);
    assert.deepEqual(
      inputs.map((input) => input.annotations),
      [{ [CREATED_BY_ANNOTATION]: "system:serviceaccount:team:ci" }, undefined],
    );
  });
});
