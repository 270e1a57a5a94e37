import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { parseEnvs, parsePorts } from "./sandboxes.js";

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
