/**
 * gVisor checkpoints, forks and pauses on Kubernetes, through both controller replicas: a running
 * sandbox checkpointed through one replica is restored as a copy through the other (the copy runs on
 * from the checkpointed file, under its own id and hostname) and forked into two; a sandbox paused
 * through one replica is a Paused Sandbox object with no container left, and the other replica
 * resumes it under the same sandbox id with its files. Every one of them runs the in-sandbox daemon
 * (the node's copy the agent Pod's init container installed: FSB_ENVD_PATH), serving again after
 * each restore. Run by ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE } from "../../../support/containerd.js";
import { inContainerd } from "../../../support/containerd-contents.js";
import { controllerReplicas, deleteCaseNamespace, getSandbox, itWithDiagnostics, waitForPhase, waitForReadyAgents } from "../../../support/kubernetes-cases.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "gvisor";
const PAUSED_CHECKPOINT_ANNOTATION = "sandbox.fast.io/paused-checkpoint";
/** Writes its state into its root file system, then waits: what a checkpoint must carry to each copy. */
const SOURCE = "echo before > /root/state; sleep 3600";

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("gVisor checkpoint, fork and pause across controller replicas", () => {
    let namespace = "";
    let one: FastSandboxClient;
    let other: FastSandboxClient;

    const sh = async (client: FastSandboxClient, name: string, script: string): Promise<string> => {
      const result = await client.sandboxes.exec(name, ["sh", "-c", script], { namespace });
      assert.equal(result.exitCode, 0, `${script} in ${name}: ${result.stderr}`);
      return result.stdout.trim();
    };

    /** The in-sandbox daemon answers its health check on the sandbox's loopback (busybox wget prints the status line). */
    const daemonServes = async (client: FastSandboxClient, name: string): Promise<boolean> =>
      /HTTP\/1\.1 204/.test(await sh(client, name, "wget -q -S -O /dev/null http://127.0.0.1:49983/health 2>&1 || true"));

    before(async () => {
      namespace = await suite.createNamespace("gvisor-ckpt");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      const replicas = (await controllerReplicas(suite)).filter((replica) => replica.podIP);
      assert.equal(replicas.length, 2, `controller replicas: ${replicas.map((replica) => replica.name).join(", ")}`);
      [one, other] = replicas.map((replica) => new FastSandboxClient({ url: replica.url, token: suite.apiToken })) as [FastSandboxClient, FastSandboxClient];
      await waitForReadyAgents(suite, namespace, POOL, 1);
      for (const client of [one, other]) {
        await suite.eventually(
          "each replica to know the pool's ready agent",
          async () => (await client.pools.agents({ namespace, pool: POOL })).some((agent) => agent.ready),
          { timeoutMs: 120_000, intervalMs: 500 },
        );
      }
    });

    after(async () => {
      one?.close();
      other?.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
      suite,
      () => namespace,
      "restores a checkpoint taken through one replica as a copy through the other, and forks",
      300_000,
      async () => {
        const source = await one.sandboxes.create({ namespace, name: "source", pool: POOL, image: BASE_IMAGE, command: ["sh", "-c", SOURCE] });
        assert.equal(source.status?.phase, "Running");
        await suite.eventually("the source to write its state", async () => (await sh(one, "source", "cat /root/state 2>/dev/null || true")) === "before", {
          timeoutMs: 30_000,
          intervalMs: 250,
        });
        assert.ok(await daemonServes(one, "source"), "the source runs the in-sandbox daemon");
        const checkpoint = await one.checkpoints.create("source", { namespace, name: "ck" });
        assert.equal(checkpoint.name, "ck");
        assert.equal(checkpoint.pool, POOL);
        assert.ok(checkpoint.sizeBytes > 0);
        // Written after the checkpoint: the copy must not see it.
        await sh(one, "source", "echo after > /root/state");

        const copy = await other.checkpoints.restore("ck", { namespace, name: "copy" });
        assert.equal(copy.status?.phase, "Running");
        assert.notEqual(copy.status?.sandboxID, source.status?.sandboxID, "the copy has its own sandbox id");
        assert.equal(copy.metadata.annotations?.["sandbox.fast.io/restored-from"], "ck");
        assert.equal(await sh(one, "copy", "cat /root/state"), "before");
        assert.equal(await sh(one, "copy", "hostname"), "copy");
        assert.ok(await daemonServes(one, "copy"), "the copy's daemon serves");
        const stored = await waitForPhase(suite, namespace, "copy", "Running");
        assert.equal(stored.status?.sandboxID, copy.status?.sandboxID);
        assert.deepEqual(
          (await one.checkpoints.list({ namespace })).map((c) => c.name),
          ["ck"],
        );

        const fork = await other.checkpoints.fork("source", { namespace, count: 2 });
        assert.equal(fork.sandboxes.length, 2);
        assert.equal(new Set(fork.sandboxes.map((s) => s.status?.sandboxID)).size, 2);
        for (const forked of fork.sandboxes) {
          assert.equal(forked.status?.phase, "Running");
          assert.equal(await sh(one, forked.metadata.name, "cat /root/state"), "after");
          await one.sandboxes.delete(forked.metadata.name, { namespace });
        }
        await one.sandboxes.delete("copy", { namespace });
        await other.checkpoints.delete("ck", { namespace });
        assert.deepEqual(await one.checkpoints.list({ namespace }), []);
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "pauses through one replica, leaving a Paused Sandbox and no container, and resumes through the other",
      300_000,
      async () => {
        const running = await one.sandboxes.get("source", { namespace });
        const sandboxId = running.status?.sandboxID ?? "";
        assert.ok(sandboxId);
        await sh(one, "source", "echo paused-with-me > /root/state");

        const paused = await one.sandboxes.pause("source", { namespace });
        assert.equal(paused.status?.phase, "Paused");
        const object = await getSandbox(suite, namespace, "source");
        assert.equal(object?.status?.phase, "Paused");
        assert.equal(object?.status?.sandboxID, sandboxId);
        assert.ok(object?.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], "the object names its checkpoint");
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
        // The leader's reconciler leaves it Paused: nothing replaces it.
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        assert.equal((await getSandbox(suite, namespace, "source"))?.status?.phase, "Paused");

        const resumed = await other.sandboxes.resume("source", { namespace });
        assert.equal(resumed.status?.phase, "Running");
        assert.equal(resumed.status?.sandboxID, sandboxId, "the same sandbox id");
        assert.equal(await sh(one, "source", "cat /root/state"), "paused-with-me");
        assert.equal(await sh(one, "source", "hostname"), "source");
        assert.ok(await daemonServes(other, "source"), "the resumed sandbox's daemon serves");
        const after = await waitForPhase(suite, namespace, "source", "Running");
        assert.equal(after.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
        assert.ok(inContainerd(suite.containerdNamespace, sandboxId).container);
        assert.deepEqual(await one.checkpoints.list({ namespace }), [], "the pause's checkpoint goes with the resume");

        await other.sandboxes.delete("source", { namespace });
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      },
    );
  });
}
