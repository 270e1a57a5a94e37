/**
 * The fast path on Kubernetes: both controller replicas (the Deployment's two Pods, each called on
 * its own Pod IP, port 7070) answer the fast-path API. A create (SDK) answers Running with its
 * endpoints on the agent Pod's IP; the Sandbox object then exists with the same sandboxID and its
 * container runs in containerd; a delete returns once the object and the container are gone. A
 * create retried with the same requestId returns the first sandbox — on the same replica and on
 * the other one. Either replica serves sandboxes the other created. Run by ../suite.test.ts on the
 * suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Sandbox } from "@fast-sandbox/api";
import { FastSandboxClient, NotFoundError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, ctr } from "../../../support/containerd.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "fastpath";
const FAST_PATH_PORT = 7070;
const REQUEST_ID_ANNOTATION = "sandbox.fast.io/request-id";

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

interface Replica {
  pod: string;
  client: FastSandboxClient;
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/** Whether containerd holds a container, a task or an active snapshot with this id. */
function inContainerd(containerdNamespace: string, sandboxId: string): { container: boolean; task: boolean; snapshot: boolean } {
  const firstColumn = (text: string) => lines(text).map((line) => line.split(/\s+/)[0]);
  return {
    container: lines(ctr(containerdNamespace, "containers", "ls", "-q")).includes(sandboxId),
    task: firstColumn(ctr(containerdNamespace, "tasks", "ls"))
      .slice(1)
      .includes(sandboxId),
    snapshot: firstColumn(ctr(containerdNamespace, "snapshots", "ls"))
      .slice(1)
      .includes(sandboxId),
  };
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("fast path create and delete", () => {
    let namespace = "";
    let replicas: Replica[] = [];

    async function getSandbox(name: string): Promise<Sandbox | undefined> {
      const result = await suite.kubectl("-n", namespace, "get", "sandbox", name, "-o", "json");
      if (result.code !== 0 && /NotFound|not found/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    }

    async function storedSandboxes(): Promise<Sandbox[]> {
      return (JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxes", "-o", "json")) as { items: Sandbox[] }).items;
    }

    async function podIP(name: string): Promise<string> {
      return (await suite.kubectlOk("-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.podIP}")).trim();
    }

    const create = (replica: Replica, options: { name?: string; requestId?: string; exposedPorts?: number[] } = {}) =>
      replica.client.sandboxes.create({ namespace, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], ...options });

    before(async () => {
      namespace = await suite.createNamespace("fastpath");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      const { items } = JSON.parse(
        await suite.kubectlOk("-n", "fast-sandbox-system", "get", "pods", "-l", "app.kubernetes.io/component=controller", "-o", "json"),
      ) as { items: Pod[] };
      replicas = items
        .filter((pod) => !pod.metadata.deletionTimestamp && pod.status?.podIP)
        .map((pod) => ({
          pod: pod.metadata.name,
          client: new FastSandboxClient({ url: `http://${pod.status!.podIP}:${FAST_PATH_PORT}`, token: suite.apiToken }),
        }));
    });

    after(async () => {
      for (const replica of replicas) replica.client.close();
      if (!namespace) return;
      // Sandboxes first, while their agents run: their finalizer removes their containers.
      await suite.kubectl("-n", namespace, "delete", "sandboxes", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--timeout=180s");
    });

    it("has two Ready controller replicas, and the fast path answers on each one's Pod IP with the pool's ready agent", async () => {
      const { items } = JSON.parse(
        await suite.kubectlOk("-n", "fast-sandbox-system", "get", "pods", "-l", "app.kubernetes.io/component=controller", "-o", "json"),
      ) as { items: Pod[] };
      const live = items.filter((pod) => !pod.metadata.deletionTimestamp);
      assert.equal(live.length, 2, `controller Pods: ${live.map((pod) => pod.metadata.name).join(", ")}`);
      for (const pod of live) {
        assert.ok(
          pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
          `controller Pod ${pod.metadata.name} is not Ready`,
        );
      }
      assert.equal(new Set(live.map((pod) => pod.status?.podIP)).size, 2, "each replica has its own Pod IP");
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
      assert.deepEqual(created.status?.endpoints, [`${await podIP(agent)}:8080`]);

      const stored = await suite.eventually("the Sandbox object to show Running", async () => {
        const sandbox = await getSandbox("direct");
        return sandbox?.status?.phase === "Running" ? sandbox : undefined;
      });
      assert.equal(stored.status?.sandboxID, sandboxId);
      assert.equal(stored.status?.assignedPod, agent);
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: true, task: true, snapshot: true });

      // The delete resolves once the container, task and snapshot are gone, and the finalizer with them.
      await replica!.client.sandboxes.delete("direct", { namespace });
      assert.equal(await getSandbox("direct"), undefined);
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
      const stored = (await storedSandboxes()).filter((s) => s.metadata.annotations?.[REQUEST_ID_ANNOTATION] === requestId);
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
      const stored = await suite.eventually("the Sandbox object to show Running", async () => {
        const sandbox = await getSandbox("other-replica");
        return sandbox?.status?.phase === "Running" ? sandbox : undefined;
      });
      assert.equal(stored.status?.sandboxID, sandboxId);
      assert.ok(inContainerd(suite.containerdNamespace, sandboxId).container);

      // The first replica answers for it: get and exec.
      const seen = await one!.client.sandboxes.get("other-replica", { namespace });
      assert.equal(seen.status?.sandboxID, sandboxId);
      const exec = await one!.client.sandboxes.exec("other-replica", ["sh", "-c", "echo from-the-first-replica"], { namespace });
      assert.deepEqual(exec, { exitCode: 0, stdout: "from-the-first-replica\n", stderr: "" });

      // And the first replica deletes what the other created; the other sees it gone.
      await one!.client.sandboxes.delete("other-replica", { namespace });
      assert.equal(await getSandbox("other-replica"), undefined);
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      await assert.rejects(other!.client.sandboxes.get("other-replica", { namespace }), NotFoundError);
    });

    it("returns the same sandbox to a create retried with the same requestId on the other replica", async () => {
      const [one, other] = replicas;
      const requestId = `retry-other-replica-${Date.now()}`;
      const first = await create(one!, { requestId });
      // A client whose first replica went away (or a load balancer) retries on the other one.
      const retried = await create(other!, { requestId }).catch((error: unknown) => error as Error);
      const stored = (await storedSandboxes()).filter((s) => s.metadata.annotations?.[REQUEST_ID_ANNOTATION] === requestId);
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
