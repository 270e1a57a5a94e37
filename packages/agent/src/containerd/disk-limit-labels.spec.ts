import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LABEL_EPHEMERAL_STORAGE, LABEL_EVICTED, diskLimitLabels, diskLimitOf, evictedLabel } from "./disk-limit-labels.js";

describe("disk limit labels", () => {
  it("record a limit and read it back; none without one", () => {
    assert.deepEqual(diskLimitLabels({ ephemeralStorageBytes: 16 * 2 ** 20 }), { [LABEL_EPHEMERAL_STORAGE]: "16777216" });
    assert.equal(diskLimitOf(diskLimitLabels({ ephemeralStorageBytes: 16 * 2 ** 20 })), 16 * 2 ** 20);
    assert.deepEqual(diskLimitLabels({ memoryBytes: 1 }), {});
    assert.deepEqual(diskLimitLabels(undefined), {});
    assert.equal(diskLimitOf({}), undefined);
  });

  it("read a value no agent wrote as no limit", () => {
    for (const value of ["", "0", "-5", "1e9", "12abc", "99999999999999999999"]) {
      assert.equal(diskLimitOf({ [LABEL_EPHEMERAL_STORAGE]: value }), undefined, value);
    }
  });

  it("cut an eviction's reason to what containerd takes in a label", () => {
    assert.deepEqual(evictedLabel("past its limit"), { [LABEL_EVICTED]: "past its limit" });
    const long = evictedLabel("x".repeat(5000))[LABEL_EVICTED] ?? "";
    assert.equal(long.length, 1024);
    assert.ok(long.endsWith("…"));
  });
});
