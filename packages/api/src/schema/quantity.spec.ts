import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { parseCpuMillis, parseDurationMs, parseMemoryBytes } from "./quantity.js";

function assertRejected(parse: () => unknown, field: string, message: RegExp): void {
  assert.throws(parse, (error: unknown) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, field);
    assert.match(error.message, message);
    return true;
  });
}

describe("parseMemoryBytes", () => {
  it("reads plain bytes, decimal and binary suffixes", () => {
    assert.equal(parseMemoryBytes("0"), 0);
    assert.equal(parseMemoryBytes("1048576"), 1_048_576);
    assert.equal(parseMemoryBytes("2K"), 2_000);
    assert.equal(parseMemoryBytes("3M"), 3_000_000);
    assert.equal(parseMemoryBytes("1G"), 1_000_000_000);
    assert.equal(parseMemoryBytes("1T"), 1_000_000_000_000);
    assert.equal(parseMemoryBytes("2Ki"), 2_048);
    assert.equal(parseMemoryBytes("256Mi"), 256 * 1024 * 1024);
    assert.equal(parseMemoryBytes("1Gi"), 1024 ** 3);
    assert.equal(parseMemoryBytes("1Ti"), 1024 ** 4);
  });

  it("rejects fractions, unknown units, signs and empty text, naming the field", () => {
    for (const text of ["", "1.5Gi", "256MB", "256mi", "-1", "Mi", " 1Mi", "1 Mi"]) {
      assertRejected(
        () => parseMemoryBytes(text, "spec.sandboxResources.memory"),
        "spec.sandboxResources.memory",
        /is not a memory quantity \(e\.g\. 256Mi, 1Gi\)/,
      );
    }
  });

  it("names the field 'memory' by default", () => {
    assertRejected(() => parseMemoryBytes("lots"), "memory", /"lots"/);
  });
});

describe("parseCpuMillis", () => {
  it("reads millicores and whole or fractional cores", () => {
    assert.equal(parseCpuMillis("500m"), 500);
    assert.equal(parseCpuMillis("0m"), 0);
    assert.equal(parseCpuMillis("2"), 2000);
    assert.equal(parseCpuMillis("0.5"), 500);
    assert.equal(parseCpuMillis("1.25"), 1250);
  });

  it("rejects anything else, naming the field", () => {
    for (const text of ["", "m", "1.5m", "500mi", "-1", "1e3", ".5", "2 cores"]) {
      assertRejected(() => parseCpuMillis(text, "--cpu"), "--cpu", /is not a CPU quantity \(e\.g\. 500m, 2\)/);
    }
  });
});

describe("parseDurationMs", () => {
  it("reads each unit and sums combinations", () => {
    assert.equal(parseDurationMs("250ms"), 250);
    assert.equal(parseDurationMs("30s"), 30_000);
    assert.equal(parseDurationMs("5m"), 300_000);
    assert.equal(parseDurationMs("2h"), 7_200_000);
    assert.equal(parseDurationMs("1d"), 86_400_000);
    assert.equal(parseDurationMs("1h30m"), 5_400_000);
    assert.equal(parseDurationMs("1m30s500ms"), 90_500);
  });

  it("rejects empty, unitless, negative and trailing garbage, naming the field", () => {
    for (const text of ["", "30", "-5m", "5x", "5m garbage", "m", "1h 30m", "1.5h"]) {
      assertRejected(() => parseDurationMs(text, "--expire"), "--expire", /is not a duration \(e\.g\. 30s, 10m, 2h, 1h30m\)/);
    }
  });

  it("rejects zero as a duration it reads, saying it is zero", () => {
    for (const text of ["0s", "0ms", "0h0m"]) {
      assertRejected(() => parseDurationMs(text, "--expire"), "--expire", /is zero; give a duration longer than that \(e\.g\. 30s/);
    }
  });
});
