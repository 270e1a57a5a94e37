import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { chainId } from "./chain-id.js";

const sha = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

describe("chainId", () => {
  it("is the diff ID itself for a single layer", () => {
    const diffId = sha("layer-0");
    assert.equal(chainId([diffId]), diffId);
  });

  it("hashes the previous chain ID, a space and the next diff ID", () => {
    const layers = [sha("a"), sha("b"), sha("c")];
    const second = sha(`${layers[0]} ${layers[1]}`);
    assert.equal(chainId(layers), sha(`${second} ${layers[2]}`));
  });

  it("rejects an image without layers", () => {
    assert.throws(() => chainId([]), /without layers/);
  });
});
