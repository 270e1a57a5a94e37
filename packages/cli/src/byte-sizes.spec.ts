import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatBytes, formatQuantityBytes } from "./byte-sizes.js";

describe("formatBytes", () => {
  it("uses decimal units with one decimal below 10", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(999), "999 B");
    assert.equal(formatBytes(1_088_491), "1.1 MB");
    assert.equal(formatBytes(52_400_000), "52 MB");
    assert.equal(formatBytes(5_000_000_000), "5.0 GB");
  });
});

describe("formatQuantityBytes", () => {
  it("writes bytes as binary quantities", () => {
    assert.equal(formatQuantityBytes(0), "0");
    assert.equal(formatQuantityBytes(1023), "1023");
    assert.equal(formatQuantityBytes(4 * 2 ** 20), "4Mi");
    assert.equal(formatQuantityBytes(1.5 * 2 ** 30), "1.5Gi");
    assert.equal(formatQuantityBytes(300 * 2 ** 20), "300Mi");
  });
});
