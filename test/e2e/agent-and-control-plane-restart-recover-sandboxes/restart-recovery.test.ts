import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { NoCapacityError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, ctr, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { agentNamed, portsHeld, slotsHeld } from "../../support/pool-agents.js";
import { containerOfSandbox } from "../../support/containerd-contents.js";

describe("crashes and restarts converge to the truth", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    // Shared: the ports a sandbox holds on its agent's address are part of what must be recovered.
    embedded = await startEmbedded({
      name: "restart",
      pools: [pool("default", { maxSandboxesPerPod: 4, network: { mode: "Shared" } })],
      heartbeatIntervalMs: 300,
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  const sleeper = { pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"] };

  it("replaces a killed agent with one that adopts its running sandboxes", async () => {
    const { client } = embedded;
    const a = await client.sandboxes.create({ ...sleeper, name: "survivor-a", exposedPorts: [18500] });
    const b = await client.sandboxes.create({ ...sleeper, name: "survivor-b" });
    const agent = await agentNamed(client, "default-0");
    assert.equal(agent?.ready, true);
    const oldPid = agent.pid;
    assert.ok(oldPid, "the embedded agent reports its pid");

    // A crash: the supervisor starts a new process under the same name.
    process.kill(oldPid, "SIGKILL");
    await waitFor(
      async () => {
        const replacement = await agentNamed(client, "default-0");
        return replacement?.ready === true && replacement.pid !== undefined && replacement.pid !== oldPid;
      },
      30_000,
      "the replacement agent",
    );

    // The sandboxes kept running through the crash and the new agent serves them.
    for (const sandbox of [a, b]) {
      const result = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "echo alive"]);
      assert.equal(result.stdout, "alive\n");
    }
    assert.equal(await slotsHeld(client, "default"), 2);
    await assert.rejects(client.sandboxes.create({ ...sleeper, exposedPorts: [18500] }), NoCapacityError);
    assert.equal((await client.sandboxes.get("survivor-a")).status?.phase, "Running");
  });

  it("rebuilds slots and ports from the store and the agents after a control plane restart", async () => {
    await embedded.restart();
    const { client } = embedded;
    assert.deepEqual((await client.sandboxes.list()).map((s) => s.metadata.name).sort(), ["survivor-a", "survivor-b"]);
    assert.equal(await slotsHeld(client, "default"), 2);
    assert.deepEqual(await portsHeld(client), [18500]);
    await assert.rejects(client.sandboxes.create({ ...sleeper, exposedPorts: [18500] }), NoCapacityError);
    const result = await client.sandboxes.exec("survivor-b", ["sh", "-c", "exit 7"]);
    assert.equal(result.exitCode, 7);
  });

  it("marks a sandbox whose container vanished while the control plane was down as Lost, and removes containers nobody owns", async () => {
    const { containerdNamespace } = embedded;
    const lost = await embedded.client.sandboxes.get("survivor-b");
    // Its container: the prepared instance's it claimed (the pool keeps 2 by default), else named after it.
    const lostContainer = containerOfSandbox(containerdNamespace, lost.status?.sandboxID ?? "");
    await embedded.shutdown();
    // While it is down: survivor-b's container disappears, and an unknown container appears.
    execFileSync("ctr", ["-n", containerdNamespace, "tasks", "kill", "-s", "SIGKILL", lostContainer]);
    await waitFor(
      () => !ctr(containerdNamespace, "tasks", "ls").includes(`${lostContainer} `) || ctr(containerdNamespace, "tasks", "ls").includes("STOPPED"),
      10_000,
      "the task to stop",
    );
    execFileSync("ctr", ["-n", containerdNamespace, "tasks", "rm", "-f", lostContainer], { stdio: "ignore" });
    execFileSync("ctr", ["-n", containerdNamespace, "containers", "rm", lostContainer]);
    // (removing the container removes its snapshot too)
    execFileSync("ctr", [
      "-n",
      containerdNamespace,
      "run",
      "-d",
      "--null-io",
      "--label",
      "fast-sandbox.io/managed=true",
      "--label",
      "fast-sandbox.io/agent=default-0",
      "--label",
      "fast-sandbox.io/sandbox-id=orphan",
      BASE_IMAGE,
      "orphan",
      "sleep",
      "3600",
    ]);

    await embedded.restart();
    const { client } = embedded;
    const after = await client.sandboxes.get("survivor-b");
    assert.equal(after.status?.phase, "Lost");
    assert.equal(after.status?.conditions?.find((c) => c.type === "Ready")?.reason, "SandboxMissing");
    assert.equal(await slotsHeld(client, "default"), 1);
    await waitFor(() => !containerdLeftovers(containerdNamespace).containers.includes("orphan"), 15_000, "the orphan container to be removed");
    assert.equal((await client.sandboxes.get("survivor-a")).status?.phase, "Running");

    // A Lost sandbox can still be deleted; nothing of it remains.
    await client.sandboxes.delete("survivor-b");
    await client.sandboxes.delete("survivor-a");
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
    assert.equal(await slotsHeld(client, "default"), 0);
  });
});

describe("a restart brings back every agent that sandboxes are placed on", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    // One slot per agent and one spare slot kept warm: the pool grows to a second agent.
    embedded = await startEmbedded({
      name: "pinned",
      pools: [pool("narrow", { maxSandboxesPerPod: 1, capacity: { poolMin: 1, poolMax: 2, bufferMin: 1 } })],
      heartbeatIntervalMs: 300,
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("starts the agent of a sandbox even when the pool's size alone would not", async () => {
    const sleeper = { pool: "narrow", image: BASE_IMAGE, command: ["sleep", "3600"] };
    const first = await embedded.client.sandboxes.create({ ...sleeper, name: "first" });
    assert.equal(first.status?.assignedPod, "narrow-0");
    await waitFor(async () => (await agentNamed(embedded.client, "narrow-1"))?.ready === true, 30_000, "the pool to grow to a second agent");
    const second = await embedded.client.sandboxes.create({ ...sleeper, name: "second" });
    assert.equal(second.status?.assignedPod, "narrow-1");
    await embedded.client.sandboxes.delete("first");

    // After a restart the pool's size from scratch is one agent; the sandbox on narrow-1 needs it back.
    await embedded.restart();
    const { client } = embedded;
    // narrow-1 is back and ready, and the pool's one held slot is on it: the slot of "second".
    const narrow1 = await agentNamed(client, "narrow-1");
    assert.equal(narrow1?.ready, true);
    assert.equal(narrow1.allocated, 1);
    assert.equal(await slotsHeld(client, "narrow"), 1);
    assert.equal((await client.sandboxes.get("second")).status?.assignedPod, "narrow-1");
    assert.equal((await client.sandboxes.exec("second", ["sh", "-c", "echo adopted"])).stdout, "adopted\n");
    await client.sandboxes.delete("second");
  });
});
