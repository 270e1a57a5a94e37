import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { gzipSync } from "node:zlib";
import { after, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { FsbError, pb, sendBearerToken, UnavailableError } from "@fast-sandbox/api/core";
import type { CheckpointRequest, RuntimeCheckpoint, RuntimeCheckpoints } from "../runtime/checkpoint.js";
import type { Runtime, RuntimeSandbox } from "../runtime/runtime.js";
import { answerToUnendedBody } from "../../../../test/support/unended-body.js";
import { MAX_REQUEST_BYTES, startAgentServer } from "./agent-server.js";

const TOKEN = "agent-server-spec-token-0123456789";

const stateDir = mkdtempSync(join(tmpdir(), "fsb-agent-server-"));
after(() => rmSync(stateDir, { recursive: true, force: true }));

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** A runtime with one gVisor sandbox `sb`, whose checkpoint stops it until `checkpointGate` opens (then it runs on). */
class FakeRuntime implements Runtime {
  readonly sandbox: RuntimeSandbox = { sandboxId: "sb", namespace: "default", name: "source", pool: "gv", image: "img", state: "running", labels: {} };
  readonly checkpointStarted = gate();
  checkpointGate: Promise<void> = new Promise<void>(() => undefined);
  readonly order: string[] = [];

  checkpoints: RuntimeCheckpoints = {
    checkpoint: async (request: CheckpointRequest): Promise<RuntimeCheckpoint> => {
      this.order.push("checkpoint started");
      this.sandbox.state = "stopped";
      this.checkpointStarted.open();
      await this.checkpointGate;
      this.sandbox.state = "running";
      this.order.push("checkpoint done");
      return {
        checkpointId: request.checkpointId,
        namespace: request.namespace,
        name: request.name,
        pool: "gv",
        sourceSandboxId: request.sandboxId,
        sourceName: "source",
        image: "img",
        runtimeType: "gvisor",
        networkMode: "isolated",
        command: ["sh"],
        workingDir: "/",
        createdAt: "2026-12-01T00:00:00.000Z",
        sizeBytes: 4096,
      };
    },
    restore: () => Promise.reject(new Error("not used")),
    resume: () => Promise.resolve(),
    list: () => Promise.resolve([]),
    get: () => Promise.resolve(undefined),
    delete: () => Promise.resolve(),
  };

  /** What list() does from now on; @default answers `sandbox` at once. */
  listing: () => Promise<RuntimeSandbox[]> = () => Promise.resolve([{ ...this.sandbox }]);

  list(): Promise<RuntimeSandbox[]> {
    return this.listing();
  }
  get(sandboxId: string): Promise<RuntimeSandbox | undefined> {
    return Promise.resolve(sandboxId === "sb" ? { ...this.sandbox } : undefined);
  }
  stats(): Promise<never> {
    return Promise.reject(new Error("not used"));
  }
  evict(): Promise<never> {
    return Promise.reject(new Error("not used"));
  }
  create(): Promise<never> {
    return Promise.reject(new Error("not used"));
  }
  delete(): Promise<void> {
    return Promise.resolve();
  }
  /** How many execs the runtime was asked for. */
  execs = 0;
  exec(): Promise<number> {
    this.execs += 1;
    return Promise.resolve(0);
  }
  wait(): Promise<number> {
    return new Promise<number>(() => undefined);
  }
  prepare(): Promise<void> {
    return Promise.resolve();
  }
  unprepare(): Promise<void> {
    return Promise.resolve();
  }
  listImages(): Promise<string[]> {
    return Promise.resolve(["img"]);
  }
  pullImage(): Promise<{ image: string; digest: string }> {
    return Promise.resolve({ image: "img", digest: "sha256:0" });
  }
  close(): void {}
}

/** An agent server over `runtime`, and a checkpoint of `sb` asked of it (its answer, whatever it is, ignored). */
async function serveAndCheckpoint(runtime: FakeRuntime) {
  const server = await startAgentServer({
    identity: { name: "gv-0", namespace: "default", pool: "gv", nodeName: "node-1" },
    runtime,
    token: TOKEN,
    stateDir,
    host: "127.0.0.1",
    port: 0,
    statsHistory: { intervalMs: 60_000, retain: 1 },
  });
  const client = createClient(
    pb.AgentService,
    createConnectTransport({ baseUrl: `http://${server.endpoint}`, httpVersion: "1.1", interceptors: [sendBearerToken(TOKEN)] }),
  );
  // The server's close cuts the call off: its caller hears an error, the checkpoint goes on here.
  void client.checkpointSandbox({ sandboxId: "sb", checkpointId: "ck-1", namespace: "default", name: "ck" }).catch(() => undefined);
  await runtime.checkpointStarted.promise;
  return server;
}

describe("AgentServer.close", () => {
  it("lets a checkpoint in flight finish before it returns, so its sandbox is not left stopped", async () => {
    const runtime = new FakeRuntime();
    const held = gate();
    runtime.checkpointGate = held.promise;
    const server = await serveAndCheckpoint(runtime);
    let closed = false;
    const closing = server.close(5_000).then(() => (closed = true));
    await sleep(100);
    assert.equal(closed, false, "close waits for the checkpoint");
    held.open();
    await closing;
    assert.deepEqual(runtime.order, ["checkpoint started", "checkpoint done"]);
    assert.equal(runtime.sandbox.state, "running");
  });

  // The checkpoint never finishes (checkpointGate never settles): only the drain timeout lets close return.
  it("waits for a checkpoint no longer than the drain timeout", { timeout: 10_000 }, async () => {
    const runtime = new FakeRuntime();
    const server = await serveAndCheckpoint(runtime);
    await server.close(200);
    assert.deepEqual(runtime.order, ["checkpoint started"]);
  });
});

describe("AgentServer /readyz", () => {
  async function serve(runtime: FakeRuntime) {
    const server = await startAgentServer({
      identity: { name: "gv-0", namespace: "default", pool: "gv", nodeName: "node-1" },
      runtime,
      token: TOKEN,
      stateDir,
      host: "127.0.0.1",
      port: 0,
      statsHistory: { intervalMs: 60_000, retain: 1 },
      readiness: { answerWithinMs: 50, staleAfterMs: 600 },
    });
    after(() => server.close());
    // Within the kubelet's probe timeout, or the probe failed.
    const readyz = async () => {
      const response = await fetch(`http://${server.endpoint}/readyz`, { signal: AbortSignal.timeout(1_000) });
      return { status: response.status, body: await response.text() };
    };
    return readyz;
  }

  it("stays ready while containerd is slow to list (busy, as the heartbeat has it), and not ready once it answered nothing for the stale budget", async () => {
    const runtime = new FakeRuntime();
    const readyz = await serve(runtime);
    runtime.listing = () => new Promise<never>(() => undefined);
    assert.equal((await readyz()).status, 200);
    await sleep(200);
    assert.equal((await readyz()).status, 200, "still within the budget");
    await sleep(500);
    const stuck = await readyz();
    assert.equal(stuck.status, 503);
    assert.match(stuck.body, /containerd has answered no list/);
    runtime.listing = () => Promise.resolve([]);
    // The stuck check still holds the place of the next one: a hung call is not doubled.
    assert.equal((await readyz()).status, 503);
  });

  it("counts a list past its deadline as containerd slow, not gone", async () => {
    const runtime = new FakeRuntime();
    const readyz = await serve(runtime);
    runtime.listing = () => Promise.reject(new FsbError("deadline_exceeded", "containerd Tasks/List: context deadline exceeded"));
    assert.equal((await readyz()).status, 200);
  });

  it("is not ready at once when containerd refuses, and ready again once it answers", async () => {
    const runtime = new FakeRuntime();
    const readyz = await serve(runtime);
    runtime.listing = () => Promise.reject(new UnavailableError("containerd: connect ENOENT /run/containerd/containerd.sock"));
    const refused = await readyz();
    assert.equal(refused.status, 503);
    assert.match(refused.body, /containerd does not answer: .*ENOENT/);
    runtime.listing = () => Promise.resolve([]);
    assert.equal((await readyz()).status, 200);
  });
});

/** An agent server over `runtime`, closed after the file's tests. */
async function serve(runtime: FakeRuntime) {
  const server = await startAgentServer({
    identity: { name: "gv-0", namespace: "default", pool: "gv", nodeName: "node-1" },
    runtime,
    token: TOKEN,
    stateDir,
    host: "127.0.0.1",
    port: 0,
    statsHistory: { intervalMs: 60_000, retain: 1 },
  });
  after(() => server.close());
  return server;
}

describe("AgentServer connections", () => {
  it("turns TCP keep-alives on for every connection it takes (a caller that vanished without a word is found)", async () => {
    const server = await serve(new FakeRuntime());
    const port = Number(server.endpoint.split(":").at(-1));
    const caller = net.connect({ host: "127.0.0.1", port });
    await new Promise((resolve) => caller.once("connect", resolve));
    try {
      // The agent's side of the connection, as the kernel has it: its keep-alive timer shows.
      let sockets = "";
      for (let i = 0; i < 50 && !sockets.includes("keepalive"); i++) {
        sockets = execFileSync("ss", ["-tnoH", "state", "established", `( sport = :${port} )`], { encoding: "utf8" });
        if (!sockets.includes("keepalive")) await sleep(20);
      }
      assert.match(sockets, /timer:\(keepalive,/);
    } finally {
      caller.destroy();
    }
  });
});

describe("AgentServer authentication and request size", () => {
  // A gzip body of 16 KiB that would grow to 16 MiB, four times the limit.
  const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024));

  it("refuses a call without the token before reading its body: an unauthenticated gzip body not yet ended is answered 401 at once", async () => {
    const server = await serve(new FakeRuntime());
    for (const version of ["1.1", "2"] as const) {
      for (const authorization of [undefined, "Bearer wrong-token-0123456789"]) {
        const answer = await answerToUnendedBody(
          `http://${server.endpoint}`,
          version,
          "/fastsandbox.v1alpha1.AgentService/CreateSandbox",
          { "content-type": "application/proto", "content-encoding": "gzip", ...(authorization ? { authorization } : {}) },
          bomb,
        );
        const what = `HTTP/${version}, ${authorization ?? "no authorization"}`;
        assert.equal(answer.status, 401, what);
        assert.match(answer.headers["content-type"] ?? "", /^application\/json/, what);
        assert.equal(answer.headers["fsb-error-code"], "unauthenticated", what);
        const error = JSON.parse(answer.body) as { code: string; message: string };
        assert.equal(error.code, "unauthenticated", what);
        assert.match(error.message, authorization ? /invalid bearer token/ : /missing bearer token/, what);
      }
    }
  });

  it("answers calls without the token as Unauthenticated in every protocol it serves: Connect, gRPC and gRPC-Web, unary and streams", async () => {
    const server = await serve(new FakeRuntime());
    const baseUrl = `http://${server.endpoint}`;
    const transports: [string, Transport][] = [
      ["Connect over HTTP/1.1", createConnectTransport({ baseUrl, httpVersion: "1.1" })],
      ["Connect over HTTP/2, binary", createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true })],
      ["gRPC", createGrpcTransport({ baseUrl })],
      ["gRPC-Web over HTTP/1.1", createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })],
      ["gRPC-Web over HTTP/2", createGrpcWebTransport({ baseUrl, httpVersion: "2" })],
    ];
    const unauthenticated = (what: string) => (error: unknown) => {
      assert.ok(error instanceof ConnectError, `${what}: ${String(error)}`);
      assert.equal(error.code, Code.Unauthenticated, what);
      assert.match(error.rawMessage, /missing bearer token/, what);
      assert.equal(error.metadata.get("fsb-error-code"), "unauthenticated", what);
      return true;
    };
    for (const [name, transport] of transports) {
      const client = createClient(pb.AgentService, transport);
      await assert.rejects(client.status({}), unauthenticated(`${name}, unary`));
      await assert.rejects(
        async () => {
          for await (const _ of client.logs({ sandboxId: "sb" })) assert.fail("a log chunk without the token");
        },
        unauthenticated(`${name}, server stream`),
      );
    }
    // grpc-js, as other gRPC clients, reads the status from the trailers.
    const other = new grpc.Client(server.endpoint, grpc.credentials.createInsecure());
    try {
      const status = await new Promise<grpc.ServiceError | null>((resolve) =>
        other.makeUnaryRequest(
          "/fastsandbox.v1alpha1.AgentService/Status",
          (message: Buffer) => message,
          (message: Buffer) => message,
          Buffer.alloc(0),
          (error) => resolve(error),
        ),
      );
      assert.equal(status?.code, grpc.status.UNAUTHENTICATED);
    } finally {
      other.close();
    }
  });

  it("refuses a call with the token whose request is larger than MAX_REQUEST_BYTES, also once decompressed, with ResourceExhausted; one of 2 MiB is read and answered by the service", async () => {
    const runtime = new FakeRuntime();
    const server = await serve(runtime);
    const baseUrl = `http://${server.endpoint}`;
    const exec = (transport: Transport, bytes: number) =>
      (async () => {
        const client = createClient(pb.AgentService, transport);
        const envs = [{ name: "LARGE", value: "x".repeat(bytes) }];
        for await (const _ of client.exec({ sandboxId: "sb", command: ["true"], envs }));
      })();
    const exhausted = (error: unknown) => error instanceof ConnectError && error.code === Code.ResourceExhausted && /readMaxBytes/.test(error.rawMessage);
    const interceptors = [sendBearerToken(TOKEN)];
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors, useBinaryFormat: true }),
      createConnectTransport({ baseUrl, httpVersion: "2", interceptors, sendCompression: compressionGzip }),
      createGrpcTransport({ baseUrl, interceptors, sendCompression: compressionGzip }),
    ]) {
      await assert.rejects(exec(transport, MAX_REQUEST_BYTES + 1), exhausted);
    }
    assert.equal(runtime.execs, 0);
    // One of 2 MiB is read: the service answers it (its own rules refuse so large a variable).
    await assert.rejects(
      exec(createConnectTransport({ baseUrl, httpVersion: "2", interceptors, sendCompression: compressionGzip }), 2 * 1024 * 1024),
      (error: unknown) =>
        error instanceof ConnectError && error.code === Code.InvalidArgument && /^envs\[0\]\.value: has 2097152 characters/.test(error.rawMessage),
    );
    assert.equal(runtime.execs, 0);
  });
});
