import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isSandboxId } from "@fast-sandbox/api";
import { INSTANCE_ID_LENGTH, newInstanceId } from "./instance-id.js";

describe("newInstanceId", () => {
  it("is a DNS label of 20 lower-case letters and digits, valid as the agent API's sandbox id", () => {
    for (let i = 0; i < 200; i++) {
      const id = newInstanceId();
      assert.match(id, /^[a-z0-9]{20}$/);
      assert.equal(id.length, INSTANCE_ID_LENGTH);
      assert.ok(isSandboxId(id), id);
    }
  });

  it("never repeats across many calls", () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => newInstanceId()));
    assert.equal(ids.size, 10_000);
  });

  it("uses every character of the alphabet, each about equally often", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) for (const character of newInstanceId()) counts.set(character, (counts.get(character) ?? 0) + 1);
    assert.equal(counts.size, 36);
    // 40 000 characters over 36: about 1111 each; a biased modulo would push the first ones far above.
    for (const [character, count] of counts) assert.ok(count > 850 && count < 1400, `${character}: ${count}`);
  });
});
