import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { objectKey, parseObjectKey } from "./object-key.js";

describe("object keys", () => {
  it("are namespace/name and split back into both", () => {
    const key = objectKey({ metadata: { namespace: "team-a", name: "web-1" } });
    assert.equal(key, "team-a/web-1");
    assert.deepEqual(parseObjectKey(key), { namespace: "team-a", name: "web-1" });
  });

  it("refuse strings that do not name exactly one namespace and one name", () => {
    for (const bad of ["web", "/web", "team-a/", "a/b/c", ""]) assert.throws(() => parseObjectKey(bad), TypeError, bad);
  });
});
