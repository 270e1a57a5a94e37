/**
 * The fast path on Kubernetes: both controller replicas (the Deployment's two Pods, each called on
 * its own Pod IP, port 7070) answer the fast-path API. A create (SDK) answers Running with its
 * endpoints through the sandbox proxy; the Sandbox object then exists with the same sandboxID and its
 * container runs in containerd; a delete returns once the object and the container are gone. A
 * create retried with the same requestId returns the first sandbox — on the same replica and on
 * the other one. Either replica serves sandboxes the other created. Run by ../suite.test.ts on the
 * suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient, NotFoundError } from "@fast-sandbox/sdk";
import { BASE_IMAGE } from "../../../support/containerd.js";
import { inContainerd, recordedContainerOfSandbox } from "../../../support/containerd-contents.js";
import {
  controllerReplicas,
  deleteCaseNamespace,
  getSandbox,
  listSandboxes,
  waitForPhase,
  waitForReadyControllers,
} from "../../../support/kubernetes-cases.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "fastpath";
const REQUEST_ID_ANNOTATION = "sandbox.fast.io/request-id";

interface Replica {
  pod: string;
  client: FastSandboxClient;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("fast path create and delete", () => {
    let namespace = "";
    let replicas: Replica[] = [];

    const create = (replica: Replica, options: { name?: string; requestId?: string; exposedPorts?: number[] } = {}) =>
      replica.client.sandboxes.create({ namespace, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], ...options });

    before(async () => {
      namespace = await suite.createNamespace("fastpath");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      replicas = (await controllerReplicas(suite))
        .filter((replica) => replica.podIP)
        .map((replica) => ({ pod: replica.name, client: new FastSandboxClient({ url: replica.url, token: suite.apiToken }) }));
    });

    after(async () => {
      for (const replica of replicas) replica.client.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    it("has two Ready controller replicas, and the fast path answers on each one's Pod IP with the pool's ready agent", async () => {
      // Ready is what the Pods' readiness probes say now: waited for, as a probe may miss once on a
      // loaded machine (the Deployment was Available before the cases began).
      const live = await waitForReadyControllers(suite, 2);
      assert.equal((await controllerReplicas(suite)).length, 2, `controller Pods: ${live.map((replica) => replica.name).join(", ")}`);
      assert.equal(new Set(live.map((replica) => replica.podIP)).size, 2, "each replica has its own Pod IP");
      assert.equal(replicas.length, 2);
      for (const replica of replicas) {
        const pool = await replica.client.pools.get(POOL, { namespace });
        assert.equal(pool.metadata.name, POOL);
        // Every replica places: its registry holds the pool's ready agent.
        await suite.eventually(
          `replica ${replica.pod} to know a ready agent of pool ${POOL}`,
          async () => (await replica.client.pools.agents({ namespace, pool: POOL })).some((agent) => agent.ready),
          { timeoutMs: 180_000, intervalMs: 500 },
        );
      }
    });

    it("creates a Running sandbox with endpoints, stored as a Sandbox with the same sandboxID, and deletes it with its container", async () => {
      const [replica] = replicas;
      const created = await create(replica!, { name: "direct", exposedPorts: [8080] });
      assert.equal(created.status?.phase, "Running");
      const sandboxId = created.status?.sandboxID ?? "";
      const agent = created.status?.assignedPod ?? "";
      assert.ok(sandboxId && agent, JSON.stringify(created.status));
      // Through the sandbox proxy, at the controller's default base URL (FSB_PROXY_BASE_URL unset).
      assert.deepEqual(created.status?.endpoints, [`http://8080-${sandboxId}.localhost:7072/`]);

      const stored = await waitForPhase(suite, namespace, "direct", "Running");
      assert.equal(stored.status?.sandboxID, sandboxId);
      assert.equal(stored.status?.assignedPod, agent);
      // A claimed prepared instance is relabelled with the sandbox id just after the create answered.
      await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: true, task: true, snapshot: true });
      // The agent Pod's limits (the deployment's template: 4 CPUs, 8Gi), handed over by the Downward
      // API, bound the cgroup the agent's sandboxes are made in.
      const sandboxes = `${suite.containerdNamespace}/${agent}`;
      if (existsSync("/sys/fs/cgroup/cgroup.controllers")) {
        assert.equal(readFileSync(`/sys/fs/cgroup/${sandboxes}/memory.max`, "utf8").trim(), String(8 * 1024 ** 3));
        assert.equal(readFileSync(`/sys/fs/cgroup/${sandboxes}/cpu.max`, "utf8").trim(), "400000 100000");
      } else {
        assert.equal(readFileSync(`/sys/fs/cgroup/memory/${sandboxes}/memory.limit_in_bytes`, "utf8").trim(), String(8 * 1024 ** 3));
        assert.equal(readFileSync(`/sys/fs/cgroup/cpu/${sandboxes}/cpu.cfs_quota_us`, "utf8").trim(), "400000");
      }

      // The delete resolves once the container, task and snapshot are gone, and the finalizer with them.
      await replica!.client.sandboxes.delete("direct", { namespace });
      assert.equal(await getSandbox(suite, namespace, "direct"), undefined);
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      await assert.rejects(replica!.client.sandboxes.get("direct", { namespace }), NotFoundError);
    });

    it("returns the first sandbox to a create retried with the same requestId", async () => {
      const [replica] = replicas;
      const requestId = `retry-same-replica-${Date.now()}`;
      const [first, second] = await Promise.all([create(replica!, { requestId }), create(replica!, { requestId })]);
      const third = await create(replica!, { requestId });
      assert.equal(second.metadata.name, first.metadata.name);
      assert.equal(third.metadata.name, first.metadata.name);
      assert.equal(third.status?.sandboxID, first.status?.sandboxID);
      const stored = (await listSandboxes(suite, namespace)).filter((s) => s.metadata.annotations?.[REQUEST_ID_ANNOTATION] === requestId);
      assert.deepEqual(
        stored.map((s) => s.metadata.name),
        [first.metadata.name],
      );
      await replica!.client.sandboxes.delete(first.metadata.name, { namespace });
    });

    it("serves on the other replica too: it creates and deletes, and either replica answers for the other's sandboxes", async () => {
      const [one, other] = replicas;
      const created = await create(other!, { name: "other-replica" });
      assert.equal(created.status?.phase, "Running");
      const sandboxId = created.status?.sandboxID ?? "";
      const stored = await waitForPhase(suite, namespace, "other-replica", "Running");
      assert.equal(stored.status?.sandboxID, sandboxId);
      // A claimed prepared instance is relabelled with the sandbox id just after the create answered.
      await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
      assert.ok(inContainerd(suite.containerdNamespace, sandboxId).container);

      // The first replica answers for it: get and exec.
      const seen = await one!.client.sandboxes.get("other-replica", { namespace });
      assert.equal(seen.status?.sandboxID, sandboxId);
      const exec = await one!.client.sandboxes.exec("other-replica", ["sh", "-c", "echo from-the-first-replica"], { namespace });
      assert.deepEqual(exec, { exitCode: 0, stdout: "from-the-first-replica\n", stderr: "" });

      // And the first replica deletes what the other created; the other sees it gone.
      await one!.client.sandboxes.delete("other-replica", { namespace });
      assert.equal(await getSandbox(suite, namespace, "other-replica"), undefined);
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      await assert.rejects(other!.client.sandboxes.get("other-replica", { namespace }), NotFoundError);
    });

    it("returns the same sandbox to a create retried with the same requestId on the other replica", async () => {
      const [one, other] = replicas;
      const requestId = `retry-other-replica-${Date.now()}`;
      const first = await create(one!, { requestId });
      // A client whose first replica went away (or a load balancer) retries on the other one.
      const retried = await create(other!, { requestId }).catch((error: unknown) => error as Error);
      const stored = (await listSandboxes(suite, namespace)).filter((s) => s.metadata.annotations?.[REQUEST_ID_ANNOTATION] === requestId);
      for (const sandbox of stored) await one!.client.sandboxes.delete(sandbox.metadata.name, { namespace });
      assert.ok(!(retried instanceof Error), `the retry on the other replica failed: ${retried instanceof Error ? retried.message : ""}`);
      assert.equal(retried.metadata.name, first.metadata.name, "the retry on the other replica created another sandbox");
      assert.equal(retried.status?.sandboxID, first.status?.sandboxID);
      assert.deepEqual(
        stored.map((s) => s.metadata.name),
        [first.metadata.name],
      );
    });
  });
}
