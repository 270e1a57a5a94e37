/**
 * A sandbox with `spec.expireTime` a few seconds ahead runs until then, becomes Expired when it
 * passes, and is deleted, its container, task and snapshot gone from containerd: one written with
 * `kubectl apply` (sandbox.yaml, the expireTime set when it is applied), whose phases are followed
 * through a watch on the API server, and one created through the fast path with a time-to-live.
 * Run by ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import type { Sandbox } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE } from "../../../support/containerd.js";
import { inContainerd, recordedContainerOfSandbox } from "../../../support/containerd-contents.js";
import { deleteCaseNamespace, getPool, getSandbox, waitForPhase, watch } from "../../../support/kubernetes-cases.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "expiry";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("expiry removes runtime", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;

    before(async () => {
      namespace = await suite.createNamespace("expiry");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      await suite.eventually(`pool ${POOL} to have a ready agent`, async () => ((await getPool(suite, namespace, POOL)).status?.readyAgents ?? 0) >= 1, {
        timeoutMs: 180_000,
        intervalMs: 500,
      });
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    it("runs a Sandbox applied with an expireTime until it passes, then marks it Expired and deletes it with its container, task and snapshot", async () => {
      // Every event of the Sandbox short-lived from now on (it does not exist yet).
      const sandboxWatch = await watch<Sandbox>(suite, `/apis/sandbox.fast.io/v1alpha1/namespaces/${namespace}/sandboxes`, {
        fieldSelector: "metadata.name=short-lived",
      });
      try {
        const manifest = parse(readFileSync(path.join(HERE, "sandbox.yaml"), "utf8")) as Sandbox;
        // Time to be placed and seen Running first, even on a busy machine.
        const expireTime = new Date(Date.now() + 20_000).toISOString();
        manifest.spec.expireTime = expireTime;
        await suite.apply(JSON.stringify(manifest), namespace);

        const running = await waitForPhase(suite, namespace, "short-lived", "Running", { timeoutMs: 60_000, intervalMs: 250 });
        const sandboxId = running.status?.sandboxID ?? "";
        assert.ok(sandboxId, JSON.stringify(running.status));
        // A claimed prepared instance is relabelled with the sandbox id just after the agent answered.
        await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: true, task: true, snapshot: true });

        await suite.eventually("the watch to report sandbox short-lived deleted", () => sandboxWatch.events.some((event) => event.type === "DELETED"), {
          timeoutMs: 120_000,
          intervalMs: 250,
        });
        assert.equal(await getSandbox(suite, namespace, "short-lived"), undefined);
        // Deleted only once the cleanup finalizer removed everything of it from containerd.
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });

        const phases = sandboxWatch.events.map((event) => event.object.status?.phase ?? "Pending");
        const expiredAt = phases.indexOf("Expired");
        assert.ok(expiredAt !== -1, `the sandbox never showed phase Expired; phases seen: ${phases.join(" → ")}`);
        const marked = sandboxWatch.events.find((event) => event.object.metadata.deletionTimestamp);
        assert.ok(marked, "the sandbox was never marked for deletion (deletionTimestamp)");
        assert.ok(sandboxWatch.events.indexOf(marked) > expiredAt, `marked for deletion before it showed Expired: ${phases.join(" → ")}`);
        // Not before its time (deletionTimestamp has a precision of seconds).
        const deletedAtMs = Date.parse(marked.object.metadata.deletionTimestamp!);
        assert.ok(
          deletedAtMs >= Math.floor(Date.parse(expireTime) / 1000) * 1000,
          `deleted at ${marked.object.metadata.deletionTimestamp}, before its expireTime ${expireTime}`,
        );
      } finally {
        sandboxWatch.stop();
      }
    });

    it("removes a sandbox created through the fast path with a time-to-live, and its container, task and snapshot", async () => {
      const created = await client!.sandboxes.create({ namespace, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], ttlMs: 8000 });
      assert.equal(created.status?.phase, "Running");
      assert.ok(created.spec.expireTime, "the answer carries the expireTime");
      const sandboxId = created.status?.sandboxID ?? "";
      // A claimed prepared instance is relabelled with the sandbox id just after the create answered.
      await recordedContainerOfSandbox(suite.containerdNamespace, sandboxId);
      assert.ok(inContainerd(suite.containerdNamespace, sandboxId).container, "its container exists while it lives");

      await suite.eventually(
        `sandbox ${created.metadata.name} to be deleted once it expired`,
        async () => (await getSandbox(suite, namespace, created.metadata.name)) === undefined,
        {
          timeoutMs: 120_000,
          intervalMs: 250,
        },
      );
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      const pool = await suite.eventually(`pool ${POOL} to count no sandbox`, async () => {
        const current = await getPool(suite, namespace, POOL);
        return current.status?.sandboxes === 0 ? current : undefined;
      });
      assert.equal(pool.status?.freeSlots, 2);
    });
  });
}
