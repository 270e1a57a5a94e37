/**
 * Both controller replicas crash at once (SIGKILL of their processes; the fake kubelet restarts them
 * in the same Pods) while sandboxes run: the sandboxes keep running untouched (same sandboxID, same
 * agent, their state intact, exec through either replica), a restarted replica leads again (the
 * Lease is held and renewed), the pool's status and every replica's registry count the slots
 * right, containerd runs exactly the sandboxes' containers, a new create works, and a burst split
 * over both replicas gets exactly the slots left — no double allocation after the restart.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition, Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient, NoCapacityError } from "@fast-sandbox/sdk";
import { ctr } from "../../../support/containerd.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "crash";
const SLOTS = 6;
const SYSTEM_NAMESPACE = "fast-sandbox-system";
const CONTROLLER_SELECTOR = "app.kubernetes.io/component=controller";
const LEASE = "fast-sandbox-controller";
/** config/manager: the fast-path port of every controller replica. */
const FAST_PATH_PORT = 7070;

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
  parts.push((await suite.kubectl("-n", SYSTEM_NAMESPACE, "get", "lease", LEASE, "-o", "yaml")).stdout);
  for (const [ns, selector, container] of [
    [SYSTEM_NAMESPACE, CONTROLLER_SELECTOR, "controller"],
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
  describe("controller crash recovery", () => {
    let namespace = "";
    /** The sandboxes that run through the crash. */
    let survivors: Sandbox[] = [];
    let clients: FastSandboxClient[] = [];

    const getSandbox = async (name: string): Promise<Sandbox | undefined> => {
      const result = await suite.kubectl("-n", namespace, "get", "sandboxes.sandbox.fast.io", name, "-o", "json");
      if (result.code !== 0 && /NotFound/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    };
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
    const lease = async (): Promise<{ holderIdentity?: string; renewTime?: string }> => {
      const { spec } = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "lease", LEASE, "-o", "json")) as {
        spec: { holderIdentity?: string; renewTime?: string };
      };
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
    /** The slots the pool's agents hold, as each replica's registry sees them (its fast path). */
    const slotsPerReplica = (): Promise<number[]> =>
      Promise.all(clients.map(async (client) => (await client.pools.agents({ namespace, pool: POOL })).reduce((sum, agent) => sum + agent.allocated, 0)));
    /** A client per Ready replica (new connections: the old ones died with the processes). */
    const connectToReplicas = async (): Promise<void> => {
      for (const client of clients) client.close();
      const ready = (await replicas()).filter((replica) => replica.ready);
      assert.equal(ready.length, 2, "two Ready controller replicas");
      clients = ready.map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken }));
    };

    before(async () => {
      namespace = await suite.createNamespace("crash");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await suite.eventually("the pool's two agents to be ready", async () => (await getPool()).status?.readyAgents === 2, { timeoutMs: 120_000 });
      await connectToReplicas();
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
      "running sandboxes are untouched when both controller replicas are killed and restarted",
      600_000,
      async () => {
        for (const name of ["before-0", "before-1", "before-2"]) {
          const created = await clients[0]!.sandboxes.create({ namespace, name, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] });
          await clients[0]!.sandboxes.exec(name, ["sh", "-c", `echo ${name} > /tmp/marker`], { namespace });
          survivors.push(created);
        }
        await suite.eventually("the sandboxes Running in their objects and counted by the pool", async () => {
          const all = await listSandboxes();
          return all.length === 3 && all.every((s) => s.status?.phase === "Running") && (await getPool()).status?.sandboxes === 3;
        });
        survivors = (await listSandboxes()).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));

        const crashed = await replicas();
        assert.equal(crashed.length, 2);
        assert.ok(crashed.every((replica) => replica.pid > 0));
        const killedAt = Date.now();
        for (const replica of crashed) process.kill(-replica.pid, "SIGKILL");

        await suite.eventually(
          "both replicas restarted by the kubelet and Ready",
          async () => {
            const now = await replicas();
            return crashed.every((old) => {
              const replica = now.find((r) => r.name === old.name);
              return replica && replica.ready && replica.restartCount > old.restartCount && replica.pid > 0 && replica.pid !== old.pid;
            });
          },
          { timeoutMs: 180_000, intervalMs: 500 },
        );
        const held = await suite.eventually(
          "a restarted replica to hold and renew the Lease",
          async () => {
            const spec = await lease();
            return crashed.some((replica) => replica.name === spec.holderIdentity) && Date.parse(spec.renewTime ?? "") > killedAt ? spec : undefined;
          },
          { timeoutMs: 120_000 },
        );
        assert.ok(held.holderIdentity);
        await connectToReplicas();

        await suite.eventually("the pool's status to count the same three sandboxes", async () => {
          const status = (await getPool()).status;
          return status?.sandboxes === 3 && status.freeSlots === SLOTS - 3 && status.readyAgents === 2;
        });
        const perReplica = await suite.eventually("both replicas' registries to count three slots", async () => {
          const slots = await slotsPerReplica();
          return slots.every((count) => count === 3) ? slots : undefined;
        });
        assert.deepEqual(perReplica, [3, 3]);
        for (const original of survivors) {
          const now = await getSandbox(original.metadata.name);
          assert.equal(now?.status?.phase, "Running", `${original.metadata.name} runs`);
          assert.equal(now.status.sandboxID, original.status?.sandboxID, "same instance");
          assert.equal(now.status.assignedPod, original.status?.assignedPod, "same agent");
          assert.equal(now.status.recreations, undefined);
          assert.equal(condition(now, "Ready")?.status, "True");
          for (const client of clients) {
            const marker = await client.sandboxes.exec(original.metadata.name, ["cat", "/tmp/marker"], { namespace });
            assert.equal(marker.stdout, `${original.metadata.name}\n`, "exec through each replica reaches the same process tree");
          }
        }
        const ids = survivors.map((s) => s.status?.sandboxID ?? "").sort();
        assert.deepEqual(sandboxContainers(), ids, "containerd holds exactly the sandboxes' containers");
        assert.ok(
          ids.every((id) => runningTasks().includes(id)),
          "their tasks run",
        );
      },
    );

    spec(
      suite,
      () => namespace,
      "after the restart a create works, and a burst over both replicas gets exactly the slots left",
      600_000,
      async () => {
        assert.equal(survivors.length, 3, "the first test ran");
        const created = await clients[1]!.sandboxes.create({ namespace, name: "after-0", pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] });
        assert.equal(created.status?.phase, "Running");
        const free = SLOTS - 4;

        const burst = await Promise.allSettled(
          Array.from({ length: free + 2 }, (_, index) =>
            clients[index % clients.length]!.sandboxes.create({ namespace, name: `burst-${index}`, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] }),
          ),
        );
        const succeeded = burst.flatMap((result) => (result.status === "fulfilled" ? [result.value.metadata.name] : []));
        const refused = burst.flatMap((result) => (result.status === "rejected" ? [result.reason as unknown] : []));
        assert.equal(succeeded.length, free, `exactly the ${free} free slots are taken: ${JSON.stringify(succeeded)}`);
        for (const error of refused) assert.ok(error instanceof NoCapacityError, `a refused create says no capacity: ${String(error)}`);

        const expected = [...survivors.map((s) => s.metadata.name), "after-0", ...succeeded].sort();
        const settled = await suite.eventually("exactly the acknowledged sandboxes, all Running", async () => {
          const all = await listSandboxes();
          const names = all.map((s) => s.metadata.name).sort();
          return JSON.stringify(names) === JSON.stringify(expected) && all.every((s) => s.status?.phase === "Running") ? all : undefined;
        });
        await suite.eventually("the pool's status to count every slot taken", async () => {
          const status = (await getPool()).status;
          return status?.sandboxes === SLOTS && status.freeSlots === 0;
        });
        const ids = settled.map((s) => s.status?.sandboxID ?? "").sort();
        assert.deepEqual(sandboxContainers(), ids, "containerd holds exactly the sandboxes' containers: one each, none for a refused create");
        assert.ok(
          ids.every((id) => runningTasks().includes(id)),
          "their tasks run",
        );

        for (const sandbox of settled) await clients[0]!.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
