import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import { FailedPreconditionError, NotFoundError, PermissionDeniedError, UnauthenticatedError, UnavailableError } from "@fast-sandbox/api";
import { MEDIA_TYPE_OCI_MANIFEST, RegistryClient, isLoopbackRegistry, registryBaseUrl } from "./registry-client.js";

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, config: {}, layers: [] }));
const MANIFEST_DIGEST = `sha256:${createHash("sha256").update(MANIFEST).digest("hex")}`;
const BLOB = Buffer.from("layer bytes ".repeat(1000));
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

/**
 * A small stand-in for the parts of a registry that differ between registries (the distribution
 * server of the e2e tests only speaks Basic auth): a bearer token service, 403s, stalls.
 */
class TestRegistry {
  server: Server | undefined;
  registry = "";
  mode: "bearer" | "basic" | "open" = "bearer";
  requests: { url: string; authorization: string | undefined }[] = [];
  stallBlob = false;
  stallManifest = false;
  forbid = false;

  async start(): Promise<void> {
    this.server = createServer((request, response) => this.handle(request, response));
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    this.registry = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const url = request.url ?? "";
    const authorization = request.headers.authorization;
    this.requests.push({ url, authorization });
    if (url.startsWith("/token")) {
      const query = new URL(url, "http://x").searchParams;
      assert.equal(query.get("service"), "test-registry");
      assert.equal(query.get("scope"), "repository:team/app:pull");
      if (authorization !== undefined && authorization !== basic("alice", "right")) {
        response.writeHead(401).end();
        return;
      }
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify(authorization ? { token: "alice-token" } : { access_token: "anonymous-token" }));
      return;
    }
    const authorized =
      this.mode === "open" ||
      (this.mode === "bearer" && authorization === "Bearer alice-token") ||
      (this.mode === "basic" && authorization === basic("alice", "right"));
    if (!authorized) {
      const challenge =
        this.mode === "bearer" ? `Bearer realm="http://${this.registry}/token",service="test-registry",scope="repository:team/app:pull"` : 'Basic realm="test"';
      response.writeHead(401, { "www-authenticate": challenge, "content-type": "application/json" });
      response.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
      return;
    }
    if (this.forbid) {
      response.writeHead(403, { "content-type": "application/json" });
      response.end(JSON.stringify({ errors: [{ code: "DENIED", message: "requested access to the resource is denied" }] }));
      return;
    }
    if (url === "/v2/team/app/blobs/sha256:moved") {
      response.writeHead(307, { location: "/v2/team/app/blobs/sha256:blob" }).end();
      return;
    }
    if (url === "/v2/team/app/blobs/sha256:insecure") {
      // A registry sending its blobs to plain HTTP elsewhere (the address is never contacted).
      response.writeHead(307, { location: "http://203.0.113.7/blob" }).end();
      return;
    }
    if (this.stallManifest && url === "/v2/team/app/manifests/v1") {
      response.writeHead(200, { "content-type": MEDIA_TYPE_OCI_MANIFEST, "content-length": String(MANIFEST.length) });
      response.write(MANIFEST.subarray(0, 5));
      return;
    }
    if (url === "/v2/team/app/manifests/v1" || url === `/v2/team/app/manifests/${MANIFEST_DIGEST}`) {
      response.writeHead(200, { "content-type": MEDIA_TYPE_OCI_MANIFEST, "docker-content-digest": MANIFEST_DIGEST });
      response.end(MANIFEST);
      return;
    }
    if (url === "/v2/team/app/blobs/sha256:blob") {
      response.writeHead(200, { "content-length": String(BLOB.length) });
      if (this.stallBlob) response.write(BLOB.subarray(0, 10));
      else response.end(BLOB);
      return;
    }
    response.writeHead(404, { "content-type": "application/json" });
    response.end(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

describe("RegistryClient", () => {
  const registry = new TestRegistry();
  before(() => registry.start());
  after(() => registry.stop());
  beforeEach(() => {
    registry.mode = "bearer";
    registry.requests = [];
    registry.stallBlob = false;
    registry.stallManifest = false;
    registry.forbid = false;
  });

  const client = (credentials?: { username: string; password: string }, extra: { idleTimeoutMs?: number; requestTimeoutMs?: number } = {}) =>
    new RegistryClient({ registry: registry.registry, ...(credentials ? { credentials } : {}), ...extra });

  it("gets a token from the challenge's realm with Basic credentials, then fetches with it", async () => {
    const manifest = await client({ username: "alice", password: "right" }).getManifest("team/app", "v1");
    assert.equal(manifest.digest, MANIFEST_DIGEST);
    assert.equal(manifest.mediaType, MEDIA_TYPE_OCI_MANIFEST);
    assert.deepEqual(Buffer.from(manifest.bytes), MANIFEST);
    assert.deepEqual(
      registry.requests.map((r) => [r.url.split("?")[0], r.authorization]),
      [
        ["/v2/team/app/manifests/v1", undefined],
        ["/token", basic("alice", "right")],
        ["/v2/team/app/manifests/v1", "Bearer alice-token"],
      ],
    );
  });

  it("reuses the token for the repository's next requests", async () => {
    const c = client({ username: "alice", password: "right" });
    await c.getManifest("team/app", "v1");
    const blob = await c.getBlob("team/app", "sha256:blob");
    const chunks: Uint8Array[] = [];
    for await (const chunk of blob.body) chunks.push(chunk);
    assert.deepEqual(Buffer.concat(chunks), BLOB);
    assert.equal(blob.size, BLOB.length);
    assert.equal(registry.requests.filter((r) => r.url.startsWith("/token")).length, 1);
  });

  it("says which login to run when the token service refuses the credentials", async () => {
    await assert.rejects(client({ username: "alice", password: "wrong" }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError);
      assert.match(
        error.message,
        new RegExp(`registry ${registry.registry} refused the credentials of user "alice" for team/app: run 'fsb login ${registry.registry}`),
      );
      return true;
    });
  });

  it("says credentials are needed when an anonymous token is not enough", async () => {
    await assert.rejects(client().getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError);
      assert.match(error.message, /requires credentials for team\/app \(or it does not exist there\): run 'fsb login/);
      return true;
    });
    // The anonymous token was asked for without credentials.
    assert.equal(registry.requests.find((r) => r.url.startsWith("/token"))?.authorization, undefined);
  });

  it("answers a Basic challenge with the credentials, and refuses wrong ones clearly", async () => {
    registry.mode = "basic";
    assert.equal((await client({ username: "alice", password: "right" }).getManifest("team/app", "v1")).digest, MANIFEST_DIGEST);
    await assert.rejects(client({ username: "alice", password: "nope" }).getManifest("team/app", "v1"), /refused the credentials of user "alice"/);
    await assert.rejects(client().getManifest("team/app", "v1"), /requires credentials for team\/app/);
  });

  it("reports an unknown tag as NotFoundError naming image, tag and the registry's reason", async () => {
    registry.mode = "open";
    await assert.rejects(client().getManifest("team/app", "nope"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(
        error.message,
        `image ${registry.registry}/team/app:nope not found: the registry has no tag "nope" in repository team/app (MANIFEST_UNKNOWN: manifest unknown); check the image name and tag`,
      );
      return true;
    });
  });

  it("fetches by digest and verifies the bytes against it", async () => {
    registry.mode = "open";
    assert.equal((await client().getManifest("team/app", MANIFEST_DIGEST)).digest, MANIFEST_DIGEST);
  });

  it("reports a denied repository as PermissionDeniedError", async () => {
    registry.mode = "open";
    registry.forbid = true;
    await assert.rejects(client().getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError);
      assert.match(error.message, /denied anonymous pulls access to team\/app \(DENIED: requested access to the resource is denied\): run 'fsb login/);
      return true;
    });
  });

  it("reports a registry nobody listens on as UnavailableError", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(new RegistryClient({ registry: `127.0.0.1:${port}` }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, new RegExp(`registry 127.0.0.1:${port} is unreachable at http://127.0.0.1:${port} \\(ECONNREFUSED\\)`));
      return true;
    });
  });

  it("gives up a blob download that stalls", async () => {
    registry.mode = "open";
    registry.stallBlob = true;
    const blob = await client(undefined, { idleTimeoutMs: 200 }).getBlob("team/app", "sha256:blob");
    await assert.rejects(
      (async () => {
        for await (const _chunk of blob.body) {
          // keep reading until it stalls
        }
      })(),
      (error: unknown) => error instanceof UnavailableError && /sent nothing of blob sha256:blob .* for 0.2 s/.test(error.message),
    );
  });
  it("follows a redirect on the same registry, and keeps the token there", async () => {
    const blob = await client({ username: "alice", password: "right" }).getBlob("team/app", "sha256:moved");
    const chunks: Uint8Array[] = [];
    for await (const chunk of blob.body) chunks.push(chunk);
    assert.deepEqual(Buffer.concat(chunks), BLOB);
    const followed = registry.requests.filter((r) => r.url === "/v2/team/app/blobs/sha256:blob");
    assert.equal(followed.at(-1)?.authorization, "Bearer alice-token");
  });

  it("refuses a redirect to plain HTTP off loopback instead of following it", async () => {
    await assert.rejects(client({ username: "alice", password: "right" }).getBlob("team/app", "sha256:insecure"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /neither HTTPS nor on loopback; refusing to follow/);
      return true;
    });
  });

  it("gives up on a manifest whose body stalls, within the request timeout", async () => {
    registry.mode = "open";
    registry.stallManifest = true;
    await assert.rejects(client(undefined, { requestTimeoutMs: 300 }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /did not arrive within/);
      return true;
    });
  });
});

/**
 * A body that goes on as long as it is read, `chunkBytes` a pull (each after a millisecond, so that a
 * client reading it whole fills memory slowly), and records whether it was cancelled. The test
 * stops it in the end: a client that never cancels it must fail the test, not keep it running.
 */
function endlessBody(chunkBytes: number) {
  const state = { pulledBytes: 0, cancelled: false, stopped: false };
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        if (state.stopped) return controller.close();
        controller.enqueue(new Uint8Array(chunkBytes).fill(0x20));
        state.pulledBytes += chunkBytes;
      },
      cancel() {
        state.cancelled = true;
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, state };
}

/** A body whose next chunk never comes. */
function stalledBody() {
  const state = { cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    pull: () => new Promise<void>(() => undefined),
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

interface SeenRequest {
  url: URL;
  authorization: string | undefined;
  signal: AbortSignal | undefined;
}

/** A fetch answering from `route`, recording every request it was asked. */
function fakeFetch(route: (url: URL) => Response): { fetch: typeof fetch; seen: SeenRequest[] } {
  const seen: SeenRequest[] = [];
  const fetchStub: typeof fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : input);
    const headers = new Headers(init?.headers);
    seen.push({ url, authorization: headers.get("authorization") ?? undefined, signal: init?.signal ?? undefined });
    return Promise.resolve(route(url));
  };
  return { fetch: fetchStub, seen };
}

const ALICE = { username: "alice", password: "right" };
const BLOB_DIGEST = `sha256:${"0".repeat(64)}`;

describe("RegistryClient against a hostile registry", () => {
  it("stops reading a manifest once it passes 4 MiB, and ends its download", async () => {
    const { stream, state } = endlessBody(64 * 1024);
    const { fetch, seen } = fakeFetch(() => new Response(stream, { headers: { "content-type": MEDIA_TYPE_OCI_MANIFEST } }));
    try {
      await assert.rejects(
        new RegistryClient({ registry: "registry.example", fetch, requestTimeoutMs: 5000 }).getManifest("team/app", "v1"),
        (error: unknown) => {
          assert.ok(error instanceof FailedPreconditionError, String(error));
          assert.match(error.message, /the manifest of registry\.example\/team\/app:v1 is larger than 4194304 bytes/);
          return true;
        },
      );
      assert.ok(state.cancelled, "the body was cancelled");
      assert.ok(state.pulledBytes <= 4 * 1024 * 1024 + 64 * 1024, `read ${state.pulledBytes} bytes`);
      assert.ok(seen[0]?.signal?.aborted, "the fetch was aborted");
    } finally {
      state.stopped = true;
    }
  });

  it("stops reading a token answer once it passes 1 MiB", async () => {
    const { stream, state } = endlessBody(64 * 1024);
    const { fetch } = fakeFetch((url) =>
      url.hostname === "auth.example"
        ? new Response(stream, { headers: { "content-type": "application/json" } })
        : new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="https://auth.example/token",service="registry"' } }),
    );
    try {
      await assert.rejects(
        new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch, requestTimeoutMs: 5000 }).getManifest("team/app", "v1"),
        (error: unknown) => {
          assert.ok(error instanceof UnavailableError, String(error));
          assert.match(error.message, /the token service of registry registry\.example answered with more than 1048576 bytes/);
          return true;
        },
      );
      assert.ok(state.cancelled, "the body was cancelled");
      assert.ok(state.pulledBytes <= 1024 * 1024 + 64 * 1024, `read ${state.pulledBytes} bytes`);
    } finally {
      state.stopped = true;
    }
  });

  it("reads only the first 4 KiB of an error body", async () => {
    const { stream, state } = endlessBody(1024);
    const { fetch, seen } = fakeFetch(() => new Response(stream, { status: 404, headers: { "content-type": "application/json" } }));
    try {
      await assert.rejects(new RegistryClient({ registry: "registry.example", fetch }).getManifest("team/app", "v1"), (error: unknown) => {
        assert.ok(error instanceof NotFoundError, String(error));
        assert.match(error.message, /the registry has no tag "v1" in repository team\/app; check the image name and tag/);
        return true;
      });
      assert.ok(state.cancelled, "the body was cancelled");
      assert.ok(state.pulledBytes <= 4096 + 1024, `read ${state.pulledBytes} bytes`);
      assert.ok(seen[0]?.signal?.aborted, "the fetch was aborted");
    } finally {
      state.stopped = true;
    }
  });

  it("ends the download of a manifest whose body stalls past the request timeout", async () => {
    const { stream, state } = stalledBody();
    const { fetch, seen } = fakeFetch(() => new Response(stream, { headers: { "content-type": MEDIA_TYPE_OCI_MANIFEST } }));
    await assert.rejects(new RegistryClient({ registry: "registry.example", fetch, requestTimeoutMs: 200 }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /the answer's body did not arrive within 0.2 s/);
      return true;
    });
    assert.ok(state.cancelled, "the body was cancelled");
    assert.ok(seen[0]?.signal?.aborted, "the fetch was aborted");
  });

  it("does not answer a challenge from the host a redirect led to with the registry's credentials", async () => {
    const { fetch, seen } = fakeFetch((url) => {
      if (url.hostname === "registry.example") return new Response(null, { status: 307, headers: { location: "https://storage.example/blob" } });
      if (url.pathname === "/token") return Response.json({ token: "storage-token" });
      return new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="https://storage.example/token"' } });
    });
    await assert.rejects(new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch }).getBlob("team/app", BLOB_DIGEST), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /redirected \/v2\/team\/app\/blobs\/sha256:0+ to https:\/\/storage\.example, which asks for credentials \(HTTP 401\)/);
      return true;
    });
    assert.deepEqual(
      seen.map((r) => [r.url.origin + r.url.pathname, r.authorization]),
      [
        [`https://registry.example/v2/team/app/blobs/${BLOB_DIGEST}`, undefined],
        ["https://storage.example/blob", undefined],
      ],
    );
  });

  it("does not follow a remote registry's redirect to this host, over HTTP or HTTPS", async () => {
    for (const location of [
      "http://127.0.0.1:2375/containers/json",
      "https://127.0.0.1:8443/",
      "https://localhost/",
      "https://[::1]/",
      "https://0.0.0.0/",
      "https://2130706433/",
    ]) {
      const { fetch, seen } = fakeFetch(() => new Response(null, { status: 307, headers: { location } }));
      await assert.rejects(new RegistryClient({ registry: "registry.example", fetch }).getBlob("team/app", BLOB_DIGEST), (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(error.message, /refusing to follow/);
        return true;
      });
      assert.equal(seen.length, 1, `${location} was not requested`);
    }
  });

  it("does not ask a token realm on this host for a remote registry", async () => {
    for (const realm of ["http://127.0.0.1:8080/token", "https://localhost/token"]) {
      const { fetch, seen } = fakeFetch(() => new Response(null, { status: 401, headers: { "www-authenticate": `Bearer realm="${realm}"` } }));
      await assert.rejects(new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch }).getManifest("team/app", "v1"), (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(error.message, /asks for a token from .*; refusing to ask there/);
        return true;
      });
      assert.equal(seen.length, 1, `${realm} was not requested`);
    }
  });

  it("lets a registry on loopback redirect to another port of loopback over plain HTTP", async () => {
    const { fetch, seen } = fakeFetch((url) =>
      url.port === "5000" ? new Response(null, { status: 307, headers: { location: "http://127.0.0.1:5001/blob" } }) : new Response("layer"),
    );
    const blob = await new RegistryClient({ registry: "127.0.0.1:5000", fetch }).getBlob("team/app", BLOB_DIGEST);
    const chunks: Uint8Array[] = [];
    for await (const chunk of blob.body) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), "layer");
    assert.deepEqual(
      seen.map((r) => r.url.origin),
      ["http://127.0.0.1:5000", "http://127.0.0.1:5001"],
    );
  });
});

describe("registry addressing", () => {
  it("speaks plain HTTP to loopback registries only", () => {
    for (const registry of ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "localhost", "[::1]:5000"]) assert.ok(isLoopbackRegistry(registry), registry);
    for (const registry of ["ghcr.io", "128.0.0.1:5000", "localhost.example.com", "127.0.0.1.nip.io", "[::2]:5000"]) {
      assert.ok(!isLoopbackRegistry(registry), registry);
    }
    assert.equal(registryBaseUrl("127.0.0.1:5000"), "http://127.0.0.1:5000");
    assert.equal(registryBaseUrl("ghcr.io"), "https://ghcr.io");
    assert.equal(registryBaseUrl("docker.io"), "https://registry-1.docker.io");
  });
});
