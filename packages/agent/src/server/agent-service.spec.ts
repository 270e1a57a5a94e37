import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import {
  AlreadyExistsError,
  BusyError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  TimeoutError,
  UnavailableError,
  ValidationError,
  checkProcess,
  fromConnectError,
  pb,
  type SandboxStats,
} from "@fast-sandbox/api";
import type {
  DeleteOptions,
  ExecIo,
  ExecRequest,
  ImagePullProgress,
  PullImageOptions,
  PulledImage,
  PreparedInstancesState,
  Runtime,
  RuntimeSandbox,
  RuntimeSandboxSpec,
} from "../runtime/runtime.js";
import { Admission } from "./admission.js";
import { EXEC_QUEUE_HIGH, STATS_WINDOW_MS, createAgentService, statusBudgetMs, type AgentIdentity, type AgentServiceOptions } from "./agent-service.js";
import { LogGenerations, rotateLog } from "../log-rotation.js";

/** An in-memory Runtime that records what the service asks of it. */
class FakeRuntime implements Runtime {
  readonly sandboxes = new Map<string, RuntimeSandbox>();
  images = ["fast-sandbox.io/base:latest", "python:3.12"];
  readonly created: RuntimeSandboxSpec[] = [];
  readonly deleted: { sandboxId: string; options: DeleteOptions }[] = [];
  readonly execs: { sandboxId: string; request: ExecRequest }[] = [];
  readonly waits: { sandboxId: string; signal: AbortSignal | undefined }[] = [];
  createError: Error | undefined;
  /** When set, create waits for it before it makes the sandbox. */
  createGate: Promise<void> | undefined;
  execScript: (io: ExecIo) => Promise<number> = async () => 0;
  waitResult: () => Promise<number> = async () => 0;

  async prepare(): Promise<void> {}

  async unprepare(): Promise<void> {}

  async listImages(): Promise<string[]> {
    return [...this.images];
  }

  readonly pulls: string[] = [];
  /** Reports these steps, then succeeds or throws `pullError`. */
  pullSteps: Omit<ImagePullProgress, "image">[] = [];
  pullError: Error | undefined;

  async pullImage(reference: string, options?: PullImageOptions): Promise<PulledImage> {
    this.pulls.push(reference);
    for (const step of this.pullSteps) options?.onProgress?.({ image: `normalized/${reference}`, ...step });
    if (this.pullError) throw this.pullError;
    return { image: `normalized/${reference}`, digest: "sha256:abc" };
  }

  async create(spec: RuntimeSandboxSpec): Promise<RuntimeSandbox> {
    this.created.push(spec);
    if (this.createError) throw this.createError;
    if (this.createGate) await this.createGate;
    if (this.sandboxes.has(spec.sandboxId)) throw new AlreadyExistsError(`sandbox ${spec.sandboxId} already exists`);
    const sandbox: RuntimeSandbox = {
      sandboxId: spec.sandboxId,
      namespace: spec.namespace,
      name: spec.name,
      pool: spec.pool,
      image: spec.image,
      state: "running",
      pid: 4321,
      ...(spec.network?.mode === "isolated" ? { address: "10.213.0.9" } : {}),
      labels: {},
    };
    this.sandboxes.set(spec.sandboxId, sandbox);
    return sandbox;
  }

  async delete(sandboxId: string, options: DeleteOptions): Promise<void> {
    this.deleted.push({ sandboxId, options });
    this.sandboxes.delete(sandboxId);
  }

  async get(sandboxId: string): Promise<RuntimeSandbox | undefined> {
    return this.sandboxes.get(sandboxId);
  }

  statsWindows: number[] = [];

  async stats(sandboxId: string, windowMs: number): Promise<SandboxStats> {
    if (!this.sandboxes.has(sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    this.statsWindows.push(windowMs);
    return {
      timestampMs: 1_700_000_000_000,
      cpuUsageNanos: 5_000_000_000,
      cpuUsedMillis: 250,
      cpuLimitMillis: 500,
      memoryUsedBytes: 64 << 20,
      memoryCacheBytes: 16 << 20,
      memoryLimitBytes: 256 << 20,
      pids: 3,
      diskUsedBytes: 4096,
      diskLimitBytes: 0,
      nodeCpus: 2,
      nodeMemoryBytes: 8 * 2 ** 30,
    };
  }

  async evict(sandboxId: string, reason: string): Promise<void> {
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    this.sandboxes.set(sandboxId, { ...sandbox, state: "stopped", evicted: reason });
  }

  async list(): Promise<RuntimeSandbox[]> {
    return [...this.sandboxes.values()];
  }

  async exec(sandboxId: string, request: ExecRequest, io: ExecIo): Promise<number> {
    this.execs.push({ sandboxId, request });
    return this.execScript(io);
  }

  async wait(sandboxId: string, signal?: AbortSignal): Promise<number> {
    this.waits.push({ sandboxId, signal });
    return this.waitResult();
  }

  close(): void {}

  prepared: PreparedInstancesState | undefined;

  preparedInstances(): PreparedInstancesState | undefined {
    return this.prepared;
  }

  add(sandbox: Partial<RuntimeSandbox> & { sandboxId: string }): void {
    this.sandboxes.set(sandbox.sandboxId, {
      namespace: "default",
      name: sandbox.sandboxId,
      pool: "default",
      image: "img",
      state: "running",
      labels: {},
      ...sandbox,
    });
  }
}

const identity: AgentIdentity = { name: "default-0", namespace: "default", pool: "default", nodeName: "node-1" };
const logDir = mkdtempSync(join(tmpdir(), "fsb-agent-service-"));
after(() => rmSync(logDir, { recursive: true, force: true }));

let runtime: FakeRuntime;
let client: Client<typeof pb.AgentService>;

/** A client of a new agent service over `runtime`, with the given admission (or its default), and options. */
function serve(admission?: Admission, options: Partial<AgentServiceOptions> = {}): Client<typeof pb.AgentService> {
  const service = createAgentService({ identity, runtime, logDir, ...(admission ? { admission } : {}), ...options });
  return createClient(
    pb.AgentService,
    createRouterTransport(({ service: register }) => {
      register(pb.AgentService, service);
    }),
  );
}

beforeEach(() => {
  runtime = new FakeRuntime();
  client = serve();
});

const logPath = (sandboxId: string) => join(logDir, `${sandboxId}.log`);
const text = (data: Uint8Array) => Buffer.from(data).toString();

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `expected ConnectError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

type CreateRequest = Omit<pb.AgentCreateSandboxRequest, "$typeName" | "$unknown" | "envs"> & { envs: { name: string; value: string }[] };

function createRequest(overrides: Partial<CreateRequest> = {}): CreateRequest {
  return {
    sandboxId: "default.web.abc123",
    namespace: "default",
    name: "web",
    image: "python:3.12",
    command: ["python"],
    args: ["-m", "http.server"],
    envs: [
      { name: "A", value: "1" },
      { name: "EMPTY", value: "" },
    ],
    workingDir: "/srv",
    runtimeType: "gvisor",
    cpuMillis: 500,
    memoryBytes: 256n * 1024n * 1024n,
    pids: 64,
    ephemeralStorageBytes: 0n,
    slots: 0,
    exposedPorts: [],
    fromCheckpoint: "",
    ...overrides,
  };
}

describe("AgentService", () => {
  describe("createSandbox", () => {
    it("passes every field through to the runtime and answers with the sandbox", async () => {
      const response = await client.createSandbox(createRequest());
      assert.equal(runtime.created.length, 1);
      assert.deepEqual(runtime.created[0], {
        sandboxId: "default.web.abc123",
        namespace: "default",
        name: "web",
        pool: "default",
        image: "python:3.12",
        command: ["python"],
        args: ["-m", "http.server"],
        env: [
          { name: "A", value: "1" },
          { name: "EMPTY", value: "" },
        ],
        workingDir: "/srv",
        resources: { cpuMillis: 500, memoryBytes: 256 * 1024 * 1024, pids: 64 },
        runtimeType: "gvisor",
        logPath: logPath("default.web.abc123"),
      });
      assert.equal(response.sandboxId, "default.web.abc123");
      assert.equal(response.state, "running");
      assert.equal(response.pid, 4321);
      assert.equal(response.exitCode, undefined);
    });

    it("marks the new sandbox's log hot, so that its rotation watches it closely from the start", async () => {
      const marked: string[] = [];
      const agent = serve(undefined, { logRotation: { markHot: (path) => marked.push(path), generations: new LogGenerations(logDir) } });
      await agent.createSandbox(createRequest());
      assert.deepEqual(marked, [logPath("default.web.abc123")]);
      runtime.createError = new Error("no");
      await rejection(agent.createSandbox(createRequest({ sandboxId: "default.web.failed" })));
      assert.deepEqual(marked, [logPath("default.web.abc123")], "not a sandbox that failed to start");
    });

    it("uses the agent's own pool, whatever the caller's namespace", async () => {
      await client.createSandbox(createRequest({ namespace: "team-a" }));
      assert.equal(runtime.created[0]?.pool, "default");
      assert.equal(runtime.created[0]?.namespace, "team-a");
    });

    for (const runtimeType of ["", "container", "kata"]) {
      it(`runs runtimeType ${JSON.stringify(runtimeType)} as a plain container`, async () => {
        await client.createSandbox(createRequest({ runtimeType }));
        assert.equal(runtime.created[0]?.runtimeType, "container");
      });
    }

    it("leaves out unset resources and working directory", async () => {
      await client.createSandbox(createRequest({ cpuMillis: 0, memoryBytes: 0n, pids: 0, workingDir: "" }));
      const spec = runtime.created[0];
      assert.deepEqual(spec?.resources, {});
      assert.equal(spec && "workingDir" in spec, false);
    });

    for (const sandboxId of ["../x", "", "UPPER", "a/b", "-leading-dash", "x".repeat(129)]) {
      it(`refuses sandbox id ${JSON.stringify(sandboxId.length > 20 ? `${sandboxId.slice(0, 8)}…` : sandboxId)} with InvalidArgument`, async () => {
        const error = await rejection(client.createSandbox(createRequest({ sandboxId })));
        assert.equal(error.code, Code.InvalidArgument);
        assert.match(error.rawMessage, /sandboxId/);
        assert.equal(runtime.created.length, 0);
      });
    }

    it("removes a log file the failed create left behind", async () => {
      writeFileSync(logPath("default.failed.000001"), "partial output");
      runtime.createError = new NotFoundError("image python:3.12 is not present");
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.failed.000001" })));
      assert.equal(error.code, Code.NotFound);
      assert.equal(existsSync(logPath("default.failed.000001")), false);
    });

    it("keeps the log file when the sandbox id belongs to an existing sandbox", async () => {
      writeFileSync(logPath("default.taken.000001"), "the other sandbox's output");
      runtime.createError = new AlreadyExistsError("sandbox default.taken.000001 exists");
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.taken.000001" })));
      assert.equal(error.code, Code.AlreadyExists);
      assert.equal(existsSync(logPath("default.taken.000001")), true);
    });

    it("keeps the log file when a create fails otherwise for the id of an existing sandbox (its duplicate check failed, say)", async () => {
      runtime.add({ sandboxId: "default.taken.000002" });
      writeFileSync(logPath("default.taken.000002"), "the sandbox's output");
      runtime.createError = new UnavailableError("containerd Containers/Get: connection refused");
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.taken.000002" })));
      assert.equal(error.code, Code.Unavailable);
      assert.equal(existsSync(logPath("default.taken.000002")), true);
    });

    it("keeps the log file of a failed create when whether the sandbox exists cannot be told", async () => {
      writeFileSync(logPath("default.unknown.000001"), "perhaps a sandbox's output");
      runtime.createError = new UnavailableError("containerd Containers/Get: connection refused");
      runtime.get = () => Promise.reject(new UnavailableError("containerd Containers/Get: connection refused"));
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.unknown.000001" })));
      assert.equal(error.code, Code.Unavailable);
      assert.equal(existsSync(logPath("default.unknown.000001")), true);
    });

    it("reports an unexpected runtime failure as Internal", async () => {
      runtime.createError = new Error("shim died");
      const error = await rejection(client.createSandbox(createRequest()));
      assert.equal(error.code, Code.Internal);
      assert.match(error.rawMessage, /shim died/);
    });
  });

  describe("admission (slots and exposed ports, decided by the agent)", () => {
    /** A gate that opens on `open()`, or by itself after 2 s so a failing test fails instead of hanging. */
    function gate(): { opened: Promise<void>; open: () => void } {
      let open = () => undefined as void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      const timer = setTimeout(open, 2000);
      return {
        opened,
        open: () => {
          clearTimeout(timer);
          open();
        },
      };
    }

    /** Holds the runtime's creates until `open()`. */
    function gateCreates(): { open: () => void } {
      const creates = gate();
      runtime.createGate = creates.opened;
      return creates;
    }

    it("lets exactly `slots` of concurrent creates in and refuses the rest with ResourceExhausted, a NoCapacityError for the caller", async () => {
      const gate = gateCreates();
      const calls = Array.from({ length: 10 }, (_, i) => client.createSandbox(createRequest({ sandboxId: `default.burst.${i}`, slots: 3 })));
      const settled = Promise.allSettled(calls);
      // The refusals answer while the admitted creates are still in flight.
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(runtime.created.length, 3);
      gate.open();
      const results = await settled;
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 3);
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as unknown);
      assert.equal(refused.length, 7);
      for (const error of refused) {
        assert.ok(error instanceof ConnectError);
        assert.equal(error.code, Code.ResourceExhausted);
        assert.equal(error.rawMessage, "agent default-0 is full: 3 of 3 slots in use");
        assert.ok(fromConnectError(error) instanceof NoCapacityError);
      }
      assert.equal(runtime.sandboxes.size, 3);
    });

    it("counts the sandboxes the runtime had when the admission was seeded, exited ones too", async () => {
      runtime.add({ sandboxId: "default.old.000001", state: "stopped", exitCode: 0 });
      runtime.add({ sandboxId: "default.old.000002", name: "api", exposedPorts: [8080] });
      const admission = new Admission(identity.name);
      admission.adopt(await runtime.list());
      const seeded = serve(admission);
      const full = await rejection(seeded.createSandbox(createRequest({ sandboxId: "default.new.000001", slots: 2 })));
      assert.equal(full.code, Code.ResourceExhausted);
      const port = await rejection(seeded.createSandbox(createRequest({ sandboxId: "default.new.000001", slots: 3, exposedPorts: [8080] })));
      assert.equal(port.rawMessage, "port 8080 is already exposed by sandbox default/api on agent default-0");
      await seeded.createSandbox(createRequest({ sandboxId: "default.new.000001", slots: 3, exposedPorts: [8081] }));
      assert.deepEqual(runtime.created[0]?.exposedPorts, [8081]);
    });

    it("refuses a port another sandbox of the agent exposes, and takes it once that sandbox is deleted", async () => {
      await client.createSandbox(createRequest({ sandboxId: "default.web.000001", name: "web", exposedPorts: [8080] }));
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.web.000002", name: "web2", exposedPorts: [9000, 8080] })));
      assert.equal(error.code, Code.ResourceExhausted);
      assert.equal(error.rawMessage, "port 8080 is already exposed by sandbox default/web on agent default-0");
      assert.equal(runtime.created.length, 1);
      await client.deleteSandbox({ sandboxId: "default.web.000001", gracePeriodMs: 0 });
      await client.createSandbox(createRequest({ sandboxId: "default.web.000002", name: "web2", exposedPorts: [9000, 8080] }));
    });

    it("lets Isolated sandboxes expose the same port (each has its own address), while Shared ones still compete for the agent's", async () => {
      const isolated = { network: create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.ISOLATED }) };
      await client.createSandbox(createRequest({ sandboxId: "default.a.000001", name: "a", exposedPorts: [8080], ...isolated }));
      await client.createSandbox(createRequest({ sandboxId: "default.b.000001", name: "b", exposedPorts: [8080], ...isolated }));
      await client.createSandbox(createRequest({ sandboxId: "default.c.000001", name: "c", exposedPorts: [8080] }));
      const error = await rejection(
        client.createSandbox(
          createRequest({
            sandboxId: "default.d.000001",
            name: "d",
            exposedPorts: [8080],
            network: create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.SHARED }),
          }),
        ),
      );
      assert.equal(error.rawMessage, "port 8080 is already exposed by sandbox default/c on agent default-0");
    });

    it("hands an Isolated sandbox's network to the runtime, checked and normalised, and answers with its address", async () => {
      const network = create(pb.SandboxNetworkSchema, {
        mode: pb.SandboxNetwork_Mode.ISOLATED,
        egress: { kind: pb.EgressPolicy_Kind.ALLOW_LIST, allow: [{ cidr: "192.0.2.9/24", ports: [443, 80], protocol: "tcp" }, { cidr: "198.51.100.1" }] },
        allowSandboxToSandbox: true,
      });
      const response = await client.createSandbox(createRequest({ network }));
      assert.deepEqual(runtime.created[0]?.network, {
        mode: "isolated",
        egress: { kind: "allowList", allow: [{ cidr: "192.0.2.0/24", ports: [80, 443], protocol: "tcp" }, { cidr: "198.51.100.1/32" }] },
        allowSandboxToSandbox: true,
      });
      assert.equal(response.address, "10.213.0.9");
      assert.equal((await client.listSandboxes({})).sandboxes[0]?.address, "10.213.0.9");
      // Unset, unspecified or Shared: the runtime gets no network (today's shared behaviour), and no address comes back.
      await client.createSandbox(
        createRequest({ sandboxId: "default.b.000001", network: create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.SHARED }) }),
      );
      await client.createSandbox(createRequest({ sandboxId: "default.c.000001" }));
      assert.deepEqual(
        runtime.created.slice(1).map((spec) => spec.network),
        [undefined, undefined],
      );
    });

    it("refuses a process the control plane would refuse (NUL bytes, '=' in a name, a relative working dir) before the runtime is asked", async () => {
      const cases = [
        { what: "a NUL byte in an argument", args: ["a\0b"] },
        { what: "a name with '='", envs: [{ name: "A=B", value: "c" }] },
        { what: "a relative working dir", workingDir: "relative/../dir" },
      ];
      for (const { what, ...process } of cases) {
        const error = await rejection(client.createSandbox(createRequest(process)));
        assert.equal(error.code, Code.InvalidArgument, what);
        assert.match(error.rawMessage, /^(args\[0\]|envs\[0\]\.name|workingDir)/, what);
      }
      assert.equal(runtime.created.length, 0);
    });

    it("refuses a bad egress policy before it takes a slot", async () => {
      const bad = [
        create(pb.SandboxNetworkSchema, {
          mode: pb.SandboxNetwork_Mode.ISOLATED,
          egress: { kind: pb.EgressPolicy_Kind.ALLOW_LIST, allow: [{ cidr: "10.0.0.0/33" }] },
        }),
        create(pb.SandboxNetworkSchema, {
          mode: pb.SandboxNetwork_Mode.ISOLATED,
          egress: { kind: pb.EgressPolicy_Kind.ALLOW_LIST, allow: [{ cidr: "10.0.0.0/8", protocol: "icmp" }] },
        }),
        create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.SHARED, egress: { kind: pb.EgressPolicy_Kind.DENY_ALL } }),
      ];
      for (const network of bad) {
        const error = await rejection(client.createSandbox(createRequest({ network, slots: 1 })));
        assert.equal(error.code, Code.InvalidArgument, error.rawMessage);
        assert.match(error.rawMessage, /^network\.egress/);
      }
      assert.equal(runtime.created.length, 0);
      await client.createSandbox(createRequest({ slots: 1 }));
    });

    it("gives the slot and ports of a failed create back", async () => {
      runtime.createError = new NotFoundError("image python:3.12 is not present");
      await rejection(client.createSandbox(createRequest({ sandboxId: "default.failed.000001", slots: 1, exposedPorts: [8080] })));
      runtime.createError = undefined;
      await client.createSandbox(createRequest({ sandboxId: "default.next.000001", slots: 1, exposedPorts: [8080] }));
      assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.more.000001", slots: 1 })))).code, Code.ResourceExhausted);
    });

    it("answers a retry of an existing id with AlreadyExists, as before, even when the agent is full", async () => {
      await client.createSandbox(createRequest({ sandboxId: "default.web.000001", slots: 1, exposedPorts: [8080] }));
      const error = await rejection(client.createSandbox(createRequest({ sandboxId: "default.web.000001", slots: 1, exposedPorts: [8080] })));
      assert.equal(error.code, Code.AlreadyExists);
      // The failed retry freed nothing of the sandbox it collided with.
      assert.equal(
        (await rejection(client.createSandbox(createRequest({ sandboxId: "default.other.000001", slots: 2, exposedPorts: [8080] })))).code,
        Code.ResourceExhausted,
      );
    });

    it("does not count a retry of a create in flight twice", async () => {
      const gate = gateCreates();
      const first = client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 2 }));
      const retry = client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 2 }));
      // Refused at once (a duplicate of the create in flight), looked at below.
      retry.catch(() => undefined);
      const second = client.createSandbox(createRequest({ sandboxId: "default.b.000001", slots: 2 }));
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.c.000001", slots: 2 })))).code, Code.ResourceExhausted);
      gate.open();
      const results = await Promise.allSettled([first, retry, second]);
      assert.deepEqual(
        results.map((r) => r.status),
        ["fulfilled", "rejected", "fulfilled"],
      );
      assert.equal((await rejection(retry)).code, Code.AlreadyExists);
      assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.c.000001", slots: 2 })))).code, Code.ResourceExhausted);
    });

    /** Starts the delete of `sandboxId` and holds it inside the runtime's delete until `deleting.open()`. */
    async function deleteHeldOpen(sandboxId: string): Promise<{ deleting: ReturnType<typeof gate>; deleted: Promise<unknown> }> {
      const deleting = gate();
      const remove = runtime.delete.bind(runtime);
      runtime.delete = async (id, options) => {
        await deleting.opened;
        await remove(id, options);
      };
      const deleted = client.deleteSandbox({ sandboxId, gracePeriodMs: 0 });
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { deleting, deleted };
    }

    it("keeps the slot until the sandbox's delete has finished", async () => {
      await client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 1 }));
      const { deleting, deleted } = await deleteHeldOpen("default.a.000001");
      assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.b.000001", slots: 1 })))).code, Code.ResourceExhausted);
      deleting.open();
      await deleted;
      await client.createSandbox(createRequest({ sandboxId: "default.b.000001", slots: 1 }));
    });

    it("refuses a create of an id whose delete has not finished (its last steps would land on the new sandbox), and takes it once it has", async () => {
      await client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 2 }));
      const { deleting, deleted } = await deleteHeldOpen("default.a.000001");
      const refused = await rejection(client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 2 })));
      assert.equal(refused.code, Code.Unavailable);
      assert.match(refused.message, /is being deleted on this agent/);
      const createsBefore = runtime.created.length;
      deleting.open();
      await deleted;
      assert.equal(runtime.created.length, createsBefore, "the refused create ran nothing");
      await client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 2 }));
      assert.equal(runtime.created.length, createsBefore + 1);
    });

    it("keeps the slot of a sandbox whose delete failed", async () => {
      await client.createSandbox(createRequest({ sandboxId: "default.a.000001", slots: 1 }));
      runtime.delete = async () => {
        throw new FsbError("unavailable", "containerd is down");
      };
      await rejection(client.deleteSandbox({ sandboxId: "default.a.000001", gracePeriodMs: 0 }));
      assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.b.000001", slots: 1 })))).code, Code.ResourceExhausted);
    });

    it("frees the slot of a sandbox removed behind its back (the janitor) once a status or list shows it gone", async () => {
      for (const list of [() => client.status({}), () => client.listSandboxes({})]) {
        const id = `default.reaped.${runtime.created.length}`;
        await client.createSandbox(createRequest({ sandboxId: id, slots: 1, exposedPorts: [8080] }));
        runtime.sandboxes.delete(id);
        assert.equal((await rejection(client.createSandbox(createRequest({ sandboxId: "default.next.000001", slots: 1 })))).code, Code.ResourceExhausted);
        await list();
        await client.createSandbox(createRequest({ sandboxId: "default.next.000001", slots: 1, exposedPorts: [8080] }));
        await client.deleteSandbox({ sandboxId: "default.next.000001", gracePeriodMs: 0 });
      }
    });

    it("refuses creates with Unavailable once the agent is stopping, touching nothing", async () => {
      const admission = new Admission(identity.name);
      const stopping = serve(admission);
      admission.stop();
      const error = await rejection(stopping.createSandbox(createRequest()));
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.rawMessage, /agent default-0 is stopping/);
      assert.equal(runtime.created.length, 0);
    });
  });

  describe("getSandboxStats", () => {
    it("answers the runtime's reading of the sandbox, its CPU watched for STATS_WINDOW_MS", async () => {
      runtime.add({ sandboxId: "default.stats.000001" });
      const stats = await client.getSandboxStats({ sandboxId: "default.stats.000001" });
      assert.deepEqual(runtime.statsWindows, [STATS_WINDOW_MS]);
      assert.equal(stats.cpuUsedMillis, 250n);
      assert.equal(stats.memoryUsedBytes, BigInt(64 << 20));
      assert.equal(stats.memoryCacheBytes, BigInt(16 << 20));
      assert.equal(stats.memoryLimitBytes, BigInt(256 << 20));
      assert.equal(stats.nodeMemoryBytes, BigInt(8 * 2 ** 30));
      assert.equal(stats.pids, 3);
    });

    it("answers NotFound for a sandbox the agent does not hold, and InvalidArgument for a malformed id", async () => {
      assert.equal((await rejection(client.getSandboxStats({ sandboxId: "default.nothere.000001" }))).code, Code.NotFound);
      assert.equal((await rejection(client.getSandboxStats({ sandboxId: "../etc" }))).code, Code.InvalidArgument);
    });
  });

  describe("deleteSandbox", () => {
    it("deletes on the runtime with a grace period of 0 kept as 0, and removes the log file", async () => {
      runtime.add({ sandboxId: "default.gone.000001" });
      writeFileSync(logPath("default.gone.000001"), "bye\n");
      await client.deleteSandbox({ sandboxId: "default.gone.000001", gracePeriodMs: 0 });
      assert.deepEqual(runtime.deleted, [{ sandboxId: "default.gone.000001", options: { gracePeriodMs: 0 } }]);
      assert.equal(existsSync(logPath("default.gone.000001")), false);
      assert.equal(runtime.sandboxes.size, 0);
    });

    it("passes a positive grace period through and clamps a negative one to 0", async () => {
      await client.deleteSandbox({ sandboxId: "a", gracePeriodMs: 1500 });
      await client.deleteSandbox({ sandboxId: "b", gracePeriodMs: -5 });
      assert.deepEqual(
        runtime.deleted.map((d) => d.options.gracePeriodMs),
        [1500, 0],
      );
    });

    it("succeeds for a sandbox without a log file", async () => {
      await client.deleteSandbox({ sandboxId: "default.nolog.000001", gracePeriodMs: 10 });
      assert.equal(runtime.deleted.length, 1);
    });

    it("refuses an invalid sandbox id without touching the runtime or the file system", async () => {
      writeFileSync(join(logDir, "..", "x.log"), "outside");
      try {
        const error = await rejection(client.deleteSandbox({ sandboxId: "../x", gracePeriodMs: 0 }));
        assert.equal(error.code, Code.InvalidArgument);
        assert.equal(runtime.deleted.length, 0);
        assert.equal(existsSync(join(logDir, "..", "x.log")), true);
      } finally {
        rmSync(join(logDir, "..", "x.log"), { force: true });
      }
    });

    it("keeps the log file when the runtime fails to delete", async () => {
      runtime.add({ sandboxId: "default.stuck.000001" });
      writeFileSync(logPath("default.stuck.000001"), "still here");
      runtime.delete = async () => {
        throw new FsbError("unavailable", "containerd is down");
      };
      const error = await rejection(client.deleteSandbox({ sandboxId: "default.stuck.000001", gracePeriodMs: 0 }));
      assert.equal(error.code, Code.Unavailable);
      assert.equal(existsSync(logPath("default.stuck.000001")), true);
    });
  });

  describe("exec", () => {
    it("streams stdout and stderr in order, then the exit code", async () => {
      runtime.add({ sandboxId: "default.sh.000001" });
      runtime.execScript = async (io) => {
        io.onStdout(Buffer.from("out 1\n"));
        io.onStderr(Buffer.from("err 1\n"));
        io.onStdout(Buffer.from("out 2\n"));
        return 3;
      };
      const events = await drain(
        client.exec({ sandboxId: "default.sh.000001", command: ["sh", "-c", "exit 3"], envs: [{ name: "K", value: "V" }], workingDir: "/tmp" }),
      );
      assert.deepEqual(
        events.map((e) => (e.event.case === "exitCode" ? ["exitCode", e.event.value] : [e.event.case, e.event.value ? text(e.event.value) : undefined])),
        [
          ["stdout", "out 1\n"],
          ["stderr", "err 1\n"],
          ["stdout", "out 2\n"],
          ["exitCode", 3],
        ],
      );
      assert.deepEqual(runtime.execs, [
        { sandboxId: "default.sh.000001", request: { command: ["sh", "-c", "exit 3"], env: [{ name: "K", value: "V" }], workingDir: "/tmp" } },
      ]);
    });

    it("asks the producer to pause once more than EXEC_QUEUE_HIGH chunks wait for the client", async () => {
      runtime.add({ sandboxId: "default.flood.000001" });
      const returned: unknown[] = [];
      runtime.execScript = async (io) => {
        for (let i = 0; i < EXEC_QUEUE_HIGH + 5; i++) returned.push(io.onStdout(Buffer.from(`chunk ${i}\n`)));
        // Waits until the client has consumed enough for the pipe to resume.
        await returned.at(-1);
        return 0;
      };
      const events = await drain(client.exec({ sandboxId: "default.flood.000001", command: ["yes"] }));
      assert.equal(events.filter((e) => e.event.case === "stdout").length, EXEC_QUEUE_HIGH + 5);
      assert.equal(returned.slice(0, EXEC_QUEUE_HIGH).filter((r) => r instanceof Promise).length, 0);
      assert.ok(returned.slice(EXEC_QUEUE_HIGH).every((r) => r instanceof Promise));
    });

    it("reports exit code 0 as an event", async () => {
      runtime.add({ sandboxId: "default.ok.000001" });
      const events = await drain(client.exec({ sandboxId: "default.ok.000001", command: ["true"] }));
      assert.deepEqual(
        events.map((e) => e.event),
        [{ case: "exitCode", value: 0 }],
      );
      assert.equal("workingDir" in (runtime.execs[0]?.request ?? {}), false);
    });

    it("refuses a sandbox the runtime does not have with NotFound", async () => {
      const error = await rejection(drain(client.exec({ sandboxId: "default.missing.000001", command: ["true"] })));
      assert.equal(error.code, Code.NotFound);
      assert.match(error.rawMessage, /default-0/);
      assert.equal(runtime.execs.length, 0);
    });

    it("refuses an empty command and an invalid id with InvalidArgument", async () => {
      runtime.add({ sandboxId: "default.sh.000001" });
      assert.equal((await rejection(drain(client.exec({ sandboxId: "default.sh.000001", command: [] })))).code, Code.InvalidArgument);
      assert.equal((await rejection(drain(client.exec({ sandboxId: "../x", command: ["true"] })))).code, Code.InvalidArgument);
      assert.equal(runtime.execs.length, 0);
    });

    it("refuses what the control plane refuses (a create's rules), in its words, before the runtime is asked", async () => {
      runtime.add({ sandboxId: "default.sh.000001" });
      const big = "x".repeat(128 * 1024 - 1);
      const cases: { what: string; command?: string[]; envs?: { name: string; value: string }[]; workingDir?: string }[] = [
        { what: "a name with '=' (it would set A=\"B=c\")", envs: [{ name: "A=B", value: "c" }] },
        { what: 'an empty name (it would set "=c")', envs: [{ name: "", value: "c" }] },
        { what: "a NUL byte in a name", envs: [{ name: "A\0", value: "c" }] },
        { what: "a NUL byte in a value", envs: [{ name: "A", value: "x\0y" }] },
        { what: "a NUL byte in the command", command: ["sh", "-c", "a\0b"] },
        { what: "a relative working dir", workingDir: "tmp" },
        { what: "a NUL byte in the working dir", workingDir: "/tmp\0x" },
        { what: "a working dir longer than PATH_MAX", workingDir: `/${"d".repeat(4095)}` },
        { what: "257 command entries", command: Array(257).fill("x") },
        { what: "257 variables", envs: Array.from({ length: 257 }, (_, index) => ({ name: `V${index}`, value: "" })) },
        { what: "an argument of 128 KiB", command: ["echo", `${big}x`] },
        { what: "an argument of 128 KiB in bytes", command: ["echo", "é".repeat(70_000)] },
        { what: "a variable of 128 KiB as NAME=value", envs: [{ name: "BIG", value: big }] },
        { what: "a 20 MB command (containerd takes 16 MiB)", command: ["echo", ...Array(160).fill(big)] },
        { what: "more than 1 MiB of environment", envs: Array.from({ length: 9 }, (_, index) => ({ name: `V${index}`, value: "v".repeat(120 * 1024) })) },
      ];
      for (const { what, ...process } of cases) {
        const request = { sandboxId: "default.sh.000001", command: ["env"], ...process };
        let expected: unknown;
        try {
          checkProcess(request);
        } catch (error) {
          expected = error;
        }
        assert.ok(expected instanceof ValidationError, `the control plane refuses ${what}`);
        const error = await rejection(drain(client.exec(request)));
        assert.equal(error.code, Code.InvalidArgument, what);
        assert.equal(error.rawMessage, expected.message, what);
      }
      const error = await rejection(drain(client.exec({ sandboxId: "default.sh.000001", command: ["env"], envs: [{ name: "A=B", value: "c" }] })));
      assert.equal(error.rawMessage, `envs[0].name: "A=B" is not valid (Variable name; must not be empty or contain '=' or NUL bytes.)`);
      assert.equal(runtime.execs.length, 0);
      // At the limits: taken.
      await drain(
        client.exec({ sandboxId: "default.sh.000001", command: ["echo", ...Array(7).fill(big)], envs: [{ name: "A", value: "=b" }], workingDir: "/" }),
      );
      assert.equal(runtime.execs.length, 1);
    });

    it("delivers the output produced before the runtime failed, then the error", async () => {
      runtime.add({ sandboxId: "default.sh.000001" });
      runtime.execScript = async (io) => {
        io.onStdout(Buffer.from("partial"));
        throw new NotFoundError("process vanished");
      };
      const received: pb.ExecResponse[] = [];
      const error = await rejection(
        (async () => {
          for await (const event of client.exec({ sandboxId: "default.sh.000001", command: ["x"] })) received.push(event);
        })(),
      );
      assert.equal(error.code, Code.NotFound);
      assert.match(error.rawMessage, /process vanished/);
      assert.deepEqual(
        received.map((e) => e.event.case),
        ["stdout"],
      );
    });
  });

  describe("logs", () => {
    it("returns the log file's content", async () => {
      runtime.add({ sandboxId: "default.log.000001", state: "stopped", exitCode: 0 });
      writeFileSync(logPath("default.log.000001"), "line 1\nline 2\n");
      const chunks = await drain(client.logs({ sandboxId: "default.log.000001", follow: false }));
      assert.equal(chunks.map((c) => text(c.data)).join(""), "line 1\nline 2\n");
      assert.equal(runtime.waits.length, 0);
    });

    it("does not wait for a sandbox that already exited, even when asked to follow", async () => {
      runtime.add({ sandboxId: "default.log.000002", state: "stopped", exitCode: 1 });
      writeFileSync(logPath("default.log.000002"), "done\n");
      const chunks = await drain(client.logs({ sandboxId: "default.log.000002", follow: true }));
      assert.equal(chunks.map((c) => text(c.data)).join(""), "done\n");
      assert.equal(runtime.waits.length, 0);
    });

    it("follows a running sandbox until its command exits, then stops the wait", async () => {
      runtime.add({ sandboxId: "default.log.000003", state: "running" });
      writeFileSync(logPath("default.log.000003"), "running\n");
      const chunks = await drain(client.logs({ sandboxId: "default.log.000003", follow: true }));
      assert.equal(chunks.map((c) => text(c.data)).join(""), "running\n");
      assert.equal(runtime.waits.length, 1);
      assert.equal(runtime.waits[0]?.sandboxId, "default.log.000003");
      assert.equal(runtime.waits[0]?.signal?.aborted, true, "the wait's signal is aborted when the stream ends");
    });

    it("ends a follow with the wait's error (containerd away for long), not quietly as if the command had exited", async () => {
      runtime.add({ sandboxId: "default.log.000005", state: "running" });
      writeFileSync(logPath("default.log.000005"), "running\n");
      runtime.waitResult = () => Promise.reject(new UnavailableError("containerd Tasks/Wait: connection refused"));
      const chunks: pb.LogsResponse[] = [];
      const error = await rejection(
        (async () => {
          for await (const chunk of client.logs({ sandboxId: "default.log.000005", follow: true })) chunks.push(chunk);
        })(),
      );
      assert.equal(error.code, Code.Unavailable);
      assert.equal(chunks.map((c) => text(c.data)).join(""), "running\n");
    });

    it("follows a sandbox whose state containerd could not tell (unknown: busy), as a running one", async () => {
      runtime.add({ sandboxId: "default.log.000006", state: "unknown" });
      writeFileSync(logPath("default.log.000006"), "still running\n");
      const chunks = await drain(client.logs({ sandboxId: "default.log.000006", follow: true }));
      assert.equal(chunks.map((c) => text(c.data)).join(""), "still running\n");
      assert.equal(runtime.waits.length, 1);
      assert.equal(runtime.waits[0]?.sandboxId, "default.log.000006");
    });

    it("ends a follow of a sandbox of unknown state with Unavailable when the wait for its task fails: containerd did not answer", async () => {
      runtime.add({ sandboxId: "default.log.000007", state: "unknown" });
      writeFileSync(logPath("default.log.000007"), "output\n");
      runtime.waitResult = () => Promise.reject(new FsbError("internal", "ttrpc: closed"));
      const chunks: pb.LogsResponse[] = [];
      const error = await rejection(
        (async () => {
          for await (const chunk of client.logs({ sandboxId: "default.log.000007", follow: true })) chunks.push(chunk);
        })(),
      );
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.rawMessage, /containerd did not answer/);
      assert.equal(chunks.map((c) => text(c.data)).join(""), "output\n");
    });

    it("reads a log by its rotation's records: a reader that fell behind two rotations is told so", async () => {
      const generations = new LogGenerations(logDir);
      const agent = serve(undefined, { logRotation: { markHot: () => undefined, generations } });
      const path = logPath("default.log.000008");
      runtime.add({ sandboxId: "default.log.000008", state: "running" });
      writeFileSync(path, "first\n");
      let release!: () => void;
      runtime.waitResult = () => new Promise((resolve) => (release = () => resolve(0)));
      const stream = agent.logs({ sandboxId: "default.log.000008", follow: true })[Symbol.asyncIterator]();
      const received = [text((await stream.next()).value!.data)];
      for (const part of ["second\n", "third\n"]) {
        writeFileSync(path, part, { flag: "a" });
        await rotateLog(path, { generations });
      }
      writeFileSync(path, "fourth\n", { flag: "a" });
      release();
      for (let next = await stream.next(); !next.done; next = await stream.next()) received.push(text(next.value.data));
      assert.equal(received.join(""), "first\n[fsb: output skipped: the reader fell behind the log's rotation]\nthird\nfourth\n");
    });

    it("yields nothing when the sandbox has no log file yet", async () => {
      runtime.add({ sandboxId: "default.log.000004", state: "stopped", exitCode: 0 });
      assert.deepEqual(await drain(client.logs({ sandboxId: "default.log.000004", follow: false })), []);
    });

    it("tail_lines: only the last lines of the log and its rotated part; 0: none of them; absent: all", async () => {
      runtime.add({ sandboxId: "default.tail.000001", state: "stopped", exitCode: 0 });
      writeFileSync(`${logPath("default.tail.000001")}.1`, "r1\nr2\n");
      writeFileSync(logPath("default.tail.000001"), "l1\nl2\n");
      const read = async (tailLines?: number) =>
        (await drain(client.logs({ sandboxId: "default.tail.000001", follow: false, ...(tailLines === undefined ? {} : { tailLines }) })))
          .map((c) => text(c.data))
          .join("");
      assert.equal(await read(3), "r2\nl1\nl2\n");
      assert.equal(await read(1), "l2\n");
      assert.equal(await read(0), "");
      assert.equal(await read(100), "r1\nr2\nl1\nl2\n");
      assert.equal(await read(), "r1\nr2\nl1\nl2\n");
    });

    it("tail_lines with follow: the last lines, then what the sandbox writes after them, once, across a rotation", async () => {
      const generations = new LogGenerations(logDir);
      const agent = serve(undefined, { logRotation: { markHot: () => undefined, generations } });
      const path = logPath("default.tail.000002");
      runtime.add({ sandboxId: "default.tail.000002", state: "running" });
      writeFileSync(path, "a\nb\nc\n");
      let release!: () => void;
      runtime.waitResult = () => new Promise((resolve) => (release = () => resolve(0)));
      const stream = agent.logs({ sandboxId: "default.tail.000002", follow: true, tailLines: 1 })[Symbol.asyncIterator]();
      const received = [text((await stream.next()).value!.data)];
      writeFileSync(path, "d\n", { flag: "a" });
      await rotateLog(path, { generations });
      writeFileSync(path, "e\n", { flag: "a" });
      release();
      for (let next = await stream.next(); !next.done; next = await stream.next()) received.push(text(next.value.data));
      assert.equal(received.join(""), "c\nd\ne\n");
      assert.equal(generations.size, 0, "the log's record let go of");
    });

    it("refuses a tail_lines below 0 with InvalidArgument, before it looks for the sandbox", async () => {
      const error = await rejection(drain(client.logs({ sandboxId: "default.nope.000001", follow: false, tailLines: -1 })));
      assert.equal(error.code, Code.InvalidArgument);
      assert.equal(error.rawMessage, "tail_lines: must be a whole number of lines ≥ 0 (at most 2147483647), got -1");
    });

    it("refuses an unknown sandbox with NotFound and an invalid id with InvalidArgument", async () => {
      assert.equal((await rejection(drain(client.logs({ sandboxId: "default.nope.000001", follow: false })))).code, Code.NotFound);
      assert.equal((await rejection(drain(client.logs({ sandboxId: "../etc/passwd", follow: false })))).code, Code.InvalidArgument);
    });
  });

  describe("pullImage", () => {
    const step = (phase: ImagePullProgress["phase"], layersDone: number, bytesDone: number) => ({
      phase,
      layersTotal: 2,
      layersDone,
      bytesTotal: 300,
      bytesDone,
      digest: "sha256:abc",
    });

    it("streams the runtime's progress, 64-bit byte counts included, and ends after done", async () => {
      runtime.pullSteps = [step("resolving", 0, 0), step("downloading", 1, 100), step("unpacking", 2, 300), step("done", 2, 300)];
      const progress = await drain(client.pullImage({ image: "busybox" }));
      assert.deepEqual(runtime.pulls, ["busybox"]);
      assert.deepEqual(
        progress.map((p) => [p.image, p.phase, p.layersDone, p.layersTotal, p.bytesDone, p.bytesTotal, p.digest]),
        [
          ["normalized/busybox", "resolving", 0, 2, 0n, 300n, "sha256:abc"],
          ["normalized/busybox", "downloading", 1, 2, 100n, 300n, "sha256:abc"],
          ["normalized/busybox", "unpacking", 2, 2, 300n, 300n, "sha256:abc"],
          ["normalized/busybox", "done", 2, 2, 300n, 300n, "sha256:abc"],
        ],
      );
    });

    it("ends the stream with the pull's error, its code kept", async () => {
      runtime.pullSteps = [step("resolving", 0, 0)];
      runtime.pullError = new NotFoundError("image r.io/app:nope not found");
      const error = await rejection(drain(client.pullImage({ image: "r.io/app:nope" })));
      assert.equal(error.code, Code.NotFound);
      assert.match(error.rawMessage, /r\.io\/app:nope not found/);
    });

    it("refuses an invalid reference without asking the runtime", async () => {
      const error = await rejection(drain(client.pullImage({ image: "Not/Valid" })));
      assert.equal(error.code, Code.InvalidArgument);
      assert.match(error.rawMessage, /must be lower-case/);
      assert.deepEqual(runtime.pulls, []);
    });
  });

  describe("status and listSandboxes", () => {
    it("status reports the identity, the images and the sandboxes", async () => {
      runtime.add({ sandboxId: "default.a.000001", name: "a", image: "python:3.12", state: "running", pid: 11 });
      runtime.add({ sandboxId: "team.b.000002", namespace: "team", name: "b", state: "stopped", exitCode: 137 });
      const status = await client.status({});
      assert.equal(status.name, "default-0");
      assert.equal(status.namespace, "default");
      assert.equal(status.pool, "default");
      assert.equal(status.nodeName, "node-1");
      assert.equal(status.pid, process.pid);
      // With their normalized names, so a sandbox naming either form finds its image warm.
      assert.deepEqual(status.images, ["docker.io/library/python:3.12", "fast-sandbox.io/base:latest", "python:3.12"]);
      assert.deepEqual(
        status.sandboxes.map((s) => [s.sandboxId, s.namespace, s.name, s.image, s.state, s.pid, s.exitCode]),
        [
          ["default.a.000001", "default", "a", "python:3.12", "running", 11, undefined],
          ["team.b.000002", "team", "b", "img", "stopped", 0, 137],
        ],
      );
    });

    it("status reports the stock of prepared instances, and why it is short while its prepares fail", async () => {
      assert.equal((await client.status({})).preparedInstances, undefined);
      runtime.prepared = { target: 2, ready: 0, error: "image registry.invalid/app:1 could not be pulled" };
      const failing = (await client.status({})).preparedInstances;
      assert.deepEqual([failing?.target, failing?.ready, failing?.error], [2, 0, "image registry.invalid/app:1 could not be pulled"]);
      runtime.prepared = { target: 2, ready: 2 };
      const full = (await client.status({})).preparedInstances;
      assert.deepEqual([full?.target, full?.ready, full?.error], [2, 2, ""]);
    });

    it("listSandboxes lists the runtime's sandboxes, keeping an exit code of 0", async () => {
      runtime.add({ sandboxId: "default.z.000001", state: "stopped", exitCode: 0 });
      const { sandboxes } = await client.listSandboxes({});
      assert.equal(sandboxes.length, 1);
      assert.equal(sandboxes[0]?.exitCode, 0);
    });

    it("reports which sandboxes had a process OOM-killed, in status and listSandboxes", async () => {
      runtime.add({ sandboxId: "default.oom.000001", state: "running", pid: 12, oomKilled: true });
      runtime.add({ sandboxId: "default.fine.000001", state: "running", pid: 13 });
      const expected = [
        ["default.fine.000001", false],
        ["default.oom.000001", true],
      ];
      const byId = (sandboxes: { sandboxId: string; oomKilled: boolean }[]) =>
        sandboxes.map((s) => [s.sandboxId, s.oomKilled]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
      assert.deepEqual(byId((await client.status({})).sandboxes), expected);
      assert.deepEqual(byId((await client.listSandboxes({})).sandboxes), expected);
    });

    it("reports the sandboxes it evicted, with why, in status and listSandboxes", async () => {
      runtime.add({ sandboxId: "default.disk.000001", state: "running", pid: 12 });
      runtime.add({ sandboxId: "default.fine.000001", state: "running", pid: 13 });
      await runtime.evict("default.disk.000001", "past its disk limit");
      const byId = (sandboxes: { sandboxId: string; state: string; evicted: string }[]) =>
        sandboxes.map((s) => [s.sandboxId, s.state, s.evicted]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
      const expected = [
        ["default.disk.000001", "stopped", "past its disk limit"],
        ["default.fine.000001", "running", ""],
      ];
      assert.deepEqual(byId((await client.status({})).sandboxes), expected);
      assert.deepEqual(byId((await client.listSandboxes({})).sandboxes), expected);
    });

    it("status answers BusyError before the call's deadline when containerd is slower than that (the agent is alive, not hung)", async () => {
      const list = runtime.list.bind(runtime);
      runtime.list = () => new Promise(() => undefined);
      const error = fromConnectError(await rejection(client.status({}, { timeoutMs: 400 })));
      assert.ok(error instanceof BusyError, `expected BusyError, got ${error.name}: ${error.message}`);
      // The budget is what is left of the 400 ms when the handler runs, less the 100 ms kept for the answer.
      const budget = Number(/containerd did not list this agent's sandboxes and images within (\d+) ms/.exec(error.message)?.[1]);
      assert.ok(budget > 0 && budget <= 300, error.message);
      runtime.list = list;
      // A runtime that answers in time gives a status as always.
      assert.equal((await client.status({}, { timeoutMs: 400 })).name, "default-0");
    });

    it("a status whose agent cannot answer at all still ends at the caller's deadline (a hung agent is told from a busy one)", async () => {
      runtime.list = () => new Promise(() => undefined);
      const slowService = createAgentService({ identity, runtime, logDir });
      const hung = createClient(
        pb.AgentService,
        createRouterTransport(({ service: register }) => {
          register(pb.AgentService, {
            ...slowService,
            // The event loop of a hung agent never gets to its own budget: nothing answers.
            status: () => new Promise(() => undefined),
          });
        }),
      );
      const error = fromConnectError(await rejection(hung.status({}, { timeoutMs: 200 })));
      assert.ok(error instanceof TimeoutError && !(error instanceof BusyError));
    });

    it("gives containerd three quarters of a status call's deadline, leaving at most 500 ms for the answer", () => {
      assert.equal(statusBudgetMs(undefined), undefined);
      assert.equal(statusBudgetMs(400), 300);
      assert.equal(statusBudgetMs(2000), 1500);
      assert.equal(statusBudgetMs(10_000), 9500);
      assert.equal(statusBudgetMs(20), 50);
    });

    it("status fails with the runtime's error", async () => {
      runtime.listImages = async () => {
        throw new FsbError("unavailable", "containerd socket closed");
      };
      assert.equal((await rejection(client.status({}))).code, Code.Unavailable);
    });
  });
});
