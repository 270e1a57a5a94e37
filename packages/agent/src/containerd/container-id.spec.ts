import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LABEL_SANDBOX_ID } from "../runtime/runtime.js";
import { CONTAINERD_ID_MAX_LENGTH, containerIdOf, isContainerdId, sandboxIdOfContainer } from "./container-id.js";

describe("isContainerdId", () => {
  it("accepts alphanumeric runs joined by single '.', '_' or '-', up to 76 characters", () => {
    for (const id of ["default.web.a1b2c3", "sb-0123", "A_b.C-d", "x".repeat(CONTAINERD_ID_MAX_LENGTH)]) assert.ok(isContainerdId(id), id);
  });

  it("refuses doubled or edge separators, other characters and ids over 76 characters", () => {
    for (const id of ["", "a--b", "a..b", "a._b", "-a", "a-", ".a", "a:b", "a/b", "a b", "x".repeat(CONTAINERD_ID_MAX_LENGTH + 1)]) {
      assert.ok(!isContainerdId(id), JSON.stringify(id));
    }
  });
});

describe("containerIdOf", () => {
  it("keeps a sandbox id containerd accepts, so containers created under their sandbox id are found again", () => {
    assert.equal(containerIdOf("default.web.a1b2c3"), "default.web.a1b2c3");
    assert.equal(containerIdOf("sb-0123456789abcdef"), "sb-0123456789abcdef");
    const longest = `default.${"n".repeat(CONTAINERD_ID_MAX_LENGTH - 15)}.a1b2c3`;
    assert.equal(longest.length, CONTAINERD_ID_MAX_LENGTH);
    assert.equal(containerIdOf(longest), longest);
  });

  it("maps a sandbox id containerd refuses to `sb-` and 32 hex digits, a valid containerd id", () => {
    for (const sandboxId of ["default.a--b.a1b2c3", `default.${"n".repeat(62)}.a1b2c3`, "a..b", `team.${"x".repeat(120)}`, "a:b"]) {
      const containerId = containerIdOf(sandboxId);
      assert.match(containerId, /^sb-[0-9a-f]{32}$/, sandboxId);
      assert.ok(isContainerdId(containerId), containerId);
    }
  });

  it("is deterministic: the same sandbox id always maps to the same container id", () => {
    const sandboxId = "default.a--b.a1b2c3";
    assert.equal(containerIdOf(sandboxId), containerIdOf(sandboxId));
    // A known value: a change of the mapping would orphan every mapped container of a running agent.
    assert.equal(containerIdOf(sandboxId), "sb-331ccdc136e58c5cd81ecd24288939a4");
  });

  it("maps different refused ids to different container ids", () => {
    const ids = Array.from({ length: 1000 }, (_, index) => `default.a--b.${index.toString(16).padStart(6, "0")}`);
    assert.equal(new Set(ids.map(containerIdOf)).size, ids.length);
    assert.notEqual(containerIdOf("default.a--b.a1b2c3"), containerIdOf("default.a--b.a1b2c4"));
  });
});

describe("sandboxIdOfContainer", () => {
  it("reads the sandbox id label, and falls back to the container id when the label is absent or empty", () => {
    assert.equal(
      sandboxIdOfContainer({ id: "sb-331ccdc136e58c5cd81ecd24288939a4", labels: { [LABEL_SANDBOX_ID]: "default.a--b.a1b2c3" } }),
      "default.a--b.a1b2c3",
    );
    assert.equal(sandboxIdOfContainer({ id: "default.web.a1b2c3", labels: {} }), "default.web.a1b2c3");
    assert.equal(sandboxIdOfContainer({ id: "default.web.a1b2c3", labels: { [LABEL_SANDBOX_ID]: "" } }), "default.web.a1b2c3");
  });
});
