/**
 * The leading controller replica dies (SIGKILL of its process) in the middle of a burst of creates
 * split over both replicas, and stays down until its Lease has expired: the fake kubelet restarts
 * it in the same Pod after a back-off, and the case kills every restart at once (a crash loop)
 * until the other replica holds the Lease — a restart within the Lease's duration would renew it
 * itself, since a replica's identity is its Pod's name. Afterwards:
 * - every create the surviving replica got is acknowledged (its fast path needs no leader);
 * - every acknowledged create exists as a Running Sandbox whose container runs; every
 *   unacknowledged one exists fully (Running) or not at all; once settled no Sandbox is left
 *   Pending or Bound (the new leader finishes or removes creates the dead one cut short);
 * - containerd holds exactly the sandboxes' containers, and the pool's status and both replicas'
 *   registries count exactly their slots;
 * - the other replica took the Lease and keeps it when the crashed one is back.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { ctr } from "../../../support/containerd.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "failover";
const SLOTS = 8;
/** Creates sent to the leader and to the follower, all at once (8 slots hold them all). */
const LEADER_CREATES = 5;
const FOLLOWER_CREATES = 3;
const SYSTEM_NAMESPACE = "fast-sandbox-system";
const CONTROLLER_SELECTOR = "app.kubernetes.io/component=controller";
const LEASE = "fast-sandbox-controller";
/** config/manager: the fast-path port of every controller replica. */
const FAST_PATH_PORT = 7070;
/**
 * A create cut short by the leader's death may be left Bound (its agent never got it) or Pending
 * (killed before it was bound); the new leader treats such a record as another replica's create in
 * flight for DEFAULT_FOREIGN_CREATE_GRACE_MS (120 s, kubernetes-control-plane.ts) before it finishes
 * or removes it. Settling may take that long, plus slack.
 */
const SETTLE_TIMEOUT_MS = 300_000;

interface ContainerStatus {
  name: string;
  restartCount: number;
  containerID?: string;
  state?: { running?: unknown };
}

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: ContainerStatus[] };
}

interface Replica {
  name: string;
  url: string;
  ready: boolean;
  /** The process group leader of its container (fsb-local://<pid>), 0 while it does not run. */
  pid: number;
  restartCount: number;
}

interface LeaseSpec {
  holderIdentity?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Outcome {
  name: string;
  replica: "leader" | "follower";
  acknowledged: boolean;
  error?: string;
}

/** The process groups of a Pod's containers: the fake kubelet gives their processes POD_NAME in the environment. */
function podProcessGroups(podName: string): number[] {
  const groups = new Set<number>();
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`POD_NAME=${podName}`)) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // After "pid (comm) ": state, ppid, pgrp.
      const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
      if (pgrp > 1) groups.add(pgrp);
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return [...groups];
}

/** SIGKILL to every process group of the Pod; how many there were. */
function killPod(podName: string): number {
  const groups = podProcessGroups(podName);
  for (const group of groups) {
    try {
      process.kill(-group, "SIGKILL");
    } catch {
      // exited meanwhile
    }
  }
  return groups.length;
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/** What a failure message needs: the Pods, this case's objects, the Lease, the tail of the controllers' and agents' logs. */
async function diagnostics(suite: KubernetesSuiteContext, namespace: string): Promise<string> {
  const parts = [(await suite.kubectl("get", "pods", "-A", "-o", "wide")).stdout];
  parts.push((await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io,sandboxpools.sandbox.fast.io", "-o", "yaml")).stdout);
  parts.push((await suite.kubectl("-n", SYSTEM_NAMESPACE, "get", "lease", LEASE, "-o", "yaml")).stdout);
  for (const [ns, selector, container] of [
    [SYSTEM_NAMESPACE, CONTROLLER_SELECTOR, "controller"],
    [namespace, "app.kubernetes.io/component=agent", "agent"],
  ] as const) {
    const pods = JSON.parse((await suite.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json")).stdout || '{"items":[]}') as { items: Pod[] };
    for (const pod of pods.items) parts.push(`--- ${pod.metadata.name}:\n${suite.podLog(ns, pod.metadata.name, container).split("\n").slice(-60).join("\n")}`);
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
  describe("leader failover during a burst of creates", () => {
    let namespace = "";
    const clients: FastSandboxClient[] = [];

    const listSandboxes = async (): Promise<Sandbox[]> =>
      (JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxes.sandbox.fast.io", "-o", "json")) as { items: Sandbox[] }).items;
    const getPool = async (): Promise<SandboxPool> =>
      JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpools.sandbox.fast.io", POOL, "-o", "json")) as SandboxPool;
    const replicas = async (): Promise<Replica[]> => {
      const pods = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "pods", "-l", CONTROLLER_SELECTOR, "-o", "json")) as { items: Pod[] };
      return pods.items
        .filter((pod) => !pod.metadata.deletionTimestamp)
        .map((pod) => {
          const status = pod.status?.containerStatuses?.find((c) => c.name === "controller");
          const pid = status?.state?.running ? Number(/^fsb-local:\/\/(\d+)$/.exec(status.containerID ?? "")?.[1] ?? 0) : 0;
          return {
            name: pod.metadata.name,
            url: `http://${pod.status?.podIP}:${FAST_PATH_PORT}`,
            ready: pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true,
            pid,
            restartCount: status?.restartCount ?? 0,
          };
        });
    };
    /** The Lease, its holder named by Pod (a replica's identity is `<Pod name>_<random per process>`). */
    const lease = async (): Promise<LeaseSpec> => {
      const { spec } = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "lease", LEASE, "-o", "json")) as { spec: LeaseSpec };
      return { ...spec, ...(spec.holderIdentity ? { holderIdentity: spec.holderIdentity.replace(/_[0-9a-f]+$/, "") } : {}) };
    };
    const sandboxContainers = (): string[] =>
      lines(ctr(suite.containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/namespace"==${namespace}`)).sort();
    const runningTasks = (): string[] =>
      lines(ctr(suite.containerdNamespace, "tasks", "ls"))
        .slice(1)
        .map((line) => line.split(/\s+/))
        .filter(([, , status]) => status === "RUNNING")
        .map(([id]) => id ?? "");

    before(async () => {
      namespace = await suite.createNamespace("failover");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await suite.eventually("the pool's two agents to be ready", async () => (await getPool()).status?.readyAgents === 2, { timeoutMs: 120_000 });
    });

    after(async () => {
      for (const client of clients) client.close();
      if (!namespace) return;
      // Sandboxes first, while their agents run (their cleanup needs them), then the rest.
      await suite.kubectl("-n", namespace, "delete", "sandboxes.sandbox.fast.io", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s");
    });

    spec(
      suite,
      () => namespace,
      "acknowledged creates run, the others exist fully or not at all, and the other replica leads",
      900_000,
      async () => {
        const leaseBefore = await lease();
        const all = await replicas();
        const leader = all.find((replica) => replica.name === leaseBefore.holderIdentity);
        const follower = all.find((replica) => replica.name !== leaseBefore.holderIdentity);
        assert.ok(leader && follower && leader.ready && follower.ready && leader.pid > 0, `a leader and a follower: ${JSON.stringify({ leaseBefore, all })}`);
        const leaderClient = new FastSandboxClient({ url: leader.url, token: suite.apiToken });
        const followerClient = new FastSandboxClient({ url: follower.url, token: suite.apiToken });
        clients.push(leaderClient, followerClient);

        // The leader dies right after it acknowledged its first create, while its other creates run.
        let killedAt = 0;
        const killLeader = () => {
          if (killedAt) return;
          killedAt = Date.now();
          process.kill(-leader.pid, "SIGKILL");
        };
        const create = async (replica: Outcome["replica"], name: string): Promise<Outcome> => {
          try {
            await (replica === "leader" ? leaderClient : followerClient).sandboxes.create({
              namespace,
              name,
              pool: POOL,
              image: BASE_IMAGE,
              command: ["sleep", "3600"],
              requestId: `${name}-request`,
            });
            if (replica === "leader") killLeader();
            return { name, replica, acknowledged: true };
          } catch (error) {
            return { name, replica, acknowledged: false, error: String(error) };
          }
        };
        const outcomes = await Promise.all([
          ...Array.from({ length: LEADER_CREATES }, (_, index) => create("leader", `to-leader-${index}`)),
          ...Array.from({ length: FOLLOWER_CREATES }, (_, index) => create("follower", `to-follower-${index}`)),
        ]);
        console.error(`burst outcomes: ${JSON.stringify(outcomes)}`);
        assert.ok(killedAt > 0, "the leader acknowledged a create and was killed");
        assert.ok(
          outcomes.some((outcome) => outcome.replica === "leader" && !outcome.acknowledged),
          "the leader died with creates of the burst unanswered",
        );
        const followerFailures = outcomes.filter((outcome) => outcome.replica === "follower" && !outcome.acknowledged);
        assert.deepEqual(followerFailures, [], "every create sent to the surviving replica is acknowledged");

        // The dead leader stays down (each restart killed at once) until the follower holds the Lease.
        let restartsKilled = 0;
        const taken = await suite.eventually(
          "the other replica to take the Lease",
          async () => {
            restartsKilled += killPod(leader.name);
            const now = await lease();
            return now.holderIdentity === follower.name ? now : undefined;
          },
          { timeoutMs: 120_000, intervalMs: 100 },
        );
        console.error(
          `the follower took the Lease ${Math.round((Date.now() - killedAt) / 1000)} s after the kill; restarts killed meanwhile: ${restartsKilled}`,
        );
        assert.equal(taken.leaseTransitions, (leaseBefore.leaseTransitions ?? 0) + 1, "one transition: from the dead leader to the follower");

        await suite.eventually(
          "the crashed replica restarted by the kubelet and Ready",
          async () => {
            const now = (await replicas()).find((replica) => replica.name === leader.name);
            return now && now.ready && now.restartCount > leader.restartCount && now.pid !== leader.pid;
          },
          { timeoutMs: 180_000, intervalMs: 500 },
        );

        const acknowledged = outcomes.filter((outcome) => outcome.acknowledged).map((outcome) => outcome.name);
        const burstNames = new Set(outcomes.map((outcome) => outcome.name));
        const settleFrom = Date.now();
        const settled = await suite.eventually(
          "every sandbox Running, the acknowledged ones among them",
          async () => {
            const sandboxes = await listSandboxes();
            const names = new Set(sandboxes.map((s) => s.metadata.name));
            return sandboxes.every((s) => s.status?.phase === "Running") && acknowledged.every((name) => names.has(name)) ? sandboxes : undefined;
          },
          { timeoutMs: SETTLE_TIMEOUT_MS, intervalMs: 1000 },
        );
        console.error(
          `settled ${Math.round((Date.now() - settleFrom) / 1000)} s after the crashed replica was Ready; sandboxes: ${settled.map((s) => s.metadata.name).join(", ")}`,
        );
        assert.ok(
          settled.every((sandbox) => burstNames.has(sandbox.metadata.name)),
          "no sandbox but the burst's",
        );
        for (const sandbox of settled) assert.equal(sandbox.metadata.deletionTimestamp, undefined, `${sandbox.metadata.name} is not being deleted`);

        const ids = settled.map((s) => s.status?.sandboxID ?? "").sort();
        await suite.eventually("containerd to hold exactly the sandboxes' containers", () => JSON.stringify(sandboxContainers()) === JSON.stringify(ids), {
          timeoutMs: 60_000,
        });
        assert.ok(
          ids.every((id) => runningTasks().includes(id)),
          "their tasks run",
        );
        for (const sandbox of settled) {
          const result = await followerClient.sandboxes.exec(sandbox.metadata.name, ["true"], { namespace });
          assert.equal(result.exitCode, 0, `exec in ${sandbox.metadata.name}`);
        }
        await suite.eventually("the pool's status to count exactly the sandboxes' slots", async () => {
          const status = (await getPool()).status;
          return status?.sandboxes === settled.length && status.freeSlots === SLOTS - settled.length;
        });
        await suite.eventually("both replicas' registries to count exactly the sandboxes' slots", async () => {
          const counts = await Promise.all(
            [leaderClient, followerClient].map(async (client) =>
              (await client.pools.agents({ namespace, pool: POOL })).reduce((sum, agent) => sum + agent.allocated, 0),
            ),
          );
          return counts.every((count) => count === settled.length);
        });

        const now = await lease();
        assert.equal(now.holderIdentity, follower.name, "the replica that came back did not take the Lease back");
        assert.ok(Date.parse(now.renewTime ?? "") > Date.parse(taken.renewTime ?? ""), "the new leader renews the Lease");

        for (const sandbox of settled) await followerClient.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
