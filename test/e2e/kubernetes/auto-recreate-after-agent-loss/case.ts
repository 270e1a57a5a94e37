/**
 * failurePolicy AutoRecreate when a sandbox's agent is lost for good (its Pod force-deleted: the
 * fake kubelet kills its processes at once, the sandbox's container stays behind in containerd):
 * the sandbox shows AgentConnected=False first; once recoveryTimeoutSeconds have passed, a new
 * instance runs on the surviving agent (new sandboxID, status.recreations 1, a Recreated condition,
 * Running) and exec reaches it; the pool starts an agent in place of the lost one; the janitor
 * reclaims what the lost agent left in containerd (the old instance, its shim anchors). Then an
 * agent whose Pod is evicted (the fake kubelet stops its containers and leaves the Pod Failed, as a
 * kubelet under node pressure does) is deleted and replaced by the pool, and the sandbox it ran is
 * recreated on another agent. Asserted
 * through the Sandbox and SandboxPool objects, the fast path and containerd.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { containerIds, isAnchor, namespaceContainers, preparedStock, recordedContainerOfSandbox, runningTasks } from "../../../support/containerd-contents.js";
import {
  agentPods,
  deleteCaseNamespace,
  getPool,
  getSandbox,
  itWithDiagnostics,
  sandboxCondition,
  waitForPhase,
  waitForReadyAgents,
  waitForSandbox,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "heal";
const RECOVERY_TIMEOUT_SECONDS = 5;
/** Covers the janitor's protection window and pass interval (2 min and 10 s in config/janitor; the suite's overlay shortens them). */
const JANITOR_RECLAIMS_WITHIN_MS = 240_000;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("AutoRecreate after an agent is lost for good", () => {
    let namespace = "";
    let client: FastSandboxClient;
    /** The agent whose Pod the first test force-deletes, and the one that runs the new instance. */
    let lostAgent = "";
    let survivor = "";

    const readyAgentPods = async (): Promise<string[]> => (await agentPods(suite, namespace, POOL)).filter(isPodReady).map((pod) => pod.metadata.name);
    /** The containers of this case's sandboxes. */
    const sandboxContainers = (): string[] => namespaceContainers(suite.containerdNamespace, namespace);

    before(async () => {
      namespace = await suite.createNamespace("auto-recreate");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await waitForReadyAgents(suite, namespace, POOL, 2);
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
      suite,
      () => namespace,
      "marks the sandbox AgentConnected=False, then after recoveryTimeoutSeconds runs a new instance on the other agent",
      600_000,
      async () => {
        const created = await client.sandboxes.create({
          namespace,
          name: "phoenix",
          pool: POOL,
          image: BASE_IMAGE,
          command: ["sleep", "3600"],
          failurePolicy: "AutoRecreate",
          recoveryTimeoutSeconds: RECOVERY_TIMEOUT_SECONDS,
        });
        assert.equal(created.status?.phase, "Running");
        const oldId = created.status?.sandboxID ?? "";
        lostAgent = created.status?.assignedPod ?? "";
        assert.ok(oldId && lostAgent, "the fast path answers with the instance and its agent");
        const stored = await waitForPhase(suite, namespace, "phoenix", "Running");
        assert.equal(stored.status?.sandboxID, oldId);
        // A claimed prepared instance counts as the sandbox's once relabelled, just after the create answered.
        await recordedContainerOfSandbox(suite.containerdNamespace, oldId);
        assert.deepEqual(sandboxContainers(), [oldId], "the instance's container is in containerd");
        assert.equal((await client.sandboxes.exec("phoenix", ["sh", "-c", "echo first"], { namespace })).stdout, "first\n");

        // Lost for good: the Pod is gone at once, its processes killed; the container stays in containerd.
        await suite.kubectlOk("-n", namespace, "delete", "pod", lostAgent, "--grace-period=0", "--force");

        const disconnected = await waitForSandbox(
          suite,
          namespace,
          "phoenix",
          "AgentConnected=False on the sandbox",
          (sandbox) => sandboxCondition(sandbox, "AgentConnected")?.status === "False",
          { timeoutMs: 60_000, intervalMs: 100 },
        );
        assert.equal(disconnected.status?.sandboxID, oldId, "the condition comes first, while the old instance is still the sandbox's");
        assert.equal(disconnected.status?.recreations, undefined);
        // AgentGone once the fleet saw the Pod deleted; AgentNotResponding when the failed heartbeats or the Pod's
        // Ready=False were seen first (the kubelet kills the agent at once).
        assert.match(sandboxCondition(disconnected, "AgentConnected")?.reason ?? "", /^(AgentGone|AgentNotResponding)$/);
        assert.match(sandboxCondition(disconnected, "AgentConnected")?.message ?? "", /failurePolicy AutoRecreate acts after 5s/);

        const recreated = await waitForSandbox(
          suite,
          namespace,
          "phoenix",
          "the new instance, Running",
          (sandbox) => sandbox.status?.recreations === 1 && sandbox.status.phase === "Running",
          { timeoutMs: 120_000 },
        );
        const newId = recreated.status?.sandboxID ?? "";
        assert.notEqual(newId, oldId, "a new instance has a new sandboxID");
        assert.ok(recreated.status?.assignedPod, "the new instance has an agent");
        assert.notEqual(recreated.status?.assignedPod, lostAgent, "it runs on another agent");
        survivor = recreated.status?.assignedPod ?? "";
        assert.equal(sandboxCondition(recreated, "Recreated")?.status, "True");
        assert.equal(sandboxCondition(recreated, "Recreated")?.reason, "AgentLost");
        assert.equal(sandboxCondition(recreated, "AgentConnected")?.status, "True");
        assert.equal(sandboxCondition(recreated, "Ready")?.status, "True");
        assert.deepEqual(recreated.spec, stored.spec, "same spec");
        // Not before the timeout (both stamps are the controller's own).
        const lostAt = Date.parse(sandboxCondition(disconnected, "AgentConnected")?.lastTransitionTime ?? "");
        const recreatedAt = Date.parse(sandboxCondition(recreated, "Recreated")?.lastTransitionTime ?? "");
        assert.ok(recreatedAt - lostAt >= (RECOVERY_TIMEOUT_SECONDS - 1) * 1000, `recreated ${recreatedAt - lostAt} ms after the agent was lost`);

        const again = await client.sandboxes.exec("phoenix", ["sh", "-c", "echo second"], { namespace });
        assert.deepEqual([again.exitCode, again.stdout], [0, "second\n"], "exec reaches the new instance");
        assert.ok(runningTasks(suite.containerdNamespace).includes(newId), "the new instance's task runs in containerd");
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "the pool replaces the lost agent, and the janitor reclaims what the lost agent left in containerd",
      600_000,
      async () => {
        assert.ok(lostAgent && survivor, "the first test lost an agent and recreated the sandbox");
        const sandbox = await getSandbox(suite, namespace, "phoenix");
        await suite.eventually(
          "two ready agents again, one of them new",
          async () => {
            const ready = await readyAgentPods();
            return ready.length === 2 && ready.includes(survivor) && (await getPool(suite, namespace, POOL)).status?.readyAgents === 2;
          },
          { timeoutMs: 120_000 },
        );
        // The old instance, the lost agent's shim anchors (fsb-anchor.<agent>.<n>) and its prepared
        // instances (the pool keeps 2 by default): nobody runs them any more.
        const leftBehind = () => [
          ...sandboxContainers().filter((id) => id !== sandbox?.status?.sandboxID),
          ...containerIds(suite.containerdNamespace).filter((id) => isAnchor(id, lostAgent)),
          ...preparedStock(suite.containerdNamespace, { "fast-sandbox.io/agent": lostAgent }),
        ];
        await suite.eventually("the janitor to reclaim the lost agent's containers", () => leftBehind().length === 0, {
          timeoutMs: JANITOR_RECLAIMS_WITHIN_MS,
          intervalMs: 1000,
        });
        assert.deepEqual(sandboxContainers(), [sandbox?.status?.sandboxID], "the current instance is left alone");
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "an agent whose Pod is evicted (phase Failed, the object kept) is deleted and replaced, and its sandbox runs again",
      600_000,
      async () => {
        const before = await getSandbox(suite, namespace, "phoenix");
        const evicted = before?.status?.assignedPod ?? "";
        assert.ok(evicted, "the sandbox runs on an agent");
        // What a kubelet under memory pressure does: containers stopped, the Pod left in phase Failed for good.
        await suite.kubectlOk("-n", namespace, "annotate", "pod", evicted, "fake-kubelet.fast-sandbox.io/evict=The node was low on resource: memory.");
        await suite.eventually(
          "the evicted agent's Pod deleted, two ready agents again",
          async () => {
            const all = await agentPods(suite, namespace, POOL, { includeDeleting: true });
            const ready = all.filter(isPodReady).map((pod) => pod.metadata.name);
            return !all.some((pod) => pod.metadata.name === evicted) && ready.length === 2 && (await getPool(suite, namespace, POOL)).status?.readyAgents === 2;
          },
          { timeoutMs: 120_000 },
        );
        const again = await waitForSandbox(
          suite,
          namespace,
          "phoenix",
          "the sandbox running again on another agent",
          (sandbox) => sandbox.status?.phase === "Running" && Boolean(sandbox.status.assignedPod) && sandbox.status.assignedPod !== evicted,
          { timeoutMs: 120_000 },
        );
        assert.equal(again.status?.recreations, 2, "recreated once more (AutoRecreate)");
        const answer = await client.sandboxes.exec("phoenix", ["sh", "-c", "echo third"], { namespace });
        assert.deepEqual([answer.exitCode, answer.stdout], [0, "third\n"]);

        await client.sandboxes.delete("phoenix", { namespace });
        assert.equal(await getSandbox(suite, namespace, "phoenix"), undefined);
        // The evicted agent's instance stays in containerd for the janitor, as the lost agent's did above.
        assert.ok(!sandboxContainers().includes(again.status?.sandboxID ?? ""), "the deleted sandbox's container is gone");
      },
    );
  });
}
