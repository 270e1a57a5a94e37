/**
 * failurePolicy AutoRecreate when a sandbox's agent is lost for good (its Pod force-deleted: the
 * fake kubelet kills its processes at once, the sandbox's container stays behind in containerd):
 * the sandbox shows AgentConnected=False first; once recoveryTimeoutSeconds have passed, a new
 * instance runs on the surviving agent (new sandboxID, status.recreations 1, a Recreated condition,
 * Running) and exec reaches it; the pool starts an agent in place of the lost one; the janitor
 * reclaims what the lost agent left in containerd (the old instance, its shim anchors). Asserted
 * through the Sandbox and SandboxPool objects, the fast path and containerd.
 * Run by ../suite.test.ts on the suite's cluster.
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
const POOL = "heal";
const RECOVERY_TIMEOUT_SECONDS = 5;
/** Covers the janitor's protection window and pass interval (2 min and 10 s in config/janitor; the suite's overlay shortens them). */
const JANITOR_RECLAIMS_WITHIN_MS = 240_000;

interface PodList {
  items: { metadata: { name: string; deletionTimestamp?: string }; status?: { conditions?: { type: string; status: string }[] } }[];
}

function condition(sandbox: Sandbox | undefined, type: string): Condition | undefined {
  return sandbox?.status?.conditions?.find((c) => c.type === type);
}

/** What a failure message needs: the Pods, this case's objects, the tail of the controllers' and agents' logs. */
async function diagnostics(suite: KubernetesSuiteContext, namespace: string): Promise<string> {
  const parts = [(await suite.kubectl("get", "pods", "-A", "-o", "wide")).stdout];
  parts.push((await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io,sandboxpools.sandbox.fast.io", "-o", "yaml")).stdout);
  for (const [ns, selector, container] of [
    ["fast-sandbox-system", "app.kubernetes.io/component=controller", "controller"],
    [namespace, "app.kubernetes.io/component=agent", "agent"],
  ] as const) {
    const pods = JSON.parse((await suite.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json")).stdout || '{"items":[]}') as PodList;
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

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("AutoRecreate after an agent is lost for good", () => {
    let namespace = "";
    let client: FastSandboxClient;
    /** The agent whose Pod the first test force-deletes, and the one that runs the new instance. */
    let lostAgent = "";
    let survivor = "";

    const getSandbox = async (name: string): Promise<Sandbox | undefined> => {
      const result = await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io", name, "-o", "json");
      if (result.code !== 0 && /NotFound/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    };
    const getPool = async (): Promise<SandboxPool> =>
      JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpools.sandbox.fast.io", POOL, "-o", "json")) as SandboxPool;
    const readyAgentPods = async (): Promise<string[]> => {
      const pods = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pods", "-l", `fast-sandbox.io/pool=${POOL}`, "-o", "json")) as PodList;
      return pods.items
        .filter((pod) => !pod.metadata.deletionTimestamp && pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"))
        .map((pod) => pod.metadata.name);
    };
    const containers = (): string[] => lines(ctr(suite.containerdNamespace, "containers", "ls", "-q"));
    /** The containers of this case's sandboxes (the agents label each with its sandbox's namespace). */
    const sandboxContainers = (): string[] =>
      lines(ctr(suite.containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/namespace"==${namespace}`));
    const runningTasks = (): string[] =>
      lines(ctr(suite.containerdNamespace, "tasks", "ls"))
        .slice(1)
        .map((line) => line.split(/\s+/))
        .filter(([, , status]) => status === "RUNNING")
        .map(([id]) => id ?? "");

    before(async () => {
      namespace = await suite.createNamespace("auto-recreate");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await suite.eventually("the pool's two agents to be ready", async () => (await getPool()).status?.readyAgents === 2, { timeoutMs: 120_000 });
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (!namespace) return;
      // Sandboxes first, while their agents run (their cleanup needs them), then the rest.
      await suite.kubectl("-n", namespace, "delete", "sandboxes.sandbox.fast.io", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s");
    });

    spec(
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
        const stored = await suite.eventually("the Running status in the Sandbox object", async () => {
          const sandbox = await getSandbox("phoenix");
          return sandbox?.status?.phase === "Running" ? sandbox : undefined;
        });
        assert.equal(stored.status?.sandboxID, oldId);
        assert.deepEqual(sandboxContainers(), [oldId], "the instance's container is in containerd");
        assert.equal((await client.sandboxes.exec("phoenix", ["sh", "-c", "echo first"], { namespace })).stdout, "first\n");

        // Lost for good: the Pod is gone at once, its processes killed; the container stays in containerd.
        await suite.kubectlOk("-n", namespace, "delete", "pod", lostAgent, "--grace-period=0", "--force");

        const disconnected = await suite.eventually(
          "AgentConnected=False on the sandbox",
          async () => {
            const sandbox = await getSandbox("phoenix");
            return condition(sandbox, "AgentConnected")?.status === "False" ? sandbox : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 100 },
        );
        assert.equal(disconnected.status?.sandboxID, oldId, "the condition comes first, while the old instance is still the sandbox's");
        assert.equal(disconnected.status?.recreations, undefined);
        // AgentGone once the fleet saw the Pod deleted; AgentNotResponding when the failed heartbeats or the Pod's
        // Ready=False were seen first (the kubelet kills the agent at once).
        assert.match(condition(disconnected, "AgentConnected")?.reason ?? "", /^(AgentGone|AgentNotResponding)$/);
        assert.match(condition(disconnected, "AgentConnected")?.message ?? "", /failurePolicy AutoRecreate acts after 5s/);

        const recreated = await suite.eventually(
          "the new instance, Running",
          async () => {
            const sandbox = await getSandbox("phoenix");
            return sandbox?.status?.recreations === 1 && sandbox.status.phase === "Running" ? sandbox : undefined;
          },
          { timeoutMs: 120_000 },
        );
        const newId = recreated.status?.sandboxID ?? "";
        assert.notEqual(newId, oldId, "a new instance has a new sandboxID");
        assert.ok(recreated.status?.assignedPod, "the new instance has an agent");
        assert.notEqual(recreated.status?.assignedPod, lostAgent, "it runs on another agent");
        survivor = recreated.status?.assignedPod ?? "";
        assert.equal(condition(recreated, "Recreated")?.status, "True");
        assert.equal(condition(recreated, "Recreated")?.reason, "AgentLost");
        assert.equal(condition(recreated, "AgentConnected")?.status, "True");
        assert.equal(condition(recreated, "Ready")?.status, "True");
        assert.deepEqual(recreated.spec, stored.spec, "same spec");
        // Not before the timeout (both stamps are the controller's own).
        const lostAt = Date.parse(condition(disconnected, "AgentConnected")?.lastTransitionTime ?? "");
        const recreatedAt = Date.parse(condition(recreated, "Recreated")?.lastTransitionTime ?? "");
        assert.ok(recreatedAt - lostAt >= (RECOVERY_TIMEOUT_SECONDS - 1) * 1000, `recreated ${recreatedAt - lostAt} ms after the agent was lost`);

        const again = await client.sandboxes.exec("phoenix", ["sh", "-c", "echo second"], { namespace });
        assert.deepEqual([again.exitCode, again.stdout], [0, "second\n"], "exec reaches the new instance");
        assert.ok(runningTasks().includes(newId), "the new instance's task runs in containerd");
      },
    );

    spec(
      suite,
      () => namespace,
      "the pool replaces the lost agent, and the janitor reclaims what the lost agent left in containerd",
      600_000,
      async () => {
        assert.ok(lostAgent && survivor, "the first test lost an agent and recreated the sandbox");
        const sandbox = await getSandbox("phoenix");
        await suite.eventually(
          "two ready agents again, one of them new",
          async () => {
            const ready = await readyAgentPods();
            return ready.length === 2 && ready.includes(survivor) && (await getPool()).status?.readyAgents === 2;
          },
          { timeoutMs: 120_000 },
        );
        // The old instance and the lost agent's shim anchors (fsb-anchor.<agent>.<n>): nobody runs them any more.
        const leftBehind = () => [
          ...sandboxContainers().filter((id) => id !== sandbox?.status?.sandboxID),
          ...containers().filter((id) => id.startsWith(`fsb-anchor.${lostAgent}.`)),
        ];
        await suite.eventually("the janitor to reclaim the lost agent's containers", () => leftBehind().length === 0, {
          timeoutMs: JANITOR_RECLAIMS_WITHIN_MS,
          intervalMs: 1000,
        });
        assert.deepEqual(sandboxContainers(), [sandbox?.status?.sandboxID], "the current instance is left alone");

        await client.sandboxes.delete("phoenix", { namespace });
        assert.equal(await getSandbox("phoenix"), undefined);
        assert.deepEqual(sandboxContainers(), [], "the deleted sandbox's container is gone");
      },
    );
  });
}
