import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname, networkInterfaces } from "node:os";
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
/** DNS for the made-up hosts a registry sends the agent to: an address elsewhere (TEST-NET-3, never contacted). */
const elsewhere = () => Promise.resolve([{ address: "203.0.113.7", family: 4 }]);

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
        new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch, lookup: elsewhere, requestTimeoutMs: 5000 }).getManifest(
          "team/app",
          "v1",
        ),
        (error: unknown) => {
          assert.ok(error instanceof UnavailableError, String(error));
          assert.match(
            error.message,
            /the token service of registry registry\.example \(https:\/\/auth\.example\/token\) answered with more than 1048576 bytes/,
          );
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
    const client = new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch, lookup: elsewhere });
    await assert.rejects(client.getBlob("team/app", BLOB_DIGEST), (error: unknown) => {
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

/** This machine's first address that is not loopback (an interface a remote registry must not lead to), if it has one. */
function ownAddress(): { address: string; family: number } | undefined {
  for (const entries of Object.values(networkInterfaces())) {
    const entry = entries?.find((e) => !e.internal);
    if (entry) return { address: entry.address, family: entry.family === "IPv6" ? 6 : 4 };
  }
  return undefined;
}

describe("RegistryClient, where a remote registry sends the agent", () => {
  const own = ownAddress();
  /** Names that resolve to this host (as the machine's hostname does through /etc/hosts), and one that does not. */
  const names: Record<string, { address: string; family: number }[]> = {
    "vm.example": [{ address: "127.0.0.1", family: 4 }],
    "v6.example": [{ address: "::1", family: 6 }],
    "mapped.example": [{ address: "::ffff:127.0.0.1", family: 6 }],
    "zero.example": [{ address: "0.0.0.0", family: 4 }],
    // One good answer does not make up for one that is this host.
    "mixed.example": [
      { address: "203.0.113.7", family: 4 },
      { address: "127.0.0.1", family: 4 },
    ],
    ...(own ? { "own.example": [own] } : {}),
  };
  const lookup = (name: string) => Promise.resolve(names[name] ?? [{ address: "203.0.113.7", family: 4 }]);

  it("does not follow a redirect to a name that resolves to this host (loopback, unspecified, its own interfaces)", async () => {
    for (const [name, addresses] of Object.entries(names)) {
      const { fetch, seen } = fakeFetch(() => new Response(null, { status: 307, headers: { location: `https://${name}:8443/internal` } }));
      await assert.rejects(new RegistryClient({ registry: "registry.example", fetch, lookup }).getBlob("team/app", BLOB_DIGEST), (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(
          error.message,
          new RegExp(`redirected to https://${name}:8443, which is this host \\(.+\\), although registry registry\\.example is not on loopback`),
        );
        return true;
      });
      assert.equal(seen.length, 1, `${name} (${addresses.map((a) => a.address).join(", ")}) was not requested`);
    }
  });

  it("does not ask a token realm at a name that resolves to this host, with the credentials or at all", async () => {
    for (const name of Object.keys(names)) {
      const { fetch, seen } = fakeFetch(() => new Response(null, { status: 401, headers: { "www-authenticate": `Bearer realm="https://${name}/token"` } }));
      await assert.rejects(
        new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch, lookup }).getManifest("team/app", "v1"),
        (error: unknown) => {
          assert.ok(error instanceof UnavailableError, String(error));
          assert.match(error.message, /asks for a token from .*, which is this host .*; refusing to ask there/);
          return true;
        },
      );
      assert.equal(seen.length, 1, `${name} was not asked`);
    }
  });

  it("does not follow a redirect to this machine's own hostname (resolved by the system)", async () => {
    const { fetch, seen } = fakeFetch(() => new Response(null, { status: 307, headers: { location: `https://${hostname()}:8443/internal` } }));
    await assert.rejects(new RegistryClient({ registry: "registry.example", fetch }).getBlob("team/app", BLOB_DIGEST), UnavailableError);
    assert.equal(seen.length, 1);
  });

  it("still follows a redirect elsewhere, and the registry's own realm", async () => {
    const { fetch, seen } = fakeFetch((url) => {
      if (url.pathname === "/token") return Response.json({ token: "t0k3n" });
      if (url.hostname === "registry.example" && !seen.at(-1)?.authorization) {
        return new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="https://registry.example/token"' } });
      }
      if (url.hostname === "registry.example") return new Response(null, { status: 307, headers: { location: "https://storage.example/blob" } });
      return new Response("layer");
    });
    const blob = await new RegistryClient({ registry: "registry.example", fetch, lookup }).getBlob("team/app", BLOB_DIGEST);
    const chunks: Uint8Array[] = [];
    for await (const chunk of blob.body) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), "layer");
    assert.deepEqual(
      seen.map((r) => r.url.origin + r.url.pathname),
      [
        `https://registry.example/v2/team/app/blobs/${BLOB_DIGEST}`,
        "https://registry.example/token",
        `https://registry.example/v2/team/app/blobs/${BLOB_DIGEST}`,
        "https://storage.example/blob",
      ],
    );
  });
});

describe("RegistryClient, connecting where it checked", () => {
  let registryServer: Server;
  let storage: Server;
  const storageHosts: string[] = [];
  before(async () => {
    storage = createServer((request, response) => {
      storageHosts.push(request.headers.host ?? "");
      response.end("layer");
    });
    await new Promise<void>((resolve) => storage.listen(0, "127.0.0.1", resolve));
    const storagePort = (storage.address() as AddressInfo).port;
    registryServer = createServer((_request, response) => {
      response.writeHead(307, { location: `http://pinned.test:${storagePort}/blob` }).end();
    });
    await new Promise<void>((resolve) => registryServer.listen(0, "127.0.0.1", resolve));
  });
  after(async () => {
    for (const server of [registryServer, storage]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("connects to the address it resolved and checked, whatever a second DNS answer would say", async () => {
    const lookups: string[] = [];
    // The first answer is loopback (allowed: the registry is on loopback itself); any later one is elsewhere.
    const lookup = (name: string) => {
      lookups.push(name);
      return Promise.resolve([{ address: lookups.length === 1 ? "127.0.0.1" : "203.0.113.7", family: 4 }]);
    };
    const registry = `127.0.0.1:${(registryServer.address() as AddressInfo).port}`;
    const blob = await new RegistryClient({ registry, lookup, requestTimeoutMs: 2000 }).getBlob("team/app", BLOB_DIGEST);
    const chunks: Uint8Array[] = [];
    for await (const chunk of blob.body) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), "layer");
    assert.deepEqual(lookups, ["pinned.test"]);
    // The request named the host it was for (TLS would verify that name too).
    assert.deepEqual(storageHosts, [`pinned.test:${(storage.address() as AddressInfo).port}`]);
  });

  it("refuses plain HTTP to a name that does not resolve to loopback, even from a registry on loopback", async () => {
    const registry = `127.0.0.1:${(registryServer.address() as AddressInfo).port}`;
    const lookup = () => Promise.resolve([{ address: "203.0.113.7", family: 4 }]);
    await assert.rejects(new RegistryClient({ registry, lookup }).getBlob("team/app", BLOB_DIGEST), /neither HTTPS nor on loopback; refusing to follow/);
  });
});

describe("RegistryClient's errors", () => {
  it("reports a 403 from storage a redirect led to as that storage's refusal, to be tried again", async () => {
    const { fetch } = fakeFetch((url) =>
      url.hostname === "registry.example"
        ? new Response(null, { status: 307, headers: { location: "https://bucket.storage.example/blob?X-Amz-Signature=abc" } })
        : new Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", { status: 403 }),
    );
    await assert.rejects(
      new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch, lookup: elsewhere }).getBlob("team/app", BLOB_DIGEST),
      (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(
          error.message,
          /^storage at https:\/\/bucket\.storage\.example refused the redirected download \(HTTP 403\) fetching blob sha256:0+ from registry registry\.example; try again later/,
        );
        return true;
      },
    );
  });

  it("tells a repository the granted token does not cover (missing, or not the user's) from refused credentials", async () => {
    const { fetch } = fakeFetch((url) => {
      if (url.pathname === "/token") return Response.json({ token: "t0k3n" });
      return new Response(null, {
        status: 401,
        headers: {
          "www-authenticate": 'Bearer realm="https://registry.example/token",service="registry",scope="repository:nosuch/repo:pull",error="insufficient_scope"',
        },
      });
    });
    await assert.rejects(
      new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch }).getManifest("nosuch/repo", "latest"),
      (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, String(error));
        assert.match(error.message, /^registry registry\.example has no repository nosuch\/repo, or user "alice" may not pull it/);
        assert.doesNotMatch(error.message, /refused the credentials/);
        return true;
      },
    );
  });

  it("refuses a token with characters a bearer token cannot have, without quoting it or sending it", async () => {
    const { fetch, seen } = fakeFetch((url) => {
      if (url.pathname === "/token") return Response.json({ token: "SECRET-eyJhbGciOi\npayload.sig" });
      return new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="https://registry.example/token"' } });
    });
    await assert.rejects(new RegistryClient({ registry: "registry.example", credentials: ALICE, fetch }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(
        error.message,
        /the token service of registry registry\.example \(https:\/\/registry\.example\/token\) answered with a token that is not a valid bearer token/,
      );
      assert.doesNotMatch(error.message, /SECRET/);
      return true;
    });
    assert.ok(!seen.some((r) => r.authorization?.startsWith("Bearer")));
  });

  it("never makes a message of a header value fetch refused (it quotes the value)", async () => {
    const fetch: typeof globalThis.fetch = () => Promise.reject(new TypeError('Headers.append: "Bearer SECRET" is an invalid header value.'));
    await assert.rejects(new RegistryClient({ registry: "registry.example", fetch }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.doesNotMatch(error.message, /SECRET/);
      assert.equal((error as { cause?: unknown }).cause, undefined);
      assert.match(
        error.message,
        /could not send a request to https:\/\/registry\.example\/v2\/team\/app\/manifests\/v1: one of its header values is not valid/,
      );
      return true;
    });
  });

  it("refuses a schema 1 manifest served as application/json clearly", async () => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 1, name: "team/app", tag: "v1", fsLayers: [], history: [] }));
    const { fetch } = fakeFetch(() => new Response(body, { headers: { "content-type": "application/json" } }));
    await assert.rejects(new RegistryClient({ registry: "registry.example", fetch }).getManifest("team/app", "v1"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError, String(error));
      assert.match(error.message, /registry\.example\/team\/app:v1 is a Docker schema 1 image, which is not supported/);
      return true;
    });
  });

  it("names the token service it could not reach, not the registry", async () => {
    const refused = fakeFetch((url) => {
      if (url.hostname === "auth.example")
        throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) });
      return new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="https://auth.example/token",service="registry"' } });
    });
    await assert.rejects(
      new RegistryClient({ registry: "registry.example", fetch: refused.fetch, lookup: elsewhere }).getManifest("team/app", "v1"),
      /the token service of registry registry\.example is unreachable at https:\/\/auth\.example\/token \(ECONNREFUSED\)/,
    );
    // A name that does not resolve: the lookup fails before anything is sent.
    const notFound = () => Promise.reject(Object.assign(new Error("getaddrinfo ENOTFOUND auth.example"), { code: "ENOTFOUND" }));
    await assert.rejects(
      new RegistryClient({ registry: "registry.example", fetch: refused.fetch, lookup: notFound }).getManifest("team/app", "v1"),
      (error: unknown) =>
        error instanceof UnavailableError &&
        /^the token service of registry registry\.example is unreachable at https:\/\/auth\.example\/token \(ENOTFOUND\)/.test(error.message),
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
