import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "./sandbox-id.js";

describe("isSandboxId", () => {
  it("accepts lower-case letters, digits, '.', '_' and '-' after a letter or digit, including runs containerd refuses", () => {
    for (const id of ["default.web.a1b2c3", "sb-0123456789abcdef", "a--b", "team_a.x..y", "0"]) assert.ok(isSandboxId(id), id);
  });

  it("refuses ids that are empty, start with a separator, or hold anything unsafe in a path segment", () => {
    for (const id of ["", ".", "..", "-a", "_a", ".hidden", "a/b", "a:b", "A", "a b", "a\u0000b"]) assert.ok(!isSandboxId(id), JSON.stringify(id));
  });

  it("accepts up to SANDBOX_ID_MAX_LENGTH characters", () => {
    assert.equal(SANDBOX_ID_MAX_LENGTH, 128);
    assert.ok(isSandboxId("a".repeat(SANDBOX_ID_MAX_LENGTH)));
    assert.ok(!isSandboxId("a".repeat(SANDBOX_ID_MAX_LENGTH + 1)));
  });
});
