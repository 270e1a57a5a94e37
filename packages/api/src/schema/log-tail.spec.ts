import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { MAX_TAIL_LINES, checkTailLines } from "./log-tail.js";

describe("checkTailLines", () => {
  it("takes a whole number of lines from 0 to the wire's int32, or its decimal digits (a command line's)", () => {
    for (const lines of [0, 1, 10, MAX_TAIL_LINES]) {
      assert.equal(checkTailLines(lines, "tail"), lines);
      assert.equal(checkTailLines(String(lines), "--tail"), lines);
    }
    assert.equal(checkTailLines("007", "--tail"), 7);
  });

  it("refuses text that is not a count of lines, quoting it", () => {
    for (const text of ["-1", "ten", "", " 5", "1.5", "1e3", "0x10", "2147483648"]) {
      assert.throws(
        () => checkTailLines(text, "--tail"),
        (error: unknown) =>
          error instanceof ValidationError &&
          error.field === "--tail" &&
          error.message === `--tail: must be a whole number of lines ≥ 0 (at most 2147483647), got ${JSON.stringify(text)}`,
        text,
      );
    }
  });

  it("refuses a negative, fractional, non-finite or too large count, naming the field and what is allowed", () => {
    for (const lines of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, MAX_TAIL_LINES + 1]) {
      assert.throws(
        () => checkTailLines(lines, "tail_lines"),
        (error: unknown) =>
          error instanceof ValidationError &&
          error.field === "tail_lines" &&
          error.message === `tail_lines: must be a whole number of lines ≥ 0 (at most 2147483647), got ${String(lines)}`,
        String(lines),
      );
    }
  });
});
