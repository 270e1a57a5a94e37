/**
 * Agent Pods follow the pool (Kubernetes mode, `KubernetesAgentFleet`): on a real control plane
 * (test/harness/cluster) a SandboxPool created through the KubernetesResourceStore is driven to two
 * agents — two Pods named `<pool>-agent-<random>`, labelled with the pool, owned by it, with the
 * agent's env and containerd volumes injected into the template's `agent` container — that the
 * fleet reports ready with `<podIP>:7071` endpoints once their readiness probe passes; stopping one
 * deletes that Pod only; deleting the pool makes the garbage collector delete the other.
 *
 * The fake kubelet runs the agent image as the harness's echo server (images.json here): it answers
 * the agent's `/readyz` probe and says which Pod it is, so an endpoint is proven to reach its Pod.
 * The cluster is started for this file only and everything is removed afterwards.
 *
 * The fleet keeps the controller's default agent template policy (restricted): the pool's template
 * names the agent image, which the policy lists as an operator lists a mirror
 * (FSB_AGENT_TEMPLATE_IMAGES), and the echo server's PORT comes from the deployment's base template
 * (FSB_AGENT_TEMPLATE_FILE), since a pool may set no such variable.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { CoreV1Api, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { API_VERSION, PermissionDeniedError, type SandboxPool } from "@fast-sandbox/api";
import type { AgentFleetEvent, PoolRef } from "../../../../packages/controlplane/src/fleet/agent-fleet.js";
import { KubernetesAgentFleet } from "../../../../packages/controlplane/src/fleet/kubernetes-agent-fleet.js";
import { openKubernetesResourceStore, type KubernetesResourceStore } from "../../../../packages/controlplane/src/store/kubernetes-resource-store.js";
import { REPO_ROOT } from "../../../support/containerd.js";

const HERE = path.join(REPO_ROOT, "test/e2e/kubernetes/agent-pods-follow-the-pool");
const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const CRD_DIR = path.join(REPO_ROOT, "config/crd");
const STATE = path.join(os.tmpdir(), `fsb-cluster-agent-pods-${process.pid}-${Date.now()}`);
const NAMESPACE = "fsb-agent-pods";
const POOL = "python";
const AGENT_IMAGE = "fast-sandbox.io/agent:e2e";
const TOKEN_SECRET = "agents-token";

const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE, FSB_IMAGE_MAP: path.join(HERE, "images.json") };
delete env.FSB_APISERVER_PORT;
delete env.FSB_CLUSTER_NODES;
delete env.KUBECONFIG;
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

let kubeconfigPath = "";
let kubeConfig: KubeConfig;
let core: CoreV1Api;
let store: KubernetesResourceStore | undefined;
let fleet: KubernetesAgentFleet | undefined;
const events: AgentFleetEvent[] = [];
const ref: PoolRef = { namespace: NAMESPACE, pool: POOL };

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const kubectl = (...args: string[]) => run("kubectl", ["--kubeconfig", kubeconfigPath, ...args]);

/** Polls until `check` returns something truthy; generous timeout, no timing assertion. */
async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function agentPods(): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace: NAMESPACE, labelSelector: `fast-sandbox.io/pool=${POOL}` })).items;
}

const readyEndpoint = (name: string): string | undefined => {
  const ready = events.filter((e) => e.type === "ready" && e.agent.name === name).at(-1);
  return ready?.type === "ready" ? ready.agent.endpoint : undefined;
};

describe("agent Pods follow the pool (KubernetesAgentFleet on a real kube-apiserver)", () => {
  before(async () => {
    // The first run on a fresh machine builds the binaries (CI builds them in a step before).
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    kubeconfigPath = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfigPath, up.stdout);
    const apply = await kubectl("apply", "-k", CRD_DIR);
    assert.equal(apply.code, 0, apply.stderr);
    const established = await kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/sandboxpools.sandbox.fast.io");
    assert.equal(established.code, 0, established.stderr);
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: NAMESPACE } } });
    await core.createNamespacedSecret({ namespace: NAMESPACE, body: { metadata: { name: TOKEN_SECRET }, stringData: { token: "e2e-agent-token" } } });
    store = openKubernetesResourceStore({ kubeConfig, logger: quiet });
    fleet = new KubernetesAgentFleet({
      kubeConfig,
      namespace: NAMESPACE,
      logger: quiet,
      // The echo server's port: the deployment's env is kept next to the injected one.
      pod: { tokenSecretName: TOKEN_SECRET, baseTemplate: { spec: { containers: [{ name: "agent", env: [{ name: "PORT", value: "7071" }] }] } } },
      templatePolicy: { mode: "restricted", allowedImages: [AGENT_IMAGE] },
    });
    fleet.subscribe((event) => events.push(event));
    await fleet.start();
  });

  after(async () => {
    await fleet?.stop().catch(() => undefined);
    await store?.close().catch(() => undefined);
    if (kubeconfigPath) {
      await kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s");
      await kubectl("delete", "-k", CRD_DIR, "--ignore-not-found", "--wait=true", "--timeout=60s");
    }
    await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
  });

  let pool: SandboxPool;
  let names: string[] = [];

  it("starts two agent Pods from the pool's template, named, labelled, owned and injected as the agent needs", async () => {
    assert.ok(store && fleet);
    pool = await store.create("SandboxPool", {
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: POOL, namespace: NAMESPACE },
      spec: {
        capacity: { poolMin: 0, poolMax: 4 },
        maxSandboxesPerPod: 4,
        agentTemplate: {
          metadata: { labels: { team: "data" } },
          spec: {
            containers: [
              {
                name: "agent",
                image: AGENT_IMAGE,
                resources: { limits: { cpu: "500m", memory: "256Mi" } },
              },
            ],
          },
        },
      },
    });
    names = await fleet.startAgents(pool, 2);
    assert.equal(names.length, 2);
    assert.notEqual(names[0], names[1]);

    const pods = await agentPods();
    assert.deepEqual(pods.map((p) => p.metadata?.name).sort(), [...names].sort());
    for (const pod of pods) {
      assert.match(pod.metadata?.name ?? "", /^python-agent-[a-z0-9]{5}$/);
      assert.equal(pod.metadata?.generateName, "python-agent-");
      assert.equal(pod.metadata?.labels?.["fast-sandbox.io/pool"], POOL);
      assert.equal(pod.metadata?.labels?.team, "data");
      assert.equal(pod.metadata?.labels?.["fast-sandbox.io/template-hash"], fleet.templateHash(pool), "labelled with the hash of its template");
      assert.deepEqual(
        pod.metadata?.ownerReferences?.map((o) => ({ ...o })),
        [{ apiVersion: API_VERSION, kind: "SandboxPool", name: POOL, uid: pool.metadata.uid, controller: true, blockOwnerDeletion: true }],
      );
      const [agent] = pod.spec?.containers ?? [];
      assert.equal(agent?.image, AGENT_IMAGE);
      assert.equal(agent?.resources?.limits?.cpu, "500m");
      const envByName = new Map((agent?.env ?? []).map((e) => [e.name, e]));
      assert.equal(envByName.get("PORT")?.value, "7071");
      assert.equal(envByName.get("FSB_AGENT_NAME")?.valueFrom?.fieldRef?.fieldPath, "metadata.name");
      assert.equal(envByName.get("FSB_AGENT_UID")?.valueFrom?.fieldRef?.fieldPath, "metadata.uid");
      assert.equal(envByName.get("FSB_NODE_NAME")?.valueFrom?.fieldRef?.fieldPath, "spec.nodeName");
      assert.equal(envByName.get("FSB_AGENT_POOL")?.value, POOL);
      assert.equal(envByName.get("FSB_AGENT_CPU_LIMIT_MILLICORES")?.valueFrom?.resourceFieldRef?.resource, "limits.cpu");
      assert.equal(envByName.get("FSB_AGENT_MEMORY_LIMIT_BYTES")?.valueFrom?.resourceFieldRef?.resource, "limits.memory");
      assert.equal(envByName.get("FSB_AGENT_LISTEN")?.value, "0.0.0.0:7071");
      assert.deepEqual({ ...envByName.get("FSB_AGENT_TOKEN")?.valueFrom?.secretKeyRef }, { name: TOKEN_SECRET, key: "token" });
      assert.equal(envByName.get("FSB_CONTAINERD_NAMESPACE")?.value, "k8s.io");
      // The node's checkpoint directory, shared by the pool's agents there; Shared sandboxes join the Pod's network.
      assert.equal(envByName.get("FSB_CHECKPOINT_DIR")?.value, "/var/lib/fast-sandbox/checkpoints");
      assert.equal(envByName.get("FSB_AGENT_OWN_NETWORK")?.value, "true");
      assert.deepEqual(
        (pod.spec?.volumes ?? []).filter((v) => v.hostPath).map((v) => v.hostPath?.path),
        ["/run/containerd", "/var/lib/containerd", "/var/lib/fast-sandbox/checkpoints"],
      );
    }
  });

  it("reports both agents ready with <podIP>:7071 endpoints that reach their own Pod", async () => {
    const endpoints = await eventually("two ready agents", () => {
      const found = names.map(readyEndpoint);
      return found.every(Boolean) ? (found as string[]) : undefined;
    });
    const pods = await agentPods();
    for (const [i, name] of names.entries()) {
      const pod = pods.find((p) => p.metadata?.name === name);
      assert.match(endpoints[i] ?? "", /^127\.0\.0\.\d+:7071$/);
      assert.equal(endpoints[i], `${pod?.status?.podIP}:7071`);
      const answer = (await (await fetch(`http://${endpoints[i]}/`)).json()) as { pod: string; namespace: string };
      assert.deepEqual({ pod: answer.pod, namespace: answer.namespace }, { pod: name, namespace: NAMESPACE });
      const ready = events.find((e) => e.type === "ready" && e.agent.name === name);
      assert.ok(ready?.type === "ready");
      assert.equal(ready.agent.nodeName, pod?.spec?.nodeName);
      assert.equal(ready.agent.hostIP, pod?.status?.hostIP);
      assert.equal(ready.agent.uid, pod?.metadata?.uid);
      assert.equal(ready.agent.templateHash, fleet?.templateHash(pool), "the fleet reads the hash back from the Pod");
    }
    assert.deepEqual(
      fleet
        ?.listAgents(ref)
        .filter((a) => a.ready)
        .map((a) => a.name)
        .sort(),
      [...names].sort(),
    );
  });

  it("scales down to one by deleting the named Pod only; the fleet reports it lost and removed", async () => {
    assert.ok(fleet);
    const [stopped, kept] = names as [string, string];
    await fleet.stopAgents(ref, [stopped]);
    await eventually("the stopped agent's Pod gone", async () => !(await agentPods()).some((p) => p.metadata?.name === stopped));
    await eventually("the stopped agent removed", () => events.some((e) => e.type === "removed" && e.agent.name === stopped));
    assert.ok(events.some((e) => e.type === "lost" && e.agent.name === stopped));
    const remaining = await agentPods();
    assert.deepEqual(
      remaining.map((p) => p.metadata?.name),
      [kept],
    );
    assert.ok(!events.some((e) => e.type !== "ready" && e.agent.name === kept), "the other agent was never lost");
    assert.deepEqual(
      fleet.listAgents(ref).map((a) => a.name),
      [kept],
    );
    // Stopping a name twice, or one that never existed, does nothing.
    await fleet.stopAgents(ref, [stopped, "python-agent-nope0"]);
  });

  it("a batch the API server refuses partway returns the Pods it created; one that creates none fails with the reason", async () => {
    assert.ok(fleet);
    const before = (await agentPods()).length;
    // A quota of one Pod more than the namespace has: the second Pod of a batch of three is refused.
    await core.createNamespacedResourceQuota({ namespace: NAMESPACE, body: { metadata: { name: "pods" }, spec: { hard: { pods: String(before + 1) } } } });
    try {
      await eventually("the quota's usage counted", async () => {
        const quota = await core.readNamespacedResourceQuota({ name: "pods", namespace: NAMESPACE });
        return quota.status?.used?.pods === String(before);
      });
      const started = await fleet.startAgents(pool, 3);
      assert.equal(started.length, 1, "the Pod created before the refusal is returned, not lost");
      const pods = (await agentPods()).map((p) => p.metadata?.name);
      assert.ok(pods.includes(started[0]), "and it exists");
      assert.equal(pods.length, before + 1, "nothing more was created");
      await assert.rejects(fleet.startAgents(pool, 1), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, `a PermissionDeniedError, got ${String(error)}`);
        assert.match(error.message, /exceeded quota/);
        return true;
      });
      await fleet.stopAgents(ref, started);
      await eventually("the batch's Pod gone", async () => (await agentPods()).length === before);
    } finally {
      await core.deleteNamespacedResourceQuota({ name: "pods", namespace: NAMESPACE });
    }
  });

  it("deleting the SandboxPool garbage-collects its agent Pods through the owner reference", async () => {
    assert.ok(store && fleet);
    const [, kept] = names as [string, string];
    await store.delete("SandboxPool", { namespace: NAMESPACE, name: POOL });
    await eventually("the pool's Pods collected", async () => (await agentPods()).length === 0, 90_000);
    await eventually("the last agent removed", () => events.some((e) => e.type === "removed" && e.agent.name === kept));
    assert.deepEqual(fleet.listAgents(ref), []);
  });
});
