/**
 * The janitor DaemonSet reclaims what a lost agent Pod left on its node, and nothing else: an agent
 * Pod with a running sandbox is force-deleted (its processes killed at once, as when a node's
 * kubelet loses a Pod), so the sandbox's container, task and snapshot, the agent's shim anchors and
 * its prepared instances (the pool keeps 2 by default) stay in containerd labelled with a Pod that
 * no longer exists. Once the protection window has passed (15 s in the suite's overlay), the
 * janitor removes them — counted in its metrics as `agent_gone`, `anchor_orphaned` and
 * `prepared_orphaned` — while a container without Fast Sandbox's labels in the same containerd
 * namespace is left alone, and the pool's new agent and its anchors are untouched. The Sandbox
 * (failurePolicy Manual) is Lost, and deleting it succeeds although its agent is gone.
 * Run by ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE, ctr } from "../../../support/containerd.js";
import {
  CONTAINER_LABELS,
  PREPARED_INSTANCE_ROLE,
  containerIds,
  containerLabels,
  containerOfSandbox,
  inContainerd,
  isAnchor,
} from "../../../support/containerd-contents.js";
import { agentPods, janitorUrl, waitForPhase } from "../../../support/kubernetes-cases.js";
import { isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "orphans";

/** Containers of the suite's containerd namespace with their labels (those gone between the listing and the reading left out). */
function containers(namespace: string): { id: string; labels: Record<string, string> }[] {
  return containerIds(namespace).flatMap((id) => {
    const labels = containerLabels(namespace, id);
    return labels ? [{ id, labels }] : [];
  });
}

/** The sum of a counter's series whose labels include `label` (e.g. `reason="agent_gone"`). */
function counter(metrics: string, name: string, label: string): number {
  return metrics
    .split("\n")
    .filter((line) => line.startsWith(`${name}{`) && line.includes(label))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("janitor reclaims orphans of a lost agent Pod", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    const unlabelled = `not-fast-sandbox-${process.pid}`;

    const readyAgent = async () =>
      suite.eventually("a ready agent of the pool", async () => (await agentPods(suite, namespace, POOL)).find(isPodReady), { timeoutMs: 120_000 });
    const janitorMetrics = async (): Promise<string> => {
      const response = await fetch(`${await janitorUrl(suite)}/metrics`);
      assert.equal(response.status, 200);
      return response.text();
    };

    before(async () => {
      namespace = await suite.createNamespace("orphans");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(() => {
      client?.close();
      try {
        execFileSync("ctr", ["-n", suite.containerdNamespace, "containers", "rm", unlabelled], { stdio: "ignore" });
      } catch {
        // not created, or already gone
      }
    });

    it(
      "removes the sandbox, task, snapshot, anchors and prepared instances a force-deleted agent Pod left, and nothing else",
      { timeout: 300_000 },
      async () => {
        const lostAgent = await readyAgent();
        const sandbox = await client!.sandboxes.create({
          namespace,
          pool: POOL,
          image: BASE_IMAGE,
          command: ["sleep", "3600"],
          failurePolicy: "Manual",
          recoveryTimeoutSeconds: 5,
        });
        assert.equal(sandbox.status?.assignedPod, lostAgent.metadata.name);
        const sandboxId = sandbox.status?.sandboxID ?? "";
        assert.ok(sandboxId);
        const ofLostAgent = () => containers(suite.containerdNamespace).filter((c) => c.labels[CONTAINER_LABELS.agent] === lostAgent.metadata.name);
        // The sandbox's container: its own, or the prepared instance it claimed (relabelled with its id as the create ends).
        await suite.eventually("the sandbox's container", () => ofLostAgent().some((c) => c.labels[CONTAINER_LABELS.sandboxId] === sandboxId));
        containerOfSandbox(suite.containerdNamespace, sandboxId);
        assert.ok(
          ofLostAgent().some((c) => isAnchor(c.id)),
          "the agent's shim anchors exist",
        );
        await suite.eventually("the agent's prepared instances", () => ofLostAgent().some((c) => c.labels[CONTAINER_LABELS.role] === PREPARED_INSTANCE_ROLE), {
          timeoutMs: 60_000,
        });
        // A container that is not Fast Sandbox's, in the same namespace: never an orphan.
        ctr(suite.containerdNamespace, "containers", "create", BASE_IMAGE, unlabelled, "sleep", "1");
        const before = await janitorMetrics();

        await suite.kubectlOk("-n", namespace, "delete", "pod", lostAgent.metadata.name, "--grace-period=0", "--force", "--wait=false");
        const replacement = await readyAgent();
        assert.notEqual(replacement.metadata.name, lostAgent.metadata.name);

        await suite.eventually(
          "the lost agent's containers to be reclaimed",
          () => !containers(suite.containerdNamespace).some((c) => c.labels[CONTAINER_LABELS.agent] === lostAgent.metadata.name),
          { timeoutMs: 180_000, intervalMs: 1000 },
        );
        // The cgroup its sandboxes were made in (bounded by its Pod's limits) goes with them; the replacement's stays.
        const agentCgroups = (agent: string) =>
          readdirSync("/sys/fs/cgroup")
            .map((hierarchy) => path.join("/sys/fs/cgroup", hierarchy, suite.containerdNamespace, agent))
            .concat(path.join("/sys/fs/cgroup", suite.containerdNamespace, agent))
            .filter((directory) => existsSync(directory));
        await suite.eventually("the lost agent's cgroup to be removed", () => agentCgroups(lostAgent.metadata.name).length === 0, {
          timeoutMs: 60_000,
          intervalMs: 1000,
        });
        assert.ok(agentCgroups(replacement.metadata.name).length > 0, "the new agent's cgroup is untouched");
        assert.ok(!inContainerd(suite.containerdNamespace, sandboxId).task, "its task is gone");
        assert.ok(!inContainerd(suite.containerdNamespace, sandboxId).snapshot, "its snapshot is gone");
        const after = await janitorMetrics();
        const reclaimed = (reason: string) =>
          counter(after, "fsb_janitor_orphans_reclaimed_total", `reason="${reason}"`) -
          counter(before, "fsb_janitor_orphans_reclaimed_total", `reason="${reason}"`);
        assert.ok(reclaimed("agent_gone") + reclaimed("anchor_orphaned") >= 2, "the sandbox and the anchors are counted as reclaimed");
        assert.ok(reclaimed("prepared_orphaned") >= 1, "the prepared instances are counted as reclaimed");

        const now = containers(suite.containerdNamespace);
        assert.ok(
          now.some((c) => c.id === unlabelled),
          "the unlabelled container is left alone",
        );
        assert.ok(
          now.some((c) => c.labels[CONTAINER_LABELS.agent] === replacement.metadata.name && isAnchor(c.id)),
          "the new agent's anchors are untouched",
        );
      },
    );

    it("the sandbox of the lost agent is Lost (failurePolicy Manual) and can be deleted", { timeout: 180_000 }, async () => {
      const [name] = (await suite.kubectlOk("-n", namespace, "get", "sandboxes", "-o", "jsonpath={.items[*].metadata.name}")).trim().split(/\s+/);
      assert.ok(name, "the sandbox exists");
      await waitForPhase(suite, namespace, name, "Lost", { timeoutMs: 120_000 });
      await suite.kubectlOk("-n", namespace, "delete", "sandbox", name, "--timeout=60s");
      assert.equal((await suite.kubectl("-n", namespace, "get", "sandbox", name)).code, 1);
    });
  });
}
