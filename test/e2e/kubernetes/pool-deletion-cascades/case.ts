/**
 * Deleting a SandboxPool removes its agents. A pool with no sandbox (idle-pool.yaml), deleted with
 * `kubectl delete`: its agent Pods go (owner references → the garbage collector), their processes
 * exit, and their shim anchors (`fsb-anchor.<agent>.<n>` in containerd) and prepared instances
 * (`fsb-prepared-…`, 2 per agent by default: the pool names an image) go too (the agent removes
 * them when it stops; otherwise the janitor does). Its checkpoint directory on the node
 * (`<checkpoints>/<namespace>/idle`, here holding what no agent reports, as a node keeps when the pool
 * had no ready agent there as it went) stays while the pool exists, however old, and the janitor
 * DaemonSet removes it, and then its empty namespace directory, once the pool is gone (after the
 * suite's 10 s grace period, FSB_JANITOR_CHECKPOINT_GRACE in ../deploy).
 *
 * A pool that still has a sandbox (busy-pool.yaml, the sandbox created through the fast path): the
 * fast path refuses to delete it, as `fsb delete pool` documents ("refused while they have
 * sandboxes"), and leaves pool, agent and sandbox as they were. `kubectl delete` of it must not
 * orphan the sandbox: the pool is held by its cleanup finalizer while its sandboxes are deleted
 * (their containers with them, while the pool's agent still runs), then it goes, and its agent Pod
 * with it. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { FailedPreconditionError, FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE } from "../../../support/containerd.js";
import { anchorsOf, goneFromContainerd, preparedStock, runtimeState, tasks } from "../../../support/containerd-contents.js";
import { SANDBOX_POOLS, agentPods, getObject, getSandbox, janitorUrl } from "../../../support/kubernetes-cases.js";
import { HOST_DIR, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";
import { podProcesses } from "../../../support/pod-processes.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The node's checkpoint directory of the suite's agents and janitor (../deploy: the `sandbox-checkpoints` hostPath). */
const CHECKPOINTS = path.join(HOST_DIR, "checkpoints");
/** Passes (every 2 s, ../deploy) that outlast the suite's grace period of 10 s twice: a directory the janitor would remove is gone by then. */
const PASSES_PAST_GRACE = 12;

/** The value of a counter series in the janitor's /metrics, 0 when absent. */
async function janitorCounter(suite: KubernetesSuiteContext, series: string): Promise<number> {
  const response = await fetch(`${await janitorUrl(suite)}/metrics`);
  assert.equal(response.status, 200);
  const line = (await response.text()).split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}
const COMPLETED_PASSES = 'fsb_janitor_passes_total{outcome="completed"}';
const CHECKPOINT_DIRS_REMOVED = 'fsb_janitor_objects_removed_total{kind="checkpoint_dir",reason="pool_gone"}';

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("pool deletion cascades", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    /** The busy pool's sandbox, once created: the case makes sure nothing of it is left. */
    let busySandboxId = "";

    const getPool = (pool: string) => getObject<SandboxPool>(suite, namespace, SANDBOX_POOLS, pool);
    /** The names of the pool's agent Pods, those being deleted included. */
    const agentPodNames = async (pool: string): Promise<string[]> =>
      (await agentPods(suite, namespace, pool, { includeDeleting: true })).map((pod) => pod.metadata.name);

    /** An agent's prepared instances in stock and any task of `known` instances: `container <id>` and `task <id>`. */
    const preparedOf = (agent: string, known: readonly string[] = []): string[] => {
      const stock = preparedStock(suite.containerdNamespace, { "fast-sandbox.io/agent": agent });
      const ids = new Set([...stock, ...known]);
      const stockTasks = tasks(suite.containerdNamespace).filter((task) => ids.has(task.id));
      return [...stock.map((id) => `container ${id}`), ...stockTasks.map((task) => `task ${task.id}`)];
    };

    /** Applies the pool and waits for its ready agent (pool status); returns the agent Pods' names. */
    async function poolWithReadyAgent(file: string, pool: string): Promise<string[]> {
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, file));
      await suite.eventually(`pool ${pool} to have a ready agent`, async () => ((await getPool(pool))?.status?.readyAgents ?? 0) >= 1, {
        timeoutMs: 180_000,
        intervalMs: 500,
      });
      const agents = await agentPodNames(pool);
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
        await suite.eventually(`containerd to hold nothing of sandbox ${busySandboxId}`, () => goneFromContainerd(suite.containerdNamespace, busySandboxId), {
          timeoutMs: 300_000,
          intervalMs: 2000,
        });
      }
      await suite.kubectl("delete", "namespace", namespace, "--timeout=180s");
    });

    it("kubectl delete of a pool with no sandbox removes its agent Pods, their processes, their shim anchors and their prepared instances", async () => {
      const agents = await poolWithReadyAgent("idle-pool.yaml", "idle");
      // What the pool's agents cannot remove: a checkpoint none of them reports (no checkpoint.json).
      const poolCheckpoints = path.join(CHECKPOINTS, namespace, "idle");
      mkdirSync(path.join(poolCheckpoints, "left-behind", "image"), { recursive: true });
      writeFileSync(path.join(poolCheckpoints, "left-behind", "image", "pages.img"), "a gVisor sandbox's memory");
      const passesBefore = await janitorCounter(suite, COMPLETED_PASSES);
      const removedBefore = await janitorCounter(suite, CHECKPOINT_DIRS_REMOVED);
      const instances = new Map<string, string[]>();
      for (const agent of agents) {
        assert.notDeepEqual(podProcesses(namespace, agent), [], `agent ${agent} has a process`);
        await suite.eventually(`agent ${agent}'s shim anchors`, () => anchorsOf(suite.containerdNamespace, agent).length > 0);
        const stock = () => preparedStock(suite.containerdNamespace, { "fast-sandbox.io/agent": agent });
        await suite.eventually(
          `agent ${agent}'s 2 prepared instances (the default), each with its task`,
          () => stock().length === 2 && preparedOf(agent).length === 4,
          { timeoutMs: 60_000 },
        );
        instances.set(agent, stock());
      }
      await suite.eventually(
        `${PASSES_PAST_GRACE} completed janitor passes`,
        async () => (await janitorCounter(suite, COMPLETED_PASSES)) >= passesBefore + PASSES_PAST_GRACE,
        { timeoutMs: 120_000, intervalMs: 1000 },
      );
      assert.ok(existsSync(path.join(poolCheckpoints, "left-behind", "image", "pages.img")), "a pool's checkpoint directory stays while the pool exists");

      await suite.kubectlOk("-n", namespace, "delete", "sandboxpool", "idle", "--timeout=120s");
      await suite.eventually("the pool's agent Pods to be gone", async () => (await agentPodNames("idle")).length === 0, {
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
        await suite.eventually(`agent ${agent}'s prepared instances to be gone`, () => preparedOf(agent, instances.get(agent)).length === 0, {
          timeoutMs: 240_000,
          intervalMs: 1000,
        });
      }
      // The janitor's: the pool is gone (a list of the SandboxPools says so), and no Sandbox names it.
      await suite.eventually(
        "the deleted pool's checkpoint directory, then its namespace's, to be removed by the janitor",
        () => !existsSync(poolCheckpoints) && !existsSync(path.join(CHECKPOINTS, namespace)),
        { timeoutMs: 180_000, intervalMs: 1000 },
      );
      assert.ok((await janitorCounter(suite, CHECKPOINT_DIRS_REMOVED)) >= removedBefore + 2, "counted as checkpoint_dir, pool_gone");
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
      assert.ok(await getPool("busy"), "the pool is still there");
      assert.deepEqual(await agentPodNames("busy"), [agent]);
      assert.equal((await getSandbox(suite, namespace, "still-running"))?.status?.phase, "Running");
      assert.deepEqual(runtimeState(suite.containerdNamespace, busySandboxId), { container: true, task: "RUNNING", snapshot: true });
    });

    it("kubectl delete of a pool that still has a sandbox deletes the sandbox first (its container with it), then the pool and its agent", async () => {
      assert.ok(busySandboxId, "the previous test created the busy pool's sandbox");
      const agents = await agentPodNames("busy");
      const poolUid = (await getPool("busy"))?.metadata.uid ?? "";
      assert.ok(poolUid);
      // The fast path's record names its pool as its owner (a create racing the deletion on another replica is covered below).
      assert.deepEqual(
        (await getSandbox(suite, namespace, "still-running"))?.metadata.ownerReferences?.map((owner) => `${owner.kind}/${owner.name}/${owner.uid}`),
        [`SandboxPool/busy/${poolUid}`],
      );
      await suite.kubectlOk("-n", namespace, "delete", "sandboxpool", "busy", "--wait=false");
      // Held by its cleanup finalizer meanwhile: no new sandbox goes into a pool being deleted.
      const held = await getPool("busy");
      if (held) {
        await assert.rejects(client!.sandboxes.create({ namespace, pool: "busy", image: BASE_IMAGE, command: ["sleep", "60"] }), (error: Error) =>
          /being deleted|does not exist/.test(error.message),
        );
      }
      await suite.eventually(
        "the deleted pool's sandbox to be removed with everything it held in containerd",
        async () => (await getSandbox(suite, namespace, "still-running")) === undefined && goneFromContainerd(suite.containerdNamespace, busySandboxId),
        { timeoutMs: 120_000, intervalMs: 1000 },
      );
      await suite.eventually("the pool to be gone", async () => (await getPool("busy")) === undefined, { timeoutMs: 60_000 });
      await suite.eventually("its agent Pod to be gone", async () => (await agentPodNames("busy")).length === 0, { timeoutMs: 120_000 });
      assert.ok(agents.length > 0);

      // A create on another replica that checked the pool just before the deletion writes its record
      // after the pool's last look for sandboxes: owned by the pool that is gone, it goes too.
      await suite.apply(
        JSON.stringify({
          apiVersion: API_VERSION,
          kind: "Sandbox",
          metadata: {
            name: "raced-the-deletion",
            annotations: { "sandbox.fast.io/created-by-fast-path": "true" },
            finalizers: ["sandbox.fast.io/agent-cleanup"],
            ownerReferences: [{ apiVersion: API_VERSION, kind: "SandboxPool", name: "busy", uid: poolUid }],
          },
          spec: { poolRef: "busy", image: BASE_IMAGE, command: ["sleep", "60"] },
        }),
        namespace,
      );
      await suite.eventually(
        "a sandbox whose owning pool is gone to be deleted (garbage collector) and cleaned up",
        async () => !(await getSandbox(suite, namespace, "raced-the-deletion")),
        {
          timeoutMs: 120_000,
          intervalMs: 1000,
        },
      );
    });
  });
}
