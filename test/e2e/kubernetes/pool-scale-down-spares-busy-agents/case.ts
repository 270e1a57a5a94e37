/**
 * A pool shrinks when demand goes, but never stops an agent that holds a sandbox: a pool of up to
 * 3 agents with 2 slots each and a 3 s scaleDownDelaySeconds (pool.yaml here, poolMin 0) grows to
 * 3 agent Pods for 5 sandboxes. With one sandbox left on each of two agents, the sizer wants one
 * agent (`status.desiredAgents` 1): the idle agent is removed after the delay, and both busy agents
 * stay — the same Pods, Ready, their sandboxes Running and answering `exec`. When the last sandbox
 * of an agent is deleted, that agent goes too, down to poolMin (0): no agent Pod and none of their
 * containers (shim anchors included) are left. Creates go through the Lease leader's fast path;
 * admission across replicas is other cases' subject. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { SandboxPoolStatus } from "@fast-sandbox/api";
import type { FastSandboxClient, Sandbox } from "@fast-sandbox/sdk";
import { agentContainers, runningTasks } from "../../../support/containerd-contents.js";
import { agentPods, poolCaseOnLeader, poolStatus } from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext, type PodJson } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "shrinks";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("pool scale-down spares busy agents", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    /** Sandboxes by name, as created. */
    const created = new Map<string, Sandbox>();
    /** The agents that keep a sandbox in the second step, and the sandbox each keeps. */
    let kept: { agent: PodJson; sandbox: string }[] = [];
    let idleAgent = "";

    /** Every agent Pod of the pool, those being deleted included. */
    const allAgentPods = () => agentPods(suite, namespace, POOL, { includeDeleting: true });

    /** Exactly `names` are the pool's agent Pods (none being deleted, none other left), and the status agrees. */
    const onlyAgents = async (names: string[], expected: SandboxPoolStatus): Promise<void> => {
      await suite.eventually(
        `the pool's agents to be exactly [${names.join(", ")}] with status ${JSON.stringify(expected)}`,
        async () => {
          const pods = await allAgentPods();
          const status = await poolStatus(suite, namespace, POOL);
          const same = (Object.keys(expected) as (keyof SandboxPoolStatus)[]).every((field) => status[field] === expected[field]);
          return (
            same && pods.length === names.length && pods.every((pod) => names.includes(pod.metadata.name) && !pod.metadata.deletionTimestamp && isPodReady(pod))
          );
        },
        { timeoutMs: 120_000, intervalMs: 500 },
      );
    };

    /** The kept agent is the same Pod as before (not replaced), Ready, and its sandbox runs and answers. */
    const stillServes = async ({ agent, sandbox }: { agent: PodJson; sandbox: string }): Promise<void> => {
      const pod = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pod", agent.metadata.name, "-o", "json")) as PodJson;
      assert.equal(pod.metadata.uid, agent.metadata.uid, `${agent.metadata.name} is the same Pod`);
      assert.equal(pod.status?.phase, "Running");
      assert.ok(isPodReady(pod) && !pod.metadata.deletionTimestamp, `${agent.metadata.name} is Ready and not being deleted`);
      const object = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandbox", sandbox, "-o", "json")) as Sandbox;
      assert.equal(object.status?.phase, "Running");
      assert.equal(object.status?.assignedPod, agent.metadata.name);
      assert.ok(runningTasks(suite.containerdNamespace).includes(object.status?.sandboxID ?? ""), `the task of ${sandbox} runs in containerd`);
      const result = await client!.sandboxes.exec(sandbox, ["sh", "-c", "echo alive"], { namespace });
      assert.deepEqual({ exitCode: result.exitCode, stdout: result.stdout.trim() }, { exitCode: 0, stdout: "alive" });
    };

    poolCaseOnLeader(suite, { namespacePrefix: "pool-scale-down", poolFile: path.join(HERE, "pool.yaml"), pool: POOL }, (created, leader) => {
      namespace = created;
      client = leader;
    });

    it("grows to 3 agents for 5 sandboxes", { timeout: 300_000 }, async () => {
      const sandboxes = await Promise.all(
        ["k-0", "k-1", "k-2", "k-3", "k-4"].map((name) =>
          client!.sandboxes.create({ namespace, name, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] }),
        ),
      );
      for (const sandbox of sandboxes) created.set(sandbox.metadata.name, sandbox);
      const agents = await suite.eventually(
        "3 ready agents holding the 5 sandboxes",
        async () => {
          const pods = await allAgentPods();
          const status = await poolStatus(suite, namespace, POOL);
          return pods.length === 3 && pods.every(isPodReady) && status.readyAgents === 3 && status.sandboxes === 5 ? pods : undefined;
        },
        { timeoutMs: 120_000 },
      );
      const byAgent = new Map(agents.map((pod) => [pod.metadata.name, [] as string[]]));
      for (const sandbox of sandboxes) {
        assert.equal(sandbox.status?.phase, "Running");
        const holder = byAgent.get(sandbox.status?.assignedPod ?? "");
        assert.ok(holder, `${sandbox.metadata.name} runs on an agent of the pool`);
        holder.push(sandbox.metadata.name);
      }
      // 5 sandboxes in 3 agents of 2 slots: two full agents and one with a single sandbox.
      const sizes = [...byAgent.values()].map((names) => names.length).sort();
      assert.deepEqual(sizes, [1, 2, 2]);
      const full = agents.filter((pod) => byAgent.get(pod.metadata.name)!.length === 2);
      kept = full.map((agent) => ({ agent, sandbox: byAgent.get(agent.metadata.name)![0]! }));
      idleAgent = agents.find((pod) => byAgent.get(pod.metadata.name)!.length === 1)!.metadata.name;
    });

    it("removes the idle agent after the delay and keeps both busy agents, although the sizer wants one", { timeout: 300_000 }, async () => {
      assert.equal(kept.length, 2, "the first step chose two agents to keep a sandbox on");
      const keep = new Set(kept.map(({ sandbox }) => sandbox));
      // Every sandbox but one on each of the two full agents: the third agent is left with none.
      for (const name of created.keys()) if (!keep.has(name)) await client!.sandboxes.delete(name, { namespace });
      await onlyAgents(
        kept.map(({ agent }) => agent.metadata.name),
        { agents: 2, readyAgents: 2, sandboxes: 2, freeSlots: 2, desiredAgents: 1 },
      );
      for (const entry of kept) await stillServes(entry);
      await suite.eventually(
        `${idleAgent}'s containers (its shim anchors and prepared instances) to be gone`,
        () => agentContainers(suite.containerdNamespace, idleAgent).length === 0,
      );
    });

    it("removes an agent once its last sandbox is deleted, down to poolMin 0, never the one still busy", { timeout: 300_000 }, async () => {
      const [stays, goes] = kept;
      assert.ok(stays && goes);
      await client!.sandboxes.delete(goes.sandbox, { namespace });
      await onlyAgents([stays.agent.metadata.name], { agents: 1, readyAgents: 1, sandboxes: 1, freeSlots: 1, desiredAgents: 1 });
      await stillServes(stays);
      await client!.sandboxes.delete(stays.sandbox, { namespace });
      await onlyAgents([], { agents: 0, readyAgents: 0, sandboxes: 0, freeSlots: 0, desiredAgents: 0 });
      for (const { agent } of kept) {
        await suite.eventually(
          `${agent.metadata.name}'s containers to be gone`,
          () => agentContainers(suite.containerdNamespace, agent.metadata.name).length === 0,
        );
      }
    });
  });
}
