import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, fromConnectError, pb, type Sandbox } from "@fast-sandbox/api";
import type { ResumeOptions, SandboxPauses } from "./checkpoint-pauses.js";
import { checkpointServiceMethods } from "./checkpoint-service.js";

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
      { op: "resume", namespace: "", name: "napper", options: { expireTime: inTenMinutes } },
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
