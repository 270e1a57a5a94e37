/**
 * A pool grows with demand, through the deployed controller: a pool that starts with no agent
 * (pool.yaml here: poolMin 0, poolMax 3, 2 slots per agent) gets its first agent Pod when the first
 * create arrives; that create waits — its Sandbox `Pending` with `Scheduled=False` reason
 * `WaitingForCapacity` — and succeeds once the agent is ready. Creates beyond the free slots (sent
 * to both controller replicas) make the pool start more agent Pods (`status.readyAgents` rises) and
 * succeed as those become ready; at poolMax × slots a create is refused at once with a message
 * naming poolMax, and no more than poolMax agent Pods were ever created. What the Sandboxes and the
 * agent Pods went through is read from watches that start before the first create. The first
 * create goes to the follower replica, whose waiting create only the leader's pool controller can
 * serve; in the end containerd holds exactly the Sandboxes' containers.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { SandboxPoolStatus } from "@fast-sandbox/api";
import { FastSandboxClient, NoCapacityError, type Sandbox } from "@fast-sandbox/sdk";
import { namespaceContainers } from "../../../support/containerd-contents.js";
import {
  POOL_LABEL,
  agentPods,
  allocatedSlots,
  listSandboxes,
  poolStatus,
  removePool,
  sandboxCondition,
  waitForLeaseHolder,
  waitForReadyControllers,
  watch,
  type Watch,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext, type PodJson } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "grows";
const POOL_MAX = 3;
const SLOTS = 2;

/** Whether a Sandbox's state was Pending with Scheduled=False, reason WaitingForCapacity. */
function waitingForCapacity(sandbox: Sandbox): boolean {
  const scheduled = sandboxCondition(sandbox, "Scheduled");
  return sandbox.status?.phase === "Pending" && scheduled?.status === "False" && scheduled.reason === "WaitingForCapacity";
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("pool scales up on demand", () => {
    let namespace = "";
    /** One client per controller replica. */
    let replicas: FastSandboxClient[] = [];
    let sandboxWatch: Watch<Sandbox> | undefined;
    let podWatch: Watch<PodJson> | undefined;

    const create = (replica: number, name: string) =>
      replicas[replica]!.sandboxes.create({ namespace, name, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] });
    /** The states the watch saw of a sandbox, in order. */
    const statesOf = (name: string): Sandbox[] =>
      (sandboxWatch?.events ?? []).filter((event) => event.object.metadata.name === name).map((event) => event.object);

    /** Each Sandbox object has its container in containerd, and no other container of the namespace's sandboxes exists. */
    const containersMatchSandboxes = async (count: number): Promise<void> => {
      const objects = await listSandboxes(suite, namespace);
      assert.equal(objects.length, count);
      assert.ok(
        objects.every((object) => object.status?.phase === "Running"),
        "every Sandbox is Running",
      );
      const containers = namespaceContainers(suite.containerdNamespace, namespace);
      assert.deepEqual(containers, objects.map((object) => object.status?.sandboxID ?? "").sort(), "containerd holds exactly the Sandboxes' containers");
    };

    /** `count` ready agent Pods, and the pool's status says so, with `expected` (the status is rewritten every few seconds). */
    const readyAgents = async (count: number, expected: SandboxPoolStatus): Promise<PodJson[]> =>
      suite.eventually(
        `${count} ready agent Pods and the pool's status ${JSON.stringify({ agents: count, readyAgents: count, ...expected })}`,
        async () => {
          const [status, found] = [await poolStatus(suite, namespace, POOL), await agentPods(suite, namespace, POOL)];
          const wanted: SandboxPoolStatus = { agents: count, readyAgents: count, ...expected };
          const same = (Object.keys(wanted) as (keyof SandboxPoolStatus)[]).every((field) => status[field] === wanted[field]);
          return same && found.length === count && found.every(isPodReady) ? found : undefined;
        },
        { timeoutMs: 120_000 },
      );

    before(
      async () => {
        namespace = await suite.createNamespace("pool-scale-up");
        const controllers = await waitForReadyControllers(suite);
        // The follower first: its creates wait for capacity that only the leader's pool controller starts.
        const leader = await waitForLeaseHolder(suite);
        controllers.sort((a, b) => Number(a.name === leader) - Number(b.name === leader));
        assert.equal(controllers[1]!.name, leader, `the Lease holder ${leader} is one of the replicas`);
        replicas = controllers.map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken }));
        podWatch = await watch<PodJson>(suite, `/api/v1/namespaces/${namespace}/pods`, { labelSelector: `${POOL_LABEL}=${POOL}` });
        sandboxWatch = await watch<Sandbox>(suite, `/apis/sandbox.fast.io/v1alpha1/namespaces/${namespace}/sandboxes`);
        await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
        // Both replicas know the pool (a create names it) before the first create.
        for (const [index, client] of replicas.entries()) {
          await suite.eventually(
            `controller replica ${index} to know the pool`,
            async () => (await client.pools.get(POOL, { namespace })).metadata.name === POOL,
          );
        }
      },
      { timeout: 120_000 },
    );

    after(
      async () => {
        sandboxWatch?.stop();
        podWatch?.stop();
        if (namespace) await removePool(suite, namespace, POOL);
        for (const client of replicas) client.close();
      },
      { timeout: 300_000 },
    );

    it("has no agent while nothing asks for one (poolMin 0)", { timeout: 60_000 }, async () => {
      const status = await suite.eventually("the pool's first status", async () => {
        const current = await poolStatus(suite, namespace, POOL);
        return current.desiredAgents !== undefined ? current : undefined;
      });
      assert.deepEqual(
        { agents: status.agents, readyAgents: status.readyAgents, sandboxes: status.sandboxes, desiredAgents: status.desiredAgents },
        { agents: 0, readyAgents: 0, sandboxes: 0, desiredAgents: 0 },
      );
      assert.deepEqual(await agentPods(suite, namespace, POOL), []);
    });

    it("starts an agent for the first create, which waits as Pending/WaitingForCapacity and then runs on it", { timeout: 240_000 }, async () => {
      const first = await create(0, "s-1");
      assert.equal(first.status?.phase, "Running");
      const [agent] = await readyAgents(1, { sandboxes: 1, freeSlots: 1, desiredAgents: 1 });
      assert.equal(first.status?.assignedPod, agent!.metadata.name);
      const states = statesOf("s-1");
      const waited = states.findIndex(waitingForCapacity);
      assert.ok(
        waited >= 0,
        `s-1 was Pending with Scheduled=False/WaitingForCapacity while the agent started; it went through ${JSON.stringify(states.map((s) => s.status))}`,
      );
      assert.ok(
        states.slice(waited).some((state) => state.status?.phase === "Running"),
        "and Running after that",
      );
      const scheduled = (
        await suite.kubectlOk("-n", namespace, "get", "sandbox", "s-1", "-o", `jsonpath={.status.conditions[?(@.type=="Scheduled")].status}`)
      ).trim();
      assert.equal(scheduled, "True", "Scheduled once placed");
    });

    it("grows the pool for creates beyond the free slots, through both replicas, and runs them as agents become ready", { timeout: 300_000 }, async () => {
      // The free slot of the first agent.
      const second = await create(1, "s-2");
      const [agent] = await agentPods(suite, namespace, POOL);
      assert.equal(second.status?.assignedPod, agent!.metadata.name);
      // The pool is full now: three more need two more agents (ceil(5 / 2) = 3).
      const more = await Promise.all([create(0, "s-3"), create(1, "s-4"), create(0, "s-5")]);
      const agents = await readyAgents(POOL_MAX, { sandboxes: 5, freeSlots: 1, desiredAgents: 3 });
      const names = new Set(agents.map((pod) => pod.metadata.name));
      for (const sandbox of more) {
        assert.equal(sandbox.status?.phase, "Running");
        assert.ok(names.has(sandbox.status?.assignedPod ?? ""), `${sandbox.metadata.name} runs on an agent of the pool`);
        assert.ok(statesOf(sandbox.metadata.name).some(waitingForCapacity), `${sandbox.metadata.name} waited for capacity (no slot was free)`);
      }
      const perAgent = new Map<string, number>();
      for (const sandbox of [second, ...more]) perAgent.set(sandbox.status!.assignedPod!, (perAgent.get(sandbox.status!.assignedPod!) ?? 0) + 1);
      for (const [name, count] of perAgent) assert.ok(count <= SLOTS, `${name} holds ${count} sandboxes, at most ${SLOTS}`);
      await containersMatchSandboxes(5);
    });

    it("never exceeds poolMax: at poolMax × slots a create is refused at once, naming poolMax", { timeout: 120_000 }, async () => {
      // The last free slot.
      await create(0, "s-6");
      await assert.rejects(create(0, "s-7"), (error: Error) => {
        assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${error.name}: ${error.message}`);
        assert.match(error.message, /poolMax of 3/);
        return true;
      });
      // The other replica too, once it has seen the last placement.
      await suite.eventually("controller replica 1 to see every slot taken", async () => {
        return (await allocatedSlots(replicas[1]!, namespace, POOL)) === POOL_MAX * SLOTS;
      });
      await assert.rejects(create(1, "s-8"), (error: Error) => {
        assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${error.name}: ${error.message}`);
        assert.match(error.message, /poolMax of 3/);
        return true;
      });
      for (const name of ["s-7", "s-8"]) {
        assert.notEqual((await suite.kubectl("-n", namespace, "get", "sandbox", name)).code, 0, `the refused ${name} left no Sandbox object`);
        assert.ok(!statesOf(name).some(waitingForCapacity), `${name} did not wait: the pool cannot grow`);
      }
      await readyAgents(POOL_MAX, { sandboxes: 6, freeSlots: 0, desiredAgents: 3 });
      const created = new Set((podWatch?.events ?? []).filter((event) => event.type === "ADDED").map((event) => event.object.metadata.name));
      assert.equal(created.size, POOL_MAX, `agent Pods ever created: ${[...created].join(", ")}`);
      await containersMatchSandboxes(6);
    });
  });
}
