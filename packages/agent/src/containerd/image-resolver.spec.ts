import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { NotFoundError } from "@fast-sandbox/api";
import { chainId } from "./chain-id.js";
import type { ContainerdClient } from "./containerd-client.js";
import { selectPlatformManifest } from "./image-manifest.js";
import { ImageResolver } from "./image-resolver.js";

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;
const INDEX = "application/vnd.oci.image.index.v1+json";
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** A manifest and its config, with one layer whose diff ID is `diffId`. */
function platformImage(diffId: string) {
  const config = JSON.stringify({ config: { Cmd: ["sh"] }, rootfs: { type: "layers", diff_ids: [diffId] } });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(`layer of ${diffId}`), size: 1 }],
  });
  return { config, manifest };
}

/** A containerd holding the image record `name` → `indexDigest` and the blobs of `store` (by digest), nothing else. */
function containerd(name: string, indexDigest: string, store: Map<string, string>): ContainerdClient {
  const client = {
    namespace: "test",
    images: {
      get: (request: { name: string }) =>
        request.name === name
          ? Promise.resolve({ image: { name, target: { mediaType: INDEX, digest: indexDigest, size: 1n } } })
          : Promise.reject(new NotFoundError(`image "${request.name}": not found`)),
    },
    content: {
      read: async function* (request: { digest: string }) {
        await Promise.resolve();
        const blob = store.get(request.digest);
        if (blob === undefined) throw new NotFoundError(`content digest ${request.digest}: not found`);
        yield { data: Buffer.from(blob) };
      },
    },
  };
  return client as unknown as ContainerdClient;
}

describe("ImageResolver, a multi-platform image", () => {
  it("reads the manifest the puller stored when the index lists the architecture more than once (linux/amd64/v3 before linux/amd64)", async () => {
    const v3 = platformImage(sha256("amd64 v3 layer"));
    const plain = platformImage(sha256("amd64 layer"));
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: INDEX,
      manifests: [
        { mediaType: MANIFEST, digest: sha256(v3.manifest), size: v3.manifest.length, platform: { os: "linux", architecture: "amd64", variant: "v3" } },
        { mediaType: MANIFEST, digest: sha256(plain.manifest), size: plain.manifest.length, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: MANIFEST, digest: sha256("arm64"), size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ],
    });
    // The store holds what a pull for amd64 stored: the index, the manifest it selected and its config.
    const pulled = selectPlatformManifest(JSON.parse(index) as Record<string, unknown>, "r.io/app:v1", "amd64");
    assert.equal(pulled.digest, sha256(plain.manifest));
    const store = new Map([
      [sha256(index), index],
      [pulled.digest, plain.manifest],
      [sha256(plain.config), plain.config],
    ]);
    const resolver = new ImageResolver(containerd("r.io/app:v1", sha256(index), store), "import it", { architecture: "amd64" });

    const resolved = await resolver.resolve("r.io/app:v1");
    assert.equal(resolved.targetDigest, sha256(index));
    assert.equal(resolved.chainId, chainId([sha256("amd64 layer")]));
    assert.deepEqual(resolved.config.cmd, ["sh"]);
  });

  it("says which platforms an image has when it has none for the architecture", async () => {
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: INDEX,
      manifests: [{ mediaType: MANIFEST, digest: sha256("arm64"), size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } }],
    });
    const resolver = new ImageResolver(containerd("r.io/app:v1", sha256(index), new Map([[sha256(index), index]])), "import it", {
      architecture: "amd64",
    });
    await assert.rejects(
      resolver.resolve("r.io/app:v1"),
      (error: unknown) => error instanceof NotFoundError && /no variant for linux\/amd64 \(it has linux\/arm64\/v8\)/.test(error.message),
    );
  });
});
