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
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition, Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { ctr } from "../../../support/containerd.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "manual";
const RECOVERY_TIMEOUT_SECONDS = 5;

interface ContainerStatus {
  name: string;
  restartCount: number;
  containerID?: string;
  state?: { running?: unknown };
}

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status?: { conditions?: { type: string; status: string }[]; containerStatuses?: ContainerStatus[] };
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

/** The state letter of a process (`T` stopped), or undefined when it does not exist. */
function processState(pid: number): string | undefined {
  try {
    return /^\d+ \(.*\) (\S)/s.exec(readFileSync(`/proc/${pid}/stat`, "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

/** Signals a Pod container's process group (the fake kubelet starts each container as a group leader); false when it is gone. */
function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
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
  describe("failurePolicy Manual marks a sandbox Lost when its agent stays away", () => {
    let namespace = "";
    let client: FastSandboxClient;
    /** The frozen agent's process group, thawed at the latest in `after`. */
    let frozenPid = 0;

    const getSandbox = async (name: string): Promise<Sandbox | undefined> => {
      const result = await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io", name, "-o", "json");
      if (result.code !== 0 && /NotFound/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    };
    const getPool = async (): Promise<SandboxPool> =>
      JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpools.sandbox.fast.io", POOL, "-o", "json")) as SandboxPool;
    const agentContainer = async (pod: string): Promise<{ pid: number; restartCount: number }> => {
      const json = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pod", pod, "-o", "json")) as Pod;
      const status = json.status?.containerStatuses?.find((c) => c.name === "agent");
      // The fake kubelet's container id is fsb-local://<pid of the container's process group leader>.
      const pid = Number(/^fsb-local:\/\/(\d+)$/.exec(status?.containerID ?? "")?.[1]);
      assert.ok(status?.state?.running && pid > 0, `agent container of ${pod} runs: ${JSON.stringify(status)}`);
      return { pid, restartCount: status.restartCount };
    };
    const sandboxContainers = (): string[] =>
      lines(ctr(suite.containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/namespace"==${namespace}`));

    before(async () => {
      namespace = await suite.createNamespace("manual-lost");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await suite.eventually("the pool's two agents to be ready", async () => (await getPool()).status?.readyAgents === 2, { timeoutMs: 120_000 });
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      if (frozenPid) signalGroup(frozenPid, "SIGCONT");
      client?.close();
      if (!namespace) return;
      // Sandboxes first, while their agents run (their cleanup needs them), then the rest.
      await suite.kubectl("-n", namespace, "delete", "sandboxes.sandbox.fast.io", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s");
    });

    spec(
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
        await suite.eventually("the pool's status to count the three sandboxes", async () => (await getPool()).status?.sandboxes === 3);
        await client.sandboxes.exec(kept.metadata.name, ["sh", "-c", "echo still-me > /tmp/marker"], { namespace });

        // The agent stays away: frozen, it answers neither heartbeats nor probes (the liveness probe
        // restarts it only after 3 × 10 s).
        const frozen = await agentContainer(awayAgent);
        frozenPid = frozen.pid;
        assert.ok(signalGroup(frozenPid, "SIGSTOP"), "the agent's process group is stopped");

        const disconnected = await suite.eventually(
          "AgentConnected=False on both sandboxes of the frozen agent",
          async () => {
            const both = await Promise.all([getSandbox(kept.metadata.name), getSandbox(doomed.metadata.name)]);
            return both.every((sandbox) => condition(sandbox, "AgentConnected")?.status === "False") ? both : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 100 },
        );
        for (const sandbox of disconnected) {
          assert.equal(condition(sandbox, "AgentConnected")?.reason, "AgentNotResponding");
          assert.match(condition(sandbox, "AgentConnected")?.message ?? "", /failurePolicy Manual acts after 5s/);
        }

        const lost = await suite.eventually(
          "both sandboxes of the frozen agent Lost",
          async () => {
            const both = await Promise.all([getSandbox(kept.metadata.name), getSandbox(doomed.metadata.name)]);
            return both.every((sandbox) => sandbox?.status?.phase === "Lost") ? both : undefined;
          },
          { timeoutMs: 60_000 },
        );
        for (const [sandbox, original] of [
          [lost[0], kept],
          [lost[1], doomed],
        ] as const) {
          const ready = condition(sandbox, "Ready");
          assert.deepEqual([ready?.status, ready?.reason], ["False", "AgentLost"]);
          assert.match(ready?.message ?? "", /failurePolicy Manual/);
          assert.equal(sandbox?.status?.sandboxID, original.status?.sandboxID, "Manual keeps the instance");
          assert.equal(sandbox?.status?.assignedPod, awayAgent, "Manual does not move it to the healthy agent");
          assert.equal(sandbox?.status?.recreations, undefined);
        }
        const lostAt = Date.parse(condition(lost[0], "Ready")?.lastTransitionTime ?? "");
        const awayAt = Date.parse(condition(disconnected[0], "AgentConnected")?.lastTransitionTime ?? "");
        assert.ok(lostAt - awayAt >= (RECOVERY_TIMEOUT_SECONDS - 1) * 1000, `Lost ${lostAt - awayAt} ms after the agent stopped answering`);
        await suite.eventually("the pool's status to count only the sandbox of the healthy agent", async () => (await getPool()).status?.sandboxes === 1);
        assert.equal((await getSandbox(steady.metadata.name))?.status?.phase, "Running", "the healthy agent's sandbox is untouched");
        assert.equal((await client.sandboxes.exec(steady.metadata.name, ["true"], { namespace })).exitCode, 0);

        // Deletable while the agent is away: the object goes; its container is removed later.
        await suite.kubectlOk("-n", namespace, "delete", "sandboxes.sandbox.fast.io", doomed.metadata.name, "--wait=false");
        await suite.eventually("the Lost sandbox's object to be gone", async () => (await getSandbox(doomed.metadata.name)) === undefined, {
          timeoutMs: 60_000,
        });
        assert.equal(processState(frozenPid), "T", "the agent was still frozen when the object went");
        assert.equal((await agentContainer(awayAgent)).restartCount, frozen.restartCount, "the agent was not restarted meanwhile");

        // The agent answers again and still runs the Lost sandbox: Running again, same instance.
        signalGroup(frozenPid, "SIGCONT");
        frozenPid = 0;
        const back = await suite.eventually(
          "the Lost sandbox Running again",
          async () => {
            const sandbox = await getSandbox(kept.metadata.name);
            return sandbox?.status?.phase === "Running" ? sandbox : undefined;
          },
          { timeoutMs: 90_000 },
        );
        assert.equal(back.status?.sandboxID, kept.status?.sandboxID);
        assert.equal(back.status?.assignedPod, awayAgent);
        assert.equal(back.status?.recreations, undefined);
        assert.equal(condition(back, "Ready")?.status, "True");
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
          const status = (await getPool()).status;
          return status?.sandboxes === 2 && status.freeSlots === 2 && status.readyAgents === 2;
        });

        for (const sandbox of [kept, steady]) await client.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
