/**
 * failurePolicy Manual when a sandbox's agent stays away longer than recoveryTimeoutSeconds (its
 * process frozen with SIGSTOP: it exists, but answers neither heartbeats nor probes): the sandbox
 * shows AgentConnected=False, then becomes Lost with Ready=False reason AgentLost — same instance,
 * same agent, not moved to the healthy agent that has a free slot — and its slot is released
 * (the pool's status.sandboxes). A Lost sandbox can be deleted while its agent is still away. When
 * the agent answers again (SIGCONT), the Lost sandbox it still runs is Running again, with its state
 * intact, and the deleted one's container is removed. Asserted through the Sandbox and SandboxPool
 * objects, the fast path and containerd. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import type { Sandbox } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { namespaceContainers } from "../../../support/containerd-contents.js";
import {
  deleteCaseNamespace,
  getPool,
  getSandbox,
  itWithDiagnostics,
  sandboxCondition,
  waitForPhase,
  waitForReadyAgents,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, type KubernetesSuiteContext, type PodJson } from "../../../support/kubernetes-suite.js";
import { containerPid, processState, signalProcessGroup } from "../../../support/pod-processes.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "manual";
const RECOVERY_TIMEOUT_SECONDS = 5;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("failurePolicy Manual marks a sandbox Lost when its agent stays away", () => {
    let namespace = "";
    let client: FastSandboxClient;
    /** The frozen agent's process group, thawed at the latest in `after`. */
    let frozenPid = 0;

    const agentContainer = async (pod: string): Promise<{ pid: number; restartCount: number }> => {
      const json = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pod", pod, "-o", "json")) as PodJson;
      const status = json.status?.containerStatuses?.find((c) => c.name === "agent");
      const pid = containerPid(status);
      assert.ok(status && pid > 0, `agent container of ${pod} runs: ${JSON.stringify(status)}`);
      return { pid, restartCount: status.restartCount };
    };
    const sandboxContainers = (): string[] => namespaceContainers(suite.containerdNamespace, namespace);

    before(async () => {
      namespace = await suite.createNamespace("manual-lost");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await waitForReadyAgents(suite, namespace, POOL, 2);
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      if (frozenPid) signalProcessGroup(frozenPid, "SIGCONT");
      client?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
      suite,
      () => namespace,
      "Lost after the timeout, slot released, not moved; deletable while away; Running again when the agent returns",
      600_000,
      async () => {
        const created: Sandbox[] = [];
        for (const name of ["manual-0", "manual-1", "manual-2"]) {
          created.push(
            await client.sandboxes.create({
              namespace,
              name,
              pool: POOL,
              image: BASE_IMAGE,
              command: ["sleep", "3600"],
              failurePolicy: "Manual",
              recoveryTimeoutSeconds: RECOVERY_TIMEOUT_SECONDS,
            }),
          );
        }
        // Three sandboxes on two agents of two slots: one agent holds two of them.
        const byAgent = new Map<string, Sandbox[]>();
        for (const sandbox of created) byAgent.set(sandbox.status?.assignedPod ?? "", [...(byAgent.get(sandbox.status?.assignedPod ?? "") ?? []), sandbox]);
        const [awayAgent, [kept, doomed] = []] = [...byAgent].find(([, held]) => held.length === 2) ?? [];
        const [healthyAgent, [steady] = []] = [...byAgent].find(([, held]) => held.length === 1) ?? [];
        assert.ok(awayAgent && kept && doomed && healthyAgent && steady, `placement: ${JSON.stringify([...byAgent.keys()])}`);
        await suite.eventually("the pool's status to count the three sandboxes", async () => (await getPool(suite, namespace, POOL)).status?.sandboxes === 3);
        await client.sandboxes.exec(kept.metadata.name, ["sh", "-c", "echo still-me > /tmp/marker"], { namespace });

        // The agent stays away: frozen, it answers neither heartbeats nor probes (this pool's liveness
        // probe restarts it only after 30 × 10 s, pool.yaml).
        const frozen = await agentContainer(awayAgent);
        frozenPid = frozen.pid;
        assert.ok(signalProcessGroup(frozenPid, "SIGSTOP"), "the agent's process group is stopped");

        const disconnected = await suite.eventually(
          "AgentConnected=False on both sandboxes of the frozen agent",
          async () => {
            const both = await Promise.all([getSandbox(suite, namespace, kept.metadata.name), getSandbox(suite, namespace, doomed.metadata.name)]);
            return both.every((sandbox) => sandboxCondition(sandbox, "AgentConnected")?.status === "False") ? both : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 100 },
        );
        for (const sandbox of disconnected) {
          assert.equal(sandboxCondition(sandbox, "AgentConnected")?.reason, "AgentNotResponding");
          assert.match(sandboxCondition(sandbox, "AgentConnected")?.message ?? "", /failurePolicy Manual acts after 5s/);
        }

        const lost = await suite.eventually(
          "both sandboxes of the frozen agent Lost",
          async () => {
            const both = await Promise.all([getSandbox(suite, namespace, kept.metadata.name), getSandbox(suite, namespace, doomed.metadata.name)]);
            return both.every((sandbox) => sandbox?.status?.phase === "Lost") ? both : undefined;
          },
          { timeoutMs: 60_000 },
        );
        for (const [sandbox, original] of [
          [lost[0], kept],
          [lost[1], doomed],
        ] as const) {
          const ready = sandboxCondition(sandbox, "Ready");
          assert.deepEqual([ready?.status, ready?.reason], ["False", "AgentLost"]);
          assert.match(ready?.message ?? "", /failurePolicy Manual/);
          assert.equal(sandbox?.status?.sandboxID, original.status?.sandboxID, "Manual keeps the instance");
          assert.equal(sandbox?.status?.assignedPod, awayAgent, "Manual does not move it to the healthy agent");
          assert.equal(sandbox?.status?.recreations, undefined);
        }
        const lostAt = Date.parse(sandboxCondition(lost[0], "Ready")?.lastTransitionTime ?? "");
        const awayAt = Date.parse(sandboxCondition(disconnected[0], "AgentConnected")?.lastTransitionTime ?? "");
        assert.ok(lostAt - awayAt >= (RECOVERY_TIMEOUT_SECONDS - 1) * 1000, `Lost ${lostAt - awayAt} ms after the agent stopped answering`);
        await suite.eventually(
          "the pool's status to count only the sandbox of the healthy agent",
          async () => (await getPool(suite, namespace, POOL)).status?.sandboxes === 1,
        );
        assert.equal((await getSandbox(suite, namespace, steady.metadata.name))?.status?.phase, "Running", "the healthy agent's sandbox is untouched");
        assert.equal((await client.sandboxes.exec(steady.metadata.name, ["true"], { namespace })).exitCode, 0);

        // Deletable while the agent is away: the object goes; its container is removed later.
        await suite.kubectlOk("-n", namespace, "delete", "sandboxes.sandbox.fast.io", doomed.metadata.name, "--wait=false");
        await suite.eventually("the Lost sandbox's object to be gone", async () => (await getSandbox(suite, namespace, doomed.metadata.name)) === undefined, {
          timeoutMs: 60_000,
        });
        assert.equal(processState(frozenPid), "T", "the agent was still frozen when the object went");
        assert.equal((await agentContainer(awayAgent)).restartCount, frozen.restartCount, "the agent was not restarted meanwhile");

        // The agent answers again and still runs the Lost sandbox: Running again, same instance.
        signalProcessGroup(frozenPid, "SIGCONT");
        frozenPid = 0;
        const back = await waitForPhase(suite, namespace, kept.metadata.name, "Running", { timeoutMs: 90_000 });
        assert.equal(back.status?.sandboxID, kept.status?.sandboxID);
        assert.equal(back.status?.assignedPod, awayAgent);
        assert.equal(back.status?.recreations, undefined);
        assert.equal(sandboxCondition(back, "Ready")?.status, "True");
        // The replica behind `client` may take a heartbeat longer than the leader to see the agent back.
        const marker = await suite.eventually("exec on the returned sandbox", () =>
          client.sandboxes.exec(kept.metadata.name, ["cat", "/tmp/marker"], { namespace }),
        );
        assert.equal(marker.stdout, "still-me\n", "the same instance, its state intact");
        await suite.eventually(
          "the deleted sandbox's container removed (by its returning agent, or the janitor: its record is gone)",
          () => !sandboxContainers().includes(doomed.status?.sandboxID ?? "?"),
          {
            timeoutMs: 60_000,
          },
        );
        assert.deepEqual(sandboxContainers().sort(), [kept.status?.sandboxID, steady.status?.sandboxID].sort());
        await suite.eventually("the pool's status to count the two sandboxes", async () => {
          const status = (await getPool(suite, namespace, POOL)).status;
          return status?.sandboxes === 2 && status.freeSlots === 2 && status.readyAgents === 2;
        });

        for (const sandbox of [kept, steady]) await client.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
