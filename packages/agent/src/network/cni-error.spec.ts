import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { CniError, cniErrorFromExit, errorCodeOfCni } from "./cni-error.js";

describe("errorCodeOfCni", () => {
  it("maps configuration errors to failed_precondition, a missing container to not_found, retryable ones to unavailable", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7, 11, 100, undefined].map((code) => errorCodeOfCni(code)),
      [
        "failed_precondition",
        "failed_precondition",
        "not_found",
        "internal",
        "unavailable",
        "internal",
        "failed_precondition",
        "unavailable",
        "internal",
        "internal",
      ],
    );
  });

  it("an exhausted address range is no_capacity whatever the code", () => {
    assert.equal(errorCodeOfCni(999, "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6"), "no_capacity");
  });
});

describe("cniErrorFromExit", () => {
  it("reads the plugin's error result: code, message and details, with the spec's name for well-known codes", () => {
    const error = cniErrorFromExit({
      plugin: "bridge",
      command: "ADD",
      exitCode: 1,
      signal: null,
      stdout: JSON.stringify({ cniVersion: "1.0.0", code: 11, msg: "lock held", details: "retry" }),
      stderr: "",
    });
    assert.ok(error instanceof CniError && error instanceof FsbError);
    assert.equal(error.code, "unavailable");
    assert.equal(error.cniCode, 11);
    assert.equal(error.details, "retry");
    assert.equal(error.message, 'CNI plugin "bridge" failed ADD (code 11, try again later): lock held: retry');
  });

  it("without an error result it reports the exit and stderr as internal", () => {
    const error = cniErrorFromExit({ plugin: "firewall", command: "DEL", exitCode: null, signal: "SIGKILL", stdout: "", stderr: "  oops \n" });
    assert.equal(error.code, "internal");
    assert.equal(error.cniCode, undefined);
    assert.equal(error.message, 'CNI plugin "firewall" was killed by SIGKILL on DEL without an error result: oops');
  });

  it("uses stderr as the details when the result has none", () => {
    const error = cniErrorFromExit({ plugin: "host-local", command: "ADD", exitCode: 1, signal: null, stdout: '{"code":999,"msg":"failed"}', stderr: "more" });
    assert.equal(error.details, "more");
    assert.equal(error.message, 'CNI plugin "host-local" failed ADD (code 999): failed: more');
  });
});
