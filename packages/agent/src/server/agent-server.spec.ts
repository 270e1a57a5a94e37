import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { FsbError, pb, sendBearerToken, UnavailableError } from "@fast-sandbox/api/core";
import type { CheckpointRequest, RuntimeCheckpoint, RuntimeCheckpoints } from "../runtime/checkpoint.js";
import type { Runtime, RuntimeSandbox } from "../runtime/runtime.js";
import { startAgentServer } from "./agent-server.js";

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
  create(): Promise<never> {
    return Promise.reject(new Error("not used"));
  }
  delete(): Promise<void> {
    return Promise.resolve();
  }
  exec(): Promise<number> {
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

  it("waits for a checkpoint no longer than the drain timeout", async () => {
    const runtime = new FakeRuntime();
    const server = await serveAndCheckpoint(runtime);
    const started = Date.now();
    await server.close(200);
    assert.ok(Date.now() - started < 2_000, "close returned once the drain timeout passed");
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
