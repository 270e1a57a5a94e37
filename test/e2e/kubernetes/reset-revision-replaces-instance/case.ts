/**
 * A changed spec.resetRevision replaces a sandbox's instance: a sandbox (resetRevision r1) runs; a
 * file is written in it through the fast path; `kubectl patch` sets resetRevision r2; the sandbox
 * then runs a new instance (new sandboxID, status.acceptedResetRevision r2, status.recreations 1,
 * Recreated reason Reset) started from the image — the file is gone — the old container is removed
 * from containerd, and the pool still counts one slot (its status, and every controller replica's
 * registry through the fast path). Deleting it with kubectl removes its container before the object
 * goes. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition, Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { ctr } from "../../../support/containerd.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "reset";
const NAME = "resettable";
/** config/manager: the fast-path port of every controller replica. */
const FAST_PATH_PORT = 7070;

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

function condition(sandbox: Sandbox | undefined, type: string): Condition | undefined {
  return sandbox?.status?.conditions?.find((c) => c.type === type);
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/** What a failure message needs: the Pods, this case's objects, the tail of the controllers' and agents' logs. */
async function diagnostics(suite: KubernetesSuiteContext, namespace: string): Promise<string> {
  const parts = [(await suite.kubectl("get", "pods", "-A", "-o", "wide")).stdout];
  parts.push((await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io,sandboxpools.sandbox.fast.io", "-o", "yaml")).stdout);
  for (const [ns, selector, container] of [
    ["fast-sandbox-system", "app.kubernetes.io/component=controller", "controller"],
    [namespace, "app.kubernetes.io/component=agent", "agent"],
  ] as const) {
    const pods = JSON.parse((await suite.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json")).stdout || '{"items":[]}') as { items: Pod[] };
    for (const pod of pods.items) parts.push(`--- ${pod.metadata.name}:\n${suite.podLog(ns, pod.metadata.name, container).split("\n").slice(-40).join("\n")}`);
  }
  return parts.join("\n");
}

/** `it`, with the cluster's state in the output when it fails. */
function spec(suite: KubernetesSuiteContext, namespace: () => string, name: string, timeoutMs: number, fn: () => Promise<void>): void {
  it(name, { timeout: timeoutMs }, async () => {
    try {
      await fn();
    } catch (error) {
      console.error(await diagnostics(suite, namespace()).catch((e: unknown) => `(no diagnostics: ${String(e)})`));
      throw error;
    }
  });
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("a changed resetRevision replaces the instance", () => {
    let namespace = "";
    let client: FastSandboxClient;

    const getSandbox = async (): Promise<Sandbox | undefined> => {
      const result = await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io", NAME, "-o", "json");
      if (result.code !== 0 && /NotFound/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    };
    const getPool = async (): Promise<SandboxPool> =>
      JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpools.sandbox.fast.io", POOL, "-o", "json")) as SandboxPool;
    const sandboxContainers = (): string[] =>
      lines(ctr(suite.containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/namespace"==${namespace}`));
    const runningTasks = (): string[] =>
      lines(ctr(suite.containerdNamespace, "tasks", "ls"))
        .slice(1)
        .map((line) => line.split(/\s+/))
        .filter(([, , status]) => status === "RUNNING")
        .map(([id]) => id ?? "");
    /** The slots the pool's agents hold, as each controller replica's registry sees them (its fast path). */
    const slotsPerReplica = async (): Promise<number[]> => {
      const pods = JSON.parse(
        await suite.kubectlOk("-n", "fast-sandbox-system", "get", "pods", "-l", "app.kubernetes.io/component=controller", "-o", "json"),
      ) as { items: Pod[] };
      const replicas = pods.items.filter((pod) => pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
      assert.equal(replicas.length, 2, "two Ready controller replicas");
      return Promise.all(
        replicas.map(async (pod) => {
          const replica = new FastSandboxClient({ url: `http://${pod.status?.podIP}:${FAST_PATH_PORT}`, token: suite.apiToken });
          try {
            return (await replica.pools.agents({ namespace, pool: POOL })).reduce((sum, agent) => sum + agent.allocated, 0);
          } finally {
            replica.close();
          }
        }),
      );
    };

    before(async () => {
      namespace = await suite.createNamespace("reset");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await suite.eventually("the pool's agent to be ready", async () => (await getPool()).status?.readyAgents === 1, { timeoutMs: 120_000 });
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (!namespace) return;
      // Sandboxes first, while their agent runs (their cleanup needs it), then the rest.
      await suite.kubectl("-n", namespace, "delete", "sandboxes.sandbox.fast.io", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s");
    });

    spec(
      suite,
      () => namespace,
      "kubectl patch of spec.resetRevision runs a new instance from the image and removes the old one",
      600_000,
      async () => {
        const created = await client.sandboxes.create({
          namespace,
          name: NAME,
          pool: POOL,
          image: BASE_IMAGE,
          command: ["sleep", "3600"],
          resetRevision: "r1",
        });
        const oldId = created.status?.sandboxID ?? "";
        assert.equal(created.status?.acceptedResetRevision, "r1");
        const first = await suite.eventually("the Running status in the Sandbox object", async () => {
          const sandbox = await getSandbox();
          return sandbox?.status?.phase === "Running" ? sandbox : undefined;
        });
        assert.equal(first.status?.sandboxID, oldId);
        assert.equal(first.status?.acceptedResetRevision, "r1");
        assert.deepEqual(sandboxContainers(), [oldId]);
        const written = await client.sandboxes.exec(NAME, ["sh", "-c", "echo before-reset > /tmp/state && cat /tmp/state"], { namespace });
        assert.equal(written.stdout, "before-reset\n");

        await suite.kubectlOk(
          "-n",
          namespace,
          "patch",
          "sandboxes.sandbox.fast.io",
          NAME,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { resetRevision: "r2" } }),
        );
        const reset = await suite.eventually(
          "the reset to be accepted by a Running instance",
          async () => {
            const sandbox = await getSandbox();
            return sandbox?.status?.acceptedResetRevision === "r2" && sandbox.status.phase === "Running" ? sandbox : undefined;
          },
          { timeoutMs: 90_000 },
        );
        const newId = reset.status?.sandboxID ?? "";
        assert.ok(newId);
        assert.notEqual(newId, oldId, "a new instance has a new sandboxID");
        assert.equal(reset.status?.recreations, 1);
        assert.deepEqual([condition(reset, "Recreated")?.status, condition(reset, "Recreated")?.reason], ["True", "Reset"]);
        assert.match(condition(reset, "Recreated")?.message ?? "", /resetRevision changed to "r2"/);
        assert.equal(condition(reset, "Ready")?.status, "True");

        // The replica behind `client` reads the record (and so the new instance) from the API server.
        const fresh = await client.sandboxes.exec(NAME, ["sh", "-c", "cat /tmp/state 2>/dev/null || echo fresh"], { namespace });
        assert.equal(fresh.stdout, "fresh\n", "the new instance starts from the image: the file written before the reset is gone");

        await suite.eventually("containerd to hold only the new instance", () => {
          const held = sandboxContainers();
          return held.length === 1 && held[0] === newId;
        });
        assert.ok(runningTasks().includes(newId), "the new instance's task runs");
        assert.ok(!runningTasks().includes(oldId), "the old instance's task is gone");

        await suite.eventually("the pool to count one sandbox", async () => {
          const status = (await getPool()).status;
          return status?.sandboxes === 1 && status.freeSlots === 1;
        });
        const perReplica = await suite.eventually("every replica's registry to count one slot", async () => {
          const slots = await slotsPerReplica();
          return slots.every((count) => count === 1) ? slots : undefined;
        });
        assert.deepEqual(perReplica, [1, 1]);

        // kubectl delete waits for the object to go; the cleanup finalizer removes the container first.
        await suite.kubectlOk("-n", namespace, "delete", "sandboxes.sandbox.fast.io", NAME, "--timeout=120s");
        assert.deepEqual(sandboxContainers(), [], "the container is gone when the object is");
        await suite.eventually("the pool to count no sandbox", async () => (await getPool()).status?.sandboxes === 0);
      },
    );
  });
}
