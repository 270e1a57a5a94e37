/**
 * The pools' default number of prepared instances, end to end on the embedded Fast Sandbox (real
 * agent processes, containerd and runc): a runc pool that names an image and leaves
 * spec.preparedInstances unset keeps 2 on each agent (at most maxSandboxesPerPod), one with
 * preparedInstances 0 keeps none; a matching create claims one, which then takes a sandbox slot
 * while the stock itself takes none; and deleting the pools removes every instance with nothing
 * left behind (container, task, snapshot, cgroup, run directory, log).
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { containerOfSandbox, isPreparedInstance, preparedStock, tasks } from "../../support/containerd-contents.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const POOL_LABEL = "fast-sandbox.io/pool";

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

  before(async () => {
    embedded = await startEmbedded({
      name: "prepared-default",
      pools: [
        pool("warm", { maxSandboxesPerPod: 2 }),
        pool("single", { maxSandboxesPerPod: 1 }),
        pool("cold", { maxSandboxesPerPod: 2, preparedInstances: 0 }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("keeps 2 on each agent of a runc pool with an image that says nothing, at most its slots, and none with preparedInstances 0", async () => {
    // Each instance is a started task whose process 1 waits for a claim.
    await waitFor(() => stockOf("warm").length === 2 && stockOf("single").length === 1, 60_000, "the default stock of 'warm' and 'single'");
    // 'cold' had the same time to fill a stock as 'warm' and 'single', and more.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.deepEqual(preparedStock(embedded.containerdNamespace, { [POOL_LABEL]: "cold" }), []);
    assert.equal(stockOf("warm").length, 2, "the stock stays at its target");
    assert.equal(stockOf("single").length, 1);
  });

  it("hands one to each matching create, which then takes a slot; the stock takes none and refills beside full slots", async () => {
    const { client, containerdNamespace } = embedded;
    await waitFor(() => stockOf("warm").length === 2, 60_000, "the stock of 'warm'");
    const sandboxes = await Promise.all([0, 1].map(() => client.sandboxes.create({ pool: "warm", image: BASE_IMAGE, command: ["sleep", "3600"] })));
    for (const sandbox of sandboxes) {
      const sandboxId = sandbox.status?.sandboxID ?? "";
      assert.equal(sandbox.status?.phase, "Running");
      await waitFor(
        () => isPreparedInstance(containerOfSandbox(containerdNamespace, sandboxId)),
        5_000,
        `containerd to know ${sandboxId} as the instance it claimed`,
      );
    }
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

  it("removes every prepared instance with its pool: no container, task, snapshot, cgroup, run directory or log is left", async () => {
    const { client, containerdNamespace, cgroupRoot, dataDir } = embedded;
    await waitFor(() => stockOf("warm").length === 2 && stockOf("single").length === 1, 60_000, "the stocks");
    const agents = await client.pools.agents();
    assert.ok(agents.length >= 3);
    assert.ok(containerdLeftovers(containerdNamespace, { withPreparedStock: true }).containers.some(isPreparedInstance), "the stock is counted");
    for (const name of ["warm", "single", "cold"]) await client.pools.delete(name);
    await waitFor(async () => (await client.pools.agents()).length === 0, 30_000, "the pools' agents to go");
    await waitFor(() => agents.every((agent) => agent.pid === undefined || !alive(agent.pid)), 30_000, "the agent processes to exit");
    assert.deepEqual(containerdLeftovers(containerdNamespace, { withPreparedStock: true }), { containers: [], tasks: [], snapshots: [] });
    assert.deepEqual(preparedCgroups(cgroupRoot), []);
    assert.deepEqual(preparedDirsUnder(join(dataDir, "agents")), []);
    const logs = agents.flatMap((agent) => {
      const dir = join(dataDir, "agents", agent.name, "logs");
      return existsSync(dir) ? readdirSync(dir).filter(isPreparedInstance) : [];
    });
    assert.deepEqual(logs, []);
  });
});
