import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { API_KEY_PATTERN, hashApiKey, isWellFormedApiKey, newApiKey } from "./api-key.js";

describe("E2B API keys", () => {
  it("have E2B's shape, e2b_ and 40 lower-case hex digits, which E2B's SDKs check before sending (^e2b_[0-9a-f]+$)", () => {
    const keys = new Set(Array.from({ length: 200 }, () => newApiKey()));
    assert.equal(keys.size, 200, "every key is new");
    for (const key of keys) {
      assert.match(key, API_KEY_PATTERN);
      assert.match(key, /^e2b_[0-9a-f]+$/, "the SDKs' own check");
      assert.ok(isWellFormedApiKey(key));
    }
  });

  it("are recognised only in that shape", () => {
    for (const bad of [
      "",
      "e2b_",
      `e2b_${"0".repeat(39)}`,
      `e2b_${"0".repeat(41)}`,
      `E2B_${"0".repeat(40)}`,
      `e2b_${"A".repeat(40)}`,
      ` e2b_${"0".repeat(40)}`,
    ]) {
      assert.equal(isWellFormedApiKey(bad), false, JSON.stringify(bad));
    }
    assert.ok(isWellFormedApiKey(`e2b_${"0".repeat(40)}`));
  });

  it("are kept as sha256:<hex of the key>, which says nothing of the key", () => {
    const key = newApiKey();
    assert.equal(hashApiKey(key), `sha256:${createHash("sha256").update(key).digest("hex")}`);
    assert.ok(!hashApiKey(key).includes(key.slice(4)));
    assert.notEqual(hashApiKey(key), hashApiKey(newApiKey()));
  });
});
