import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { pino } from "pino";
import { FailedPreconditionError, NotFoundError, UnavailableError } from "@fast-sandbox/api";
import type { RegistryClient } from "../registry/registry-client.js";
import type { ContainerdClient } from "./containerd-client.js";
import { WriteAction } from "./gen/github.com/containerd/containerd/api/services/content/v1/content_pb.js";
import { ImagePuller } from "./image-puller.js";
import { unpackLayers } from "./image-unpacker.js";

const sha256 = (bytes: Uint8Array | string) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/** A one-layer image: its manifest, config and layer, and the layer's diff ID. */
function image() {
  const layer = Buffer.from("layer bytes");
  const diffId = sha256("uncompressed layer");
  const config = Buffer.from(JSON.stringify({ rootfs: { type: "layers", diff_ids: [diffId] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(layer), size: layer.length }],
    }),
  );
  return { layer, diffId, config, manifest };
}

type Calls = { method: string; request: Record<string, unknown> }[];

/**
 * A containerd whose content store starts with `present` blobs (by digest) and no snapshot, and
 * takes every write, unpack and record; every call is recorded.
 */
function containerd(diffId: string, present: Map<string, Uint8Array> = new Map()): { client: ContainerdClient; calls: Calls } {
  const calls: Calls = [];
  const record = (method: string) => (request: Record<string, unknown>) => {
    calls.push({ method, request });
    return Promise.resolve({});
  };
  const client = {
    leases: { create: record("leases.create"), delete: record("leases.delete"), addResource: record("leases.addResource") },
    content: {
      info: (request: { digest: string }) => {
        calls.push({ method: "content.info", request });
        return present.has(request.digest) ? Promise.resolve({}) : Promise.reject(new NotFoundError(`content ${request.digest} not found`));
      },
      read: async function* (request: { digest: string }) {
        await Promise.resolve();
        yield { data: present.get(request.digest) ?? new Uint8Array() };
      },
      update: record("content.update"),
      abort: record("content.abort"),
      write: () => {
        let offset = 0n;
        return {
          exchange: (request: { action: WriteAction; data?: Uint8Array; expected?: string }) => {
            calls.push({ method: `content.write.${WriteAction[request.action]}`, request });
            if (request.action === WriteAction.WRITE) offset += BigInt(request.data?.byteLength ?? 0);
            return Promise.resolve({ offset, digest: "" });
          },
          end: () => undefined,
          cancel: () => undefined,
        };
      },
    },
    snapshots: {
      stat: (request: { key: string }) => {
        calls.push({ method: "snapshots.stat", request });
        return Promise.reject(new NotFoundError(`snapshot ${request.key} not found`));
      },
      prepare: (request: Record<string, unknown>) => record("snapshots.prepare")(request).then(() => ({ mounts: [] })),
      commit: record("snapshots.commit"),
      remove: record("snapshots.remove"),
    },
    diff: { apply: (request: Record<string, unknown>) => record("diff.apply")(request).then(() => ({ applied: { digest: diffId } })) },
    images: { create: record("images.create"), update: record("images.update") },
  };
  return { client: client as unknown as ContainerdClient, calls };
}

/** A registry serving `manifest` and `config`; every other blob (the layer) comes from `layerBlob`. */
function registryOf(manifest: Uint8Array, config: Uint8Array, layerBlob: (digest: string) => Promise<unknown>) {
  return {
    registry: "registry.test",
    getManifest: () =>
      Promise.resolve({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(manifest), size: manifest.length, bytes: manifest }),
    getBlob: (_repository: string, digest: string) => (digest === sha256(config) ? Promise.resolve({ body: [config] }) : layerBlob(digest)),
  };
}

/** An ImagePuller over `client` pulling from `registry`, retrying a blob after 1 ms. */
function pullerOf(client: ContainerdClient, registry: object, leaseLabels?: Record<string, string>): ImagePuller {
  return new ImagePuller({
    client,
    snapshotter: "overlayfs",
    architecture: "amd64",
    registryClient: () => registry as unknown as RegistryClient,
    blobRetryDelayMs: 1,
    ...(leaseLabels ? { leaseLabels } : {}),
    logger: pino({ level: "silent" }),
  });
}

describe("ImagePuller, a blob whose fetch fails for a moment", () => {
  it("fetches it again (a registry's 5xx, a reset, a stall) instead of failing the pull and throwing away the rest", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client, calls } = containerd(diffId);
    let layerFetches = 0;
    const registry = registryOf(manifest, config, () => {
      layerFetches += 1;
      // The first download breaks off half-way (a reset connection); the second is whole.
      if (layerFetches === 1) {
        return Promise.resolve({
          body: (async function* () {
            await Promise.resolve();
            yield layer.subarray(0, 4);
            throw new UnavailableError("registry registry.test is unreachable (ECONNRESET)");
          })(),
        });
      }
      return Promise.resolve({ body: [layer] });
    });
    const progress: number[] = [];
    const puller = pullerOf(client, registry);
    const pulled = await puller.pull("registry.test/app:1", (report) => progress.push(report.bytesDone));
    assert.equal(pulled.digest, sha256(manifest));
    assert.equal(layerFetches, 2);
    // The failed attempt's ingest was aborted; the retry wrote the blob whole, from its start.
    assert.ok(calls.some((call) => call.method === "content.abort"));
    const layerWrites = calls.filter((call) => call.method === "content.write.WRITE" && (call.request.data as Uint8Array).byteLength === layer.length);
    assert.equal(layerWrites.length, 1);
    // Progress never counts the broken-off bytes twice.
    assert.ok(Math.max(...progress) <= layer.length, progress.join(","));
    // The lease is deleted without a synchronous collection: the pull succeeded.
    assert.deepEqual(calls.find((call) => call.method === "leases.delete")?.request.sync, false);
  });

  it("gives up after a few attempts", async () => {
    const { diffId, config, manifest } = image();
    const { client } = containerd(diffId);
    let layerFetches = 0;
    const registry = registryOf(manifest, config, () => {
      layerFetches += 1;
      return Promise.reject(new UnavailableError("registry registry.test failed fetching blob (HTTP 503); try again later"));
    });
    const puller = pullerOf(client, registry);
    await assert.rejects(puller.pull("registry.test/app:1"), UnavailableError);
    assert.equal(layerFetches, 4);
  });
});

describe("a pull's lease", () => {
  it("holds the blobs the content store has already (a failed pull's, referenced by nothing), not only those written", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client, calls } = containerd(diffId, new Map([layer, config, manifest].map((bytes) => [sha256(bytes), bytes])));
    const registry = {
      registry: "registry.test",
      getManifest: () =>
        Promise.resolve({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(manifest), size: manifest.length, bytes: manifest }),
      getBlob: () => Promise.reject(new Error("nothing is fetched: the store has every blob")),
    };
    const puller = new ImagePuller({
      client,
      snapshotter: "overlayfs",
      architecture: "amd64",
      registryClient: () => registry as unknown as RegistryClient,
      logger: pino({ level: "silent" }),
    });
    await puller.pull("registry.test/app:1");
    const leaseId = calls.find((call) => call.method === "leases.create")?.request.id;
    const held = calls.filter((call) => call.method === "leases.addResource").map((call) => call.request);
    for (const digest of [sha256(layer), sha256(config), sha256(manifest)]) {
      assert.ok(
        held.some(
          (request) =>
            request.id === leaseId &&
            (request.resource as { id: string; type: string }).id === digest &&
            (request.resource as { type: string }).type === "content",
        ),
        digest,
      );
    }
    // Added before the store was asked whether it has the blob: a collection in between cannot take it.
    const first = (method: string, digest: string) =>
      calls.findIndex(
        (call) => call.method === method && (method === "content.info" ? call.request.digest : (call.request.resource as { id: string }).id) === digest,
      );
    assert.ok(first("leases.addResource", sha256(layer)) < first("content.info", sha256(layer)));
  });

  it("holds the layer snapshots already unpacked (a failed pull's), from before they are looked for", async () => {
    const { calls, client } = containerd(sha256("x"));
    const present = new Set<string>();
    (client as unknown as { snapshots: { stat: (request: { key: string }) => Promise<unknown> } }).snapshots.stat = (request) => {
      calls.push({ method: "snapshots.stat", request });
      present.add(request.key);
      return Promise.resolve({});
    };
    const diffId = sha256("x");
    const top = await unpackLayers(client, [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256("l"), size: 1 }], [diffId], {
      snapshotter: "overlayfs",
      leaseId: "lease-1",
    });
    assert.ok(present.has(top));
    const added = calls.findIndex(
      (call) =>
        call.method === "leases.addResource" &&
        (call.request.resource as { id: string; type: string }).id === top &&
        (call.request.resource as { type: string }).type === "snapshots/overlayfs",
    );
    assert.ok(added >= 0 && added < calls.findIndex((call) => call.method === "snapshots.stat"), calls.map((call) => call.method).join(" "));
    assert.equal(calls[added]?.request.id, "lease-1");
  });
});

describe("a long pull (a large layer over a slow link)", () => {
  it("gives a layer's write no total deadline (the registry client's idle guard stops a stalled one) and a lease that outlasts it", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client, calls } = containerd(diffId);
    const writes: ({ timeoutMs?: number; leaseId?: string } | undefined)[] = [];
    const content = (client as unknown as { content: { write: (options?: { timeoutMs?: number }) => unknown } }).content;
    const write = content.write.bind(content);
    content.write = (options) => {
      writes.push(options);
      return write(options);
    };
    const puller = pullerOf(
      client,
      registryOf(manifest, config, () => Promise.resolve({ body: [layer] })),
      { "fast-sandbox.io/agent": "default-0" },
    );
    const started = Date.now();
    await puller.pull("registry.test/app:1");

    // A 4 GB layer at 2 MB/s takes 35 minutes: a deadline on the write would fail it on every try.
    assert.ok(writes.length > 0);
    for (const options of writes) assert.equal(options?.timeoutMs, Number.POSITIVE_INFINITY);
    // The lease is never extended: a garbage collection during the pull must still find it alive.
    const labels = calls.find((call) => call.method === "leases.create")?.request.labels as Record<string, string>;
    const expires = Date.parse(labels["containerd.io/gc.expire"] ?? "");
    assert.ok(expires >= started + 24 * 60 * 60 * 1000, `the pull's lease expires at ${labels["containerd.io/gc.expire"]}`);
    // Its agent's next start finds it by its name, should this process be killed mid-pull.
    assert.equal(labels["fast-sandbox.io/agent"], "default-0");
  });
});

/** An image of `count` layers: its manifest, config, layers and diff IDs; `config` adds to the config. */
function imageOf(count: number, config: Record<string, unknown> = {}, layerMediaType = "application/vnd.oci.image.layer.v1.tar+gzip") {
  const layers = Array.from({ length: count }, (_, i) => Buffer.from(`layer ${i} bytes`));
  const diffIds = layers.map((_, i) => sha256(`uncompressed layer ${i}`));
  const configBytes = Buffer.from(JSON.stringify({ ...config, rootfs: { type: "layers", diff_ids: diffIds } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(configBytes), size: configBytes.length },
      layers: layers.map((layer) => ({ mediaType: layerMediaType, digest: sha256(layer), size: layer.length })),
    }),
  );
  return { layers, diffIds, config: configBytes, manifest };
}

describe("ImagePuller, what it checks before downloading", () => {
  it("holds the config in the pull's lease before it looks for it or reads it", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client, calls } = containerd(diffId, new Map([[sha256(config), config]]));
    const content = (client as unknown as { content: { read: (request: { digest: string }) => AsyncIterable<unknown> } }).content;
    const read = content.read.bind(content);
    content.read = (request) => {
      calls.push({ method: "content.read", request });
      return read(request);
    };
    await pullerOf(
      client,
      registryOf(manifest, config, () => Promise.resolve({ body: [layer] })),
    ).pull("registry.test/app:1");
    const first = (method: string) =>
      calls.findIndex(
        (call) => call.method === method && (call.request.digest ?? (call.request.resource as { id?: string } | undefined)?.id) === sha256(config),
      );
    assert.ok(first("leases.addResource") >= 0);
    assert.ok(first("leases.addResource") < first("content.info"), calls.map((call) => call.method).join(" "));
    assert.ok(first("content.info") < first("content.read"));
  });

  it("refuses a single-platform image for another architecture before fetching its layers", async () => {
    const { layers, diffIds, config, manifest } = imageOf(1, { os: "linux", architecture: "arm64" });
    const { client } = containerd(diffIds[0] ?? "");
    let layerFetches = 0;
    const registry = registryOf(manifest, config, () => {
      layerFetches += 1;
      return Promise.resolve({ body: [layers[0]] });
    });
    await assert.rejects(pullerOf(client, registry).pull("registry.test/app:1"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError, String(error));
      assert.match(error.message, /^image registry\.test\/app:1 is linux\/arm64; this agent runs linux\/amd64: /);
      return true;
    });
    assert.equal(layerFetches, 0);
  });

  it("refuses a layer it cannot unpack (encrypted) before downloading anything", async () => {
    const { diffIds, config, manifest } = imageOf(1, {}, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted");
    const { client } = containerd(diffIds[0] ?? "");
    const fetched: string[] = [];
    const registry = {
      ...registryOf(manifest, config, () => Promise.reject(new Error("not fetched"))),
      getBlob: (_repository: string, digest: string) => {
        fetched.push(digest);
        return Promise.reject(new Error("not fetched"));
      },
    };
    await assert.rejects(pullerOf(client, registry).pull("registry.test/app:1"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError, String(error));
      assert.match(
        error.message,
        /layer 0 \(sha256:[0-9a-f]+\) has media type application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip\+encrypted, which this agent cannot unpack/,
      );
      return true;
    });
    assert.deepEqual(fetched, []);
  });
});

describe("ImagePuller, a manifest whose fetch fails for a moment", () => {
  it("fetches it again", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client } = containerd(diffId);
    let manifestFetches = 0;
    const registry = {
      ...registryOf(manifest, config, () => Promise.resolve({ body: [layer] })),
      getManifest: () => {
        manifestFetches += 1;
        if (manifestFetches === 1)
          return Promise.reject(new UnavailableError("registry registry.test failed fetching the manifest (HTTP 503); try again later"));
        return Promise.resolve({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(manifest), size: manifest.length, bytes: manifest });
      },
    };
    assert.equal((await pullerOf(client, registry).pull("registry.test/app:1")).digest, sha256(manifest));
    assert.equal(manifestFetches, 2);
  });

  it("asks a token service again that failed for a moment (a real registry client, a registry on loopback)", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client } = containerd(diffId);
    let tokenRequests = 0;
    const server = createServer((request, response) => {
      const url = request.url ?? "";
      if (url.startsWith("/token")) {
        tokenRequests += 1;
        if (tokenRequests === 1) response.writeHead(503).end();
        else response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: "t0k3n" }));
        return;
      }
      if (request.headers.authorization !== "Bearer t0k3n") {
        response.writeHead(401, { "www-authenticate": `Bearer realm="http://${request.headers.host}/token",service="test"` }).end();
        return;
      }
      const blobs = new Map([
        [sha256(config), config],
        [sha256(layer), layer],
      ]);
      if (url === "/v2/app/manifests/1") {
        response.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" }).end(manifest);
        return;
      }
      const blob = blobs.get(url.replace("/v2/app/blobs/", ""));
      if (blob) response.writeHead(200, { "content-length": String(blob.length) }).end(blob);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      const puller = new ImagePuller({ client, snapshotter: "overlayfs", architecture: "amd64", blobRetryDelayMs: 1, logger: pino({ level: "silent" }) });
      assert.equal((await puller.pull(`${host}/app:1`)).digest, sha256(manifest));
      assert.equal(tokenRequests, 2);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("ImagePuller, a layer that fails for good", () => {
  // The slow layer never finishes on its own: only its abort ends the pull before the test's timeout.
  it("stops the other layers' downloads instead of waiting for them", { timeout: 10_000 }, async () => {
    const { layers, diffIds, config, manifest } = imageOf(2);
    const { client } = containerd(diffIds[0] ?? "");
    const [slow, missing] = layers.map((layer) => sha256(layer));
    let slowSignal: AbortSignal | undefined;
    const registry = {
      ...registryOf(manifest, config, () => Promise.reject(new Error("unused"))),
      getBlob: (_repository: string, digest: string, signal?: AbortSignal) => {
        if (digest === sha256(config)) return Promise.resolve({ body: [config] });
        if (digest === missing) return Promise.reject(new NotFoundError(`registry registry.test has no blob ${digest}`));
        assert.equal(digest, slow);
        slowSignal = signal;
        // A large layer on a link so slow that it delivers nothing more until the download is aborted.
        return Promise.resolve({
          body: (async function* () {
            yield (layers[0] ?? Buffer.alloc(0)).subarray(0, 2);
            await new Promise<void>((_resolve, reject) => {
              if (signal?.aborted) reject(signal.reason as Error);
              signal?.addEventListener("abort", () => reject(signal.reason as Error));
            });
            yield (layers[0] ?? Buffer.alloc(0)).subarray(2);
          })(),
        });
      },
    };
    await assert.rejects(pullerOf(client, registry).pull("registry.test/app:1"), NotFoundError);
    assert.ok(slowSignal?.aborted, "the slow layer's download was aborted");
  });

  it("fails every waiter of that pull with its error, and leaves the next pull of the image alone (the abort is that pull's own)", async () => {
    const { layer, diffId, config, manifest } = image();
    const { client } = containerd(diffId);
    let missing = true;
    const puller = pullerOf(
      client,
      registryOf(manifest, config, (digest) =>
        missing ? Promise.reject(new NotFoundError(`registry registry.test has no blob ${digest}`)) : Promise.resolve({ body: [layer] }),
      ),
    );
    const waiters = [puller.pull("registry.test/app:1", () => undefined), puller.pull("registry.test/app:1")];
    for (const waiter of waiters) await assert.rejects(waiter, NotFoundError);
    missing = false;
    assert.equal((await puller.pull("registry.test/app:1")).digest, sha256(manifest));
  });
});

describe("ImagePuller, bytes that do not match their digest", () => {
  /** A containerd whose COMMIT of the layer finds another digest the first `mismatches` times. */
  function mismatching(diffId: string, layerDigest: string, mismatches: number) {
    const fake = containerd(diffId);
    const content = (
      fake.client as unknown as {
        content: { write: (options?: unknown) => { exchange: (request: { action: WriteAction; ref?: string }) => Promise<unknown> } };
      }
    ).content;
    const write = content.write.bind(content);
    let ref = "";
    let left = mismatches;
    content.write = (options) => {
      const stream = write(options);
      const exchange = stream.exchange.bind(stream);
      stream.exchange = (request) => {
        if (request.action === WriteAction.STAT) ref = request.ref ?? "";
        if (request.action === WriteAction.COMMIT && ref === `layer-${layerDigest}` && left > 0) {
          left -= 1;
          return Promise.reject(
            new FailedPreconditionError(
              `containerd containerd.services.content.v1.Content/Write: unexpected commit digest sha256:${"1".repeat(64)}, expected ${layerDigest}: failed precondition`,
            ),
          );
        }
        return exchange(request);
      };
      return stream;
    };
    return fake;
  }

  it("fetches the layer once more, and says the registry served wrong bytes when they are wrong again", async () => {
    const { layer, diffId, config, manifest } = image();
    let layerFetches = 0;
    const registry = registryOf(manifest, config, () => {
      layerFetches += 1;
      return Promise.resolve({ body: [layer] });
    });
    const once = mismatching(diffId, sha256(layer), 1);
    assert.equal((await pullerOf(once.client, registry).pull("registry.test/app:1")).digest, sha256(manifest));
    assert.equal(layerFetches, 2);

    layerFetches = 0;
    const always = mismatching(diffId, sha256(layer), 10);
    await assert.rejects(pullerOf(always.client, registry).pull("registry.test/app:1"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, new RegExp(`^registry registry\\.test served bytes that do not match ${sha256(layer)}; try again`));
      return true;
    });
    assert.equal(layerFetches, 2);
  });
});
