import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { NotFoundError, UnavailableError, normalizeImageName } from "@fast-sandbox/api";
import type { ContainerdClient } from "./containerd-client.js";
import type { ImagePuller } from "./image-puller.js";
import { ImageResolver } from "./image-resolver.js";
import { PullingImageResolver } from "./pulling-image-resolver.js";

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** A one-layer image's manifest and config, stored in `blobs`; returns the manifest's digest. */
function storeImage(blobs: Map<string, string>, layer: string): string {
  const config = JSON.stringify({ config: {}, rootfs: { type: "layers", diff_ids: [sha256(layer)] } });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(`gz ${layer}`), size: 1 }],
  });
  blobs.set(sha256(config), config);
  blobs.set(sha256(manifest), manifest);
  return sha256(manifest);
}

/** A containerd with the image records `records` (name → manifest digest), the blobs `blobs` and every snapshot. */
function containerd(records: Map<string, string>, blobs: Map<string, string>): ContainerdClient {
  const client = {
    namespace: "test",
    images: {
      get: (request: { name: string }) => {
        const digest = records.get(request.name);
        if (!digest) return Promise.reject(new NotFoundError(`image "${request.name}": not found`));
        return Promise.resolve({ image: { name: request.name, target: { mediaType: MANIFEST, digest, size: 1n } } });
      },
    },
    content: {
      read: async function* (request: { digest: string }) {
        await Promise.resolve();
        const blob = blobs.get(request.digest);
        if (blob === undefined) throw new NotFoundError(`content digest ${request.digest}: not found`);
        yield { data: Buffer.from(blob) };
      },
    },
    snapshots: { stat: () => Promise.resolve({}) },
  };
  return client as unknown as ContainerdClient;
}

/** busybox in containerd under its normalized name, and a puller that stores `layer`'s image there (the tag moved). */
function busyboxAgent() {
  const records = new Map<string, string>();
  const blobs = new Map<string, string>();
  records.set("docker.io/library/busybox:latest", storeImage(blobs, "busybox 1.36"));
  const client = containerd(records, blobs);
  const puller = {
    pull: (reference: string) => {
      const image = normalizeImageName(reference);
      records.set(image, storeImage(blobs, "busybox 1.37"));
      return Promise.resolve({ image, digest: records.get(image) });
    },
    unpack: () => Promise.reject(new Error("nothing is unpacked: every snapshot is there")),
  };
  const images = new PullingImageResolver(client, "overlayfs", new ImageResolver(client, "import it"), puller as unknown as ImagePuller);
  return { images, records };
}

const SPELLINGS = ["busybox", "busybox:latest", "library/busybox", "docker.io/busybox", "docker.io/library/busybox:latest"];

describe("PullingImageResolver, an image pulled anew (`fsb pull`)", () => {
  it("resolves every spelling of its name to the new digest, whichever spelling was pulled", async () => {
    for (const pulled of ["busybox", "docker.io/library/busybox:latest", "docker.io/busybox"]) {
      const { images, records } = busyboxAgent();
      const before = records.get("docker.io/library/busybox:latest");
      for (const spelling of SPELLINGS) assert.equal((await images.resolve(spelling)).targetDigest, before, spelling);

      const { digest } = await images.pull(pulled);
      assert.notEqual(digest, before);
      for (const spelling of SPELLINGS) assert.equal((await images.resolve(spelling)).targetDigest, digest, `${spelling} after a pull of ${pulled}`);
    }
  });
});

describe("PullingImageResolver, an image neither here nor pullable", () => {
  it("says it is not in the namespace, how to import it, and why the pull failed, with the pull's code", async () => {
    const client = containerd(new Map(), new Map());
    const puller = {
      pull: () => Promise.reject(new UnavailableError("registry fast-sandbox.io is unreachable at https://fast-sandbox.io (ENOTFOUND)")),
      unpack: () => Promise.reject(new Error("not called")),
    };
    const images = new PullingImageResolver(
      client,
      "overlayfs",
      new ImageResolver(client, "import it with scripts/build-base-image.sh"),
      puller as unknown as ImagePuller,
    );
    // A create's lookup, and the pull the control plane asks for first when the agent does not report the image.
    for (const attempt of [() => images.resolve("fast-sandbox.io/base:latest"), () => images.pull("fast-sandbox.io/base:latest")]) {
      await assert.rejects(attempt(), (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.equal(
          error.message,
          'image "fast-sandbox.io/base:latest" is not in containerd namespace "test"; import it with scripts/build-base-image.sh; ' +
            "pulling it failed: registry fast-sandbox.io is unreachable at https://fast-sandbox.io (ENOTFOUND)",
        );
        return true;
      });
    }
  });

  it("an explicit pull the registry answered (no such tag) says only that", async () => {
    const client = containerd(new Map(), new Map());
    const puller = {
      pull: () => Promise.reject(new NotFoundError('image 127.0.0.1:5000/team/sdk:nope not found: the registry has no tag "nope"')),
      unpack: () => Promise.reject(new Error("not called")),
    };
    const images = new PullingImageResolver(client, "overlayfs", new ImageResolver(client, "import it"), puller as unknown as ImagePuller);
    await assert.rejects(images.pull("127.0.0.1:5000/team/sdk:nope"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.equal(error.message, 'image 127.0.0.1:5000/team/sdk:nope not found: the registry has no tag "nope"');
      return true;
    });
  });
});
