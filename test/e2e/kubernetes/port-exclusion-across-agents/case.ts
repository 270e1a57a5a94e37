/**
 * A sandbox's exposed port is exclusive on its agent (its Pod's IP), not in the whole pool: in a
 * pool of two agents with 2 slots each (pool.yaml here), two sandboxes exposing port 8080 — created
 * at the same time through the two controller replicas — land on different agents, each with its
 * endpoint through the sandbox proxy; a third one exposing 8080 is refused with no capacity while slots are free
 * (both agents hold the port); sandboxes exposing other ports share an agent with a holder of 8080;
 * once a holder of 8080 is deleted, its agent takes 8080 again. Asserted through the fast-path
 * answers, the Sandbox objects, the agent Pods and the containers' labels in containerd.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient, NoCapacityError, type Sandbox } from "@fast-sandbox/sdk";
import { CONTAINER_LABELS, containerIds } from "../../../support/containerd-contents.js";
import { agentPods, poolStatus, removePool, waitForPhase, waitForReadyControllers } from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "two-agents";
const PORT = 8080;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("port exclusion across agents", () => {
    let namespace = "";
    /** One client per controller replica. */
    let replicas: FastSandboxClient[] = [];
    /** Agent Pod name → its IP. */
    const agentIPs = new Map<string, string>();

    /** The sandbox containers of `agent` in containerd exposing `port` (the label the agent writes). */
    const containersExposing = (agent: string, port: number): string[] =>
      containerIds(suite.containerdNamespace, { [CONTAINER_LABELS.agent]: agent, [CONTAINER_LABELS.exposedPorts]: port });
    const create = (replica: number, name: string, port: number) =>
      replicas[replica]!.sandboxes.create({ namespace, name, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [port] });

    /** Running on an agent of the pool, with the endpoint `http://<port>-<sandboxID>.localhost:7072/` (the proxy's default) in the answer and the object. */
    const assertPlaced = async (answer: Sandbox, port: number): Promise<string> => {
      const agent = answer.status?.assignedPod ?? "";
      const ip = agentIPs.get(agent);
      assert.ok(ip, `${answer.metadata.name} is on ${agent}, an agent of the pool (${[...agentIPs.keys()].join(", ")})`);
      assert.equal(answer.status?.phase, "Running");
      const endpoint = `http://${port}-${answer.status?.sandboxID ?? "?"}.localhost:7072/`;
      assert.deepEqual(answer.status?.endpoints, [endpoint]);
      const object = await waitForPhase(suite, namespace, answer.metadata.name, "Running");
      assert.equal(object.status?.assignedPod, agent);
      assert.deepEqual(object.status?.endpoints, [endpoint]);
      return agent;
    };

    before(
      async () => {
        namespace = await suite.createNamespace("port-exclusion");
        await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
        replicas = (await waitForReadyControllers(suite)).map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken }));
        const agents = await suite.eventually(
          "the pool's two agent Pods to be Ready",
          async () => {
            const found = await agentPods(suite, namespace, POOL);
            return found.length === 2 && found.every(isPodReady) ? found : undefined;
          },
          { timeoutMs: 120_000 },
        );
        for (const pod of agents) agentIPs.set(pod.metadata.name, pod.status!.podIP!);
        assert.equal(new Set(agentIPs.values()).size, 2, "each agent Pod has its own IP");
        for (const [index, client] of replicas.entries()) {
          await suite.eventually(`controller replica ${index} to see both agents ready`, async () => {
            const seen = await client.pools.agents({ namespace, pool: POOL });
            return seen.length === 2 && seen.every((agent) => agent.ready && agentIPs.has(agent.name) && agent.allocated === 0);
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

    /** web-a's agent, once placed. */
    let firstHolder = "";

    it("places two sandboxes exposing the same port, created at once through both replicas, on different agents", { timeout: 120_000 }, async () => {
      const [a, b] = await Promise.all([create(0, "web-a", PORT), create(1, "web-b", PORT)]);
      firstHolder = await assertPlaced(a, PORT);
      const secondHolder = await assertPlaced(b, PORT);
      assert.notEqual(firstHolder, secondHolder, "the two holders of the port are on different agents");
      for (const agent of agentIPs.keys()) assert.equal(containersExposing(agent, PORT).length, 1, `${agent} runs one container exposing ${PORT}`);
    });

    it("refuses a third sandbox exposing that port with no capacity, through either replica, although slots are free", { timeout: 120_000 }, async () => {
      for (let index = 0; index < replicas.length; index++) {
        await assert.rejects(create(index, `web-refused-${index}`, PORT), (error: Error) => {
          assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${error.name}: ${error.message}`);
          assert.equal(error.code, "no_capacity");
          assert.match(error.message, new RegExp(`port ${PORT}`));
          return true;
        });
        const left = await suite.kubectl("-n", namespace, "get", "sandbox", `web-refused-${index}`);
        assert.notEqual(left.code, 0, "a refused create leaves no Sandbox object");
      }
      await suite.eventually("the pool's status to show 2 sandboxes and 2 free slots", async () => {
        const status = await poolStatus(suite, namespace, POOL);
        return status.sandboxes === 2 && status.freeSlots === 2;
      });
    });

    it("lets sandboxes exposing other ports share an agent with a holder of the port", { timeout: 120_000 }, async () => {
      // 4 slots for 4 sandboxes: each agent ends up with a holder of 8080 and one of these.
      const c = await create(0, "api-c", 9090);
      const d = await create(1, "api-d", 9091);
      const onC = await assertPlaced(c, 9090);
      const onD = await assertPlaced(d, 9091);
      assert.notEqual(onC, onD);
      for (const agent of agentIPs.keys()) {
        assert.equal(containersExposing(agent, PORT).length, 1, `${agent} still runs one container exposing ${PORT}`);
        assert.equal(containersExposing(agent, agent === onC ? 9090 : 9091).length, 1, `${agent} runs the sandbox of the other port beside it`);
      }
    });

    it("gives the port back on its agent when its holder is deleted", { timeout: 120_000 }, async () => {
      await replicas[1]!.sandboxes.delete("web-a", { namespace });
      assert.deepEqual(containersExposing(firstHolder, PORT), []);
      // The only free slot of the pool is web-a's, on the agent where 8080 is free again.
      const again = await suite.eventually("a create exposing the port to fit again", () => create(0, "web-e", PORT), { timeoutMs: 30_000, intervalMs: 1000 });
      assert.equal(await assertPlaced(again, PORT), firstHolder);
      assert.equal(containersExposing(firstHolder, PORT).length, 1);
    });
  });
}
