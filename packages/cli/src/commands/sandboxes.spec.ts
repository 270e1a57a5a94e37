import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, ValidationError, type Sandbox } from "@fast-sandbox/api";
import { conditionRows, parseEnvs, parsePorts } from "./sandboxes.js";

function assertUsageError(parse: () => unknown, flag: string, message: RegExp): void {
  assert.throws(parse, (error: unknown) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, flag);
    assert.match(error.message, message);
    return true;
  });
}

describe("parsePorts", () => {
  it("reads ports 1..65535 in order", () => {
    assert.deepEqual(parsePorts(["8080", "1", "65535"]), [8080, 1, 65535]);
    assert.deepEqual(parsePorts([]), []);
  });

  it("rejects 0, 65536, negative, fractional and non-numeric ports as --port errors", () => {
    for (const value of ["0", "65536", "70000", "-1", "80.5", "http", "", " 80", "1e3"]) {
      assertUsageError(
        () => parsePorts(["80", value]),
        "--port",
        new RegExp(`${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is not a port; allowed: 1\\.\\.65535`),
      );
    }
  });
});

describe("parseEnvs", () => {
  it("splits at the first '=' and keeps empty values and later '='", () => {
    assert.deepEqual(parseEnvs(["A=1", "EMPTY=", "URL=a=b=c"]), [
      { name: "A", value: "1" },
      { name: "EMPTY", value: "" },
      { name: "URL", value: "a=b=c" },
    ]);
  });

  it("rejects entries without a name or without '=' as --env errors", () => {
    for (const entry of ["NOVALUE", "=value", ""]) {
      assertUsageError(() => parseEnvs([entry]), "--env", /is not NAME=VALUE/);
    }
  });
});

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

  it("is empty for a sandbox without conditions and shows '-' for an unknown transition time", () => {
    assert.deepEqual(conditionRows(sandbox(undefined), now), []);
    assert.deepEqual(conditionRows(sandbox([{ type: "CommandExited", status: "True" }]), now), [["CommandExited", "True", "", "-", ""]]);
  });
});
