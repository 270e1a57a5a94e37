import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createHttp1Server } from "node:http";
import { createServer as createHttp2Server } from "node:http2";
import { createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { Code, ConnectError, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import { FsbError, NotFoundError, TimeoutError, UnavailableError, pb, toConnectError } from "@fast-sandbox/api";
import { NoAnswerError, gotNoAnswer, type AgentClient, type AgentSandboxSpec, type ExecEvent, type PullProgress } from "./agent-client.js";
import { canCheckpoint } from "./agent-checkpoints.js";
import { createAgentClient, createAgentClientOnTransport } from "./rpc-agent-client.js";

const ENDPOINT = "10.0.0.7:7070";

/** A client talking to `service` in process, through Connect's serialization (no sockets). */
function clientOf(service: Partial<ServiceImpl<typeof pb.AgentService>>, close?: () => void): AgentClient {
  const transport = createRouterTransport(({ service: register }) => register(pb.AgentService, service));
  return createAgentClientOnTransport(transport, { endpoint: ENDPOINT, ...(close ? { close } : {}) });
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

const bytes = (text: string) => new TextEncoder().encode(text);

function spec(overrides: Partial<AgentSandboxSpec> = {}): AgentSandboxSpec {
  return {
    sandboxId: "team.web.a1b2c3",
    namespace: "team",
    name: "web",
    image: "python:3.12",
    command: ["python"],
    args: ["-m", "http.server"],
    envs: [{ name: "A", value: "1" }],
    runtimeType: "gvisor",
    exposedPorts: [8080],
    network: { mode: "Shared" },
    ...overrides,
  };
}

describe("the AgentClient over Connect", () => {
  describe("translates the agent's answers into domain types", () => {
    it("status: the agent's identity, images and sandboxes, with absent values left out rather than zero", async () => {
      const client = clientOf({
        status: () => ({
          name: "python-0",
          namespace: "team",
          pool: "python",
          nodeName: "node-3",
          images: ["busybox", "docker.io/library/busybox:latest"],
          pid: 4242,
          sandboxes: [
            {
              sandboxId: "team.web.a1b2c3",
              namespace: "team",
              name: "web",
              image: "python:3.12",
              state: "running",
              pid: 77,
              exitCode: 0,
              address: "10.88.0.7",
            },
            { sandboxId: "team.job.d4e5f6", namespace: "team", name: "job", image: "busybox", state: "stopped", exitCode: 137, oomKilled: true },
            { sandboxId: "team.disk.a0a0a0", namespace: "team", name: "disk", image: "busybox", state: "stopped", evicted: "past its disk limit" },
            { sandboxId: "team.new.000000", state: "creating" },
          ],
        }),
      });
      assert.deepStrictEqual(await client.status(), {
        name: "python-0",
        namespace: "team",
        pool: "python",
        nodeName: "node-3",
        images: ["busybox", "docker.io/library/busybox:latest"],
        pid: 4242,
        sandboxes: [
          {
            sandboxId: "team.web.a1b2c3",
            namespace: "team",
            name: "web",
            image: "python:3.12",
            state: "running",
            pid: 77,
            exitCode: 0,
            oomKilled: false,
            address: "10.88.0.7",
          },
          { sandboxId: "team.job.d4e5f6", namespace: "team", name: "job", image: "busybox", state: "stopped", exitCode: 137, oomKilled: true },
          {
            sandboxId: "team.disk.a0a0a0",
            namespace: "team",
            name: "disk",
            image: "busybox",
            state: "stopped",
            oomKilled: false,
            evicted: "past its disk limit",
          },
          { sandboxId: "team.new.000000", namespace: "", name: "", image: "", state: "creating", oomKilled: false },
        ],
      });
    });

    it("reports a sandbox state it does not know (a newer agent's) as unknown", async () => {
      const client = clientOf({ listSandboxes: () => ({ sandboxes: [{ sandboxId: "a", state: "paused" }] }) });
      const [sandbox] = await client.listSandboxes();
      assert.equal(sandbox?.state, "unknown");
    });

    it("exec: output chunks and the exit code as events, in order", async () => {
      const client = clientOf({
        async *exec() {
          yield { event: { case: "stdout", value: bytes("out") } };
          yield { event: { case: "stderr", value: bytes("err") } };
          yield {}; // an event of a kind this control plane does not know: skipped
          yield { event: { case: "exitCode", value: 3 } };
        },
      });
      const events = await collect(client.exec({ sandboxId: "a", command: ["sh"] }));
      assert.deepStrictEqual<ExecEvent[]>(events, [
        { type: "stdout", data: bytes("out") },
        { type: "stderr", data: bytes("err") },
        { type: "exit", exitCode: 3 },
      ]);
    });

    it("pullImage: byte counts as numbers; progress of a phase it does not know is skipped", async () => {
      const client = clientOf({
        async *pullImage(request) {
          const image = `docker.io/library/${request.image}:latest`;
          yield { image, phase: "resolving" };
          yield { image, phase: "verifying" };
          yield { image, phase: "done", layersTotal: 2, layersDone: 2, bytesTotal: 5_000_000_000n, bytesDone: 5_000_000_000n, digest: "sha256:abc" };
        },
      });
      assert.deepStrictEqual<PullProgress[]>(await collect(client.pullImage("busybox")), [
        { image: "docker.io/library/busybox:latest", phase: "resolving", layersTotal: 0, layersDone: 0, bytesTotal: 0, bytesDone: 0, digest: "" },
        {
          image: "docker.io/library/busybox:latest",
          phase: "done",
          layersTotal: 2,
          layersDone: 2,
          bytesTotal: 5_000_000_000,
          bytesDone: 5_000_000_000,
          digest: "sha256:abc",
        },
      ]);
    });

    it("logs: the raw chunks; tail_lines sent when given, left out (all of the log) when not", async () => {
      const client = clientOf({
        async *logs(request) {
          yield { data: bytes(`${request.sandboxId} follow=${request.follow} tail=${request.tailLines}\n`) };
          yield { data: bytes("bye\n") };
        },
      });
      assert.deepStrictEqual(await collect(client.logs("a", { follow: true })), [bytes("a follow=true tail=undefined\n"), bytes("bye\n")]);
      assert.deepStrictEqual(await collect(client.logs("a", { follow: false, tailLines: 0 })), [bytes("a follow=false tail=0\n"), bytes("bye\n")]);
      assert.deepStrictEqual((await collect(client.logs("b", { follow: false, tailLines: 20 })))[0], bytes("b follow=false tail=20\n"));
    });
  });

  describe("translates requests into the agent's wire messages", () => {
    it("createSandbox: every field, limits included, and answers with the created sandbox", async () => {
      let received: pb.AgentCreateSandboxRequest | undefined;
      const client = clientOf({
        createSandbox: (request) => {
          received = request;
          return { sandboxId: request.sandboxId, namespace: request.namespace, name: request.name, image: request.image, state: "running", pid: 9 };
        },
      });
      const created = await client.createSandbox(
        spec({
          workingDir: "/srv",
          cpuMillis: 500,
          memoryBytes: 256 * 1024 * 1024,
          pids: 64,
          ephemeralStorageBytes: 2 ** 30,
          slots: 4,
          exposedPorts: [8080, 9090],
        }),
      );
      assert.deepStrictEqual(created, {
        sandboxId: "team.web.a1b2c3",
        namespace: "team",
        name: "web",
        image: "python:3.12",
        state: "running",
        pid: 9,
        oomKilled: false,
      });
      assert.ok(received);
      assert.equal(received.sandboxId, "team.web.a1b2c3");
      assert.equal(received.namespace, "team");
      assert.equal(received.name, "web");
      assert.equal(received.image, "python:3.12");
      assert.deepEqual(received.command, ["python"]);
      assert.deepEqual(received.args, ["-m", "http.server"]);
      assert.deepEqual(
        received.envs.map((e) => [e.name, e.value]),
        [["A", "1"]],
      );
      assert.equal(received.workingDir, "/srv");
      assert.equal(received.runtimeType, "gvisor");
      assert.equal(received.cpuMillis, 500);
      assert.equal(received.memoryBytes, 268_435_456n);
      assert.equal(received.pids, 64);
      assert.equal(received.ephemeralStorageBytes, 1_073_741_824n);
      assert.equal(received.slots, 4);
      assert.deepEqual(received.exposedPorts, [8080, 9090]);
    });

    it("createSandbox: limits and working directory left out travel as the wire's 'none' (0, empty)", async () => {
      let received: pb.AgentCreateSandboxRequest | undefined;
      const client = clientOf({
        createSandbox: (request) => {
          received = request;
          return { sandboxId: request.sandboxId, state: "running" };
        },
      });
      await client.createSandbox(spec({ envs: [], exposedPorts: [] }));
      assert.ok(received);
      assert.deepEqual(
        [received.workingDir, received.cpuMillis, received.memoryBytes, received.pids, received.slots, received.envs.length, received.exposedPorts.length],
        ["", 0, 0n, 0, 0, 0, 0],
      );
    });

    it("createSandbox: a Shared network is sent as SHARED, with no egress policy", async () => {
      let received: pb.AgentCreateSandboxRequest | undefined;
      const client = clientOf({
        createSandbox: (request) => {
          received = request;
          return { sandboxId: request.sandboxId, state: "running" };
        },
      });
      await client.createSandbox(spec({ network: { mode: "Shared" } }));
      assert.equal(received?.network?.mode, pb.SandboxNetwork_Mode.SHARED);
      assert.equal(received.network.egress, undefined);
      assert.equal(received.network.allowSandboxToSandbox, false);
    });

    it("createSandbox: an Isolated network with its egress policy and sandbox-to-sandbox traffic; the agent's address comes back", async () => {
      const requests: pb.AgentCreateSandboxRequest[] = [];
      const client = clientOf({
        createSandbox: (request) => {
          requests.push(request);
          return { sandboxId: request.sandboxId, state: "running", address: "10.88.0.9" };
        },
      });
      const created = await client.createSandbox(
        spec({
          network: {
            mode: "Isolated",
            egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443, 80], protocol: "tcp" }, { cidr: "2001:db8::/32" }] },
            allowSandboxToSandbox: true,
          },
        }),
      );
      assert.equal(created.address, "10.88.0.9");
      await client.createSandbox(spec({ network: { mode: "Isolated", egress: { policy: "denyAll" }, allowSandboxToSandbox: false } }));
      await client.createSandbox(spec({ network: { mode: "Isolated", egress: { policy: "allowAll" }, allowSandboxToSandbox: false } }));
      const networks = requests.map((request) => request.network);
      assert.deepEqual(
        networks.map((network) => [network?.mode, network?.egress?.kind, network?.allowSandboxToSandbox]),
        [
          [pb.SandboxNetwork_Mode.ISOLATED, pb.EgressPolicy_Kind.ALLOW_LIST, true],
          [pb.SandboxNetwork_Mode.ISOLATED, pb.EgressPolicy_Kind.DENY_ALL, false],
          [pb.SandboxNetwork_Mode.ISOLATED, pb.EgressPolicy_Kind.ALLOW_ALL, false],
        ],
      );
      assert.deepEqual(
        networks[0]?.egress?.allow.map((rule) => [rule.cidr, [...rule.ports], rule.protocol]),
        [
          ["10.0.0.0/8", [443, 80], "tcp"],
          ["2001:db8::/32", [], ""],
        ],
      );
      assert.deepEqual(networks[1]?.egress?.allow, []);
    });

    it("exec: the command, environment and working directory", async () => {
      let received: pb.AgentExecRequest | undefined;
      const client = clientOf({
        async *exec(request) {
          received = request;
          yield { event: { case: "exitCode", value: 0 } };
        },
      });
      await collect(client.exec({ sandboxId: "a", command: ["sh", "-c", "env"], envs: [{ name: "B", value: "2" }], workingDir: "/tmp" }));
      assert.ok(received);
      assert.equal(received.sandboxId, "a");
      assert.deepEqual(received.command, ["sh", "-c", "env"]);
      assert.deepEqual(
        received.envs.map((e) => [e.name, e.value]),
        [["B", "2"]],
      );
      assert.equal(received.workingDir, "/tmp");

      await collect(client.exec({ sandboxId: "a", command: ["true"] }));
      assert.deepEqual([received.envs.length, received.workingDir], [0, ""], "no environment, the sandbox's working directory");
    });

    it("deleteSandbox: the sandbox id and the grace period", async () => {
      const deletes: [string, number][] = [];
      const client = clientOf({
        deleteSandbox: (request) => {
          deletes.push([request.sandboxId, request.gracePeriodMs]);
          return {};
        },
      });
      await client.deleteSandbox("a", 1500);
      assert.deepEqual(deletes, [["a", 1500]]);
    });
  });

  describe("errors", () => {
    it("arrive as the FsbError the agent threw, from unary calls and streams", async () => {
      const missing = () => toConnectError(new NotFoundError("sandbox a does not exist on agent python-0"));
      const client = clientOf({
        deleteSandbox: () => {
          throw missing();
        },
        async *exec() {
          throw missing();
        },
      });
      await assert.rejects(client.deleteSandbox("a", 0), (error: unknown) => error instanceof NotFoundError && /does not exist/.test(error.message));
      await assert.rejects(collect(client.exec({ sandboxId: "a", command: ["sh"] })), NotFoundError);
    });

    it("a unary call that ends 'canceled' although nobody cancelled it is the agent's connection lost: Unavailable, naming the agent", async () => {
      const client = clientOf({
        status: () => {
          throw new ConnectError("stream closed", Code.Canceled);
        },
      });
      await assert.rejects(client.status(), (error: unknown) => error instanceof UnavailableError && error.message.includes(ENDPOINT));
      await assert.rejects(client.status(), (error: unknown) => gotNoAnswer(error), "a call cut off: no answer");
    });

    it("a follow cut off by the agent going away (a restart: 'canceled' nobody asked for) is Unavailable, naming the agent and saying to retry", async () => {
      const client = clientOf({
        async *logs() {
          yield { data: bytes("hello\n") };
          throw new ConnectError("http/2 stream closed with error code CANCEL", Code.Canceled);
        },
        async *exec() {
          throw new ConnectError("http/2 stream closed with error code CANCEL", Code.Canceled);
        },
      });
      const got: Uint8Array[] = [];
      await assert.rejects(
        (async () => {
          for await (const chunk of client.logs("sb1", { follow: true })) got.push(chunk);
        })(),
        (error: unknown) => {
          assert.ok(error instanceof UnavailableError && error instanceof NoAnswerError, String(error));
          assert.match(error.message, new RegExp(`agent at ${ENDPOINT} went away .*while following the logs of sandbox sb1; retry`));
          return true;
        },
      );
      assert.deepEqual(got, [bytes("hello\n")]);
      await assert.rejects(
        collect(client.exec({ sandboxId: "a", command: ["sh"] })),
        (error: unknown) => gotNoAnswer(error) && error instanceof Error && /running a command in sandbox a/.test(error.message),
      );
    });

    it("a follow the caller's own signal cancelled is not taken for the agent going away", async () => {
      const stop = new AbortController();
      const client = clientOf({
        async *logs(_request, context) {
          yield { data: bytes("hello\n") };
          await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
        },
      });
      await assert.rejects(
        (async () => {
          for await (const _ of client.logs("sb1", { follow: true }, stop.signal)) stop.abort();
        })(),
        (error: unknown) => !(error instanceof UnavailableError) && !gotNoAnswer(error),
      );
    });

    it("tells a call cut off mid-way (no answer: it may be under way) from one the agent answered as unavailable", async () => {
      const client = clientOf({
        listSandboxes: () => {
          throw toConnectError(new UnavailableError("containerd is restarting"));
        },
        status: () => {
          // What the transport reports of a connection that broke under the call: no code of the agent's.
          throw new ConnectError("the connection was reset", Code.Unavailable);
        },
      });
      await assert.rejects(client.listSandboxes(), (error: unknown) => {
        assert.ok(error instanceof UnavailableError && /containerd is restarting/.test(error.message));
        assert.equal(gotNoAnswer(error), false, "the agent answered");
        return true;
      });
      await assert.rejects(client.status(), (error: unknown) => error instanceof NoAnswerError && gotNoAnswer(error));
    });

    it("a call whose connection could not be made never reached the agent: Unavailable, and not taken for no answer", async () => {
      const server = createTcpServer();
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as AddressInfo;
      server.close();
      await once(server, "close");
      const client = createAgentClient(`127.0.0.1:${port}`, "token");
      try {
        await assert.rejects(client.listSandboxes(), (error: unknown) => {
          assert.ok(error instanceof UnavailableError && /ECONNREFUSED/.test(error.message), String(error));
          assert.equal(gotNoAnswer(error), false);
          return true;
        });
      } finally {
        client.close();
      }
    });

    it("a call whose connection drops after it was sent got no answer", async () => {
      const server = createHttp2Server();
      const sockets: Socket[] = [];
      server.on("connection", (socket: Socket) => sockets.push(socket));
      server.on("stream", (stream) => {
        stream.on("error", () => undefined);
        // The agent dies with the call in hand.
        for (const socket of sockets) socket.destroy();
      });
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as AddressInfo;
      const client = createAgentClient(`127.0.0.1:${port}`, "token");
      try {
        await assert.rejects(client.listSandboxes(), (error: unknown) => error instanceof NoAnswerError && gotNoAnswer(error));
      } finally {
        client.close();
        server.close();
      }
    });

    it("an endpoint that does not speak HTTP/2 fails the call, and close() after it leaves no error thrown at the process", async () => {
      // Something else took the agent's port: it answers HTTP/1.1, the session fails ("Protocol error").
      const server = createHttp1Server((_request, response) => response.end("hello"));
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as AddressInfo;
      const uncaught: unknown[] = [];
      const record = (error: unknown): void => {
        uncaught.push(error);
      };
      process.on("uncaughtException", record);
      try {
        const client = createAgentClient(`127.0.0.1:${port}`, "token");
        await assert.rejects(client.listSandboxes(), FsbError);
        client.close();
        // Node emits the failed session's error once its socket has closed, after close() returned.
        await delay(300);
        assert.deepEqual(uncaught.map(String), []);
      } finally {
        process.off("uncaughtException", record);
        server.close();
      }
    });

    it("a call whose deadline passed got no answer", () => {
      assert.equal(gotNoAnswer(new TimeoutError("CheckpointSandbox did not answer within 240000 ms")), true);
      assert.equal(gotNoAnswer(new UnavailableError("agent agent-a is not connected; retry shortly")), false);
    });

    it("a method the agent does not have is an FsbError too", async () => {
      const client = clientOf({});
      await assert.rejects(client.listSandboxes(), FsbError);
    });
  });

  it("gives a checkpoint call longer than the agent may take to answer it (a slow save is answered, not given up on)", async () => {
    // packages/agent/src/containerd/checkpoints.ts: 10 s to quiesce its daemon, 120 s for runsc's save, 60 s to restore it in place.
    const AGENT_BUDGET_MS = 10_000 + 120_000 + 60_000;
    let deadlineMs: number | undefined;
    const client = clientOf({
      checkpointSandbox: (request, context) => {
        deadlineMs = context.timeoutMs();
        return { checkpointId: request.checkpointId, namespace: request.namespace, name: request.name };
      },
    });
    assert.ok(canCheckpoint(client));
    await client.checkpointSandbox({ sandboxId: "a", checkpointId: "c1", namespace: "team", name: "golden" });
    assert.ok(deadlineMs !== undefined && deadlineMs > AGENT_BUDGET_MS, `deadline ${deadlineMs} ms, the agent's budget ${AGENT_BUDGET_MS} ms`);
  });

  it("close releases the transport's connection", () => {
    let closed = 0;
    const client = clientOf({}, () => (closed += 1));
    client.close();
    assert.equal(closed, 1);
  });
});
