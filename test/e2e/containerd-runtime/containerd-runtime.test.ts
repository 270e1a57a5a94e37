/**
 * The containerd Runtime against the real containerd (and runc, runsc) of this machine.
 * Everything runs in its own containerd namespace, removed at the end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import pino from "pino";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import { ContainerdClient } from "../../../packages/agent/src/containerd/containerd-client.js";
import { createContainerdRuntime, type ContainerdRuntime } from "../../../packages/agent/src/containerd/containerd-runtime.js";
import { containerIdOf } from "../../../packages/agent/src/containerd/container-id.js";
import { Status as TaskStatus } from "../../../packages/agent/src/containerd/gen/github.com/containerd/containerd/api/types/task/task_pb.js";
import { DEFAULT_HELPER_PATH } from "../../../packages/agent/src/agent-config.js";
import type { OciSpec } from "../../../packages/agent/src/containerd/oci-spec.js";
import type { RuntimeSandboxSpec } from "../../../packages/agent/src/runtime/runtime.js";
import { BASE_IMAGE, NAMED_USER_IMAGES, ctr, importBaseImage, importBaseImageAs, removeCgroupTree, removeNamespace } from "../../support/containerd.js";

const NAMESPACE = "fsb-test-runtime";
const AGENT = "test-agent";
const CGROUP_PARENT = "/fsb-test-runtime";

let workDir: string;
let runtime: ContainerdRuntime;
let client: ContainerdClient;
let counter = 0;

function newRuntime(agentName = AGENT, agentUid?: string, cgroupParent = CGROUP_PARENT): ContainerdRuntime {
  return createContainerdRuntime({
    namespace: NAMESPACE,
    agentName,
    ...(agentUid ? { agentUid } : {}),
    stateDir: join(workDir, "state"),
    cgroupParent,
    // As in production: the helper is process 1 and the agent's sandboxes share an anchored shim.
    helperPath: DEFAULT_HELPER_PATH,
    logger: pino({ level: "warn" }),
  });
}

function sandboxSpec(overrides: Partial<RuntimeSandboxSpec> = {}): RuntimeSandboxSpec {
  counter += 1;
  const sandboxId = `sb-${process.pid}-${counter}`;
  return {
    sandboxId,
    namespace: "team-a",
    name: `box-${counter}`,
    pool: "default",
    image: BASE_IMAGE,
    command: ["sh", "-c", "sleep 1000"],
    args: [],
    env: [],
    runtimeType: "container",
    logPath: join(workDir, `${sandboxId}.log`),
    ...overrides,
  };
}

/** Polls until `read()` returns something truthy; fails after `attempts` tries (no timing assertion). */
async function eventually<T>(read: () => T | undefined | false, what: string, attempts = 200): Promise<T> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const value = read();
    if (value) return value;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function execCollect(
  id: string,
  command: string[],
  options: {
    env?: { name: string; value: string }[];
    workingDir?: string;
    user?: string;
    signal?: AbortSignal;
    /** The runtime of another agent than the suite's. */
    via?: ContainerdRuntime;
  } = {},
) {
  let stdout = "";
  let stderr = "";
  const request = {
    command,
    ...(options.env ? { env: options.env } : {}),
    ...(options.workingDir ? { workingDir: options.workingDir } : {}),
    ...(options.user ? { user: options.user } : {}),
  };
  const exitCode = await (options.via ?? runtime).exec(id, request, {
    onStdout: (chunk) => {
      stdout += Buffer.from(chunk).toString();
    },
    onStderr: (chunk) => {
      stderr += Buffer.from(chunk).toString();
    },
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return { exitCode, stdout, stderr };
}

function leftovers(id: string): string[] {
  const found: string[] = [];
  if (ctr(NAMESPACE, "containers", "ls", "-q").split("\n").includes(id)) found.push("container");
  if (ctr(NAMESPACE, "tasks", "ls").includes(id)) found.push("task");
  if (
    ctr(NAMESPACE, "snapshots", "ls")
      .split("\n")
      .some((line) => line.startsWith(`${id} `))
  )
    found.push("snapshot");
  return found;
}

async function containerSpec(id: string): Promise<OciSpec> {
  const { container } = await client.containers.get({ id });
  return JSON.parse(Buffer.from(container?.spec?.value ?? []).toString()) as OciSpec;
}

function shimPid(taskPid: number): number {
  const status = readFileSync(`/proc/${taskPid}/status`, "utf8");
  return Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]);
}

describe("containerd runtime", () => {
  before(async () => {
    workDir = mkdtempSync(join(tmpdir(), "fsb-containerd-runtime-"));
    importBaseImage(NAMESPACE);
    runtime = newRuntime();
    await runtime.prepare();
    client = new ContainerdClient({ namespace: NAMESPACE });
  });

  after(async () => {
    for (const sandbox of await runtime.list()) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
    runtime.close();
    client.close();
    removeNamespace(NAMESPACE);
    removeCgroupTree(CGROUP_PARENT);
    rmSync(workDir, { recursive: true, force: true });
  });

  it("lists the imported base image", async () => {
    assert.ok((await runtime.listImages()).includes(BASE_IMAGE));
  });

  it("creates a running sandbox whose output goes to the log file", async () => {
    const spec = sandboxSpec({
      command: ["sh", "-c", "echo hello; sleep 1000"],
    });
    const created = await runtime.create(spec);
    assert.equal(created.state, "running");
    assert.ok(created.pid && created.pid > 0);
    await eventually(() => existsSync(spec.logPath) && readFileSync(spec.logPath, "utf8").includes("hello"), "hello in the log file");
    const listed = (await runtime.list()).find((sandbox) => sandbox.sandboxId === spec.sandboxId);
    assert.equal(listed?.state, "running");
    assert.equal(listed?.name, spec.name);
    assert.equal(listed?.namespace, "team-a");
    assert.equal(listed?.labels["fast-sandbox.io/managed"], "true");
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("execs with separate stdout and stderr and returns the exit code", async () => {
    const spec = sandboxSpec();
    await runtime.create(spec);
    const result = await execCollect(spec.sandboxId, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(result, { exitCode: 3, stdout: "out\n", stderr: "err\n" });

    const withEnv = await execCollect(spec.sandboxId, ["sh", "-c", 'echo "$GREETING"; pwd'], {
      env: [{ name: "GREETING", value: "hi there" }],
      workingDir: "/tmp",
    });
    assert.deepEqual(withEnv, {
      exitCode: 0,
      stdout: "hi there\n/tmp\n",
      stderr: "",
    });

    const big = await execCollect(spec.sandboxId, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done"]);
    assert.equal(big.stdout.split("\n").filter((line) => line !== "").length, 20000);
    assert.ok(big.stdout.endsWith("line-19999\n"));
    // Each exec removed its FIFOs: only the runsc wrapper and the helpers' run directories stay.
    assert.deepEqual(readdirSync(join(workDir, "state")).sort(), ["run", "runsc-network-none"]);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("runs sandboxes without new privileges, under seccomp, with reduced capabilities", async () => {
    const spec = sandboxSpec();
    await runtime.create(spec);
    const status = await execCollect(spec.sandboxId, ["cat", "/proc/self/status"]);
    assert.match(status.stdout, /^NoNewPrivs:\s+1$/m);
    assert.match(status.stdout, /^Seccomp:\s+2$/m);
    const bounding = BigInt(`0x${/^CapBnd:\s+([0-9a-f]+)$/m.exec(status.stdout)?.[1]}`);
    const CAP_SYS_ADMIN = 21n;
    assert.equal((bounding >> CAP_SYS_ADMIN) & 1n, 0n);
    // In the agent's network (this sandbox's), no raw sockets: they would read the agent's loopback.
    const CAP_NET_RAW = 13n;
    assert.equal((bounding >> CAP_NET_RAW) & 1n, 0n);
    const unshare = await execCollect(spec.sandboxId, ["unshare", "-n", "true"]);
    assert.notEqual(unshare.exitCode, 0);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("gets one of its own sandboxes by id, and nothing for unknown ids, anchors or another agent's", async () => {
    const spec = sandboxSpec({ command: ["sleep", "3600"] });
    await runtime.create(spec);
    const found = await runtime.get(spec.sandboxId);
    assert.equal(found?.sandboxId, spec.sandboxId);
    assert.equal(found?.state, "running");
    assert.equal(found?.name, spec.name);
    assert.equal(await runtime.get("no-such-sandbox"), undefined);
    assert.equal(await runtime.get(runtime.anchorIds[0] ?? ""), undefined);
    const other = newRuntime("another-agent");
    assert.equal(await other.get(spec.sandboxId), undefined);
    other.close();
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
    assert.equal(await runtime.get(spec.sandboxId), undefined);
  });

  it("pauses an exec's output pipe while its consumer is behind, and still delivers every byte", async () => {
    const spec = sandboxSpec({ command: ["sleep", "3600"] });
    await runtime.create(spec);
    let bytes = 0;
    let paused = 0;
    // 8 MiB of output; every chunk makes the producer wait for a timer tick.
    const exitCode = await runtime.exec(
      spec.sandboxId,
      { command: ["sh", "-c", "head -c 8388608 /dev/zero"] },
      {
        onStdout: (chunk) => {
          bytes += chunk.length;
          paused += 1;
          return new Promise((resolve) => setTimeout(resolve, 1));
        },
        onStderr: () => undefined,
      },
    );
    assert.equal(exitCode, 0);
    assert.equal(bytes, 8 * 1024 * 1024);
    assert.ok(paused > 1);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("kills an exec'd process when its signal aborts", async () => {
    const spec = sandboxSpec();
    await runtime.create(spec);
    const controller = new AbortController();
    let stdout = "";
    const exitCode = await runtime.exec(
      spec.sandboxId,
      { command: ["sh", "-c", "echo ready; exec sleep 1000"] },
      {
        onStdout: (chunk) => {
          stdout += Buffer.from(chunk).toString();
          if (stdout.includes("ready")) controller.abort();
        },
        onStderr: () => undefined,
        signal: controller.signal,
      },
    );
    assert.equal(exitCode, 128 + 9);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("deletes task, container and snapshot, and deleting again is fine", async () => {
    const spec = sandboxSpec({
      command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
    });
    await runtime.create(spec);
    assert.deepEqual(leftovers(spec.sandboxId), ["container", "task", "snapshot"]);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 5_000 });
    assert.deepEqual(leftovers(spec.sandboxId), []);
    await assert.rejects(client.containers.get({ id: spec.sandboxId }), NotFoundError);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 5_000 });
    await runtime.delete("never-existed", { gracePeriodMs: 0 });
  });

  it("kills a sandbox that ignores SIGTERM after the grace period", async () => {
    const spec = sandboxSpec({
      command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
    });
    await runtime.create(spec);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 200 });
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("serves the agent's sandboxes from one shim and deletes them one by one", async () => {
    const first = sandboxSpec();
    const second = sandboxSpec();
    const a = await runtime.create(first);
    const b = await runtime.create(second);
    assert.ok(a.pid && b.pid);
    assert.equal(shimPid(a.pid), shimPid(b.pid));
    await runtime.delete(first.sandboxId, { gracePeriodMs: 0 });
    assert.deepEqual(leftovers(first.sandboxId), []);
    assert.equal((await execCollect(second.sandboxId, ["echo", "still here"])).stdout, "still here\n");
    await runtime.delete(second.sandboxId, { gracePeriodMs: 0 });
    assert.deepEqual(leftovers(second.sandboxId), []);
    // The group's shim is gone with its last sandbox; a new sandbox starts a new one.
    const third = sandboxSpec();
    await runtime.create(third);
    assert.equal((await execCollect(third.sandboxId, ["echo", "ok"])).exitCode, 0);
    await runtime.delete(third.sandboxId, { gracePeriodMs: 0 });
  });

  it("lets a restarted agent see its sandboxes, exec in them and delete them", async () => {
    const specs = [sandboxSpec(), sandboxSpec()];
    for (const spec of specs) await runtime.create(spec);
    const restarted = newRuntime();
    const otherAgent = newRuntime("other-agent");
    try {
      const listed = await restarted.list();
      const ids = specs.map((spec) => spec.sandboxId);
      assert.deepEqual(
        listed.filter((sandbox) => ids.includes(sandbox.sandboxId)).map((sandbox) => sandbox.state),
        ["running", "running"],
      );
      assert.ok(listed.every((sandbox) => sandbox.labels["fast-sandbox.io/agent"] === AGENT));
      assert.deepEqual(await otherAgent.list(), []);
      let stdout = "";
      const exitCode = await restarted.exec(
        specs[0]!.sandboxId,
        { command: ["hostname"] },
        {
          onStdout: (chunk) => {
            stdout += Buffer.from(chunk).toString();
          },
          onStderr: () => undefined,
        },
      );
      assert.equal(exitCode, 0);
      assert.equal(stdout, `${specs[0]!.name}\n`);
      for (const spec of specs) await restarted.delete(spec.sandboxId, { gracePeriodMs: 0 });
      for (const spec of specs) assert.deepEqual(leftovers(spec.sandboxId), []);
      assert.deepEqual(
        (await runtime.list()).filter((sandbox) => ids.includes(sandbox.sandboxId)),
        [],
      );
    } finally {
      restarted.close();
      otherAgent.close();
    }
  });

  it("makes a shim anchor anew when its start fails, and gives up with the error after three attempts", async () => {
    const agent = "anchor-retry";
    const cgroupParent = `${CGROUP_PARENT}/${agent}`;
    // The helper is missing at the first attempt (runc cannot bind-mount it) and appears when the
    // agent logs the failure: the second attempt starts the anchors.
    const helperPath = join(workDir, "late-helper");
    const warnings: string[] = [];
    const retrying = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName: agent,
      stateDir: join(workDir, "anchor-retry-state"),
      cgroupParent,
      helperPath,
      logger: pino(
        { level: "warn" },
        {
          write: (line: string) => {
            warnings.push((JSON.parse(line) as { msg: string }).msg);
            if (!existsSync(helperPath)) copyFileSync(DEFAULT_HELPER_PATH, helperPath);
          },
        },
      ),
    });
    try {
      await retrying.prepare();
      assert.ok(warnings.includes("a shim anchor did not start; making it anew"), warnings.join("\n"));
      for (const id of retrying.anchorIds) assert.equal((await client.tasks.get({ containerId: id })).process?.status, TaskStatus.RUNNING, id);
    } finally {
      await retrying.unprepare();
      retrying.close();
    }

    const never = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName: agent,
      stateDir: join(workDir, "anchor-retry-state"),
      cgroupParent,
      helperPath: join(workDir, "no-helper"),
      logger: pino({ level: "silent" }),
    });
    try {
      await assert.rejects(never.prepare(), /no-helper/);
    } finally {
      await never.unprepare();
      never.close();
    }
    for (const id of never.anchorIds) assert.deepEqual(leftovers(id), [], `nothing of ${id} is left`);
  });

  it("labels its containers with its Pod UID, and a Pod recreated under the same name takes none of them over", async () => {
    const agent = "uid-agent";
    // Its own cgroup parent: anchors' cgroups are named after their shim group index, not the agent.
    const cgroupParent = `${CGROUP_PARENT}/${agent}`;
    const original = newRuntime(agent, "uid-1", cgroupParent);
    const recreated = newRuntime(agent, "uid-2", cgroupParent);
    const unlabelled = newRuntime(agent, undefined, cgroupParent);
    const spec = sandboxSpec();
    const uidOf = async (id: string) => (await client.containers.get({ id })).container?.labels["fast-sandbox.io/agent-uid"];
    try {
      await original.prepare();
      await original.create(spec);
      assert.equal(await uidOf(spec.sandboxId), "uid-1");
      for (const id of original.anchorIds) assert.equal(await uidOf(id), "uid-1");
      assert.deepEqual(
        (await original.list()).map((sandbox) => sandbox.sandboxId),
        [spec.sandboxId],
      );

      assert.deepEqual(await recreated.list(), []);
      assert.equal(await recreated.get(spec.sandboxId), undefined);
      // Without a UID of its own an agent goes by the name, as in the embedded mode.
      assert.deepEqual(
        (await unlabelled.list()).map((sandbox) => sandbox.sandboxId),
        [spec.sandboxId],
      );
      // The old Pod's anchors are replaced, not adopted: the janitor may reclaim what carries uid-1.
      await recreated.prepare();
      for (const id of recreated.anchorIds) assert.equal(await uidOf(id), "uid-2");
      assert.equal(await uidOf(spec.sandboxId), "uid-1");
    } finally {
      await original.delete(spec.sandboxId, { gracePeriodMs: 0 });
      await recreated.unprepare();
      original.close();
      recreated.close();
      unlabelled.close();
    }
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("puts a Shared runc sandbox into its agent's own network namespace (an agent in a Pod), with the agent's resolver files", async () => {
    const agent = "podnet-agent";
    const podNetns = `fsb-test-podnet-${process.pid}`;
    execFileSync("ip", ["netns", "add", podNetns]);
    execFileSync("ip", ["-n", podNetns, "link", "add", "fsbpod0", "type", "veth", "peer", "name", "fsbpod1"]);
    const resolv = join(workDir, "pod-resolv.conf");
    writeFileSync(resolv, "nameserver 10.96.0.10\nsearch pod.cluster.local\n");
    const podRuntime = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName: agent,
      stateDir: join(workDir, "state-podnet"),
      cgroupParent: `${CGROUP_PARENT}/${agent}`,
      helperPath: DEFAULT_HELPER_PATH,
      sharedNetwork: { netnsPath: `/run/netns/${podNetns}`, files: [{ source: resolv, destination: "/etc/resolv.conf" }] },
      logger: pino({ level: "warn" }),
    });
    const spec = sandboxSpec();
    try {
      await podRuntime.prepare();
      await podRuntime.create(spec);
      const interfaces = await execCollect(spec.sandboxId, ["ls", "/sys/class/net"], { via: podRuntime });
      assert.equal(interfaces.exitCode, 0);
      assert.deepEqual(interfaces.stdout.trim().split(/\s+/).sort(), ["fsbpod0", "fsbpod1", "lo"], "the Pod's interfaces, not the host's");
      const dns = await execCollect(spec.sandboxId, ["cat", "/etc/resolv.conf"], { via: podRuntime });
      assert.equal(dns.stdout, "nameserver 10.96.0.10\nsearch pod.cluster.local\n");
    } finally {
      await podRuntime.delete(spec.sandboxId, { gracePeriodMs: 0 }).catch(() => undefined);
      await podRuntime.unprepare();
      podRuntime.close();
      execFileSync("ip", ["netns", "delete", podNetns]);
    }
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("runs sandboxes whose ids containerd refuses under mapped container ids, and speaks their sandbox ids everywhere", async () => {
    const pid = String(process.pid);
    const ids = [`team-a.a--b.${pid}`, `team-a.${"n".repeat(120 - "team-a..".length - pid.length)}.${pid}`];
    assert.equal(ids[1]?.length, 120);
    for (const sandboxId of ids) {
      const spec = sandboxSpec({ sandboxId, logPath: join(workDir, `${sandboxId}.log`), command: ["sh", "-c", "echo hello; exit 5"] });
      const containerId = containerIdOf(sandboxId);
      assert.match(containerId, /^sb-[0-9a-f]{32}$/);
      assert.equal((await runtime.create(spec)).sandboxId, sandboxId);

      // containerd holds it under the mapped id (task, snapshot and cgroup too), labelled with the sandbox id.
      assert.deepEqual(leftovers(containerId), ["container", "task", "snapshot"]);
      const { container } = await client.containers.get({ id: containerId });
      assert.equal(container?.labels["fast-sandbox.io/sandbox-id"], sandboxId);
      assert.equal((await containerSpec(containerId)).linux.cgroupsPath, `${CGROUP_PARENT}/${containerId}`);

      // Logged, waited for, listed, got and exec'd under its sandbox id; its container id names no sandbox.
      await eventually(() => existsSync(spec.logPath) && readFileSync(spec.logPath, "utf8") === "hello\n", "hello in the log file");
      assert.equal(await runtime.wait(sandboxId), 5);
      const listed = (await runtime.list()).filter((sandbox) => [sandboxId, containerId].includes(sandbox.sandboxId));
      assert.deepEqual(
        listed.map(({ sandboxId: id, state, exitCode }) => ({ id, state, exitCode })),
        [{ id: sandboxId, state: "running", exitCode: 5 }],
      );
      assert.equal((await runtime.get(sandboxId))?.name, spec.name);
      assert.equal(await runtime.get(containerId), undefined);
      assert.deepEqual(await execCollect(sandboxId, ["sh", "-c", "echo out; echo err >&2; exit 3"]), { exitCode: 3, stdout: "out\n", stderr: "err\n" });
      await assert.rejects(execCollect(containerId, ["true"]), NotFoundError);

      // An agent that restarts finds it again by the same mapping.
      const restarted = newRuntime();
      try {
        assert.ok((await restarted.list()).some((sandbox) => sandbox.sandboxId === sandboxId));
        assert.equal((await restarted.get(sandboxId))?.exitCode, 5);
        await restarted.delete(sandboxId, { gracePeriodMs: 0 });
      } finally {
        restarted.close();
      }
      assert.deepEqual(leftovers(containerId), []);
      assert.equal(await runtime.get(sandboxId), undefined);
      assert.equal(existsSync(join(workDir, "state", "run", sandboxId)), false);
      for (const cgroup of [`/sys/fs/cgroup/memory${CGROUP_PARENT}/${containerId}`, `/sys/fs/cgroup${CGROUP_PARENT}/${containerId}`]) {
        assert.equal(existsSync(cgroup), false, cgroup);
      }
      await runtime.delete(sandboxId, { gracePeriodMs: 0 });
    }
  });

  it("keeps serving a sandbox created under its own id without the sandbox-id label (before the mapping existed)", async () => {
    const spec = sandboxSpec();
    await runtime.create(spec);
    await client.containers.update({ container: { id: spec.sandboxId, labels: {} }, updateMask: { paths: ["labels.fast-sandbox.io/sandbox-id"] } });
    assert.equal((await client.containers.get({ id: spec.sandboxId })).container?.labels["fast-sandbox.io/sandbox-id"], undefined);
    assert.equal((await runtime.get(spec.sandboxId))?.state, "running");
    assert.ok((await runtime.list()).some((sandbox) => sandbox.sandboxId === spec.sandboxId));
    assert.equal((await execCollect(spec.sandboxId, ["echo", "still mine"])).stdout, "still mine\n");
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("resolves wait() with the command's exit code and keeps the sandbox running for exec", async () => {
    const spec = sandboxSpec({ command: ["sh", "-c", "exit 7"] });
    await runtime.create(spec);
    assert.equal(await runtime.wait(spec.sandboxId), 7);
    const listed = (await runtime.list()).find((sandbox) => sandbox.sandboxId === spec.sandboxId);
    // The helper (process 1) outlives the command and reports its exit code.
    assert.equal(listed?.state, "running");
    assert.equal(listed?.exitCode, 7);
    assert.equal((await execCollect(spec.sandboxId, ["sh", "-c", "echo still-here"])).stdout, "still-here\n");
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 1_000 });
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("rejects a missing image it cannot pull with a clear error and leaves nothing behind", async () => {
    // Not in containerd, so the runtime pulls it; nothing listens on port 2 of loopback.
    const spec = sandboxSpec({ image: "127.0.0.1:2/does-not-exist:1" });
    await assert.rejects(runtime.create(spec), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /registry 127\.0\.0\.1:2 is unreachable at http:\/\/127\.0\.0\.1:2 \(ECONNREFUSED\)/);
      return true;
    });
    assert.deepEqual(leftovers(spec.sandboxId), []);
    assert.ok(!(await runtime.list()).some((sandbox) => sandbox.sandboxId === spec.sandboxId));
  });

  it("refuses a second sandbox with the same id and keeps the first one", async () => {
    const spec = sandboxSpec();
    await runtime.create(spec);
    await assert.rejects(runtime.create({ ...spec, name: "duplicate" }), AlreadyExistsError);
    assert.deepEqual(leftovers(spec.sandboxId), ["container", "task", "snapshot"]);
    assert.equal((await execCollect(spec.sandboxId, ["true"])).exitCode, 0);
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("rejects exec and wait in a missing sandbox with NotFoundError", async () => {
    await assert.rejects(execCollect("no-such-sandbox", ["true"]), NotFoundError);
    await assert.rejects(runtime.wait("no-such-sandbox"), NotFoundError);
  });

  it("fails the create of a command that does not exist, says why and leaves nothing", async () => {
    const spec = sandboxSpec({ command: ["/no/such/binary"] });
    await assert.rejects(runtime.create(spec), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.equal(error.message, 'spec.command: exec: "/no/such/binary": no such file or directory');
      return true;
    });
    assert.deepEqual(leftovers(spec.sandboxId), []);
    assert.equal(existsSync(join(workDir, "state", "run", spec.sandboxId)), false);
  });

  it("fails the create when the working directory is a file, and creates a missing one as runc does", async () => {
    const file = sandboxSpec({ command: ["true"], workingDir: "/bin/busybox" });
    await assert.rejects(runtime.create(file), /^ValidationError: spec\.workingDir: chdir \/bin\/busybox: not a directory$/);
    assert.deepEqual(leftovers(file.sandboxId), []);
    const missing = sandboxSpec({ command: ["sh", "-c", "pwd; sleep 1000"], workingDir: "/made/for/you" });
    await runtime.create(missing);
    await eventually(() => readFileSync(missing.logPath, "utf8") === "/made/for/you\n", "the command's pwd in the log");
    // Execs start in the sandbox's working directory too.
    assert.equal((await execCollect(missing.sandboxId, ["pwd"])).stdout, "/made/for/you\n");
    await runtime.delete(missing.sandboxId, { gracePeriodMs: 0 });
  });

  it("runs the command and its execs as the image's USER when it names an account (an exec as any user it is asked: names, numbers, root), and fails the create when the image lacks it", async () => {
    importBaseImageAs(NAMESPACE, NAMED_USER_IMAGES.nobody, "nobody");
    importBaseImageAs(NAMESPACE, NAMED_USER_IMAGES.ghost, "ghost");
    const named = sandboxSpec({ image: NAMED_USER_IMAGES.nobody, command: ["sh", "-c", "id -u; id -g; echo $HOME; sleep 1000"] });
    await runtime.create(named);
    // nobody's uid, group and home from the image's /etc/passwd: not root, as it was before.
    await eventually(() => readFileSync(named.logPath, "utf8") === "65534\n65534\n/nonexistent\n", "the command's ids in the log");
    // An exec runs as that user too (as docker exec does), and fails as a shell would for a missing command.
    const exec = await execCollect(named.sandboxId, ["sh", "-c", "id -u; id -g; echo $HOME"]);
    assert.deepEqual([exec.exitCode, exec.stdout], [0, "65534\n65534\n/nonexistent\n"]);
    const missing = await execCollect(named.sandboxId, ["no-such-command"]);
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /executable file not found in \$PATH/);
    // `fsb exec -u`: root, an account and a group by name, numbers no account has; an unknown name is 126 with docker's words.
    const ids = ["sh", "-c", "id -u; id -g"];
    assert.equal((await execCollect(named.sandboxId, ids, { user: "root" })).stdout, "0\n0\n");
    assert.equal((await execCollect(named.sandboxId, ids, { user: "nobody:root" })).stdout, "65534\n0\n");
    assert.equal((await execCollect(named.sandboxId, ids, { user: "1234:99" })).stdout, "1234\n99\n");
    const ghostUser = await execCollect(named.sandboxId, ids, { user: "ghost" });
    assert.equal(ghostUser.exitCode, 126);
    assert.match(ghostUser.stderr, /unable to find user ghost: no matching entries in \/etc\/passwd or \/etc\/group/);
    // A sandbox made by an earlier agent (no such label: its helper binary predates --exec-as) runs execs as before, as root;
    // a user can be given there by number only.
    ctr(NAMESPACE, "containers", "label", named.sandboxId, "fast-sandbox.io/helper-exec-as=");
    assert.equal((await execCollect(named.sandboxId, ["id", "-u"])).stdout, "0\n");
    assert.equal((await execCollect(named.sandboxId, ids, { user: "1234:99" })).stdout, "1234\n99\n");
    await assert.rejects(execCollect(named.sandboxId, ids, { user: "root" }), FailedPreconditionError);
    await runtime.delete(named.sandboxId, { gracePeriodMs: 0 });
    const ghost = sandboxSpec({ image: NAMED_USER_IMAGES.ghost, command: ["true"] });
    await assert.rejects(runtime.create(ghost), /^ValidationError: unable to find user ghost: no matching entries in the image's \/etc\/passwd/);
    assert.deepEqual(leftovers(ghost.sandboxId), []);
  });

  it("fails the create when the helper cannot fork the command (a pids limit of 1), and leaves nothing", async () => {
    const spec = sandboxSpec({ command: ["true"], resources: { pids: 1 } });
    await assert.rejects(runtime.create(spec), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.match(error.message, /could not start the command: fork: resource temporarily unavailable \(a pids limit must leave room/);
      return true;
    });
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("undoes snapshot and container when the task cannot be created", async () => {
    // A CPU quota below the kernel's minimum (1 ms per period) makes runc fail at Tasks.Create.
    const spec = sandboxSpec({ command: ["true"], resources: { cpuMillis: 1 } });
    await assert.rejects(runtime.create(spec), /cfs_quota_us/);
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });

  it("puts resource limits into the spec and the sandbox's cgroup", async () => {
    const memoryBytes = 96 * 1024 * 1024;
    const spec = sandboxSpec({
      resources: { cpuMillis: 500, memoryBytes, pids: 64 },
    });
    await runtime.create(spec);
    const oci = await containerSpec(spec.sandboxId);
    assert.deepEqual(oci.linux.resources.cpu, {
      quota: 50_000,
      period: 100_000,
    });
    // Where the host accounts swap (v1 memory.memsw.*, this machine; v2 memory.swap.max), the limit covers it.
    const swapAccounted =
      existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") || existsSync(`/sys/fs/cgroup${CGROUP_PARENT}/${spec.sandboxId}/memory.swap.max`);
    assert.deepEqual(oci.linux.resources.memory, swapAccounted ? { limit: memoryBytes, swap: memoryBytes } : { limit: memoryBytes });
    assert.deepEqual(oci.linux.resources.pids, { limit: 64 });
    assert.equal(oci.linux.cgroupsPath, `${CGROUP_PARENT}/${spec.sandboxId}`);
    // The limits reached the kernel: cgroup v1 (this machine) or v2 (unified hierarchy).
    const v1Memory = `/sys/fs/cgroup/memory${CGROUP_PARENT}/${spec.sandboxId}/memory.limit_in_bytes`;
    const v2Memory = `/sys/fs/cgroup${CGROUP_PARENT}/${spec.sandboxId}/memory.max`;
    const memoryFile = existsSync(v1Memory) ? v1Memory : v2Memory;
    assert.equal(readFileSync(memoryFile, "utf8").trim(), String(memoryBytes));
    if (swapAccounted) {
      const memsw = `/sys/fs/cgroup/memory${CGROUP_PARENT}/${spec.sandboxId}/memory.memsw.limit_in_bytes`;
      const [file, value] = existsSync(memsw) ? [memsw, String(memoryBytes)] : [`/sys/fs/cgroup${CGROUP_PARENT}/${spec.sandboxId}/memory.swap.max`, "0"];
      assert.equal(readFileSync(file, "utf8").trim(), value, "no swap beyond the memory limit");
    }
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
  });

  it("reports a sandbox whose process the kernel OOM-killed, and only that one", async () => {
    const hog = sandboxSpec({ command: ["sleep", "1000"], resources: { memoryBytes: 32 * 1024 * 1024 } });
    const calm = sandboxSpec({ command: ["sleep", "1000"], resources: { memoryBytes: 32 * 1024 * 1024 } });
    await runtime.create(hog);
    await runtime.create(calm);
    assert.equal((await runtime.get(hog.sandboxId))?.oomKilled, undefined);
    // `tail` keeps the whole "line" (100 MiB of zeros, no newline) in memory.
    const allocation = await execCollect(hog.sandboxId, ["sh", "-c", "head -c 100m /dev/zero | tail"]);
    assert.equal(allocation.exitCode, 137);
    assert.equal((await runtime.get(hog.sandboxId))?.oomKilled, true);
    assert.equal((await runtime.get(calm.sandboxId))?.oomKilled, undefined);
    const listed = new Map((await runtime.list()).map((sandbox) => [sandbox.sandboxId, sandbox.oomKilled]));
    assert.equal(listed.get(hog.sandboxId), true);
    assert.equal(listed.get(calm.sandboxId), undefined);
    await runtime.delete(hog.sandboxId, { gracePeriodMs: 0 });
    await runtime.delete(calm.sandboxId, { gracePeriodMs: 0 });
  });

  it("runs a gVisor sandbox through runsc", async () => {
    const spec = sandboxSpec({
      runtimeType: "gvisor",
      command: ["sh", "-c", "echo hi; sleep 1000"],
    });
    const created = await runtime.create(spec);
    assert.equal(created.state, "running");
    await eventually(() => existsSync(spec.logPath) && readFileSync(spec.logPath, "utf8").includes("hi"), "hi in the log file");
    // The kernel answering is gVisor's: its dmesg is unmistakable and runc's sandboxes cannot read the host's.
    const dmesg = await execCollect(spec.sandboxId, ["dmesg"]);
    assert.match(dmesg.stdout, /gVisor/);
    const result = await execCollect(spec.sandboxId, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(result, { exitCode: 3, stdout: "out\n", stderr: "err\n" });
    await runtime.delete(spec.sandboxId, { gracePeriodMs: 0 });
    assert.deepEqual(leftovers(spec.sandboxId), []);
  });
});
