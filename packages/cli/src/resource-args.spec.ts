import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseResourceArgs, resourceKind } from "./resource-args.js";

describe("resourceKind", () => {
  it("knows the singular, plural, short and API names of both kinds, in any case", () => {
    for (const word of ["sandbox", "sandboxes", "sb", "Sandbox"]) assert.equal(resourceKind(word), "sandbox", word);
    for (const word of ["pool", "pools", "sandboxpool", "SandboxPools", "SandboxPool"]) assert.equal(resourceKind(word), "pool", word);
  });

  it("treats anything else as a name", () => {
    for (const word of ["web", "sb-3f9c2a1b7d", "pool-1", "poolx", ""]) assert.equal(resourceKind(word), undefined, word);
  });
});

describe("parseResourceArgs", () => {
  it("reads plain names as sandboxes, as 'fsb rm' always did", () => {
    assert.deepEqual(parseResourceArgs(["a"]), { kind: "sandbox", names: ["a"] });
    assert.deepEqual(parseResourceArgs(["a", "b", "c"]), { kind: "sandbox", names: ["a", "b", "c"] });
  });

  it("takes a leading kind word as the kind and the rest as names", () => {
    assert.deepEqual(parseResourceArgs(["pool", "workers"]), { kind: "pool", names: ["workers"] });
    assert.deepEqual(parseResourceArgs(["pools", "a", "b"]), { kind: "pool", names: ["a", "b"] });
    assert.deepEqual(parseResourceArgs(["sandbox", "pool"]), { kind: "sandbox", names: ["pool"] });
  });

  it("leaves the names empty after a lone kind word (the caller lists or refuses)", () => {
    assert.deepEqual(parseResourceArgs(["pool"]), { kind: "pool", names: [] });
    assert.deepEqual(parseResourceArgs(["sandboxes"]), { kind: "sandbox", names: [] });
  });
});
