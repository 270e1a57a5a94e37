import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttp1Server } from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  API_VERSION,
  NotFoundError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  listenCleartext,
  pb,
  requireBearerToken,
  sandboxSpecFromMessage,
  sandboxToMessage,
  toConnectError,
  validateSandbox,
  type CleartextServer,
} from "@fast-sandbox/api";
import { requestSandboxName } from "./create-request.js";
import { FastSandboxClient } from "./fast-sandbox-client.js";

const TOKEN = "sdk-spec-token-0123456789";
/** Nothing listens on port 1: a call that reached the network would fail with UnavailableError. */
const UNREACHABLE = "http://127.0.0.1:1";

/** Closes the client's connection where the client supports it. */
function closeClient(client: FastSandboxClient): void {
  (client as unknown as { close?: () => void }).close?.();
}

describe("FastSandboxClient options", () => {
  const saved = {
    FSB_URL: process.env.FSB_URL,
    FSB_TOKEN: process.env.FSB_TOKEN,
    FSB_DATA_DIR: process.env.FSB_DATA_DIR,
  };
  let dataDir: string;
  beforeEach(() => {
    delete process.env.FSB_URL;
    delete process.env.FSB_TOKEN;
    // A data directory without a running `fsb up`: what this host runs is not found instead.
    dataDir = mkdtempSync(join(tmpdir(), "fsb-sdk-client-"));
    process.env.FSB_DATA_DIR = dataDir;
  });
  afterEach(() => {
    rmSync(dataDir, { recursive: true, force: true });
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it("refuses to start without a url, naming the option and FSB_URL", () => {
    assert.throws(
      () => new FastSandboxClient({ token: TOKEN }),
      (error: unknown) => error instanceof ValidationError && error.field === "url" && /set FSB_URL/.test(error.message),
    );
  });

  it("refuses to start without a token, naming the option and FSB_TOKEN", () => {
    assert.throws(
      () => new FastSandboxClient({ url: UNREACHABLE }),
      (error: unknown) => error instanceof ValidationError && error.field === "token" && /set FSB_TOKEN/.test(error.message),
    );
  });

  it("falls back to FSB_URL and FSB_TOKEN", () => {
    process.env.FSB_URL = UNREACHABLE;
    process.env.FSB_TOKEN = TOKEN;
    const client = new FastSandboxClient();
    assert.equal(client.url, UNREACHABLE);
    closeClient(client);
  });

  it("prefers explicit options over the environment", () => {
    process.env.FSB_URL = "http://127.0.0.1:2";
    process.env.FSB_TOKEN = TOKEN;
    const client = new FastSandboxClient({ url: UNREACHABLE });
    assert.equal(client.url, UNREACHABLE);
    closeClient(client);
  });
});

describe("FastSandboxClient against a server that is not HTTP/2", () => {
  it("fails the call and survives close(): the session's late error is not thrown at the program", async () => {
    const server = createHttp1Server((_request, response) => response.end("hello"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const uncaught: unknown[] = [];
    const record = (error: unknown): void => {
      uncaught.push(error);
    };
    process.on("uncaughtException", record);
    try {
      const client = new FastSandboxClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: TOKEN });
      await assert.rejects(client.sandboxes.list());
      client.close();
      // Node emits the failed session's error when its socket has closed, after close() returned.
      await delay(300);
      assert.deepEqual(uncaught.map(String), []);
    } finally {
      process.off("uncaughtException", record);
      server.close();
    }
  });
});

describe("sandboxes.create checks ports before sending", () => {
  for (const [ports, index] of [
    [[70000], 0],
    [[80, 0], 1],
    [[80, 443, 8080.5], 2],
  ] as const) {
    it(`rejects ${JSON.stringify(ports)} with a ValidationError naming spec.exposedPorts[${index}]`, async () => {
      const client = new FastSandboxClient({ url: UNREACHABLE, token: TOKEN });
      try {
        await assert.rejects(
          client.sandboxes.create({
            pool: "default",
            image: "x",
            exposedPorts: [...ports],
          }),
          (error: unknown) => {
            assert.ok(error instanceof ValidationError, String(error));
            assert.equal(error.field, `spec.exposedPorts[${index}]`);
            assert.match(error.message, /is out of range; allowed: 1\.\.65535/);
            return true;
          },
        );
      } finally {
        closeClient(client);
      }
    });
  }

  it("does send valid ports (and so fails with unavailable against a closed port)", async () => {
    const client = new FastSandboxClient({
      url: UNREACHABLE,
      token: TOKEN,
      httpVersion: "1.1",
    });
    try {
      await assert.rejects(
        client.sandboxes.create({
          pool: "default",
          image: "x",
          exposedPorts: [1, 65535],
        }),
        UnavailableError,
      );
    } finally {
      closeClient(client);
    }
  });
});

describe("FastSandboxClient against an in-process control plane", () => {
  let server: CleartextServer;
  let lastCreate: pb.CreateSandboxRequest | undefined;
  let lastPull: pb.PullImageRequest | undefined;

  before(async () => {
    const handler = connectNodeAdapter({
      interceptors: [requireBearerToken(TOKEN)],
      routes: ({ service }) => {
        service(pb.SandboxService, {
          createSandbox(request, context) {
            lastCreate = request;
            context.responseHeader.set("fsb-access-token", `token-of-${request.name}`);
            return sandboxToMessage({
              apiVersion: API_VERSION,
              kind: "Sandbox",
              metadata: {
                name: request.name || "generated",
                namespace: request.namespace || "default",
                labels: request.labels,
              },
              spec: sandboxSpecFromMessage(request.spec),
              status: { phase: "Running", assignedPod: "agent-0" },
            });
          },
          getSandbox(request) {
            throw toConnectError(new NotFoundError(`sandbox ${request.namespace}/${request.name} not found`));
          },
        });
        service(pb.PoolService, {
          async *pullImage(request) {
            lastPull = request;
            const base = { image: `docker.io/library/${request.image}:latest`, layersTotal: 2, bytesTotal: 5_000_000_000n, digest: "sha256:d" };
            yield { ...base, agent: "web-1", phase: "downloading", layersDone: 1, bytesDone: 4_000_000_000n };
            yield { ...base, agent: "web-0", phase: "done", layersDone: 2, bytesDone: 5_000_000_000n };
            if (request.image === "missing") throw toConnectError(new NotFoundError("agent web-1: image docker.io/library/missing:latest not found"));
            yield { ...base, agent: "web-1", phase: "done", layersDone: 2, bytesDone: 5_000_000_000n };
          },
        });
      },
    });
    server = await listenCleartext(handler, "127.0.0.1", 0);
  });

  after(async () => {
    await server.close();
  });

  it("pulls an image on a pool, reporting every agent's progress and resolving with each one's last report", async () => {
    const client = new FastSandboxClient({ url: `http://127.0.0.1:${server.port}`, token: TOKEN });
    try {
      const seen: string[] = [];
      const result = await client.pools.pullImage("busybox", { pool: "web", namespace: "team-a", onProgress: (p) => seen.push(`${p.agent} ${p.phase}`) });
      assert.deepEqual([lastPull?.image, lastPull?.pool, lastPull?.namespace], ["busybox", "web", "team-a"]);
      assert.deepEqual(seen, ["web-1 downloading", "web-0 done", "web-1 done"]);
      assert.deepEqual(
        result.map((p) => [p.agent, p.phase, p.layersDone, p.bytesDone]),
        [
          ["web-0", "done", 2, 5_000_000_000],
          ["web-1", "done", 2, 5_000_000_000],
        ],
      );
      await assert.rejects(client.pools.pullImage("missing"), (error: unknown) => error instanceof NotFoundError && /agent web-1: image/.test(error.message));
    } finally {
      closeClient(client);
    }
  });

  for (const httpVersion of ["1.1", "2"] as const) {
    it(`creates a sandbox over HTTP/${httpVersion}, sending every option in the spec`, async () => {
      const client = new FastSandboxClient({
        url: `http://127.0.0.1:${server.port}`,
        token: TOKEN,
        httpVersion,
      });
      try {
        const sandbox = await client.sandboxes.create({
          name: "web",
          namespace: "team-a",
          pool: "default",
          image: "python:3.12",
          command: ["python"],
          args: ["-m", "http.server"],
          envs: { A: "1", EMPTY: "" },
          workingDir: "/srv",
          exposedPorts: [8080],
          expireTime: new Date("2026-01-02T15:04:05Z"),
          failurePolicy: "AutoRecreate",
          consistencyMode: "strong",
          egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }] },
          labels: { app: "web" },
          requestId: "req-1",
        });
        assert.equal(lastCreate?.requestId, "req-1");
        assert.deepEqual(sandbox.metadata, {
          name: "web",
          namespace: "team-a",
          labels: { app: "web" },
        });
        assert.deepEqual(sandbox.spec, {
          image: "python:3.12",
          poolRef: "default",
          command: ["python"],
          args: ["-m", "http.server"],
          envs: [
            { name: "A", value: "1" },
            { name: "EMPTY", value: "" },
          ],
          workingDir: "/srv",
          exposedPorts: [8080],
          expireTime: "2026-01-02T15:04:05.000Z",
          failurePolicy: "AutoRecreate",
          consistencyMode: "strong",
          egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }] },
        });
        // The token comes from the answer's header; the rest is the Sandbox record.
        const { accessToken, ...record } = sandbox;
        assert.equal(accessToken, "token-of-web");
        assert.doesNotThrow(() => validateSandbox(record));
      } finally {
        closeClient(client);
      }
    });
  }

  it("turns ttlMs into an absolute expireTime in the future", async () => {
    const client = new FastSandboxClient({
      url: `http://127.0.0.1:${server.port}`,
      token: TOKEN,
      httpVersion: "1.1",
    });
    try {
      const before = Date.now();
      const sandbox = await client.sandboxes.create({
        pool: "default",
        image: "x",
        ttlMs: 3_600_000,
      });
      const expires = Date.parse(sandbox.spec.expireTime ?? "");
      assert.ok(expires >= before + 3_600_000, `${sandbox.spec.expireTime} is an hour or more from the call`);
    } finally {
      closeClient(client);
    }
  });

  it("translates server errors into Fast Sandbox errors", async () => {
    const client = new FastSandboxClient({
      url: `http://127.0.0.1:${server.port}`,
      token: TOKEN,
      httpVersion: "1.1",
    });
    try {
      await assert.rejects(client.sandboxes.get("missing", { namespace: "team-a" }), (error: unknown) => {
        assert.ok(error instanceof NotFoundError, String(error));
        assert.equal(error.message, "sandbox team-a/missing not found");
        return true;
      });
    } finally {
      closeClient(client);
    }
  });

  it("fails with UnauthenticatedError for a wrong token", async () => {
    const client = new FastSandboxClient({
      url: `http://127.0.0.1:${server.port}`,
      token: "wrong-token-0123456789",
      httpVersion: "1.1",
    });
    try {
      await assert.rejects(client.sandboxes.get("x"), UnauthenticatedError);
    } finally {
      closeClient(client);
    }
  });
});

describe("sandboxes.list reads page by page", () => {
  /** A SandboxService answering ListSandboxes from `names`, in pages when asked (`paged: false`: as a server from before pages). */
  function clientOf(names: string[], paged = true): { client: FastSandboxClient; requests: { pageSize: number; pageToken: string; pool: string }[] } {
    const requests: { pageSize: number; pageToken: string; pool: string }[] = [];
    const message = (name: string) =>
      sandboxToMessage({ apiVersion: API_VERSION, kind: "Sandbox", metadata: { name, namespace: "default" }, spec: { image: "img", poolRef: "p" } });
    const transport = createRouterTransport((router) =>
      router.service(pb.SandboxService, {
        listSandboxes: (request) => {
          requests.push({ pageSize: request.pageSize, pageToken: request.pageToken, pool: request.pool });
          if (!paged) return create(pb.ListSandboxesResponseSchema, { sandboxes: names.map(message) });
          const start = request.pageToken === "" ? 0 : Number(request.pageToken);
          const end = Math.min(names.length, start + request.pageSize);
          return create(pb.ListSandboxesResponseSchema, {
            sandboxes: names.slice(start, end).map(message),
            nextPageToken: end < names.length ? String(end) : "",
          });
        },
      }),
    );
    return { client: new FastSandboxClient({ transport }), requests };
  }

  it("follows the next page tokens until the last page, asking pageSize at a time", async () => {
    const names = Array.from({ length: 7 }, (_, i) => `s${i}`);
    const { client, requests } = clientOf(names);
    const listed = await client.sandboxes.list({ pool: "p", pageSize: 3 });
    assert.deepEqual(
      listed.map((s) => s.metadata.name),
      names,
    );
    assert.deepEqual(requests, [
      { pageSize: 3, pageToken: "", pool: "p" },
      { pageSize: 3, pageToken: "3", pool: "p" },
      { pageSize: 3, pageToken: "6", pool: "p" },
    ]);
  });

  it("asks 500 at a time by default, and takes every sandbox at once from a server from before pages", async () => {
    const { client, requests } = clientOf(["a", "b"], false);
    assert.deepEqual(
      (await client.sandboxes.list()).map((s) => s.metadata.name),
      ["a", "b"],
    );
    assert.deepEqual(
      requests.map((r) => r.pageSize),
      [500],
    );
  });

  it("refuses a pageSize that is not a whole number > 0", async () => {
    const { client, requests } = clientOf(["a"]);
    await assert.rejects(client.sandboxes.list({ pageSize: 0 }), (error: unknown) => error instanceof ValidationError && error.field === "pageSize");
    assert.deepEqual(requests, []);
  });
});

describe("sandboxes.create and checkpoints.restore survive a lost answer", () => {
  /**
   * A control plane that dedupes creates by request id, as sandbox-manager.ts does (the same id: the
   * same sandbox, with a new access token); `onAttempt` may lose an attempt's answer after the sandbox was made.
   */
  function dedupingPlane(onAttempt: (attempt: number) => Promise<void> | void = () => undefined) {
    const requests: pb.CreateSandboxRequest[] = [];
    const made = new Map<string, string>();
    const transport = createRouterTransport(({ service }) => {
      service(pb.SandboxService, {
        async createSandbox(request, context) {
          requests.push(request);
          const name = made.get(request.requestId) ?? request.name ?? "";
          made.set(request.requestId, name || `sb-${made.size + 1}`);
          context.responseHeader.set("fsb-access-token", `token-${requests.length}`);
          await onAttempt(requests.length);
          return sandboxToMessage({
            apiVersion: API_VERSION,
            kind: "Sandbox",
            metadata: { name: made.get(request.requestId) ?? "", namespace: "default" },
            spec: sandboxSpecFromMessage(request.spec),
            status: { phase: "Running" },
          });
        },
      });
    });
    return { client: new FastSandboxClient({ transport }), requests, made };
  }

  it("sends a new request id with each create that was given none, and the given one as it is", async () => {
    const { client, requests } = dedupingPlane();
    await client.sandboxes.create({ pool: "default", image: "x" });
    await client.sandboxes.create({ pool: "default", image: "x" });
    await client.checkpoints.restore("golden");
    await client.sandboxes.create({ pool: "default", image: "x", requestId: "mine" });
    const ids = requests.map((request) => request.requestId);
    assert.ok(
      ids.slice(0, 3).every((id) => /^[0-9a-f-]{36}$/.test(id)),
      ids.join(", "),
    );
    assert.equal(new Set(ids).size, 4);
    assert.equal(ids[3], "mine");
  });

  it("retries once with the same id when the connection broke, and hands out the first attempt's sandbox with the new token", async () => {
    const { client, requests, made } = dedupingPlane((attempt) => {
      if (attempt === 1) throw new ConnectError("socket hang up", Code.Unavailable);
    });
    const created = await client.sandboxes.create({ pool: "default", image: "x" });
    assert.equal(requests.length, 2);
    assert.equal(requests[0]?.requestId, requests[1]?.requestId);
    assert.equal(made.size, 1, "one sandbox, not two");
    assert.deepEqual([created.metadata.name, created.accessToken], ["sb-1", "token-2"]);
  });

  it("retries once with the same id when the other end gave up on the stream (canceled: a control plane going away), not when the caller aborted", async () => {
    const { client, requests, made } = dedupingPlane((attempt) => {
      if (attempt === 1) throw new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);
    });
    const created = await client.sandboxes.create({ pool: "default", image: "x" });
    assert.equal(requests.length, 2);
    assert.equal(requests[0]?.requestId, requests[1]?.requestId);
    assert.equal(made.size, 1, "one sandbox, not two");
    assert.equal(created.accessToken, "token-2");
    const controller = new AbortController();
    const aborted = dedupingPlane(() => {
      controller.abort();
      throw new ConnectError("the caller aborted", Code.Canceled);
    });
    await assert.rejects(aborted.client.sandboxes.create({ pool: "default", image: "x", signal: controller.signal }));
    assert.equal(aborted.requests.length, 1, "the caller's own abort is not retried");
  });

  /** A control plane whose creates the caller aborts once they reached it (they still make their sandbox), and that records deletes. */
  function abandonedCreatePlane(controller: AbortController, deleteAnswers: (ConnectError | undefined)[] = []) {
    const made: string[] = [];
    const deletes: string[] = [];
    const transport = createRouterTransport(({ service }) => {
      service(pb.SandboxService, {
        async createSandbox(request) {
          made.push(request.name || requestSandboxName(request.namespace, request.requestId));
          controller.abort(new Error("the caller gave up"));
          await delay(20);
          return create(pb.SandboxSchema, {});
        },
        async deleteSandbox(request) {
          await Promise.resolve();
          deletes.push(request.name);
          const answer = deleteAnswers.shift();
          if (answer) throw answer;
          return create(pb.DeleteSandboxResponseSchema, {});
        },
      });
    });
    return { client: new FastSandboxClient({ transport }), made, deletes };
  }

  async function until(condition: () => boolean, what: string): Promise<void> {
    for (let waited = 0; !condition(); waited += 10) {
      if (waited > 3000) assert.fail(`waited 3 s for ${what}`);
      await delay(10);
    }
  }

  it("deletes what a create its caller aborted may still make when the caller could not name it (no name, no requestId)", async () => {
    const controller = new AbortController();
    const { client, made, deletes } = abandonedCreatePlane(controller);
    await assert.rejects(client.sandboxes.create({ pool: "default", image: "x", signal: controller.signal }), /the caller gave up/);
    await until(() => deletes.length > 0, "the delete");
    assert.deepEqual(deletes, made, "the sandbox the create was making, by the name its request id gives");
  });

  it("deletes it once more a moment later when the first delete found nothing (the create had not been stored yet)", async () => {
    const controller = new AbortController();
    const { client, made, deletes } = abandonedCreatePlane(controller, [new ConnectError("not found", Code.NotFound)]);
    await assert.rejects(client.checkpoints.restore("golden", { signal: controller.signal }));
    await until(() => deletes.length > 1, "the second delete");
    assert.deepEqual(deletes, [made[0], made[0]]);
  });

  it("leaves alone what a create the caller named, or gave a request id, may make: the caller can find it", async () => {
    for (const named of [{ name: "web" }, { requestId: "mine" }]) {
      const controller = new AbortController();
      const { client, deletes } = abandonedCreatePlane(controller);
      await assert.rejects(client.sandboxes.create({ pool: "default", image: "x", signal: controller.signal, ...named }));
      await delay(50);
      assert.deepEqual(deletes, [], JSON.stringify(named));
    }
  });

  it("retries once after its requestTimeoutMs passed", async () => {
    const { client, requests, made } = dedupingPlane(async (attempt) => {
      if (attempt === 1) await new Promise((resolve) => setTimeout(resolve, 500));
    });
    const created = await client.sandboxes.create({ pool: "default", image: "x", requestTimeoutMs: 100 });
    assert.equal(requests.length, 2);
    assert.equal(made.size, 1);
    assert.equal(created.metadata.name, "sb-1");
  });

  it("checkpoints.restore retries the same way", async () => {
    const { client, requests, made } = dedupingPlane((attempt) => {
      if (attempt === 1) throw new ConnectError("socket hang up", Code.Unavailable);
    });
    const restored = await client.checkpoints.restore("golden");
    assert.equal(requests.length, 2);
    assert.equal(requests[0]?.requestId, requests[1]?.requestId);
    assert.equal(requests[1]?.fromCheckpoint, "golden");
    assert.equal(made.size, 1);
    assert.equal(restored.accessToken, "token-2");
  });

  it("names the request id and the sandbox a create may still make when both answers were lost (deadline, connection)", async () => {
    const timedOut = dedupingPlane(() => new Promise<void>(() => undefined));
    await assert.rejects(timedOut.client.sandboxes.create({ pool: "default", image: "x", requestTimeoutMs: 50 }), (error: unknown) => {
      const id = timedOut.requests[0]?.requestId ?? "?";
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /did not finish within 50 ms/);
      assert.ok(error.message.includes(`as default/${requestSandboxName("default", id)} (request id ${id})`), error.message);
      return true;
    });
    const cut = dedupingPlane(() => {
      throw new ConnectError("socket hang up", Code.Unavailable);
    });
    await assert.rejects(cut.client.checkpoints.restore("golden", { namespace: "team", name: "copy", requestId: "mine" }), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.ok(error.message.includes("as team/copy (request id mine)"), error.message);
      return true;
    });
    assert.equal(requestSandboxName("", "mine"), requestSandboxName("default", "mine"));
    assert.match(requestSandboxName("default", "mine"), /^sb-[0-9a-f]{10}$/);
  });

  it("does not retry the control plane's own errors, nor more than once", async () => {
    const refused = dedupingPlane(() => {
      throw toConnectError(new UnavailableError("the earlier create failed; retry"));
    });
    await assert.rejects(
      refused.client.sandboxes.create({ pool: "default", image: "x" }),
      (error: unknown) => error instanceof UnavailableError && !error.message.includes("request id"),
    );
    assert.equal(refused.requests.length, 1);
    const cut = dedupingPlane(() => {
      throw new ConnectError("socket hang up", Code.Unavailable);
    });
    await assert.rejects(cut.client.sandboxes.create({ pool: "default", image: "x" }), UnavailableError);
    assert.equal(cut.requests.length, 2);
  });
});

describe("calls on a control plane whose host vanished without a FIN or RST", () => {
  /**
   * A control plane that answers a call's headers, and a TCP relay in front of it that then drops
   * everything both ways without closing anything: a host gone behind a NAT, a cable pulled.
   */
  async function vanishingControlPlane(): Promise<{ url: string; close(): void }> {
    let gone = false;
    const sockets = new Set<net.Socket>();
    const server = http2.createServer();
    server.on("stream", (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/connect+proto" });
      gone = true;
    });
    server.on("connection", (socket: net.Socket) => sockets.add(socket));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const relay = net.createServer((client) => {
      const upstream = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
      sockets.add(client).add(upstream);
      client.on("data", (data) => gone || upstream.write(data));
      upstream.on("data", (data) => gone || client.write(data));
      client.on("error", () => undefined);
      upstream.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    return {
      url: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`,
      close: () => {
        for (const socket of sockets) socket.destroy();
        relay.close();
        server.close();
      },
    };
  }

  const calls: [string, (client: FastSandboxClient) => Promise<unknown>][] = [
    ["exec", (client) => client.sandboxes.exec("sb-1", ["sleep", "60"])],
    [
      "logs with follow",
      async (client) => {
        for await (const chunk of client.sandboxes.logs("sb-1", { follow: true })) void chunk;
      },
    ],
    ["pullImage", (client) => client.pools.pullImage("busybox")],
    ["create without a deadline", (client) => client.sandboxes.create({ pool: "default", image: "x", requestTimeoutMs: 0 })],
  ];
  for (const [what, call] of calls) {
    it(`${what} fails with UnavailableError once a PING goes unanswered`, async () => {
      const plane = await vanishingControlPlane();
      const client = new FastSandboxClient({ url: plane.url, token: TOKEN, pingIntervalMs: 100, pingTimeoutMs: 100 });
      try {
        await assert.rejects(call(client), (error: unknown) => error instanceof UnavailableError && /PING/.test(error.message));
      } finally {
        client.close();
        plane.close();
      }
    });
  }

  it("refuses a ping interval or timeout that is not a duration", () => {
    for (const options of [{ pingIntervalMs: -1 }, { pingTimeoutMs: Number.NaN }]) {
      assert.throws(() => new FastSandboxClient({ url: UNREACHABLE, token: TOKEN, ...options }), ValidationError);
    }
  });
});

describe("streams left early are closed at once", () => {
  let server: CleartextServer;
  /** The streams the server saw their client close, by method. */
  let closed: string[];
  /** Resolves once the server saw a stream of `method` closed by its client. */
  const closedByClient = async (method: string) => {
    for (let i = 0; i < 200 && !closed.includes(method); i++) await delay(5);
    return closed.includes(method);
  };

  before(async () => {
    // Each stream goes on for 30 s unless its client closes it.
    const longStream = async function* <T>(method: string, signal: AbortSignal, message: (i: number) => T, end?: T): AsyncGenerator<T> {
      signal.addEventListener("abort", () => closed.push(method));
      for (let i = 0; i < 300 && !signal.aborted; i++) {
        yield message(i);
        await delay(100, undefined, { signal }).catch(() => undefined);
      }
      if (end !== undefined && !signal.aborted) yield end;
    };
    const handler = connectNodeAdapter({
      interceptors: [requireBearerToken(TOKEN)],
      routes: ({ service }) => {
        service(pb.SandboxService, {
          logs: (_request, context) => longStream("logs", context.signal, (i) => ({ data: new TextEncoder().encode(`line ${i}\n`) })),
          exec: (_request, context) =>
            longStream<{ event: { case: "stdout"; value: Uint8Array } | { case: "exitCode"; value: number } }>(
              "exec",
              context.signal,
              (i) => ({ event: { case: "stdout", value: new TextEncoder().encode(`out ${i}\n`) } }),
              { event: { case: "exitCode", value: 0 } },
            ),
        });
        service(pb.PoolService, {
          pullImage: (request, context) =>
            longStream("pullImage", context.signal, (i) => ({ agent: "web-0", image: request.image, phase: "downloading", layersTotal: 300, layersDone: i })),
        });
      },
    });
    server = await listenCleartext(handler, "127.0.0.1", 0);
  });
  beforeEach(() => {
    closed = [];
  });
  after(async () => {
    await server.close();
  });

  it("exec whose onStdout throws rejects with that error as it is, and closes the stream (and so the command) at once", async () => {
    const client = new FastSandboxClient({ url: `http://127.0.0.1:${server.port}`, token: TOKEN });
    try {
      const bug = new RangeError("a bug in the caller's callback");
      await assert.rejects(
        client.sandboxes.exec("sb-1", ["x"], {
          onStdout: () => {
            throw bug;
          },
        }),
        (error: unknown) => error === bug,
      );
      assert.ok(await closedByClient("exec"), "the server saw the exec stream closed");
    } finally {
      closeClient(client);
    }
  });

  it("logs left after the first chunk, and pullImage whose onProgress throws, close their streams at once", async () => {
    const client = new FastSandboxClient({ url: `http://127.0.0.1:${server.port}`, token: TOKEN });
    try {
      for await (const chunk of client.sandboxes.logs("sb-1")) {
        assert.equal(new TextDecoder().decode(chunk), "line 0\n");
        break;
      }
      assert.ok(await closedByClient("logs"), "the server saw the logs stream closed");
      const bug = new Error("progress bar broke");
      await assert.rejects(
        client.pools.pullImage("busybox", {
          onProgress: () => {
            throw bug;
          },
        }),
        (error: unknown) => error === bug,
      );
      assert.ok(await closedByClient("pullImage"), "the server saw the pullImage stream closed");
    } finally {
      closeClient(client);
    }
  });
});
