import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { conditionRows } from "./conditions.js";

describe("conditionRows", () => {
  const now = Date.parse("2026-01-01T00:10:00Z");
  const sandbox = (conditions: NonNullable<Sandbox["status"]>["conditions"]): Sandbox => ({
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "hog", namespace: "default" },
    spec: { image: "img", poolRef: "default" },
    status: { phase: "Running", ...(conditions ? { conditions } : {}) },
  });

  it("lists every condition with its status, reason, age and message, OOMKilled included", () => {
    const rows = conditionRows(
      sandbox([
        { type: "Ready", status: "True", reason: "Started", lastTransitionTime: "2026-01-01T00:00:00Z" },
        {
          type: "OOMKilled",
          status: "True",
          reason: "OOMKilled",
          message: "the kernel's OOM killer killed a process",
          lastTransitionTime: "2026-01-01T00:09:30Z",
        },
      ]),
      now,
    );
    assert.deepEqual(rows, [
      ["Ready", "True", "Started", "10m", ""],
      ["OOMKilled", "True", "OOMKilled", "30s", "the kernel's OOM killer killed a process"],
    ]);
  });

  it("takes a pool's conditions as a sandbox's", () => {
    const pool = {
      status: {
        conditions: [
          { type: "InstancesPrepared", status: "False" as const, reason: "PrepareFailed", message: "agent workers-0 cannot make prepared instances" },
        ],
      },
    };
    assert.deepEqual(conditionRows(pool, now), [["InstancesPrepared", "False", "PrepareFailed", "-", "agent workers-0 cannot make prepared instances"]]);
  });

  it("is empty for a sandbox without conditions and shows '-' for an unknown transition time", () => {
    assert.deepEqual(conditionRows(sandbox(undefined), now), []);
    assert.deepEqual(conditionRows(sandbox([{ type: "CommandExited", status: "True" }]), now), [["CommandExited", "True", "", "-", ""]]);
  });
});
