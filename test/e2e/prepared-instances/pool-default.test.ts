/**
 * The pools' default number of prepared instances, end to end on the embedded Fast Sandbox (real
 * agent processes, containerd and runc): a runc pool that names an image and leaves
 * spec.preparedInstances unset keeps 2 on each agent (at most maxSandboxesPerPod), one with
 * preparedInstances 0 keeps none; a gVisor pool with an image keeps the number it asks for; a
 * matching create claims one (in gVisor's kernel for the gVisor pool), which then takes a sandbox
 * slot while the stock itself takes none; each pool's status counts its ready instances and says why
 * an agent cannot make them (an image it cannot pull); and deleting the pools removes every instance with
 * nothing left behind (container, task, snapshot, cgroup, run directory, log).
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { containerOfSandbox, isPreparedInstance, preparedStock, tasks } from "../../support/containerd-contents.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const POOL_LABEL = "fast-sandbox.io/pool";
const UNPULLABLE = "127.0.0.1:1/fsb-e2e/missing:1";

/** Directories named `fsb-prepared-…` anywhere under `root`. */
function preparedDirsUnder(root: string): string[] {
  if (!existsSync(root)) return [];
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      if (isPreparedInstance(entry.name)) found.push(join(dir, entry.name));
      else walk(join(dir, entry.name));
    }
  };
  walk(root);
  return found;
}

/** Cgroups of prepared instances under the case's cgroup root, in every hierarchy. */
function preparedCgroups(cgroupRoot: string): string[] {
  const hierarchies = ["/sys/fs/cgroup", ...readdirSync("/sys/fs/cgroup").map((controller) => `/sys/fs/cgroup/${controller}`)];
  return hierarchies.flatMap((hierarchy) => preparedDirsUnder(`${hierarchy}/${cgroupRoot}`));
}

/** Whether a process lives. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("prepared instances of a pool by default", () => {
  let embedded: EmbeddedCase;
  /** The pool's prepared instances whose task runs (an instance being made has its container before its task). */
  const stockOf = (poolName: string) => {
    const running = new Set(tasks(embedded.containerdNamespace).flatMap((task) => (task.status === "RUNNING" ? [task.id] : [])));
    return preparedStock(embedded.containerdNamespace, { [POOL_LABEL]: poolName }).filter((id) => running.has(id));
  };

  /** The create's sandbox runs, and containerd knows it as the prepared instance it claimed. */
  const assertClaimed = async (sandbox: { status?: { sandboxID?: string; phase?: string } }) => {
    const sandboxId = sandbox.status?.sandboxID ?? "";
    assert.equal(sandbox.status?.phase, "Running");
    await waitFor(
      () => isPreparedInstance(containerOfSandbox(embedded.containerdNamespace, sandboxId)),
      5_000,
      `containerd to know ${sandboxId} as the instance it claimed`,
    );
  };

  before(async () => {
    embedded = await startEmbedded({
      name: "prepared-default",
      pools: [
        pool("warm", { maxSandboxesPerPod: 2 }),
        pool("single", { maxSandboxesPerPod: 1 }),
        pool("cold", { maxSandboxesPerPod: 2, preparedInstances: 0 }),
        pool("sealed", { maxSandboxesPerPod: 2, runtimeType: "gvisor", preparedInstances: 2 }),
        // Nothing listens there: every prepare's pull fails at once.
        pool("unpullable", { maxSandboxesPerPod: 1, image: UNPULLABLE }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("keeps 2 on each agent of a runc pool with an image that says nothing, at most its slots, and none with preparedInstances 0", async () => {
    // Each instance is a started task whose process 1 waits for a claim.
    await waitFor(
      () => stockOf("warm").length === 2 && stockOf("single").length === 1 && stockOf("sealed").length === 2,
      60_000,
      "the default stock of 'warm' and 'single', and the stock 'sealed' asks for",
    );
    // 'cold' had the same time to fill a stock as 'warm' and 'single', and more.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.deepEqual(preparedStock(embedded.containerdNamespace, { [POOL_LABEL]: "cold" }), []);
    assert.equal(stockOf("warm").length, 2, "the stock stays at its target");
    assert.equal(stockOf("single").length, 1);
  });

  it("says in each pool's status how many are ready, and why its agent cannot make them: an image it cannot pull", async () => {
    const { client } = embedded;
    await waitFor(
      async () => (await client.pools.get("warm")).status?.preparedInstances === 2,
      60_000,
      "the status of 'warm' to count its 2 prepared instances",
    );
    await waitFor(
      async () => (await client.pools.get("unpullable")).status?.conditions?.some((c) => c.type === "InstancesPrepared") === true,
      60_000,
      "the status of 'unpullable' to say its agent cannot make prepared instances",
    );
    const unpullable = (await client.pools.get("unpullable")).status;
    assert.equal(unpullable?.preparedInstances, 0);
    const condition = unpullable?.conditions?.find((c) => c.type === "InstancesPrepared");
    assert.equal(condition?.status, "False");
    assert.equal(condition?.reason, "PrepareFailed");
    assert.match(
      condition?.message ?? "",
      /^agent unpullable-\d+ cannot make prepared instances \(creates take the slower path meanwhile; the agents keep trying\): .*127\.0\.0\.1:1/,
    );
    // A pool that keeps none says nothing of them; one whose stock fills carries no such condition.
    const cold = (await client.pools.get("cold")).status;
    assert.equal(cold?.preparedInstances, undefined);
    assert.deepEqual((await client.pools.get("warm")).status?.conditions ?? [], []);
  });

  it("hands one to each matching create, which then takes a slot; the stock takes none and refills beside full slots", async () => {
    const { client, containerdNamespace } = embedded;
    await waitFor(() => stockOf("warm").length === 2, 60_000, "the stock of 'warm'");
    const sandboxes = await Promise.all([0, 1].map(() => client.sandboxes.create({ pool: "warm", image: BASE_IMAGE, command: ["sleep", "3600"] })));
    for (const sandbox of sandboxes) await assertClaimed(sandbox);
    const [agent] = await client.pools.agents({ pool: "warm" });
    assert.equal(agent?.capacity, 2);
    assert.equal(agent?.allocated, 2, "each claimed instance is a sandbox and holds a slot");
    // Both slots are taken, and the agent still makes its stock again: unclaimed instances take no slot.
    await waitFor(() => stockOf("warm").length === 2, 60_000, "the stock of 'warm' to refill");
    for (const sandbox of sandboxes) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    assert.equal((await client.pools.agents({ pool: "warm" }))[0]?.allocated, 0);
    // What the claimed instances were is gone with their sandboxes; only the stock is left.
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("hands a gVisor pool's instance to a matching create, which runs its command in gVisor's kernel and checkpoints like any", async () => {
    const { client, containerdNamespace } = embedded;
    await waitFor(() => stockOf("sealed").length === 2, 60_000, "the stock of 'sealed'");
    const sandbox = await client.sandboxes.create({
      pool: "sealed",
      image: BASE_IMAGE,
      // Says so again whenever /root/again appears: its output after a checkpoint goes to its log too.
      command: ["sh", "-c", 'echo "ran $MARK in $(pwd)"; while sleep 0.1; do [ -f /root/again ] && rm /root/again && echo again; done'],
      envs: { MARK: "m1" },
      workingDir: "/srv",
    });
    await assertClaimed(sandbox);
    const dmesg = await client.sandboxes.exec(sandbox.metadata.name, ["dmesg"]);
    assert.match(dmesg.stdout, /gVisor/i, "the command runs in gVisor's kernel");
    const output = async () => {
      let text = "";
      for await (const chunk of client.sandboxes.logs(sandbox.metadata.name)) text += new TextDecoder().decode(chunk);
      return text;
    };
    await waitFor(async () => (await output()) === "ran m1 in /srv\n", 30_000, "the claimed command's output");
    // It checkpoints and restores like any gVisor sandbox: its helper let go of the claim FIFO.
    await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "echo kept > /root/state"]);
    await client.checkpoints.create(sandbox.metadata.name, { name: "from-prepared" });
    await client.sandboxes.exec(sandbox.metadata.name, ["touch", "/root/again"]);
    await waitFor(async () => (await output()) === "ran m1 in /srv\nagain\n", 30_000, "the checkpointed sandbox's output, in its log");
    const copy = await client.checkpoints.restore("from-prepared", { name: "prepared-copy" });
    const state = await client.sandboxes.exec(copy.metadata.name, ["cat", "/root/state"]);
    assert.equal(state.stdout, "kept\n", "the restored copy has the claimed sandbox's files");
    for (const name of [copy.metadata.name, sandbox.metadata.name]) await client.sandboxes.delete(name, { gracePeriodMs: 0 });
    await client.checkpoints.delete("from-prepared");
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("removes every prepared instance with its pool: no container, task, snapshot, cgroup, run directory or log is left", async () => {
    const { client, containerdNamespace, cgroupRoot, dataDir } = embedded;
    await waitFor(() => stockOf("warm").length === 2 && stockOf("single").length === 1 && stockOf("sealed").length === 2, 60_000, "the stocks");
    const agents = await client.pools.agents();
    assert.ok(agents.length >= 3);
    assert.ok(containerdLeftovers(containerdNamespace, { withPreparedStock: true }).containers.some(isPreparedInstance), "the stock is counted");
    for (const name of ["warm", "single", "cold", "sealed", "unpullable"]) await client.pools.delete(name);
    await waitFor(async () => (await client.pools.agents()).length === 0, 30_000, "the pools' agents to go");
    await waitFor(() => agents.every((agent) => agent.pid === undefined || !alive(agent.pid)), 30_000, "the agent processes to exit");
    assert.deepEqual(containerdLeftovers(containerdNamespace, { withPreparedStock: true }), { containers: [], tasks: [], snapshots: [] });
    assert.deepEqual(preparedCgroups(cgroupRoot), []);
    assert.deepEqual(preparedDirsUnder(join(dataDir, "agents")), []);
    const logs = agents.flatMap((agent) => {
      const dir = join(dataDir, "agents", agent.name, "logs");
      return existsSync(dir)
        ? readdirSync(dir)
            .filter(isPreparedInstance)
            .map((log) => `${agent.name}/${log}`)
        : [];
    });
    assert.deepEqual(logs, []);
  });
});
