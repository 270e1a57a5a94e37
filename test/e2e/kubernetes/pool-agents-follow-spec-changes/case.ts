/**
 * A pool's agents follow a change of what they take only when they start (here preparedInstances,
 * which reaches an agent as FSB_PREPARED_INSTANCES in its Pod; agentTemplate and agent limits alike):
 * a pool of two one-slot agents (pool.yaml here) with one sandbox is changed from no prepared
 * instance to one per agent. The idle agent is replaced — its replacement, labelled with the new
 * template hash, keeps a prepared instance in containerd — while the busy agent stays the same Pod
 * and its sandbox runs and answers `exec`; `status.updatedAgents` counts 1 of 2. Once the sandbox is
 * deleted, the busy agent is replaced too (2 of 2), and the old agents' containers are gone.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { FastSandboxClient, Sandbox } from "@fast-sandbox/sdk";
import { agentContainers, containerIds, CONTAINER_LABELS, PREPARED_INSTANCE_ROLE, runningTasks } from "../../../support/containerd-contents.js";
import { agentPods, poolCaseOnLeader, poolStatus } from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext, type PodJson } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "follows";
const HASH_LABEL = "fast-sandbox.io/template-hash";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("pool agents follow spec changes", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    let sandbox: Sandbox | undefined;
    /** The two agents before the change. */
    let before2: PodJson[] = [];

    const allAgentPods = () => agentPods(suite, namespace, POOL, { includeDeleting: true });
    const hashOf = (pod: PodJson) => pod.metadata.labels?.[HASH_LABEL] ?? "";
    const preparedOf = (agent: string) =>
      containerIds(suite.containerdNamespace, { [CONTAINER_LABELS.agent]: agent, [CONTAINER_LABELS.role]: PREPARED_INSTANCE_ROLE });

    poolCaseOnLeader(suite, { namespacePrefix: "pool-follows", poolFile: path.join(HERE, "pool.yaml"), pool: POOL }, (created, leader) => {
      namespace = created;
      client = leader;
    });

    it("runs two agents of the pool's spec, without prepared instances, one with a sandbox", { timeout: 300_000 }, async () => {
      before2 = await suite.eventually(
        "2 ready agents, both of the current spec",
        async () => {
          const pods = await allAgentPods();
          const status = await poolStatus(suite, namespace, POOL);
          return pods.length === 2 && pods.every(isPodReady) && status.readyAgents === 2 && status.updatedAgents === 2 ? pods : undefined;
        },
        { timeoutMs: 120_000 },
      );
      assert.equal(new Set(before2.map(hashOf)).size, 1, "one template, one hash");
      assert.match(hashOf(before2[0]!), /^[0-9a-f]{16}$/);
      for (const pod of before2) assert.deepEqual(preparedOf(pod.metadata.name), [], `${pod.metadata.name} keeps no prepared instance`);
      sandbox = await client!.sandboxes.create({ namespace, name: "busy", pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] });
      assert.equal(sandbox.status?.phase, "Running");
    });

    it("replaces the idle agent with one of the new spec, which keeps a prepared instance; the busy agent serves on", { timeout: 300_000 }, async () => {
      const busy = before2.find((pod) => pod.metadata.name === sandbox?.status?.assignedPod);
      const idle = before2.find((pod) => pod !== busy);
      assert.ok(busy && idle, `the sandbox runs on one of ${before2.map((pod) => pod.metadata.name).join(", ")}`);
      await suite.kubectlOk("-n", namespace, "patch", "sandboxpool", POOL, "--type", "merge", "-p", JSON.stringify({ spec: { preparedInstances: 1 } }));

      const replacement = await suite.eventually(
        `${idle.metadata.name} replaced by a Ready agent of the new spec, ${busy.metadata.name} kept`,
        async () => {
          const pods = await allAgentPods();
          const status = await poolStatus(suite, namespace, POOL);
          const fresh = pods.filter((pod) => !before2.some((old) => old.metadata.uid === pod.metadata.uid));
          const done = pods.length === 2 && fresh.length === 1 && isPodReady(fresh[0]!) && status.updatedAgents === 1 && status.readyAgents === 2;
          return done && pods.some((pod) => pod.metadata.uid === busy.metadata.uid) ? fresh[0] : undefined;
        },
        { timeoutMs: 180_000, intervalMs: 500 },
      );
      assert.notEqual(hashOf(replacement), hashOf(busy), "the replacement carries the new template's hash");
      const env = replacement.spec?.containers.find((c) => c.name === "agent")?.env ?? [];
      assert.equal(env.find((e) => e.name === "FSB_PREPARED_INSTANCES")?.value, "1");
      await suite.eventually(`${replacement.metadata.name} to keep one prepared instance`, () => preparedOf(replacement.metadata.name).length === 1, {
        timeoutMs: 120_000,
      });
      assert.deepEqual(preparedOf(busy.metadata.name), [], "the busy agent runs as it was started");

      const object = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandbox", "busy", "-o", "json")) as Sandbox;
      assert.equal(object.status?.phase, "Running");
      assert.equal(object.status?.assignedPod, busy.metadata.name);
      assert.ok(runningTasks(suite.containerdNamespace).includes(object.status?.sandboxID ?? ""), "the sandbox's task runs in containerd");
      const result = await client!.sandboxes.exec("busy", ["sh", "-c", "echo alive"], { namespace });
      assert.deepEqual({ exitCode: result.exitCode, stdout: result.stdout.trim() }, { exitCode: 0, stdout: "alive" });
      await suite.eventually(
        `${idle.metadata.name}'s containers to be gone`,
        () => agentContainers(suite.containerdNamespace, idle.metadata.name).length === 0,
      );
    });

    it("replaces the busy agent once its sandbox is deleted: both agents of the new spec", { timeout: 300_000 }, async () => {
      await client!.sandboxes.delete("busy", { namespace });
      const after2 = await suite.eventually(
        "2 Ready agents of the new spec and none of the old",
        async () => {
          const pods = await allAgentPods();
          const status = await poolStatus(suite, namespace, POOL);
          const fresh = pods.every((pod) => !before2.some((old) => old.metadata.uid === pod.metadata.uid));
          return pods.length === 2 && fresh && pods.every(isPodReady) && status.updatedAgents === 2 && status.readyAgents === 2 ? pods : undefined;
        },
        { timeoutMs: 180_000, intervalMs: 500 },
      );
      assert.equal(new Set(after2.map(hashOf)).size, 1);
      for (const old of before2) {
        await suite.eventually(
          `${old.metadata.name}'s containers to be gone`,
          () => agentContainers(suite.containerdNamespace, old.metadata.name).length === 0,
        );
      }
    });
  });
}
