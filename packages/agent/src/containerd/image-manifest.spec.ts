import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api";
import {
  LAYER_MEDIA_TYPES,
  checkImagePlatform,
  goArchitecture,
  isIndex,
  parseDiffIds,
  parseJson,
  parseManifest,
  runnableVariants,
  selectPlatformManifest,
} from "./image-manifest.js";

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

  /** The /proc/cpuinfo lines that matter. */
  const X86_V1 = "flags\t\t: fpu sse sse2 lm";
  const X86_V2 = `${X86_V1} cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3`;
  const X86_V3 = `${X86_V2} avx avx2 bmi1 bmi2 f16c fma abm movbe xsave`;
  const ARM = (version: number) => `processor\t: 0\nCPU architecture: ${version}\n`;

  it("prefers the best arm variant this CPU runs, and never one it does not", () => {
    const index = { manifests: [entry("a", "arm", "v6"), entry("b", "arm", "v7"), entry("c", "arm", "v8")] };
    assert.equal(selectPlatformManifest(index, "img", "arm", ARM(8)).digest, digest("c"));
    assert.equal(selectPlatformManifest(index, "img", "arm", ARM(7)).digest, digest("b"));
    assert.equal(selectPlatformManifest(index, "img", "arm", ARM(6)).digest, digest("a"));
    assert.throws(
      () => selectPlatformManifest({ manifests: [entry("b", "arm", "v7")] }, "img", "arm", ARM(6)),
      (error: unknown) =>
        error instanceof NotFoundError &&
        /has no variant for linux\/arm that this host's CPU runs \(linux\/arm\/v6\) \(it has linux\/arm\/v7\)/.test(error.message),
    );
  });

  it("on amd64, prefers the entry without a variant (v1), takes v2-v4 only where the CPU has their features", () => {
    const plainAndV3 = { manifests: [entry("a", "amd64", "v3"), entry("b", "amd64")] };
    assert.equal(selectPlatformManifest(plainAndV3, "img", "amd64", X86_V3).digest, digest("b"));
    const variantsOnly = { manifests: [entry("a", "amd64", "v2"), entry("b", "amd64", "v3"), entry("c", "amd64", "v4")] };
    assert.equal(selectPlatformManifest(variantsOnly, "img", "amd64", X86_V3).digest, digest("b"));
    assert.equal(selectPlatformManifest(variantsOnly, "img", "amd64", X86_V2).digest, digest("a"));
    assert.throws(() => selectPlatformManifest(variantsOnly, "img", "amd64", X86_V1), NotFoundError);
    assert.deepEqual(runnableVariants("amd64", X86_V3), { variants: ["v1", "v3", "v2"], exclusive: true });
    assert.deepEqual(runnableVariants("amd64", ""), { variants: ["v1"], exclusive: true });
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

describe("checkImagePlatform", () => {
  it("refuses a config for another architecture or OS, naming both platforms", () => {
    assert.throws(
      () => checkImagePlatform({ os: "linux", architecture: "arm64" }, "r.io/app:v1", "amd64", ""),
      (error: unknown) =>
        error instanceof FailedPreconditionError &&
        /^image r\.io\/app:v1 is linux\/arm64; this agent runs linux\/amd64: use an image built for it/.test(error.message),
    );
    assert.throws(
      () => checkImagePlatform({ os: "windows", architecture: "amd64" }, "img", "amd64", ""),
      /image img is windows\/amd64; this agent runs linux\/amd64/,
    );
  });

  it("refuses a variant this CPU does not run", () => {
    assert.throws(
      () => checkImagePlatform({ os: "linux", architecture: "amd64", variant: "v3" }, "img", "amd64", "flags : sse4_2 ssse3 cx16 lahf_lm popcnt pni sse4_1"),
      /image img is linux\/amd64\/v3; this agent runs linux\/amd64\/v2/,
    );
    assert.throws(
      () => checkImagePlatform({ os: "linux", architecture: "arm", variant: "v7" }, "img", "arm", "CPU architecture: 6"),
      /this agent runs linux\/arm\/v6/,
    );
  });

  it("takes this platform, and a config that names none", () => {
    checkImagePlatform({ os: "linux", architecture: "amd64" }, "img", "amd64", "");
    checkImagePlatform({ os: "linux", architecture: "arm64", variant: "v8" }, "img", "arm64", "");
    checkImagePlatform({ rootfs: {} }, "img", "amd64", "");
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

  it("refuses a layer of a media type containerd does not unpack (an encrypted one), naming the ones it does", () => {
    const encrypted = { ...manifest, layers: [{ ...manifest.layers[0], mediaType: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted" }] };
    assert.throws(
      () => parseManifest(encrypted, "img"),
      (error: unknown) =>
        error instanceof FailedPreconditionError &&
        error.message.startsWith(
          `image img: layer 0 (${digest("d")}) has media type application/vnd.oci.image.layer.v1.tar+gzip+encrypted, which this agent cannot unpack; it unpacks application/vnd.oci.image.layer.v1.tar, `,
        ),
    );
    for (const mediaType of LAYER_MEDIA_TYPES) parseManifest({ ...manifest, layers: [{ ...manifest.layers[0], mediaType }] }, "img");
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
