/**
 * The janitor's Kubernetes inventory against a real kube-apiserver (the harness's cluster, CRDs
 * from config/crd/): an agent exists while a Pod labelled `fast-sandbox.io/pool` runs on the
 * janitor's node (by name, with its UID) and is gone once the Pod is deleted; agent-labelled Pods
 * on another node and unlabelled Pods on this node do not count; a record exists while a Sandbox
 * in any namespace holds the id in `status.sandboxID` and is gone once the Sandbox is deleted; an
 * unreachable API server makes the read fail, which the janitor treats as "unknown: remove nothing".
 * The cluster is started for this file and stopped afterwards.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CoreV1Api, CustomObjectsApi, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { UnavailableError } from "@fast-sandbox/api";
import { kubernetesInventory, type KubernetesInventorySnapshot } from "../../../../packages/janitor/src/kubernetes-inventory.js";
import { REPO_ROOT } from "../../../support/containerd.js";

const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const CRD_DIR = path.join(REPO_ROOT, "config/crd");
const STATE = path.join(os.tmpdir(), `fsb-cluster-janitor-inventory-${process.pid}-${Date.now()}`);
const NODE = "fsb-node-0";
const OTHER_NODE = "fsb-node-1";
const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE, FSB_CLUSTER_NODES: `${NODE},${OTHER_NODE}` };
delete env.FSB_APISERVER_PORT;
delete env.KUBECONFIG;
const NAMESPACES = ["janitor-inventory-a", "janitor-inventory-b"] as const;

let kubeconfigPath = "";
let kubeConfig: KubeConfig;
let core: CoreV1Api;
let custom: CustomObjectsApi;

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const kubectl = (...args: string[]) => run("kubectl", ["--kubeconfig", kubeconfigPath, ...args]);

function agentPod(name: string, options: { nodeName: string; pool?: string }): V1Pod {
  return {
    metadata: { name, labels: options.pool ? { "fast-sandbox.io/pool": options.pool } : { app: "not-an-agent" } },
    spec: {
      nodeName: options.nodeName,
      terminationGracePeriodSeconds: 1,
      containers: [
        { name: "agent", image: "fast-sandbox.io/test/sleep:dev", env: [{ name: "FSB_AGENT_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }] },
      ],
    },
  };
}

async function createSandbox(namespace: string, name: string, sandboxID: string): Promise<void> {
  await custom.createNamespacedCustomObject({
    group: "sandbox.fast.io",
    version: "v1alpha1",
    namespace,
    plural: "sandboxes",
    body: { apiVersion: "sandbox.fast.io/v1alpha1", kind: "Sandbox", metadata: { name }, spec: { image: "busybox", poolRef: "default" } },
  });
  const patched = await kubectl(
    "-n",
    namespace,
    "patch",
    "sandbox",
    name,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({ status: { sandboxID } }),
  );
  assert.equal(patched.code, 0, patched.stderr);
}

async function deleteSandbox(namespace: string, name: string): Promise<void> {
  await custom.deleteNamespacedCustomObject({ group: "sandbox.fast.io", version: "v1alpha1", namespace, plural: "sandboxes", name });
}

/** Reads until `condition` holds (deletions take a moment to finish). */
async function readUntil(
  what: string,
  condition: (snapshot: KubernetesInventorySnapshot) => boolean,
  timeoutMs = 20_000,
): Promise<KubernetesInventorySnapshot> {
  const inventory = kubernetesInventory({ kubeConfig, nodeName: NODE });
  const start = Date.now();
  for (;;) {
    const snapshot = await inventory.read();
    if (condition(snapshot)) return snapshot;
    if (Date.now() - start > timeoutMs)
      assert.fail(`${what}: not within ${timeoutMs} ms; agents ${[...snapshot.agents].join(",")}, ids ${[...snapshot.sandboxIds].join(",")}`);
    await sleep(200);
  }
}

describe("the janitor's inventory from a real kube-apiserver", () => {
  before(async () => {
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    kubeconfigPath = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfigPath, up.stdout);
    const apply = await kubectl("apply", "-k", CRD_DIR);
    assert.equal(apply.code, 0, apply.stderr);
    // The inventory lists Sandboxes and SandboxPools: both kinds must be served before a read.
    const established = await kubectl(
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      "crd/sandboxes.sandbox.fast.io",
      "crd/sandboxpools.sandbox.fast.io",
    );
    assert.equal(established.code, 0, established.stderr);
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    custom = kubeConfig.makeApiClient(CustomObjectsApi);
    for (const name of NAMESPACES) await core.createNamespace({ body: { metadata: { name } } });
  });

  after(async () => {
    if (kubeconfigPath) {
      for (const name of NAMESPACES) await core.deleteNamespace({ name }).catch(() => undefined);
      await kubectl("delete", "-k", CRD_DIR, "--ignore-not-found", "--wait=true", "--timeout=60s");
    }
    await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
  });

  it("an agent exists while its Pod is on this node, by name with its UID, and is gone after the Pod's deletion", async () => {
    const [namespace] = NAMESPACES;
    const created = await core.createNamespacedPod({ namespace, body: agentPod("default-agent-x1", { nodeName: NODE, pool: "default" }) });
    await core.createNamespacedPod({ namespace, body: agentPod("default-agent-elsewhere", { nodeName: OTHER_NODE, pool: "default" }) });
    await core.createNamespacedPod({ namespace, body: agentPod("plain-workload", { nodeName: NODE }) });
    const present = await readUntil("the agent Pod is listed", (s) => s.agents.has("default-agent-x1"));
    assert.deepEqual([...present.agents], ["default-agent-x1"], "only agent Pods of this node count");
    assert.equal(present.agentPodUids.get("default-agent-x1"), created.metadata?.uid);

    await core.deleteNamespacedPod({ namespace, name: "default-agent-x1" });
    await readUntil("the deleted agent Pod is gone", (s) => !s.agents.has("default-agent-x1"));
  });

  it("a record exists while a Sandbox in any namespace holds the id in status, and is gone after its deletion", async () => {
    const [first, second] = NAMESPACES;
    await createSandbox(first, "sb-one", "sandbox-id-one");
    await createSandbox(second, "sb-two", "sandbox-id-two");
    const both = await readUntil("both ids", (s) => s.sandboxIds.has("sandbox-id-one") && s.sandboxIds.has("sandbox-id-two"));
    assert.equal(both.sandboxIds.size, 2);

    await deleteSandbox(first, "sb-one");
    const after = await readUntil("the deleted Sandbox's id is gone", (s) => !s.sandboxIds.has("sandbox-id-one"));
    assert.deepEqual([...after.sandboxIds], ["sandbox-id-two"]);
  });

  it("a pool exists while its SandboxPool does, in any namespace, and a pool a Sandbox names is known as named", async () => {
    const [first, second] = NAMESPACES;
    const pool = (name: string) => ({
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name },
      spec: { image: "busybox", maxSandboxesPerPod: 1, capacity: { poolMin: 0, poolMax: 1, bufferMin: 0 } },
    });
    await custom.createNamespacedCustomObject({ group: "sandbox.fast.io", version: "v1alpha1", namespace: first, plural: "sandboxpools", body: pool("kept") });
    await custom.createNamespacedCustomObject({ group: "sandbox.fast.io", version: "v1alpha1", namespace: second, plural: "sandboxpools", body: pool("gone") });
    await createSandbox(second, "sb-of-named", "sandbox-id-named");
    const listed = await readUntil("both pools", (s) => s.pools?.has(`${first}/kept`) === true && s.pools.has(`${second}/gone`));
    assert.ok(listed.poolsNamedBySandboxes?.has(`${second}/default`), "the Sandbox's poolRef, in its namespace");
    assert.ok(listed.poolsNamedBySandboxes?.has(`${first}/kept`) === false, "no Sandbox names pool kept");

    await custom.deleteNamespacedCustomObject({ group: "sandbox.fast.io", version: "v1alpha1", namespace: second, plural: "sandboxpools", name: "gone" });
    const after = await readUntil("the deleted pool is gone", (s) => s.pools?.has(`${second}/gone`) === false);
    assert.ok(after.pools?.has(`${first}/kept`));
    await deleteSandbox(second, "sb-of-named");
  });

  it("an unreachable API server is an error (unknown), never an empty inventory", async () => {
    const unreachable = new KubeConfig();
    unreachable.loadFromOptions({
      clusters: [{ name: "gone", server: "https://127.0.0.1:1", skipTLSVerify: true }],
      users: [{ name: "nobody", token: "x" }],
      contexts: [{ name: "gone", cluster: "gone", user: "nobody" }],
      currentContext: "gone",
    });
    await assert.rejects(kubernetesInventory({ kubeConfig: unreachable, nodeName: NODE, requestTimeoutMs: 5_000 }).read(), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /cannot read agent Pods of node fsb-node-0|no answer/);
      return true;
    });
  });

  it("a server that refuses the credentials is an error too", async () => {
    const refused = new KubeConfig();
    const cluster = kubeConfig.getCurrentCluster();
    assert.ok(cluster);
    refused.loadFromOptions({
      clusters: [{ ...cluster, name: "test" }],
      users: [{ name: "nobody", token: "not-a-token" }],
      contexts: [{ name: "test", cluster: "test", user: "nobody" }],
      currentContext: "test",
    });
    await assert.rejects(kubernetesInventory({ kubeConfig: refused, nodeName: NODE }).read(), UnavailableError);
  });
});
