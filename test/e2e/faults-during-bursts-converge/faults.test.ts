/**
 * Faults in the middle of bursts of creates and deletes, on the real `fsb up` process, its agents,
 * its janitor, containerd and runc: `kill -9` of an agent, a restart of containerd itself, and
 * `kill -9` of the control plane. Afterwards the system converges, checked against the public API
 * and containerd's and the kernel's real state:
 * - every acknowledged create exists and runs; every unacknowledged one exists fully or not at all;
 * - every acknowledged delete is gone;
 * - no sandbox stays in an intermediate phase (Pending, Bound, Terminating);
 * - slots and ports match the sandboxes exactly (no leak);
 * - containerd holds exactly the sandboxes' containers, running tasks and snapshots, and the
 *   cgroup tree exactly their cgroups (the janitor, protection window 3 s, reclaims the rest),
 *   besides the agents' prepared instances in stock, each whole (running task, snapshot, cgroup);
 * - `fsb down --delete-sandboxes` leaves nothing of Fast Sandbox running, nor its cgroup root.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import type { Sandbox } from "@fast-sandbox/api";
import { BASE_IMAGE, REPO_ROOT, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { containerKind, isAnchor } from "../../support/containerd-contents.js";
import { waitFor } from "../../support/embedded.js";

const CLI = join(REPO_ROOT, "packages/cli/src/main.ts");
const CONVERGE_MS = 90_000;

interface Outcome {
  name: string;
  ports: number[];
  acknowledged: boolean;
  error?: string;
}

describe("faults in the middle of bursts converge to the truth", () => {
  const suffix = randomBytes(3).toString("hex");
  const namespace = `fsb-e2e-faults-${suffix}`;
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-e2e-faults-"));
  let controlPlane: ChildProcess | undefined;
  let client: FastSandboxClient;
  let round = 0;
  /** Sandboxes whose create was acknowledged and not deleted since: they must exist and run. */
  const mustRun = new Set<string>();

  function fsb(...args: string[]) {
    return spawnSync(process.execPath, ["--conditions=development", "--import", "tsx", CLI, "--data-dir", dataDir, ...args], {
      encoding: "utf8",
      timeout: 120_000,
      cwd: REPO_ROOT,
    });
  }

  async function startControlPlane(): Promise<void> {
    rmSync(join(dataDir, "url"), { force: true });
    const log = openSync(join(dataDir, `up-${Date.now()}.log`), "a");
    controlPlane = spawn(
      process.execPath,
      [
        "--conditions=development",
        "--import",
        "tsx",
        CLI,
        "--data-dir",
        dataDir,
        "up",
        "--port",
        "0",
        "--image",
        BASE_IMAGE,
        "--containerd-namespace",
        namespace,
        "--cgroup-root",
        namespace,
        "--janitor-interval",
        "1s",
        "--janitor-protection",
        "3s",
      ],
      { cwd: REPO_ROOT, stdio: ["ignore", log, log] },
    );
    await waitFor(() => existsSync(join(dataDir, "url")), 60_000, "fsb up to serve");
    client?.close();
    client = new FastSandboxClient({ url: readFileSync(join(dataDir, "url"), "utf8").trim(), token: readFileSync(join(dataDir, "token"), "utf8").trim() });
    await waitFor(
      async () => (await client.pools.agents({ pool: "default" }).catch(() => [])).some((a) => a.ready),
      60_000,
      "a ready agent of the default pool",
    );
  }

  /** 35 creates (a third with a port) and deletes of 15 sandboxes made beforehand, all at once; `fault` strikes 150 ms after the first create is acknowledged. */
  async function burst(fault: () => Promise<void> | void): Promise<{ creates: Outcome[]; deletes: Outcome[] }> {
    round += 1;
    const prefix = `r${round}`;
    // Each round starts from a clean slate so the pool (4 agents × 16 slots) fits its 50 sandboxes.
    for (const sandbox of await client.sandboxes.list()) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    mustRun.clear();
    const victims: string[] = [];
    for (let i = 0; i < 15; i++) {
      const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, name: `${prefix}-old-${i}`, command: ["sleep", "3600"] });
      victims.push(sandbox.metadata.name);
    }
    let struck: Promise<void> | undefined;
    const strike = () => {
      struck ??= new Promise<void>((resolve) => setTimeout(resolve, 150)).then(fault);
    };
    const creates = Array.from({ length: 35 }, async (_, i): Promise<Outcome> => {
      const name = `${prefix}-new-${i}`;
      const ports = i % 3 === 0 ? [20000 + round * 100 + i] : [];
      try {
        await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, name, command: ["sleep", "3600"], exposedPorts: ports, requestId: `${name}-req` });
        strike();
        return { name, ports, acknowledged: true };
      } catch (error) {
        return { name, ports, acknowledged: false, error: String(error) };
      }
    });
    const deletes = victims.map(async (name): Promise<Outcome> => {
      try {
        await client.sandboxes.delete(name, { gracePeriodMs: 0 });
        return { name, ports: [], acknowledged: true };
      } catch (error) {
        return { name, ports: [], acknowledged: false, error: String(error) };
      }
    });
    const result = { creates: await Promise.all(creates), deletes: await Promise.all(deletes) };
    const errors = new Map<string, number>();
    for (const failed of [...result.creates, ...result.deletes].filter((o) => o.error)) {
      const message = (failed.error ?? "").replace(/\b(sb|r\d+)-[\w.-]+/g, "…");
      errors.set(message, (errors.get(message) ?? 0) + 1);
    }
    process.stderr.write(
      `burst ${round}: ${result.creates.filter((c) => c.acknowledged).length}/35 creates and ${result.deletes.filter((d) => d.acknowledged).length}/15 deletes acknowledged; errors: ${JSON.stringify([...errors])}\n`,
    );
    strike();
    await struck;
    for (const victim of victims) mustRun.delete(victim);
    return result;
  }

  /**
   * What containerd and the cgroup tree hold, by sandbox id: a sandbox's container, task, snapshot
   * and cgroup carry its container's id — the prepared instance's it claimed, when it claimed one
   * (the default pool keeps 2 per agent) — so ids go through the containers' sandbox-id labels.
   * The agents' prepared instances in stock are kept apart (`stock`): infrastructure, which must be
   * whole. Tasks and snapshots are listed before the containers that explain them.
   */
  function containerdState() {
    const lines = (text: string) =>
      text
        .split("\n")
        .map((line) => line.trim())
        .filter(Boolean);
    const taskRows = lines(ctr(namespace, "tasks", "ls"))
      .slice(1)
      .map((line) => line.split(/\s+/))
      .filter(([id]) => id && !isAnchor(id))
      .map(([id, , status]) => ({ id: id ?? "", status: status ?? "" }));
    const snapshotKeys = lines(ctr(namespace, "snapshots", "ls"))
      .slice(1)
      .map((line) => line.split(/\s+/)[0] ?? "")
      .filter((key) => !key.startsWith("sha256:") && !isAnchor(key));
    const cgroupNames = sandboxCgroups();
    const containerIdsNow = lines(ctr(namespace, "containers", "ls", "-q")).filter((id) => !isAnchor(id));
    const kinds = new Map(containerIdsNow.map((id) => [id, containerKind(namespace, id)]));
    const stock = containerIdsNow.filter((id) => kinds.get(id)?.kind === "prepared-stock").sort();
    const inStock = (id: string) => stock.includes(id);
    /** A sandbox's id for its container's id; any other id (an instance's leftover, a stranger) as it is. */
    const named = (id: string) => {
      const kind = kinds.get(id);
      return kind?.kind === "sandbox" ? kind.sandboxId : id;
    };
    return {
      containers: containerIdsNow
        .filter((id) => !inStock(id))
        .map(named)
        .sort(),
      tasks: taskRows.filter((task) => !inStock(task.id)).map((task) => ({ id: named(task.id), status: task.status })),
      snapshots: snapshotKeys
        .filter((key) => !inStock(key))
        .map(named)
        .sort(),
      cgroups: cgroupNames
        .filter((name) => !inStock(name))
        .map(named)
        .sort(),
      stock: {
        containers: stock,
        tasks: taskRows.filter((task) => inStock(task.id)),
        snapshots: snapshotKeys.filter(inStock).sort(),
        cgroups: cgroupNames.filter(inStock).sort(),
      },
    };
  }

  /** Sandbox cgroups under every agent of this instance (the v1 memory hierarchy stands for all), by container id. */
  function sandboxCgroups(): string[] {
    const root = `/sys/fs/cgroup/memory/${namespace}`;
    if (!existsSync(root)) return [];
    const found: string[] = [];
    for (const agent of readdirSync(root, { withFileTypes: true })) {
      const sandboxes = join(root, agent.name, "sandboxes");
      if (!agent.isDirectory() || !existsSync(sandboxes)) continue;
      // The agent's shim anchors have cgroups there too; they are infrastructure, not sandboxes.
      for (const entry of readdirSync(sandboxes, { withFileTypes: true }))
        if (entry.isDirectory() && !entry.name.startsWith("fsb-anchor")) found.push(entry.name);
    }
    return found.sort();
  }

  async function assertConverged(outcome: { creates: Outcome[]; deletes: Outcome[] }, what: string): Promise<void> {
    for (const create of outcome.creates) if (create.acknowledged) mustRun.add(create.name);
    let sandboxes: Sandbox[] = [];
    let last = "";
    try {
      await waitFor(
        async () => {
          sandboxes = await client.sandboxes.list();
          const byName = new Map(sandboxes.map((s) => [s.metadata.name, s]));
          const intermediate = sandboxes.filter((s) => s.status?.phase !== "Running");
          const missing = [...mustRun].filter((name) => byName.get(name)?.status?.phase !== "Running");
          const deletedButThere = outcome.deletes.filter((d) => d.acknowledged && byName.has(d.name)).map((d) => d.name);
          const ids = sandboxes.map((s) => s.status?.sandboxID ?? "").sort();
          const state = containerdState();
          const agents = await client.pools.agents({ pool: "default" });
          const allocated = agents.reduce((sum, a) => sum + a.allocated, 0);
          const usedPorts = agents.flatMap((a) => a.usedPorts).sort();
          // A sandbox with an address of its own (Isolated network) holds none of its agent's ports.
          const declaredPorts = sandboxes.flatMap((s) => (s.status?.sandboxIP ? [] : (s.spec.exposedPorts ?? []))).sort();
          const { cgroups, stock } = state;
          const stockWhole =
            JSON.stringify(stock.tasks.map((t) => t.id).sort()) === JSON.stringify(stock.containers) &&
            stock.tasks.every((t) => t.status === "RUNNING") &&
            JSON.stringify(stock.snapshots) === JSON.stringify(stock.containers) &&
            JSON.stringify(stock.cgroups) === JSON.stringify(stock.containers);
          last = JSON.stringify({
            intermediate: intermediate.map((s) => `${s.metadata.name}:${s.status?.phase ?? "Pending"}`),
            missing,
            deletedButThere,
            records: ids.length,
            containers: state.containers.length,
            tasksNotRunning: state.tasks.filter((t) => t.status !== "RUNNING").map((t) => t.id),
            extraContainers: state.containers.filter((id) => !ids.includes(id)),
            extraSnapshots: state.snapshots.filter((id) => !ids.includes(id)),
            extraCgroups: cgroups.filter((id) => !ids.includes(id)),
            preparedStock: stockWhole ? stock.containers.length : stock,
            unreadyAgents: agents.filter((a) => !a.ready).map((a) => a.name),
            allocated,
            usedPorts,
            declaredPorts,
          });
          return (
            intermediate.length === 0 &&
            missing.length === 0 &&
            deletedButThere.length === 0 &&
            JSON.stringify(state.containers) === JSON.stringify(ids) &&
            JSON.stringify(state.snapshots) === JSON.stringify(ids) &&
            JSON.stringify(state.tasks.map((t) => t.id).sort()) === JSON.stringify(ids) &&
            state.tasks.every((t) => t.status === "RUNNING") &&
            JSON.stringify(cgroups) === JSON.stringify(ids) &&
            stockWhole &&
            agents.every((a) => a.ready) &&
            allocated === sandboxes.length &&
            JSON.stringify(usedPorts) === JSON.stringify(declaredPorts)
          );
        },
        CONVERGE_MS,
        `convergence after ${what}`,
      );
    } catch (error) {
      assert.fail(`${String(error)}; last observation: ${last}`);
    }
    // Unacknowledged creates exist fully (Running, with a container: checked above) or not at all.
    for (const create of outcome.creates.filter((c) => !c.acknowledged)) {
      const sandbox = sandboxes.find((s) => s.metadata.name === create.name);
      if (sandbox) assert.equal(sandbox.status?.phase, "Running", `${create.name} exists fully`);
    }
    // What runs answers.
    for (const name of [...mustRun].slice(0, 5)) {
      assert.equal((await client.sandboxes.exec(name, ["true"])).exitCode, 0, `${name} runs`);
    }
  }

  before(async () => {
    importBaseImage(namespace);
    await startControlPlane();
  });

  after(async () => {
    client?.close();
    const down = fsb("down", "--delete-sandboxes");
    if (down.status !== 0) process.stderr.write(`fsb down: ${down.stderr}\n`);
    if (controlPlane?.exitCode === null) controlPlane.kill("SIGKILL");
    removeNamespace(namespace);
    removeCgroupTree(`/${namespace}`);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("kill -9 of an agent during a burst", async () => {
    const outcome = await burst(async () => {
      const agents = await client.pools.agents({ pool: "default" });
      const busiest = agents.sort((a, b) => b.allocated - a.allocated)[0];
      assert.ok(busiest?.pid, "an agent with a pid");
      process.kill(busiest.pid, "SIGKILL");
    });
    assert.ok(
      outcome.creates.some((c) => c.acknowledged),
      "some creates were acknowledged",
    );
    await assertConverged(outcome, "an agent's kill -9");
  });

  it("a restart of containerd itself during a burst", async () => {
    const outcome = await burst(() => {
      execFileSync("pkill", ["-TERM", "-x", "containerd"]);
      spawnSync("bash", ["-c", "for i in $(seq 1 100); do pgrep -x containerd >/dev/null || exit 0; sleep 0.1; done"]);
      execFileSync("bash", [join(REPO_ROOT, "scripts/start-containerd.sh")], { stdio: "ignore" });
    });
    await assertConverged(outcome, "containerd's restart");
  });

  it("kill -9 of the control plane during a burst, then a restart", async () => {
    const outcome = await burst(() => {
      controlPlane?.kill("SIGKILL");
    });
    assert.ok(
      outcome.creates.some((c) => !c.acknowledged),
      "the kill struck while creates were in flight",
    );
    await startControlPlane();
    await assertConverged(outcome, "the control plane's kill -9 and restart");
  });

  it("fsb down --delete-sandboxes leaves nothing of Fast Sandbox running", async () => {
    const down = fsb("down", "--delete-sandboxes");
    assert.equal(down.status, 0, down.stderr);
    assert.deepEqual(ctr(namespace, "containers", "ls", "-q").trim(), "", "no container, anchors included");
    assert.deepEqual(ctr(namespace, "tasks", "ls", "-q").trim(), "");
    const processes = () => execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
    // A shim exits on its own shortly after its last task is deleted.
    await waitFor(() => !processes().includes(`-namespace ${namespace}`), 10_000, "the shims of this namespace to exit");
    assert.equal(processes().includes(dataDir), false, "no process of this data directory");
    // Nor its cgroup root (named after the namespace), in any hierarchy.
    const mount = "/sys/fs/cgroup";
    const hierarchies = existsSync(join(mount, "cgroup.controllers")) ? [mount] : readdirSync(mount).map((hierarchy) => join(mount, hierarchy));
    assert.deepEqual(
      hierarchies.map((hierarchy) => join(hierarchy, namespace)).filter((directory) => existsSync(directory)),
      [],
      "the cgroup root is gone",
    );
  });
});
