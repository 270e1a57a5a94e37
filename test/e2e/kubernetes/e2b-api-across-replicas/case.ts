/**
 * The E2B-compatible API on Kubernetes, through both controller replicas and the proxy Deployment,
 * driven by E2B's own JS SDK: a key issued through one replica's fast path (`fsb e2b env`'s RPC) is a
 * Secret named after its hash — never the key — and both replicas accept it; a sandbox created
 * through one replica (which answers once the daemon answers through the agent's relay) runs
 * commands and files through the proxy, is connected to through the other replica with the same
 * access token (one token secret for every replica, made by the controllers), reaches a port it
 * never declared (E2B's every-port semantics, through the relay), serves E2B's presigned file URLs
 * through the proxy, and is killed through the other replica. A gVisor sandbox paused through one
 * replica is resumed by `connect` through the other, its files as they were, and forked. Run by
 * ../suite.test.ts on the suite's cluster, with the pools in pool.yaml.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";
import { REPO_ROOT } from "../../../support/containerd.js";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import {
  itWithDiagnostics,
  listSandboxes,
  removePool,
  waitForReadyAgents,
  waitForReadyControllers,
  type ControllerReplica,
} from "../../../support/kubernetes-cases.js";
import { SYSTEM_NAMESPACE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "e2b-k8s";
const GVISOR_POOL = "e2b-k8s-gvisor";
const NAMESPACE = "default";
const E2B_PORT = 7073;
const PROXY_PORT = 7072;
const PROXY_SELECTOR = "app.kubernetes.io/component=proxy";
const WEB_PORT = 8080;

interface SecretJson {
  metadata: { name: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("the E2B-compatible API across controller replicas", () => {
    let replicas: ControllerReplica[] = [];
    let client: FastSandboxClient | undefined;
    let apiKey = "";
    let issued: { apiUrl: string; sandboxUrl: string } = { apiUrl: "", sandboxUrl: "" };
    let proxyUrl = "";
    let sandbox: Sandbox | undefined;
    let paused: Sandbox | undefined;
    const e2bUrl = (replica: ControllerReplica) => `http://${replica.podIP}:${E2B_PORT}`;
    /** E2B's SDK options for one replica: the key, that replica's API and the proxy. */
    const through = (replica: ControllerReplica) => ({ apiKey, apiUrl: e2bUrl(replica), sandboxUrl: proxyUrl });

    before(
      async () => {
        // Namespace default runs pools here as any namespace does: with the agents' ServiceAccount (their token is their pool's own).
        await suite.kubectlOk("-n", NAMESPACE, "apply", "-f", path.join(REPO_ROOT, "config/samples/agent-service-account.yaml"));
        await suite.kubectlOk("apply", "-f", path.join(HERE, "pool.yaml"));
        replicas = await waitForReadyControllers(suite);
        client = new FastSandboxClient({ url: replicas[0]!.url, token: suite.apiToken });
        const key = await client.e2b.createApiKey();
        apiKey = key.apiKey;
        issued = { apiUrl: key.apiUrl, sandboxUrl: key.sandboxUrl };
        const proxies = await suite.eventually(
          "the proxy Deployment's Pods to be Ready",
          async () => {
            const pods = await suite.pods(SYSTEM_NAMESPACE, PROXY_SELECTOR);
            return pods.length > 0 && pods.every(isPodReady) ? pods : undefined;
          },
          { timeoutMs: 120_000 },
        );
        proxyUrl = `http://${proxies[0]!.status!.podIP!}:${PROXY_PORT}`;
        await waitForReadyAgents(suite, NAMESPACE, POOL, 1);
        await waitForReadyAgents(suite, NAMESPACE, GVISOR_POOL, 1);
      },
      { timeout: 240_000 },
    );

    after(
      async () => {
        await sandbox?.kill().catch(() => undefined);
        client?.close();
        await paused?.kill().catch(() => undefined);
        await removePool(suite, NAMESPACE, POOL);
        await removePool(suite, NAMESPACE, GVISOR_POOL);
        await suite.kubectl("-n", NAMESPACE, "delete", "-f", path.join(REPO_ROOT, "config/samples/agent-service-account.yaml"), "--ignore-not-found");
      },
      { timeout: 300_000 },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "issues a key kept as a Secret named after its hash, without the key, with the URLs of the manifests",
      60_000,
      async () => {
        assert.match(apiKey, /^e2b_[0-9a-f]{40}$/);
        assert.deepEqual(issued, { apiUrl: "http://localhost:7073", sandboxUrl: "http://localhost:7072" });
        const name = `fast-sandbox-e2b-key-${createHash("sha256").update(apiKey).digest("hex")}`;
        const secret = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "secret", name, "-o", "json")) as SecretJson;
        assert.equal(secret.metadata.labels?.["sandbox.fast.io/e2b-api-key"], "true");
        for (const value of Object.values(secret.data ?? {}))
          assert.ok(!Buffer.from(value, "base64").toString().includes(apiKey), "the Secret does not hold the key");
        const tokenSecret = JSON.parse(
          await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "secret", "fast-sandbox-e2b-token-secret", "-o", "json"),
        ) as SecretJson;
        assert.match(Buffer.from(tokenSecret.data?.secret ?? "", "base64").toString(), /^[0-9a-f]{64}$/);
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "accepts the key on both replicas and refuses another one (401)",
      60_000,
      async () => {
        for (const replica of replicas) {
          const listed = await fetch(`${e2bUrl(replica)}/v2/sandboxes`, { headers: { "X-API-KEY": apiKey } });
          assert.equal(listed.status, 200, `${replica.name}: ${await listed.text()}`);
          const wrong = await fetch(`${e2bUrl(replica)}/v2/sandboxes`, { headers: { "X-API-KEY": `e2b_${"0".repeat(40)}` } });
          assert.equal(wrong.status, 401, replica.name);
        }
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "creates through one replica and runs commands and files through the proxy",
      180_000,
      async () => {
        sandbox = await Sandbox.create(POOL, { ...through(replicas[0]!), timeoutMs: 300_000, metadata: { case: "e2b-k8s" } });
        const id = sandbox.sandboxId;
        const record = (await listSandboxes(suite, NAMESPACE)).find((item) => item.status?.sandboxID === id);
        assert.equal(record?.status?.phase, "Running");
        assert.ok(record.status.sandboxIP, "an Isolated sandbox: an address of its own inside its agent's network");
        const result = await sandbox.commands.run("echo hello $((20 + 22))");
        assert.equal(result.stdout, "hello 42\n");
        await sandbox.files.write("/tmp/from-e2b.txt", "written through the proxy\n");
        assert.equal(await sandbox.files.read("/tmp/from-e2b.txt"), "written through the proxy\n");
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "connects through the other replica with the same token: its commands and files work",
      120_000,
      async () => {
        const info = await Sandbox.getInfo(sandbox!.sandboxId, through(replicas[1]!));
        assert.equal(info.templateId, POOL);
        assert.deepEqual(info.metadata, { case: "e2b-k8s" });
        const again = await Sandbox.connect(sandbox!.sandboxId, through(replicas[1]!));
        assert.equal(await again.files.read("/tmp/from-e2b.txt"), "written through the proxy\n");
        assert.equal((await again.commands.run("hostname")).exitCode, 0);
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "reaches a port the sandbox never declared, and serves presigned file URLs, through the proxy",
      120_000,
      async () => {
        await sandbox!.commands.run(`mkdir -p /www && echo served > /www/index.html && httpd -f -p ${WEB_PORT} -h /www`, { background: true });
        const detail = (await (await fetch(`${e2bUrl(replicas[1]!)}/sandboxes/${sandbox!.sandboxId}`, { headers: { "X-API-KEY": apiKey } })).json()) as {
          envdAccessToken?: string;
        };
        assert.ok(detail.envdAccessToken, "the detail names the sandbox's access token");
        const page = await suite.eventually("the sandbox's web server through the proxy", async () => {
          const response = await fetch(`${proxyUrl}/index.html`, {
            headers: { "e2b-sandbox-id": sandbox!.sandboxId, "e2b-sandbox-port": String(WEB_PORT), "x-access-token": detail.envdAccessToken! },
            signal: AbortSignal.timeout(10_000),
          });
          return response.status === 200 ? response.text() : undefined;
        });
        assert.equal(page, "served\n");
        // A presigned URL names no sandbox: the proxy finds the one whose token signed it (the controllers' token secret).
        const downloadUrl = await sandbox!.downloadUrl("/tmp/from-e2b.txt");
        const downloaded = await suite.eventually(
          "the presigned download through the proxy",
          async () => {
            const response = await fetch(downloadUrl, { signal: AbortSignal.timeout(10_000) });
            return response.status === 200 ? response.text() : undefined;
          },
          { timeoutMs: 60_000 },
        );
        assert.equal(downloaded, "written through the proxy\n");
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "kills through the other replica: the Sandbox object goes",
      120_000,
      async () => {
        assert.equal(await Sandbox.kill(sandbox!.sandboxId, through(replicas[1]!)), true);
        const id = sandbox!.sandboxId;
        sandbox = undefined;
        await suite.eventually(
          "the killed sandbox's object to be gone",
          async () => {
            return !(await listSandboxes(suite, NAMESPACE)).some((item) => item.status?.sandboxID === id);
          },
          { timeoutMs: 90_000 },
        );
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "pauses a gVisor sandbox through one replica and resumes it with connect through the other",
      240_000,
      async () => {
        paused = await Sandbox.create(GVISOR_POOL, { ...through(replicas[0]!), timeoutMs: 300_000 });
        await paused.files.write("/root/kept.txt", "written before the pause");
        const hostname = (await paused.commands.run("hostname")).stdout;
        assert.equal(await paused.pause(), true);
        assert.equal((await Sandbox.getInfo(paused.sandboxId, through(replicas[1]!))).state, "paused");
        const record = (await listSandboxes(suite, NAMESPACE)).find((item) => item.status?.sandboxID === paused!.sandboxId);
        assert.equal(record?.status?.phase, "Paused");
        const resumed = await Sandbox.connect(paused.sandboxId, { ...through(replicas[1]!), timeoutMs: 120_000 });
        assert.equal(resumed.sandboxId, paused.sandboxId);
        assert.equal(await resumed.files.read("/root/kept.txt"), "written before the pause");
        assert.equal((await resumed.commands.run("hostname")).stdout, hostname, "the same sandbox: its hostname");
        assert.equal((await Sandbox.getInfo(paused.sandboxId, through(replicas[0]!))).state, "running");
      },
    );

    itWithDiagnostics(
      suite,
      () => NAMESPACE,
      "forks the resumed sandbox through the other replica: a running copy of its own from its state",
      240_000,
      async () => {
        const source = await Sandbox.connect(paused!.sandboxId, through(replicas[1]!));
        const forks = await source.fork({ count: 1, timeoutMs: 120_000 });
        assert.equal(forks.length, 1);
        const copy = forks[0] instanceof Sandbox ? forks[0] : assert.fail(`the fork failed: ${String(forks[0])}`);
        assert.notEqual(copy.sandboxId, source.sandboxId);
        assert.equal(await copy.files.read("/root/kept.txt"), "written before the pause");
        assert.notEqual((await copy.commands.run("hostname")).stdout, (await source.commands.run("hostname")).stdout, "a hostname of its own");
        await copy.files.write("/root/kept.txt", "the copy's own");
        assert.equal(await source.files.read("/root/kept.txt"), "written before the pause", "nothing writable is shared");
        assert.equal(await Sandbox.kill(copy.sandboxId, through(replicas[0]!)), true);
      },
    );
  });
}
