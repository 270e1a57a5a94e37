/**
 * Deleting a SandboxPool removes its agents. A pool with no sandbox (idle-pool.yaml), deleted with
 * `kubectl delete`: its agent Pods go (owner references → the garbage collector), their processes
 * exit, and their shim anchors (`fsb-anchor.<agent>.<n>` in containerd) go too (the agent removes
 * them when it stops with no sandbox; otherwise the janitor does).
 *
 * A pool that still has a sandbox (busy-pool.yaml, the sandbox created through the fast path): the
 * fast path refuses to delete it, as `fsb delete pool` documents ("refused while they have
 * sandboxes"), and leaves pool, agent and sandbox as they were. `kubectl delete` of it must not
 * orphan the sandbox: the pool is held by its cleanup finalizer while its sandboxes are deleted
 * (their containers with them, while the pool's agent still runs), then it goes, and its agent Pod
 * with it. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FailedPreconditionError, FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE, ctr } from "../../../support/containerd.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL_LABEL = "fast-sandbox.io/pool";

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/** Processes the fake kubelet started for the Pod (its env names the Pod), with their command lines. */
function podProcesses(namespace: string, pod: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environment = readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (!environment.includes(`POD_NAME=${pod}`) || !environment.includes(`POD_NAMESPACE=${namespace}`)) continue;
      // A zombie has exited already.
      if (/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${entry}/stat`, "utf8"))) continue;
      found.push(`${entry} ${readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ").trim()}`);
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return found;
}

/** The agent's shim anchors in containerd: containers and tasks named `fsb-anchor.<agent>.<n>`. */
function anchorsOf(containerdNamespace: string, agent: string): string[] {
  const prefix = `fsb-anchor.${agent}.`;
  const containers = lines(ctr(containerdNamespace, "containers", "ls", "-q")).filter((id) => id.startsWith(prefix));
  const tasks = lines(ctr(containerdNamespace, "tasks", "ls"))
    .slice(1)
    .map((line) => line.split(/\s+/)[0] ?? "")
    .filter((id) => id.startsWith(prefix));
  return [...containers.map((id) => `container ${id}`), ...tasks.map((id) => `task ${id}`)];
}

/** What containerd holds of a sandbox id: its container, its task's status, its snapshot. */
function runtimeOf(containerdNamespace: string, sandboxId: string): string[] {
  const held: string[] = [];
  if (lines(ctr(containerdNamespace, "containers", "ls", "-q")).includes(sandboxId)) held.push("container");
  const task = lines(ctr(containerdNamespace, "tasks", "ls"))
    .slice(1)
    .map((line) => line.split(/\s+/))
    .find(([id]) => id === sandboxId);
  if (task) held.push(`task ${task[2]}`);
  if (
    lines(ctr(containerdNamespace, "snapshots", "ls"))
      .slice(1)
      .some((line) => line.split(/\s+/)[0] === sandboxId)
  )
    held.push("snapshot");
  return held;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("pool deletion cascades", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    /** The busy pool's sandbox, once created: the case makes sure nothing of it is left. */
    let busySandboxId = "";

    async function get<T>(kind: string, name: string): Promise<T | undefined> {
      const result = await suite.kubectl("-n", namespace, "get", kind, name, "-o", "json");
      if (result.code !== 0 && /NotFound|not found/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as T;
    }

    async function agentPods(pool: string): Promise<string[]> {
      const { items } = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pods", "-l", `${POOL_LABEL}=${pool}`, "-o", "json")) as { items: Pod[] };
      return items.map((pod) => pod.metadata.name);
    }

    /** Applies the pool and waits for its ready agent (pool status); returns the agent Pods' names. */
    async function poolWithReadyAgent(file: string, pool: string): Promise<string[]> {
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, file));
      await suite.eventually(`pool ${pool} to have a ready agent`, async () => ((await get<SandboxPool>("sandboxpool", pool))?.status?.readyAgents ?? 0) >= 1, {
        timeoutMs: 180_000,
        intervalMs: 500,
      });
      const agents = await agentPods(pool);
      assert.equal(agents.length, 1, `agent Pods of pool ${pool}: ${agents.join(", ")}`);
      return agents;
    }

    before(async () => {
      namespace = await suite.createNamespace("pool-deletion");
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (!namespace) return;
      await suite.kubectl("-n", namespace, "delete", "sandboxes", "--all", "--timeout=120s");
      if (busySandboxId) {
        // A sandbox whose agent is gone is left to the janitor (agent_gone, after its protection
        // window); the suite's final check must not find it.
        await suite.eventually(
          `containerd to hold nothing of sandbox ${busySandboxId}`,
          () => runtimeOf(suite.containerdNamespace, busySandboxId).length === 0,
          { timeoutMs: 300_000, intervalMs: 2000 },
        );
      }
      await suite.kubectl("delete", "namespace", namespace, "--timeout=180s");
    });

    it("kubectl delete of a pool with no sandbox removes its agent Pods, their processes and their shim anchors", async () => {
      const agents = await poolWithReadyAgent("idle-pool.yaml", "idle");
      for (const agent of agents) {
        assert.notDeepEqual(podProcesses(namespace, agent), [], `agent ${agent} has a process`);
        await suite.eventually(`agent ${agent}'s shim anchors`, () => anchorsOf(suite.containerdNamespace, agent).length > 0);
      }

      await suite.kubectlOk("-n", namespace, "delete", "sandboxpool", "idle", "--timeout=120s");
      await suite.eventually("the pool's agent Pods to be gone", async () => (await agentPods("idle")).length === 0, {
        timeoutMs: 120_000,
        intervalMs: 500,
      });
      for (const agent of agents) {
        await suite.eventually(`agent ${agent}'s processes to exit`, () => podProcesses(namespace, agent).length === 0, { timeoutMs: 60_000 });
        // The agent removes them as it stops; the janitor would after its protection window (2 min).
        await suite.eventually(`agent ${agent}'s shim anchors to be gone`, () => anchorsOf(suite.containerdNamespace, agent).length === 0, {
          timeoutMs: 240_000,
          intervalMs: 1000,
        });
      }
    });

    it("the fast path refuses to delete a pool that still has a sandbox, and changes nothing", async () => {
      const [agent] = await poolWithReadyAgent("busy-pool.yaml", "busy");
      await suite.eventually(
        "the fast path to know the busy pool's ready agent",
        async () => (await client!.pools.agents({ namespace, pool: "busy" })).some((a) => a.ready),
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      const sandbox = await client!.sandboxes.create({ namespace, name: "still-running", pool: "busy", image: BASE_IMAGE, command: ["sleep", "3600"] });
      busySandboxId = sandbox.status?.sandboxID ?? "";
      assert.equal(sandbox.status?.assignedPod, agent);

      await assert.rejects(client!.pools.delete("busy", { namespace }), (error: Error) => {
        assert.ok(error instanceof FailedPreconditionError, `${error.name}: ${error.message}`);
        assert.match(error.message, /still has 1 sandbox/);
        return true;
      });
      assert.ok(await get<SandboxPool>("sandboxpool", "busy"), "the pool is still there");
      assert.deepEqual(await agentPods("busy"), [agent]);
      assert.equal((await get<Sandbox>("sandbox", "still-running"))?.status?.phase, "Running");
      assert.deepEqual(runtimeOf(suite.containerdNamespace, busySandboxId), ["container", "task RUNNING", "snapshot"]);
    });

    it("kubectl delete of a pool that still has a sandbox deletes the sandbox first (its container with it), then the pool and its agent", async () => {
      assert.ok(busySandboxId, "the previous test created the busy pool's sandbox");
      const agents = await agentPods("busy");
      await suite.kubectlOk("-n", namespace, "delete", "sandboxpool", "busy", "--wait=false");
      // Held by its cleanup finalizer meanwhile: no new sandbox goes into a pool being deleted.
      const held = await get<SandboxPool>("sandboxpool", "busy");
      if (held) {
        await assert.rejects(client!.sandboxes.create({ namespace, pool: "busy", image: BASE_IMAGE, command: ["sleep", "60"] }), (error: Error) =>
          /being deleted|does not exist/.test(error.message),
        );
      }
      await suite.eventually(
        "the deleted pool's sandbox to be removed with everything it held in containerd",
        async () => (await get<Sandbox>("sandbox", "still-running")) === undefined && runtimeOf(suite.containerdNamespace, busySandboxId).length === 0,
        { timeoutMs: 120_000, intervalMs: 1000 },
      );
      await suite.eventually("the pool to be gone", async () => (await get<SandboxPool>("sandboxpool", "busy")) === undefined, { timeoutMs: 60_000 });
      await suite.eventually("its agent Pod to be gone", async () => (await agentPods("busy")).length === 0, { timeoutMs: 120_000 });
      assert.ok(agents.length > 0);
    });
  });
}
