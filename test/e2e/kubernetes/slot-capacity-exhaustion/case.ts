/**
 * Admission across controller replicas: a pool of one agent with 3 slots (pool.yaml here:
 * poolMin = poolMax = 1, maxSandboxesPerPod 3) gets a burst of 12 concurrent creates through the
 * fast path, split over BOTH controller replicas (each Pod's IP:7070, each with its own in-memory
 * registry that believes the 3 slots are its own to fill). The agent admits atomically, so exactly
 * 3 creates succeed and the other 9 fail with the SDK's NoCapacityError (code `no_capacity`);
 * exactly those 3 Sandbox objects exist, Running on the agent; containerd runs exactly their 3
 * containers (the agent's shim anchors and its prepared instances in stock aside: the pool keeps
 * 2 by default, which take no slot until a create claims one); the pool's status shows 3
 * sandboxes and 0 free slots. Deleting them frees each slot exactly once: a second burst again
 * gets exactly 3.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient, NoCapacityError, type Sandbox } from "@fast-sandbox/sdk";
import { runningTasks, sandboxesInContainerd } from "../../../support/containerd-contents.js";
import { agentPods, listSandboxes, poolStatus, removePool, waitForReadyControllers } from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "three-slots";
const SLOTS = 3;
const BURST = 12;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("slot capacity exhaustion across controller replicas", () => {
    let namespace = "";
    let agent = "";
    /** One client per controller replica. */
    let replicas: FastSandboxClient[] = [];

    /** The sandboxes the agent has a container of in containerd, by sandbox id (its shim anchors and prepared instances in stock are not sandboxes). */
    const sandboxContainers = (): string[] => sandboxesInContainerd(suite.containerdNamespace, { "fast-sandbox.io/agent": agent });

    /** `count` concurrent creates, alternating between the replicas; the results in order. */
    const burst = (prefix: string, count: number) =>
      Promise.allSettled(
        Array.from({ length: count }, (_, index) =>
          replicas[index % replicas.length]!.sandboxes.create({
            namespace,
            name: `${prefix}-${index}`,
            pool: POOL,
            image: BASE_IMAGE,
            command: ["sleep", "3600"],
          }),
        ),
      );

    /** Exactly SLOTS creates succeeded and every other one was refused with NoCapacityError; the winners. */
    const exactlySlotsWon = (results: PromiseSettledResult<Sandbox>[]): Sandbox[] => {
      const created = results.filter((result) => result.status === "fulfilled").map((result) => result.value);
      const refused = results.filter((result): result is PromiseRejectedResult => result.status === "rejected").map((result) => result.reason as Error);
      assert.equal(created.length, SLOTS, `expected exactly ${SLOTS} creates to succeed; refusals: ${refused.map((error) => error.message).join(" | ")}`);
      assert.equal(refused.length, results.length - SLOTS);
      for (const error of refused) {
        assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${error.name}: ${error.message}`);
        assert.equal(error.code, "no_capacity");
        assert.match(error.message, /no capacity|is full/);
      }
      for (const sandbox of created) {
        assert.equal(sandbox.status?.phase, "Running");
        assert.equal(sandbox.status?.assignedPod, agent);
      }
      return created;
    };

    /** The store, containerd and the pool's status hold exactly `created`. */
    const exactlyTheseExist = async (created: Sandbox[]): Promise<void> => {
      const names = created.map((sandbox) => sandbox.metadata.name).sort();
      const ids = created.map((sandbox) => sandbox.status?.sandboxID ?? "").sort();
      // Records of refused creates are removed by the replica that tried; Running is written right after the answer.
      const stored = await suite.eventually(`exactly ${names.join(", ")} as Running Sandboxes`, async () => {
        const items = await listSandboxes(suite, namespace);
        return items.length === SLOTS && items.every((item) => item.status?.phase === "Running") ? items : undefined;
      });
      assert.deepEqual(stored.map((sandbox) => sandbox.metadata.name).sort(), names);
      for (const sandbox of stored) assert.equal(sandbox.status?.assignedPod, agent);
      assert.deepEqual(stored.map((sandbox) => sandbox.status?.sandboxID).sort(), ids);

      assert.deepEqual(sandboxContainers().sort(), ids, "the agent's sandbox containers in containerd");
      const running = new Set(runningTasks(suite.containerdNamespace));
      for (const id of ids) assert.ok(running.has(id), `the task of ${id} runs`);

      const status = await suite.eventually("the pool's status to show 3 sandboxes and no free slot", async () => {
        const current = await poolStatus(suite, namespace, POOL);
        return current.sandboxes === SLOTS && current.freeSlots === 0 ? current : undefined;
      });
      assert.deepEqual({ agents: status.agents, readyAgents: status.readyAgents }, { agents: 1, readyAgents: 1 });
    };

    const deleteAll = async (created: Sandbox[]): Promise<void> => {
      // Through both replicas, each deleting what the other created too.
      await Promise.all(created.map((sandbox, index) => replicas[(index + 1) % replicas.length]!.sandboxes.delete(sandbox.metadata.name, { namespace })));
      await suite.eventually("no Sandbox left", async () => (await listSandboxes(suite, namespace)).length === 0);
      assert.deepEqual(sandboxContainers(), []);
      await suite.eventually("the pool's status to show its 3 slots free", async () => {
        const status = await poolStatus(suite, namespace, POOL);
        return status.sandboxes === 0 && status.freeSlots === SLOTS;
      });
    };

    before(
      async () => {
        namespace = await suite.createNamespace("slot-capacity");
        await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
        replicas = (await waitForReadyControllers(suite)).map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken }));
        const [agentPod] = await suite.eventually(
          "the pool's one agent Pod to be Ready",
          async () => {
            const found = await agentPods(suite, namespace, POOL);
            return found.length === 1 && found.every(isPodReady) ? found : undefined;
          },
          { timeoutMs: 120_000 },
        );
        agent = agentPod!.metadata.name;
        // Every replica must be able to place: the agent registered, ready (answering its heartbeats) and empty.
        for (const [index, client] of replicas.entries()) {
          await suite.eventually(`controller replica ${index} to see the agent ready with ${SLOTS} free slots`, async () => {
            const agents = await client.pools.agents({ namespace, pool: POOL });
            return agents.length === 1 && agents[0]!.name === agent && agents[0]!.ready && agents[0]!.capacity === SLOTS && agents[0]!.allocated === 0;
          });
        }
      },
      { timeout: 240_000 },
    );

    after(
      async () => {
        if (namespace) await removePool(suite, namespace, POOL);
        for (const client of replicas) client.close();
      },
      { timeout: 300_000 },
    );

    it("lets exactly 3 of 12 concurrent creates through both replicas succeed and refuses the rest with no capacity", { timeout: 180_000 }, async () => {
      const created = exactlySlotsWon(await burst("burst", BURST));
      await exactlyTheseExist(created);
    });

    it("frees each slot exactly once on delete: a new burst again gets exactly 3", { timeout: 180_000 }, async () => {
      await deleteAll(await listSandboxes(suite, namespace));
      for (const [index, client] of replicas.entries()) {
        await suite.eventually(`controller replica ${index} to see the slots free`, async () => {
          const agents = await client.pools.agents({ namespace, pool: POOL });
          return agents.length === 1 && agents[0]!.ready && agents[0]!.allocated === 0;
        });
      }
      const again = exactlySlotsWon(await burst("again", 2 * SLOTS));
      await exactlyTheseExist(again);
      await deleteAll(again);
    });
  });
}
