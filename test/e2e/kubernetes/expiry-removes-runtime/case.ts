/**
 * A sandbox with `spec.expireTime` a few seconds ahead runs until then, becomes Expired when it
 * passes, and is deleted, its container, task and snapshot gone from containerd: one written with
 * `kubectl apply` (sandbox.yaml, the expireTime set when it is applied), whose phases are followed
 * through a watch on the API server, and one created through the fast path with a time-to-live.
 * Run by ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE, ctr } from "../../../support/containerd.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "expiry";

interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Sandbox;
}

/** The watch events of one Sandbox, as the API server sends them, until `stop()`. */
interface SandboxWatch {
  readonly events: WatchEvent[];
  stop(): void;
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/** Whether containerd holds a container, a task or an active snapshot with this id. */
function inContainerd(containerdNamespace: string, sandboxId: string): { container: boolean; task: boolean; snapshot: boolean } {
  const firstColumn = (text: string) => lines(text).map((line) => line.split(/\s+/)[0]);
  return {
    container: lines(ctr(containerdNamespace, "containers", "ls", "-q")).includes(sandboxId),
    task: firstColumn(ctr(containerdNamespace, "tasks", "ls"))
      .slice(1)
      .includes(sandboxId),
    snapshot: firstColumn(ctr(containerdNamespace, "snapshots", "ls"))
      .slice(1)
      .includes(sandboxId),
  };
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("expiry removes runtime", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;

    async function getSandbox(name: string): Promise<Sandbox | undefined> {
      const result = await suite.kubectl("-n", namespace, "get", "sandbox", name, "-o", "json");
      if (result.code !== 0 && /NotFound|not found/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Sandbox;
    }

    /** A raw watch (`kubectl get --raw`, one JSON event per line) of the Sandbox `name`. */
    function watchSandbox(name: string): SandboxWatch {
      const url = `/apis/sandbox.fast.io/v1alpha1/namespaces/${namespace}/sandboxes?watch=true&fieldSelector=metadata.name%3D${name}`;
      const child = spawn("kubectl", ["--kubeconfig", suite.kubeconfigPath, "get", "--raw", url], { stdio: ["ignore", "pipe", "pipe"] });
      const events: WatchEvent[] = [];
      let buffered = "";
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        buffered += chunk;
        const complete = buffered.split("\n");
        buffered = complete.pop() ?? "";
        for (const line of complete) if (line.trim()) events.push(JSON.parse(line) as WatchEvent);
      });
      child.stderr.resume();
      return { events, stop: () => child.kill() };
    }

    before(async () => {
      namespace = await suite.createNamespace("expiry");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      await suite.eventually(
        `pool ${POOL} to have a ready agent`,
        async () => {
          const pool = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpool", POOL, "-o", "json")) as SandboxPool;
          return (pool.status?.readyAgents ?? 0) >= 1;
        },
        { timeoutMs: 180_000, intervalMs: 500 },
      );
      client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
    });

    after(async () => {
      client?.close();
      if (!namespace) return;
      await suite.kubectl("-n", namespace, "delete", "sandboxes", "--all", "--timeout=120s");
      await suite.kubectl("delete", "namespace", namespace, "--timeout=180s");
    });

    it("runs a Sandbox applied with an expireTime until it passes, then marks it Expired and deletes it with its container, task and snapshot", async () => {
      const watch = watchSandbox("short-lived");
      try {
        const manifest = parse(readFileSync(path.join(HERE, "sandbox.yaml"), "utf8")) as Sandbox;
        // Time to be placed and seen Running first, even on a busy machine.
        const expireTime = new Date(Date.now() + 20_000).toISOString();
        manifest.spec.expireTime = expireTime;
        await suite.apply(JSON.stringify(manifest), namespace);

        const running = await suite.eventually(
          "sandbox short-lived to be Running",
          async () => {
            const sandbox = await getSandbox("short-lived");
            return sandbox?.status?.phase === "Running" ? sandbox : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 250 },
        );
        const sandboxId = running.status?.sandboxID ?? "";
        assert.ok(sandboxId, JSON.stringify(running.status));
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: true, task: true, snapshot: true });

        await suite.eventually("the watch to report sandbox short-lived deleted", () => watch.events.some((event) => event.type === "DELETED"), {
          timeoutMs: 120_000,
          intervalMs: 250,
        });
        assert.equal(await getSandbox("short-lived"), undefined);
        // Deleted only once the cleanup finalizer removed everything of it from containerd.
        assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });

        const phases = watch.events.map((event) => event.object.status?.phase ?? "Pending");
        const expiredAt = phases.indexOf("Expired");
        assert.ok(expiredAt !== -1, `the sandbox never showed phase Expired; phases seen: ${phases.join(" → ")}`);
        const marked = watch.events.find((event) => event.object.metadata.deletionTimestamp);
        assert.ok(marked, "the sandbox was never marked for deletion (deletionTimestamp)");
        assert.ok(watch.events.indexOf(marked) > expiredAt, `marked for deletion before it showed Expired: ${phases.join(" → ")}`);
        // Not before its time (deletionTimestamp has a precision of seconds).
        const deletedAtMs = Date.parse(marked.object.metadata.deletionTimestamp!);
        assert.ok(
          deletedAtMs >= Math.floor(Date.parse(expireTime) / 1000) * 1000,
          `deleted at ${marked.object.metadata.deletionTimestamp}, before its expireTime ${expireTime}`,
        );
      } finally {
        watch.stop();
      }
    });

    it("removes a sandbox created through the fast path with a time-to-live, and its container, task and snapshot", async () => {
      const created = await client!.sandboxes.create({ namespace, pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"], ttlMs: 8000 });
      assert.equal(created.status?.phase, "Running");
      assert.ok(created.spec.expireTime, "the answer carries the expireTime");
      const sandboxId = created.status?.sandboxID ?? "";
      assert.ok(inContainerd(suite.containerdNamespace, sandboxId).container, "its container exists while it lives");

      await suite.eventually(
        `sandbox ${created.metadata.name} to be deleted once it expired`,
        async () => (await getSandbox(created.metadata.name)) === undefined,
        {
          timeoutMs: 120_000,
          intervalMs: 250,
        },
      );
      assert.deepEqual(inContainerd(suite.containerdNamespace, sandboxId), { container: false, task: false, snapshot: false });
      const pool = await suite.eventually(`pool ${POOL} to count no sandbox`, async () => {
        const current = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandboxpool", POOL, "-o", "json")) as SandboxPool;
        return current.status?.sandboxes === 0 ? current : undefined;
      });
      assert.equal(pool.status?.freeSlots, 2);
    });
  });
}
