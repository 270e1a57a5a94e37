import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { AlreadyExistsError, FsbError, UnavailableError } from "@fast-sandbox/api";
import { LABEL_AGENT, LABEL_MANAGED, LABEL_SANDBOX_ID } from "../runtime/runtime.js";
import { createContainerdRuntime, type ContainerdRuntime, type ContainerdRuntimeOptions } from "./containerd-runtime.js";
import { Status as TaskStatus } from "./gen/github.com/containerd/containerd/api/types/task/task_pb.js";
import { ProcessDetailsSchema } from "./gen/github.com/containerd/containerd/runtime/v2/runc/options/oci_pb.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe("ContainerdRuntime's state directory", () => {
  it("is root's alone even when it was made before with a wider mode (the sandboxes' run directories are below it)", () => {
    const stateDir = mkdtempSync(join(tmpdir(), "fsb-runtime-mode-"));
    roots.push(stateDir);
    chmodSync(stateDir, 0o755);
    const runtime = runtimeIn(stateDir);
    runtime.close();
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
  });
});

describe("ContainerdRuntime.prepare", () => {
  it("first removes the exec FIFOs and control outputs a previous agent process left in its state directory", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "fsb-runtime-state-"));
    roots.push(stateDir);
    execFileSync("mkfifo", [join(stateDir, "sb-a.exec-0a1b.stdout"), join(stateDir, "sb-a.exec-0a1b.stderr")]);
    writeFileSync(join(stateDir, "sb-a.fsb-control-0c0d0e0f.out"), "");
    writeFileSync(join(stateDir, "agent.log"), "kept\n");
    // No containerd behind the socket: prepare fails at its first call, after the sweep.
    const runtime = runtimeIn(stateDir);
    try {
      await assert.rejects(runtime.prepare());
    } finally {
      runtime.close();
    }
    for (const name of ["sb-a.exec-0a1b.stdout", "sb-a.exec-0a1b.stderr", "sb-a.fsb-control-0c0d0e0f.out"]) assert.ok(!existsSync(join(stateDir, name)), name);
    assert.ok(existsSync(join(stateDir, "agent.log")));
  });
});

type Handler = (request: Record<string, unknown>, options?: unknown) => unknown;

/**
 * A containerd client that records every call and answers from `handlers` (`service.method`); a
 * method without a handler answers an empty message.
 */
function fakeClient(handlers: Record<string, Handler>): { client: unknown; calls: { method: string; request: Record<string, unknown> }[] } {
  const calls: { method: string; request: Record<string, unknown> }[] = [];
  const service = (name: string) =>
    new Proxy(
      {},
      {
        get: (_target, method: string) => async (request: Record<string, unknown>, options?: unknown) => {
          calls.push({ method: `${name}.${method}`, request });
          const handler = handlers[`${name}.${method}`];
          return handler ? await handler(request, options) : {};
        },
      },
    );
  const target: Record<string, unknown> = { close: () => undefined };
  const client = new Proxy(target, {
    get: (target, name: string) => (name in target ? target[name] : service(name)),
  });
  return { client, calls };
}

/** A runtime of agent `agent-0` on `stateDir`, no containerd behind its socket. */
function runtimeIn(stateDir: string, options: Partial<ContainerdRuntimeOptions> = {}): ContainerdRuntime {
  return createContainerdRuntime({
    agentName: "agent-0",
    socketPath: join(stateDir, "no-containerd.sock"),
    stateDir,
    cgroupLayout: { version: 2, root: stateDir, controllers: [] },
    runscPath: "/bin/true",
    logger: pino({ level: "silent" }),
    ...options,
  });
}

/** A runtime of agent `agent-0` whose containerd is `client` (no socket behind it). */
function runtimeWith(client: unknown, options: Partial<ContainerdRuntimeOptions> = {}): ContainerdRuntime {
  const stateDir = mkdtempSync(join(tmpdir(), "fsb-runtime-state-"));
  roots.push(stateDir);
  const runtime = runtimeIn(stateDir, options);
  (runtime as unknown as { client: { close(): void } }).client.close();
  (runtime as unknown as { client: unknown }).client = client;
  return runtime;
}

const SANDBOX_LABELS = { [LABEL_MANAGED]: "true", [LABEL_AGENT]: "agent-0", [LABEL_SANDBOX_ID]: "sb-1" };

/** containers.get of sandbox sb-1 (a minimal spec: what an exec reads). */
function sandboxContainer(): Handler {
  const spec = { process: { args: ["sleep"], env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } } };
  return () => ({ container: { id: "sb-1", labels: SANDBOX_LABELS, spec: { typeUrl: "", value: Buffer.from(JSON.stringify(spec)) } } });
}

const noOutput = { onStdout: () => undefined, onStderr: () => undefined };

describe("ContainerdRuntime.exec", () => {
  it("waits out containerd away (a restart) instead of failing while the command runs on", async () => {
    let waits = 0;
    const { client, calls } = fakeClient({
      "containers.get": sandboxContainer(),
      "tasks.wait": () => {
        waits += 1;
        if (waits <= 2) throw new UnavailableError("containerd Tasks/Wait: connection refused");
        return { exitStatus: 3 };
      },
    });
    const runtime = runtimeWith(client);
    try {
      assert.equal(await runtime.exec("sb-1", { command: ["true"] }, noOutput), 3);
    } finally {
      runtime.close();
    }
    assert.equal(waits, 3);
    // Its exit was seen: deleted, not killed.
    assert.deepEqual(
      calls.filter((call) => call.method.startsWith("tasks.") && call.method !== "tasks.wait").map((call) => call.method),
      ["tasks.exec", "tasks.start", "tasks.deleteProcess"],
    );
  });

  it("kills the process before deleting it when its exit was not seen (a start that timed out on the agent's side)", async () => {
    const { client, calls } = fakeClient({
      "containers.get": sandboxContainer(),
      "tasks.start": () => {
        throw new FsbError("deadline_exceeded", "containerd Tasks/Start: deadline exceeded");
      },
      "tasks.wait": () => ({ exitStatus: 137 }),
    });
    const runtime = runtimeWith(client);
    try {
      await assert.rejects(runtime.exec("sb-1", { command: ["sleep", "1000"] }, noOutput), { code: "deadline_exceeded" });
    } finally {
      runtime.close();
    }
    const tasks = calls.filter((call) => call.method.startsWith("tasks."));
    assert.deepEqual(
      tasks.map((call) => call.method),
      ["tasks.exec", "tasks.start", "tasks.kill", "tasks.wait", "tasks.deleteProcess"],
    );
    const execId = tasks[0]?.request.execId;
    assert.match(String(execId), /^exec-[0-9a-f]+$/);
    assert.deepEqual(tasks[2]?.request, { containerId: "sb-1", execId, signal: 9 });
  });

  it("kills the process of an exec whose Tasks.Exec answered too late (containerd may have made it)", async () => {
    const { client, calls } = fakeClient({
      "containers.get": sandboxContainer(),
      "tasks.exec": () => {
        throw new UnavailableError("containerd Tasks/Exec: connection reset");
      },
    });
    const runtime = runtimeWith(client);
    try {
      await assert.rejects(runtime.exec("sb-1", { command: ["true"] }, noOutput), UnavailableError);
    } finally {
      runtime.close();
    }
    assert.deepEqual(
      calls.filter((call) => call.method.startsWith("tasks.")).map((call) => call.method),
      ["tasks.exec", "tasks.kill", "tasks.wait", "tasks.deleteProcess"],
    );
  });
});

describe("ContainerdRuntime.prepare, execs of a previous agent process", () => {
  it("kills and deletes the exec processes it left in this agent's sandboxes, never a process 1 or another agent's", async () => {
    const details = (execId: string) => ({
      typeUrl: "types.containerd.io/containerd.runc.v1.ProcessDetails",
      value: toBinary(ProcessDetailsSchema, create(ProcessDetailsSchema, { execId })),
    });
    const { client, calls } = fakeClient({
      "containers.list": (request) =>
        String((request.filters as string[] | undefined)?.[0]).includes("role")
          ? { containers: [] }
          : {
              containers: [
                { id: "sb-1", labels: SANDBOX_LABELS },
                { id: "sb-2", labels: { ...SANDBOX_LABELS, [LABEL_SANDBOX_ID]: "sb-2" } },
                { id: "other", labels: { ...SANDBOX_LABELS, [LABEL_AGENT]: "agent-1", [LABEL_SANDBOX_ID]: "other" } },
              ],
            },
      "tasks.list": () => ({
        tasks: ["sb-1", "sb-2", "other"].map((id) => ({ id, containerId: id, pid: 10, status: TaskStatus.RUNNING })),
      }),
      "tasks.listPids": (request) =>
        request.containerId === "sb-1"
          ? { processes: [{ pid: 10 }, { pid: 11, info: details("exec-0a1b") }, { pid: 12, info: details("fsb-control-0c") }] }
          : { processes: [{ pid: 20 }] },
    });
    const runtime = runtimeWith(client);
    const stateDir = (runtime as unknown as { stateDir: string }).stateDir;
    // A gVisor sandbox's execs are not named in its process list: their FIFOs tell.
    execFileSync("mkfifo", [join(stateDir, "sb-2.exec-0c0d.stdout"), join(stateDir, "sb-2.exec-0c0d.stderr")]);
    try {
      await runtime.prepare();
    } finally {
      runtime.close();
    }
    const ended = (method: string) =>
      calls
        .filter((call) => call.method === method)
        .map((call) => `${String(call.request.containerId)}/${String(call.request.execId)}`)
        .sort();
    assert.deepEqual(ended("tasks.kill"), ["sb-1/exec-0a1b", "sb-2/exec-0c0d"]);
    assert.deepEqual(ended("tasks.deleteProcess"), ["sb-1/exec-0a1b", "sb-2/exec-0c0d"]);
    assert.ok(!calls.some((call) => call.method === "tasks.listPids" && call.request.containerId === "other"));
  });
});

describe("ContainerdRuntime.wait", () => {
  it("(logs -f) waits out containerd away instead of rejecting while the sandbox's command runs on", async () => {
    let waits = 0;
    const { client } = fakeClient({
      "tasks.wait": () => {
        waits += 1;
        if (waits === 1) throw new UnavailableError("containerd Tasks/Wait: connection refused");
        return { exitStatus: 7 };
      },
    });
    // With the helper, the helper's record races the task's exit: neither is there, containerd's answer wins.
    const runtime = runtimeWith(client, { helperPath: "/nonexistent/fsb-helper" });
    try {
      assert.equal(await runtime.wait("sb-1"), 7);
    } finally {
      runtime.close();
    }
    assert.equal(waits, 2);
  });
});

describe("ContainerdRuntime.create, a failed create's undo", () => {
  /** Creates sandbox sb-1 on a runtime whose containerd is `handlers`; returns the calls made. */
  async function failedCreate(
    handlers: Record<string, Handler>,
    before?: (stateDir: string) => void,
  ): Promise<{ method: string; request: Record<string, unknown> }[]> {
    const { client, calls } = fakeClient(handlers);
    const runtime = runtimeWith(client);
    before?.((runtime as unknown as { stateDir: string }).stateDir);
    const image = {
      reference: "img",
      targetDigest: "sha256:0",
      chainId: "sha256:1",
      config: { entrypoint: [], cmd: ["sleep", "1000"], env: [], workingDir: "", user: "" },
    };
    (runtime as unknown as { images: unknown }).images = { resolve: () => Promise.resolve(image) };
    try {
      await assert.rejects(
        runtime.create({
          sandboxId: "sb-1",
          namespace: "default",
          name: "one",
          pool: "p",
          image: "img",
          command: [],
          args: [],
          env: [],
          runtimeType: "container",
          logPath: join(tmpdir(), "fsb-no-such-log"),
        }),
      );
    } finally {
      runtime.close();
    }
    return calls;
  }
  const methods = (calls: { method: string }[]) => calls.map((call) => call.method).filter((method) => !method.endsWith(".get"));

  it("removes the snapshot of a Snapshots.Prepare that answered too late (containerd committed it all the same)", async () => {
    const calls = await failedCreate({
      "snapshots.prepare": () => {
        throw new FsbError("deadline_exceeded", "containerd Snapshots/Prepare: deadline exceeded");
      },
    });
    assert.deepEqual(methods(calls), ["snapshots.prepare", "snapshots.remove"]);
  });

  it("leaves alone a snapshot that was there already (not this create's)", async () => {
    const calls = await failedCreate({
      "snapshots.prepare": () => {
        throw new AlreadyExistsError("containerd Snapshots/Prepare: snapshot sb-1 already exists");
      },
    });
    assert.deepEqual(methods(calls), ["snapshots.prepare"]);
  });

  it("removes the container of a Containers.Create whose answer was lost, and its snapshot", async () => {
    const calls = await failedCreate({
      "containers.create": () => {
        throw new UnavailableError("containerd Containers/Create: connection reset");
      },
    });
    assert.deepEqual(methods(calls), ["snapshots.prepare", "containers.create", "containers.delete", "snapshots.remove"]);
  });

  it("removes a started task like a deletion does (its cgroup killed when SIGKILL does not end it), then the container", async () => {
    let killed = false;
    // The sandbox's cgroup (v2, rooted at the state directory: the runtime's layout in these tests).
    let cgroup = "";
    const calls = await failedCreate(
      {
        "containers.get": () => ({ container: { id: "sb-1", labels: SANDBOX_LABELS, snapshotter: "overlayfs", snapshotKey: "sb-1" } }),
        "tasks.start": () => {
          throw new FsbError("deadline_exceeded", "containerd Tasks/Start: deadline exceeded");
        },
        "tasks.create": () => ({ pid: 42 }),
        // The runtime's SIGKILL does not end it; the kill of its cgroup's processes does.
        "tasks.wait": (_request, options) => {
          if (!killed) {
            killed = true;
            throw new FsbError("deadline_exceeded", `containerd Tasks/Wait: deadline exceeded (${JSON.stringify(options)})`);
          }
          return { exitStatus: 137 };
        },
      },
      (stateDir) => {
        cgroup = join(stateDir, "fast-sandbox", "sb-1");
        mkdirSync(cgroup, { recursive: true });
      },
    );
    assert.equal(readFileSync(join(cgroup, "cgroup.kill"), "utf8"), "1");
    const order = methods(calls);
    assert.deepEqual(order.slice(0, 4), ["snapshots.prepare", "containers.create", "tasks.create", "tasks.start"]);
    assert.ok(order.includes("tasks.kill"));
    assert.ok(order.indexOf("tasks.delete") < order.indexOf("containers.delete"), order.join(" "));
    assert.ok(order.includes("snapshots.remove"));
  });

  it("never deletes the container while its task could not be removed (the janitor finds it by the container)", async () => {
    const calls = await failedCreate({
      "tasks.create": () => ({ pid: 42 }),
      "tasks.start": () => {
        throw new UnavailableError("containerd Tasks/Start: connection refused");
      },
      "containers.get": () => {
        throw new UnavailableError("containerd Containers/Get: connection refused");
      },
      "tasks.kill": () => {
        throw new UnavailableError("containerd Tasks/Kill: connection refused");
      },
      "tasks.wait": () => {
        throw new UnavailableError("containerd Tasks/Wait: connection refused");
      },
    });
    assert.ok(!calls.some((call) => call.method === "containers.delete"), methods(calls).join(" "));
    assert.ok(!calls.some((call) => call.method === "snapshots.remove"), methods(calls).join(" "));
  });
});

describe("ContainerdRuntime, a restore of a sandbox that exists", () => {
  it("fails as a duplicate (whose log the agent keeps) even when the checkpoint is gone", async () => {
    const { client } = fakeClient({ "containers.get": sandboxContainer() });
    const runtime = runtimeWith(client);
    mkdirSync(join((runtime as unknown as { stateDir: string }).stateDir, "run", "sb-1"), { recursive: true });
    try {
      await assert.rejects(
        runtime.checkpoints.restore({
          sandboxId: "sb-1",
          namespace: "default",
          name: "one",
          pool: "p",
          image: "",
          command: [],
          args: [],
          env: [],
          runtimeType: "gvisor",
          logPath: join(tmpdir(), "fsb-no-such-log"),
          fromCheckpoint: "ck-deleted",
        }),
        AlreadyExistsError,
      );
    } finally {
      runtime.close();
    }
  });
});

describe("ContainerdRuntime.prepare, log files of sandboxes the agent no longer has", () => {
  it("removes those a previous process left (a delete cut short before its log's removal), never a sandbox's, an instance's, a pending claim's or a recent one", async () => {
    const { client } = fakeClient({
      "containers.list": (request) =>
        String((request.filters as string[] | undefined)?.[0]).includes("role")
          ? { containers: [] }
          : {
              containers: [
                { id: "sb-1", labels: SANDBOX_LABELS },
                // A claimed instance: its container keeps the instance's id, its label names the sandbox.
                { id: "inst-1", labels: { ...SANDBOX_LABELS, [LABEL_SANDBOX_ID]: "sb-claimed" } },
              ],
            },
      "tasks.list": () => ({ tasks: [] }),
    });
    const runtime = runtimeWith(client);
    const stateDir = (runtime as unknown as { stateDir: string }).stateDir;
    const logs = join(stateDir, "logs");
    mkdirSync(logs, { recursive: true });
    // A claim a previous process made and containerd never recorded: its log is under the sandbox's id already.
    mkdirSync(join(stateDir, "claims"), { recursive: true });
    writeFileSync(join(stateDir, "claims", "sb-pending.json"), JSON.stringify({ sandboxId: "sb-pending", containerId: "inst-2", labels: {} }));
    const old = new Date(Date.now() - 10 * 60_000);
    const names = ["sb-1.log", "sb-claimed.log", "sb-pending.log", "sb-gone.log", "sb-gone.log.1", "sb-gone.log.1.tmp", "sb-new.log", "notes.txt"];
    for (const name of names) {
      writeFileSync(join(logs, name), "output\n");
      if (name !== "sb-new.log") utimesSync(join(logs, name), old, old);
    }
    // The pending claim is replayed (recorded) by prepare; keep it pending: containerd refuses the record.
    (runtime as unknown as { replayClaims: () => Promise<void> }).replayClaims = async () => undefined;
    try {
      await runtime.prepare();
    } finally {
      runtime.close();
    }
    assert.deepEqual(readdirSync(logs).sort(), ["notes.txt", "sb-1.log", "sb-claimed.log", "sb-new.log", "sb-pending.log"]);
  });
});
