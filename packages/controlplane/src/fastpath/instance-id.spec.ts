import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "@fast-sandbox/api";
import { newInstanceId } from "./instance-id.js";

describe("newInstanceId", () => {
  it("is namespace.name.<6 hex> for ordinary names", () => {
    assert.match(newInstanceId("default", "web"), /^default\.web\.[0-9a-f]{6}$/);
    assert.match(newInstanceId("team-a", "my-app-2"), /^team-a\.my-app-2\.[0-9a-f]{6}$/);
  });

  it("keeps names whole that a runtime might refuse as its own id: mapping them is the agent's business", () => {
    assert.match(newInstanceId("default", "a--b"), /^default\.a--b\.[0-9a-f]{6}$/);
    assert.match(newInstanceId("x--y", "web"), /^x--y\.web\.[0-9a-f]{6}$/);
    // The longest names the API takes: 63-character namespace and name, 134 characters in all.
    const longest = newInstanceId("n".repeat(63), "m".repeat(63));
    assert.ok(isSandboxId(longest), longest);
  });

  it("is readable up to the API's limit, and cut with a 16-hex suffix beyond it", () => {
    // default + . + name + . + 6 hex = name length + 15.
    const fits = newInstanceId("default", "n".repeat(SANDBOX_ID_MAX_LENGTH - 15));
    assert.match(fits, new RegExp(`^default\\.n{${SANDBOX_ID_MAX_LENGTH - 15}}\\.[0-9a-f]{6}$`));
    assert.equal(fits.length, SANDBOX_ID_MAX_LENGTH);
    const cut = newInstanceId("default", "n".repeat(SANDBOX_ID_MAX_LENGTH - 14));
    assert.match(cut, /^default\.n+\.[0-9a-f]{16}$/);
    assert.equal(cut.length, SANDBOX_ID_MAX_LENGTH);
  });

  it("cuts a Kubernetes name of up to 253 characters to a valid id without a separator before its suffix", () => {
    const name = `${"a".repeat(103)}.${"b".repeat(149)}`;
    // Both cuts end in separators (`.`, `--`), which are dropped.
    for (const id of [newInstanceId("team-a", name), newInstanceId("default", `${"c".repeat(101)}--${"d".repeat(100)}`)]) {
      assert.ok(isSandboxId(id), id);
      assert.ok(id.length < SANDBOX_ID_MAX_LENGTH, id);
      assert.match(id, /[a-z0-9]\.[0-9a-f]{16}$/);
    }
  });

  it("differs between calls for the same name", () => {
    const ids = new Set(Array.from({ length: 20 }, () => newInstanceId("default", "web")));
    assert.ok(ids.size > 1);
    const long = new Set(Array.from({ length: 20 }, () => newInstanceId("default", "n".repeat(200))));
    assert.equal(long.size, 20);
  });

  it("still makes a valid id from input no validation lets through", () => {
    assert.match(newInstanceId("Default", "Web"), /^sb-[0-9a-f]{16}$/);
  });
});
