/**
 * A SandboxPool and a Sandbox written with `kubectl apply -f` (pool.yaml, sandbox.yaml) run like
 * `fsb run`: the controller places the sandbox on an agent Pod of the pool (status.phase Running,
 * assignedPod, sandboxID, the Ready condition; `kubectl get sandboxes` shows phase, pool, agent and
 * age), its container runs in containerd, its logs and exec answer through the fast path (SDK), and
 * `kubectl delete sandbox` returns once the cleanup finalizer has removed its container, task and
 * snapshot. A sandbox applied before its pool (sandbox-before-its-pool.yaml) is kept, Pending with
 * `Scheduled=False` naming the pool, and runs once the pool (late-pool.yaml) is applied.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { ctr } from "../../../support/containerd.js";
import { containerOfSandbox, outputLines, recordedContainerOfSandbox, runtimeState } from "../../../support/containerd-contents.js";
import {
  SANDBOX_POOLS,
  agentPods,
  deleteCaseNamespace,
  getObject,
  getSandbox,
  sandboxCondition,
  waitForPhase,
  waitForSandbox,
} from "../../../support/kubernetes-cases.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLEANUP_FINALIZER = "sandbox.fast.io/agent-cleanup";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("sandbox lifecycle via kubectl apply", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;

    const applyFile = (file: string) => suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, file));

    before(async () => {
      namespace = await suite.createNamespace("lifecycle");
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    it("runs a Sandbox applied with kubectl on an agent Pod of its pool, as fsb run would", async () => {
      await applyFile("pool.yaml");
      await applyFile("sandbox.yaml");
      const running = await waitForPhase(suite, namespace, "hello", "Running", { timeoutMs: 180_000, intervalMs: 500 });
      const agents = (await agentPods(suite, namespace, "lifecycle")).map((pod) => pod.metadata.name);
      assert.ok(
        agents.includes(running.status?.assignedPod ?? ""),
        `assignedPod ${running.status?.assignedPod} is not an agent Pod of pool lifecycle (${agents.join(", ")})`,
      );
      assert.ok(running.status?.sandboxID, "status.sandboxID is set");
      assert.equal(sandboxCondition(running, "Ready")?.status, "True", JSON.stringify(running.status?.conditions));
      assert.ok(running.metadata.finalizers?.includes(CLEANUP_FINALIZER), `the cleanup finalizer is set: ${JSON.stringify(running.metadata.finalizers)}`);

      // The CRD's printer columns: NAME PHASE POOL AGENT AGE.
      const table = outputLines(await suite.kubectlOk("-n", namespace, "get", "sandboxes"));
      assert.match(table[0] ?? "", /^NAME\s+PHASE\s+POOL\s+AGENT\s+AGE$/);
      const row = table.find((line) => line.startsWith("hello "))?.split(/\s+/);
      assert.deepEqual(row?.slice(0, 4), ["hello", "Running", "lifecycle", running.status?.assignedPod]);
      assert.match(row?.[4] ?? "", /^\d+[smhd]/);

      // Its container runs in containerd, labelled with its sandbox id, namespace and name (named
      // after the sandbox, or after the prepared instance it claimed: the pool keeps 2 by default).
      const sandboxId = running.status?.sandboxID ?? "";
      await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
      assert.deepEqual(runtimeState(suite.containerdNamespace, sandboxId), { container: true, task: "RUNNING", snapshot: true });
      const containerId = containerOfSandbox(suite.containerdNamespace, sandboxId);
      const info = JSON.parse(ctr(suite.containerdNamespace, "containers", "info", containerId)) as { Labels?: Record<string, string> };
      assert.equal(info.Labels?.["fast-sandbox.io/sandbox-id"], sandboxId);
      assert.equal(info.Labels?.["fast-sandbox.io/namespace"], namespace);
      assert.equal(info.Labels?.["fast-sandbox.io/name"], "hello");
      assert.equal(info.Labels?.["fast-sandbox.io/agent"], running.status?.assignedPod);
    });

    it("serves the sandbox's logs and exec through the fast path", async () => {
      const decoder = new TextDecoder();
      const logs = await suite.eventually("the command's output in the sandbox's log", async () => {
        let text = "";
        for await (const chunk of client!.sandboxes.logs("hello", { namespace })) text += decoder.decode(chunk);
        return text.includes("hello from kubectl apply") && text.includes("to-stderr") ? text : undefined;
      });
      assert.match(logs, /hello from kubectl apply/);
      const result = await client!.sandboxes.exec("hello", ["sh", "-c", "echo out; echo err >&2; exit 3"], { namespace });
      assert.deepEqual(result, { exitCode: 3, stdout: "out\n", stderr: "err\n" });
      const viaFastPath = await client!.sandboxes.get("hello", { namespace });
      assert.equal(viaFastPath.status?.phase, "Running");
    });

    it("kubectl delete sandbox returns once its container, task and snapshot are gone", async () => {
      const sandbox = await getSandbox(suite, namespace, "hello");
      const sandboxId = sandbox?.status?.sandboxID;
      assert.ok(sandboxId, "sandbox hello has a sandboxID");
      // kubectl waits until the object is gone, i.e. until the controller dropped the cleanup finalizer.
      await suite.kubectlOk("-n", namespace, "delete", "sandbox", "hello", "--timeout=120s");
      assert.equal(await getSandbox(suite, namespace, "hello"), undefined);
      assert.deepEqual(runtimeState(suite.containerdNamespace, sandboxId), { container: false, task: undefined, snapshot: false });
      const pool = await suite.eventually("pool lifecycle to count no sandbox", async () => {
        const current = await getObject<SandboxPool>(suite, namespace, SANDBOX_POOLS, "lifecycle");
        return current?.status?.sandboxes === 0 ? current : undefined;
      });
      assert.equal(pool.status?.sandboxes, 0);
    });

    it("keeps a Sandbox whose pool does not exist yet Pending with Scheduled=False, and runs it once the pool is applied", async () => {
      await applyFile("sandbox-before-its-pool.yaml");
      const waiting = await waitForSandbox(
        suite,
        namespace,
        "early",
        "sandbox early to say why it is not scheduled",
        (sandbox) => sandboxCondition(sandbox, "Scheduled")?.status === "False",
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      const scheduled = sandboxCondition(waiting, "Scheduled")!;
      assert.equal(waiting.status?.phase ?? "Pending", "Pending");
      assert.ok(scheduled.reason, "the Scheduled condition has a reason");
      assert.match(scheduled.message ?? "", /\blate\b/, `the message names the missing pool: ${scheduled.message}`);
      // It stays: the controller retries while the pool is missing and must not delete the object.
      for (let check = 0; check < 10; check++) {
        await sleep(1000);
        const current = await getSandbox(suite, namespace, "early");
        assert.equal(current?.metadata.uid, waiting.metadata.uid, "sandbox early was deleted (or replaced) while its pool was missing");
        assert.ok(!current?.metadata.deletionTimestamp, "sandbox early is being deleted while its pool is missing");
        assert.equal(current?.status?.phase ?? "Pending", "Pending");
      }

      await applyFile("late-pool.yaml");
      const running = await waitForPhase(suite, namespace, "early", "Running", { timeoutMs: 180_000, intervalMs: 500 });
      assert.equal(running.metadata.uid, waiting.metadata.uid);
      const agents = (await agentPods(suite, namespace, "late")).map((pod) => pod.metadata.name);
      assert.ok(
        agents.includes(running.status?.assignedPod ?? ""),
        `assignedPod ${running.status?.assignedPod} is not an agent Pod of pool late (${agents.join(", ")})`,
      );
      assert.equal(sandboxCondition(running, "Scheduled")?.status, "True", JSON.stringify(running.status?.conditions));
      assert.equal(sandboxCondition(running, "Ready")?.status, "True", JSON.stringify(running.status?.conditions));
      const sandboxId = running.status?.sandboxID ?? "";
      // A claimed prepared instance is relabelled with the sandbox id just after the agent answered.
      await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
      assert.equal(runtimeState(suite.containerdNamespace, sandboxId).task, "RUNNING");

      await suite.kubectlOk("-n", namespace, "delete", "sandbox", "early", "--timeout=120s");
      assert.deepEqual(runtimeState(suite.containerdNamespace, sandboxId), { container: false, task: undefined, snapshot: false });
    });
  });
}
