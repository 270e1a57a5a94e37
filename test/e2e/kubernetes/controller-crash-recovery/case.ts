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
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import type { Sandbox } from "@fast-sandbox/api";
import { FastSandboxClient, NoCapacityError } from "@fast-sandbox/sdk";
import { namespaceContainers, runningTasks } from "../../../support/containerd-contents.js";
import {
  allocatedSlots,
  controllerLease,
  controllerReplicas,
  deleteCaseNamespace,
  getPool,
  getSandbox,
  itWithDiagnostics,
  listSandboxes,
  sandboxCondition,
  waitForReadyAgents,
  waitForReadyControllers,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "crash";
const SLOTS = 6;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("controller crash recovery", () => {
    let namespace = "";
    /** The sandboxes that run through the crash. */
    let survivors: Sandbox[] = [];
    let clients: FastSandboxClient[] = [];

    const sandboxContainers = (): string[] => namespaceContainers(suite.containerdNamespace, namespace);
    /** The slots the pool's agents hold, as each replica's registry sees them (its fast path). */
    const slotsPerReplica = (): Promise<number[]> => Promise.all(clients.map((client) => allocatedSlots(client, namespace, POOL)));
    /** A client per Ready replica (new connections: the old ones died with the processes); waits for both (a replica is Ready once recovered). */
    const connectToReplicas = async (): Promise<void> => {
      for (const client of clients) client.close();
      const ready = await waitForReadyControllers(suite, 2);
      clients = ready.map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken }));
    };

    before(async () => {
      namespace = await suite.createNamespace("crash");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await waitForReadyAgents(suite, namespace, POOL, 2);
      await connectToReplicas();
    });

    after(async () => {
      for (const client of clients) client.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
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
          const all = await listSandboxes(suite, namespace);
          return all.length === 3 && all.every((s) => s.status?.phase === "Running") && (await getPool(suite, namespace, POOL)).status?.sandboxes === 3;
        });
        survivors = (await listSandboxes(suite, namespace)).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));

        const crashed = await controllerReplicas(suite);
        assert.equal(crashed.length, 2);
        assert.ok(crashed.every((replica) => replica.pid > 0));
        const killedAt = Date.now();
        for (const replica of crashed) process.kill(-replica.pid, "SIGKILL");

        await suite.eventually(
          "both replicas restarted by the kubelet and Ready",
          async () => {
            const now = await controllerReplicas(suite);
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
            const spec = await controllerLease(suite);
            return crashed.some((replica) => replica.name === spec.holderIdentity) && Date.parse(spec.renewTime ?? "") > killedAt ? spec : undefined;
          },
          { timeoutMs: 120_000 },
        );
        assert.ok(held.holderIdentity);
        await connectToReplicas();

        await suite.eventually("the pool's status to count the same three sandboxes", async () => {
          const status = (await getPool(suite, namespace, POOL)).status;
          return status?.sandboxes === 3 && status.freeSlots === SLOTS - 3 && status.readyAgents === 2;
        });
        const perReplica = await suite.eventually("both replicas' registries to count three slots", async () => {
          const slots = await slotsPerReplica();
          return slots.every((count) => count === 3) ? slots : undefined;
        });
        assert.deepEqual(perReplica, [3, 3]);
        for (const original of survivors) {
          const now = await getSandbox(suite, namespace, original.metadata.name);
          assert.equal(now?.status?.phase, "Running", `${original.metadata.name} runs`);
          assert.equal(now.status.sandboxID, original.status?.sandboxID, "same instance");
          assert.equal(now.status.assignedPod, original.status?.assignedPod, "same agent");
          assert.equal(now.status.recreations, undefined);
          assert.equal(sandboxCondition(now, "Ready")?.status, "True");
          for (const client of clients) {
            const marker = await client.sandboxes.exec(original.metadata.name, ["cat", "/tmp/marker"], { namespace });
            assert.equal(marker.stdout, `${original.metadata.name}\n`, "exec through each replica reaches the same process tree");
          }
        }
        const ids = survivors.map((s) => s.status?.sandboxID ?? "").sort();
        assert.deepEqual(sandboxContainers(), ids, "containerd holds exactly the sandboxes' containers");
        assert.ok(
          ids.every((id) => runningTasks(suite.containerdNamespace).includes(id)),
          "their tasks run",
        );
      },
    );

    itWithDiagnostics(
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
          const all = await listSandboxes(suite, namespace);
          const names = all.map((s) => s.metadata.name).sort();
          return JSON.stringify(names) === JSON.stringify(expected) && all.every((s) => s.status?.phase === "Running") ? all : undefined;
        });
        await suite.eventually("the pool's status to count every slot taken", async () => {
          const status = (await getPool(suite, namespace, POOL)).status;
          return status?.sandboxes === SLOTS && status.freeSlots === 0;
        });
        const ids = settled.map((s) => s.status?.sandboxID ?? "").sort();
        assert.deepEqual(sandboxContainers(), ids, "containerd holds exactly the sandboxes' containers: one each, none for a refused create");
        assert.ok(
          ids.every((id) => runningTasks(suite.containerdNamespace).includes(id)),
          "their tasks run",
        );

        for (const sandbox of settled) await clients[0]!.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
