import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api";
import { goArchitecture, isIndex, parseDiffIds, parseJson, parseManifest, selectPlatformManifest } from "./image-manifest.js";

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const entry = (c: string, architecture: string, variant?: string, os = "linux") => ({
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  digest: digest(c),
  size: 500,
  platform: { os, architecture, ...(variant ? { variant } : {}) },
});

describe("selectPlatformManifest", () => {
  it("picks linux/<architecture>", () => {
    const index = { manifests: [entry("a", "arm64", "v8"), entry("b", "amd64"), entry("c", "amd64", undefined, "windows")] };
    assert.equal(selectPlatformManifest(index, "img", "amd64").digest, digest("b"));
    assert.equal(selectPlatformManifest(index, "img", "arm64").digest, digest("a"));
  });

  it("prefers the architecture's usual variant", () => {
    const index = { manifests: [entry("a", "arm", "v6"), entry("b", "arm", "v7")] };
    assert.equal(selectPlatformManifest(index, "img", "arm").digest, digest("b"));
  });

  it("says which platforms an image has when this one is missing, leaving out attestations", () => {
    const index = { manifests: [entry("a", "arm64", "v8"), entry("b", "unknown", undefined, "unknown")] };
    assert.throws(
      () => selectPlatformManifest(index, "r.io/app:v1", "amd64"),
      (error: unknown) => error instanceof NotFoundError && error.message === "image r.io/app:v1 has no variant for linux/amd64 (it has linux/arm64/v8)",
    );
  });

  it("refuses entries whose digest could not be a digest", () => {
    const index = { manifests: [{ ...entry("a", "amd64"), digest: "sha256:../../etc" }] };
    assert.throws(() => selectPlatformManifest(index, "img", "amd64"), FailedPreconditionError);
  });
});

describe("parseManifest and parseDiffIds", () => {
  const manifest = {
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digest("c"), size: 10 },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digest("d"), size: 20 }],
  };

  it("reads config and layers", () => {
    assert.deepEqual(parseManifest(manifest, "img"), {
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digest("c"), size: 10 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digest("d"), size: 20 }],
    });
  });

  it("refuses a manifest without layers or with a bad size", () => {
    assert.throws(() => parseManifest({ ...manifest, layers: [] }, "img"), /image img has no layers/);
    assert.throws(() => parseManifest({ ...manifest, config: { ...manifest.config, size: -1 } }, "img"), /has no valid size/);
  });

  it("needs one valid diff ID per layer", () => {
    assert.deepEqual(parseDiffIds({ rootfs: { diff_ids: [digest("e")] } }, "img", 1), [digest("e")]);
    assert.throws(() => parseDiffIds({ rootfs: { diff_ids: [] } }, "img", 1), /lists 0 valid diff IDs for 1 layers/);
    assert.throws(() => parseDiffIds({ rootfs: { diff_ids: ["nope"] } }, "img", 1), FailedPreconditionError);
  });
});

describe("documents", () => {
  it("tells an index from a manifest by media type or shape", () => {
    assert.ok(isIndex("application/vnd.docker.distribution.manifest.list.v2+json", {}));
    assert.ok(isIndex("", { manifests: [] }));
    assert.ok(!isIndex("application/vnd.oci.image.manifest.v1+json", { config: {}, layers: [] }));
  });

  it("parses only JSON objects", () => {
    assert.deepEqual(parseJson(Buffer.from('{"a":1}'), "x"), { a: 1 });
    assert.throws(() => parseJson(Buffer.from("[1]"), "the manifest"), /the manifest is not a JSON object/);
    assert.throws(() => parseJson(Buffer.from("{"), "the manifest"), FailedPreconditionError);
  });

  it("names architectures as image platforms do", () => {
    assert.equal(goArchitecture("x64"), "amd64");
    assert.equal(goArchitecture("arm64"), "arm64");
    assert.equal(goArchitecture("riscv64"), "riscv64");
  });
});
