import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { FastSandboxClient } from "@fast-sandbox/sdk";
import { NotFoundError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { slotsHeld } from "../../support/pool-agents.js";

const decoder = new TextDecoder();

/** The memory limit of the "limited" pool's sandboxes, and the same in bytes. */
const LIMITED_MEMORY = "48Mi";
const LIMITED_MEMORY_BYTES = 48 * 2 ** 20;

/**
 * Run inside a sandbox: its /proc/self/cgroup, then the memory limit it reads at /sys/fs/cgroup
 * (v2's memory.max, or v1's memory controller, whichever the host has), then what a write of
 * another limit there and a new cgroup beside it answer, and the limit read again.
 */
const CGROUP_VIEW_SCRIPT = [
  "cat /proc/self/cgroup",
  "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then d=/sys/fs/cgroup; f=$d/memory.max; else d=/sys/fs/cgroup/memory; f=$d/memory.limit_in_bytes; fi",
  'limit=$(cat "$f"); echo "limit=$limit"',
  'echo $((limit * 2)) > "$f"; echo "write=$?"',
  'mkdir "$d/fsb-probe" 2>&1; echo "mkdir=$?"',
  'echo "after=$(cat "$f")"',
].join("\n");

async function readLogs(client: FastSandboxClient, name: string, follow = false): Promise<string> {
  let text = "";
  for await (const chunk of client.sandboxes.logs(name, { follow })) text += decoder.decode(chunk);
  return text;
}

describe("a sandbox's life on the real containerd", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "lifecycle",
      pools: [pool("default", { maxSandboxesPerPod: 4 }), pool("limited", { maxSandboxesPerPod: 1, sandboxResources: { memory: LIMITED_MEMORY } })],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("creates a running sandbox whose output reaches its log, runs exec with the exit code, and deletes it without leftovers", async () => {
    const { client, containerdNamespace } = embedded;
    const sandbox = await client.sandboxes.create({
      pool: "default",
      image: BASE_IMAGE,
      command: ["sh", "-c", "echo hello; echo to-stderr >&2"],
      consistencyMode: "strong",
    });
    assert.equal(sandbox.status?.phase, "Running");
    assert.equal(sandbox.status?.assignedPod, "default-0");
    const name = sandbox.metadata.name;
    const sandboxId = sandbox.status?.sandboxID ?? "";
    assert.match(sandboxId, /^[a-z0-9]{20}$/);
    // A claimed prepared instance is relabelled with the sandbox id just after the create answered.
    await recordedContainerOfSandbox(containerdNamespace, sandboxId);
    assert.deepEqual(containerdLeftovers(containerdNamespace).containers, [sandboxId]);

    // Following ends when the command exits, and returns everything it wrote.
    const logs = await readLogs(client, name, true);
    assert.match(logs, /hello/);
    assert.match(logs, /to-stderr/);

    // The sandbox outlives its command (the helper is process 1), so exec still works.
    const result = await client.sandboxes.exec(name, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(result, { exitCode: 3, stdout: "out\n", stderr: "err\n" });

    const stored = await client.sandboxes.get(name);
    assert.equal(stored.metadata.finalizers?.includes("sandbox.fast.io/agent-cleanup"), true);
    // The command's exit is reported as a condition with its code (from the agent's heartbeat).
    await waitFor(
      async () => (await client.sandboxes.get(name)).status?.conditions?.some((c) => c.type === "CommandExited") === true,
      10_000,
      "the CommandExited condition",
    );
    const exited = (await client.sandboxes.get(name)).status?.conditions?.find((c) => c.type === "CommandExited");
    assert.equal(exited?.reason, "Succeeded");
    assert.match(exited?.message ?? "", /exited with code 0/);

    await client.sandboxes.delete(name);
    await assert.rejects(client.sandboxes.get(name), NotFoundError);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
    assert.equal(await slotsHeld(client, "default"), 0);
  });

  it("runs the user's command with its args, env and working directory", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({
      pool: "default",
      image: BASE_IMAGE,
      command: ["sh", "-c"],
      args: ['echo "$GREETING from $(pwd)"'],
      envs: { GREETING: "hi there" },
      workingDir: "/tmp",
    });
    await waitFor(async () => (await readLogs(client, sandbox.metadata.name)).includes("hi there from /tmp"), 10_000, "the command's output");
    const exec = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "echo $GREETING; pwd"], {
      workingDir: "/",
      envs: [{ name: "GREETING", value: "override" }],
    });
    assert.equal(exec.stdout, "override\n/\n");
    await client.sandboxes.delete(sandbox.metadata.name);
  });

  it("isolates the sandbox: own PID namespace, no new privileges, reduced capabilities, seccomp on", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const status = await client.sandboxes.exec(sandbox.metadata.name, [
      "sh",
      "-c",
      "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; ps -o pid,comm",
    ]);
    assert.equal(status.exitCode, 0);
    assert.match(status.stdout, /NoNewPrivs:\s+1/);
    assert.match(status.stdout, /Seccomp:\s+2/);
    const capEff = BigInt(`0x${/CapEff:\s+([0-9a-f]+)/.exec(status.stdout)?.[1] ?? "0"}`);
    const CAP_SYS_ADMIN = 21n;
    assert.equal((capEff >> CAP_SYS_ADMIN) & 1n, 0n, "CAP_SYS_ADMIN must be dropped");
    // Process 1 is the helper, then the user's command: the host's processes are invisible.
    assert.match(status.stdout, /^\s*1 helper/m);
    assert.doesNotMatch(status.stdout, /containerd|node/);
    // The helper's directory is a mount point: root in the sandbox cannot rename it away and plant
    // programs the agent runs there with more capabilities (hostname on restore, daemon control).
    const moved = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "mv /.fast-sandbox /.moved; echo mv=$?; ls /.fast-sandbox"]);
    assert.match(moved.stdout + moved.stderr, /busy/i, JSON.stringify(moved));
    assert.match(moved.stdout, /^mv=[1-9]/m, JSON.stringify(moved));
    assert.match(moved.stdout, /^helper$/m, JSON.stringify(moved));
    await client.sandboxes.delete(sandbox.metadata.name);
  });

  it("gives the sandbox a cgroup namespace and its own cgroup read-only at /sys/fs/cgroup, where it reads its memory limit", async () => {
    const { client, containerdNamespace, cgroupRoot } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: ["sleep", "3600"] });
    try {
      const sandboxId = sandbox.status?.sandboxID ?? "";
      const containerId = await recordedContainerOfSandbox(containerdNamespace, sandboxId);
      const view = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", CGROUP_VIEW_SCRIPT]);
      const report = JSON.stringify(view);
      const [cgroupLines = ""] = view.stdout.split("\nlimit=");
      // Its own cgroup is the root of its namespace: nothing of the host's path (the agents' cgroup
      // root, the container's id) shows, in any hierarchy.
      assert.ok(cgroupLines.trim().length > 0, report);
      for (const line of cgroupLines.trim().split("\n")) assert.match(line, /^\d+:[^:]*:\/$/, report);
      for (const hostName of [cgroupRoot, containerId, sandboxId]) assert.ok(!view.stdout.includes(hostName), `${hostName} in ${report}`);
      // Its limit, where runtimes that size themselves look for it.
      assert.match(view.stdout, new RegExp(`^limit=${LIMITED_MEMORY_BYTES}$`, "m"), report);
      // Read-only: root in the sandbox can neither raise its limit nor make a cgroup.
      assert.match(view.stdout, /^write=[1-9]/m, report);
      assert.match(view.stdout, /^mkdir=[1-9]/m, report);
      assert.match(view.stdout, new RegExp(`^after=${LIMITED_MEMORY_BYTES}$`, "m"), report);
      assert.equal((view.stdout + view.stderr).match(/Read-only file system/g)?.length, 2, report);
    } finally {
      // Gone even when a check fails: the cases after this one count the sandboxes left.
      await client.sandboxes.delete(sandbox.metadata.name);
    }
  });

  it("retries with the same request id return the first sandbox instead of creating another", async () => {
    const { client } = embedded;
    const requestId = `retry-${Date.now()}`;
    const [first, second] = await Promise.all([
      client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"], requestId }),
      client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"], requestId }),
    ]);
    const third = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"], requestId });
    assert.equal(second.metadata.name, first.metadata.name);
    assert.equal(third.metadata.name, first.metadata.name);
    const all = await client.sandboxes.list();
    assert.equal(all.filter((s) => s.metadata.name === first.metadata.name).length, 1);
    assert.equal(all.length, 1);
    await client.sandboxes.delete(first.metadata.name);
  });

  it("reports declared ports as endpoints through the sandbox proxy", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [18081, 18082] });
    const proxyPort = new URL(embedded.controlPlane.proxyUrl).port;
    const id = sandbox.status?.sandboxID ?? "?";
    assert.deepEqual(sandbox.status?.endpoints, [`http://18081-${id}.localhost:${proxyPort}/`, `http://18082-${id}.localhost:${proxyPort}/`]);
    await client.sandboxes.delete(sandbox.metadata.name);
  });

  it("expires a sandbox after its expireTime and removes its container", async () => {
    const { client, containerdNamespace } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"], ttlMs: 4000 });
    assert.ok(sandbox.spec.expireTime);
    await waitFor(async () => (await client.sandboxes.list()).every((s) => s.metadata.name !== sandbox.metadata.name), 20_000, "the expired sandbox to go");
    await waitFor(() => containerdLeftovers(containerdNamespace).containers.length === 0, 10_000, "its container to go");
    assert.equal(await slotsHeld(client, "default"), 0);
  });

  it("updates mutable fields and refuses to change immutable ones", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const updated = await client.sandboxes.update(sandbox.metadata.name, { ...sandbox.spec, failurePolicy: "AutoRecreate" });
    assert.equal(updated.spec.failurePolicy, "AutoRecreate");
    await assert.rejects(client.sandboxes.update(sandbox.metadata.name, { ...sandbox.spec, image: "other:latest" }), (error: Error) => {
      assert.match(error.message, /spec\.image.*immutable/);
      return true;
    });
    await client.sandboxes.delete(sandbox.metadata.name);
  });
});
