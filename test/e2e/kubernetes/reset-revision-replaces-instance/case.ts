/**
 * A changed spec.resetRevision replaces a sandbox's instance: a sandbox (resetRevision r1) runs; a
 * file is written in it through the fast path; `kubectl patch` sets resetRevision r2; the sandbox
 * then runs a new instance (new sandboxID, status.acceptedResetRevision r2, status.recreations 1,
 * Recreated reason Reset) started from the image — the file is gone — the old container is removed
 * from containerd, and the pool still counts one slot (its status, and every controller replica's
 * registry through the fast path). Deleting it with kubectl removes its container before the object
 * goes. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { namespaceContainers, recordedContainerOfSandbox, runningTasks } from "../../../support/containerd-contents.js";
import {
  allocatedSlots,
  controllerReplicas,
  deleteCaseNamespace,
  getPool,
  itWithDiagnostics,
  sandboxCondition,
  waitForPhase,
  waitForReadyAgents,
  waitForSandbox,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "reset";
const NAME = "resettable";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("a changed resetRevision replaces the instance", () => {
    let namespace = "";
    let client: FastSandboxClient;

    const sandboxContainers = (): string[] => namespaceContainers(suite.containerdNamespace, namespace);
    /** The slots the pool's agents hold, as each controller replica's registry sees them (its fast path). */
    const slotsPerReplica = async (): Promise<number[]> => {
      const replicas = (await controllerReplicas(suite)).filter((replica) => replica.ready);
      assert.equal(replicas.length, 2, "two Ready controller replicas");
      return Promise.all(
        replicas.map(async ({ url }) => {
          const replica = new FastSandboxClient({ url, token: suite.apiToken });
          try {
            return await allocatedSlots(replica, namespace, POOL);
          } finally {
            replica.close();
          }
        }),
      );
    };

    before(async () => {
      namespace = await suite.createNamespace("reset");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await waitForReadyAgents(suite, namespace, POOL, 1);
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
      suite,
      () => namespace,
      "kubectl patch of spec.resetRevision runs a new instance from the image and removes the old one",
      600_000,
      async () => {
        const created = await client.sandboxes.create({
          namespace,
          name: NAME,
          pool: POOL,
          image: BASE_IMAGE,
          command: ["sleep", "3600"],
          resetRevision: "r1",
        });
        const oldId = created.status?.sandboxID ?? "";
        assert.equal(created.status?.acceptedResetRevision, "r1");
        const first = await waitForPhase(suite, namespace, NAME, "Running");
        assert.equal(first.status?.sandboxID, oldId);
        assert.equal(first.status?.acceptedResetRevision, "r1");
        // A claimed prepared instance counts as the sandbox's once relabelled, just after the create answered.
        await recordedContainerOfSandbox(suite.containerdNamespace, oldId);
        assert.deepEqual(sandboxContainers(), [oldId]);
        const written = await client.sandboxes.exec(NAME, ["sh", "-c", "echo before-reset > /tmp/state && cat /tmp/state"], { namespace });
        assert.equal(written.stdout, "before-reset\n");

        await suite.kubectlOk(
          "-n",
          namespace,
          "patch",
          "sandboxes.sandbox.fast.io",
          NAME,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { resetRevision: "r2" } }),
        );
        const reset = await waitForSandbox(
          suite,
          namespace,
          NAME,
          "the reset to be accepted by a Running instance",
          (sandbox) => sandbox.status?.acceptedResetRevision === "r2" && sandbox.status.phase === "Running",
          { timeoutMs: 90_000 },
        );
        const newId = reset.status?.sandboxID ?? "";
        assert.ok(newId);
        assert.notEqual(newId, oldId, "a new instance has a new sandboxID");
        assert.equal(reset.status?.recreations, 1);
        assert.deepEqual([sandboxCondition(reset, "Recreated")?.status, sandboxCondition(reset, "Recreated")?.reason], ["True", "Reset"]);
        assert.match(sandboxCondition(reset, "Recreated")?.message ?? "", /resetRevision changed to "r2"/);
        assert.equal(sandboxCondition(reset, "Ready")?.status, "True");

        // The replica behind `client` reads the record (and so the new instance) from the API server.
        const fresh = await client.sandboxes.exec(NAME, ["sh", "-c", "cat /tmp/state 2>/dev/null || echo fresh"], { namespace });
        assert.equal(fresh.stdout, "fresh\n", "the new instance starts from the image: the file written before the reset is gone");

        await suite.eventually("containerd to hold only the new instance", () => {
          const held = sandboxContainers();
          return held.length === 1 && held[0] === newId;
        });
        assert.ok(runningTasks(suite.containerdNamespace).includes(newId), "the new instance's task runs");
        assert.ok(!runningTasks(suite.containerdNamespace).includes(oldId), "the old instance's task is gone");

        await suite.eventually("the pool to count one sandbox", async () => {
          const status = (await getPool(suite, namespace, POOL)).status;
          return status?.sandboxes === 1 && status.freeSlots === 1;
        });
        const perReplica = await suite.eventually("every replica's registry to count one slot", async () => {
          const slots = await slotsPerReplica();
          return slots.every((count) => count === 1) ? slots : undefined;
        });
        assert.deepEqual(perReplica, [1, 1]);

        // kubectl delete waits for the object to go; the cleanup finalizer removes the container first.
        await suite.kubectlOk("-n", namespace, "delete", "sandboxes.sandbox.fast.io", NAME, "--timeout=120s");
        assert.deepEqual(sandboxContainers(), [], "the container is gone when the object is");
        await suite.eventually("the pool to count no sandbox", async () => (await getPool(suite, namespace, POOL)).status?.sandboxes === 0);
      },
    );
  });
}
