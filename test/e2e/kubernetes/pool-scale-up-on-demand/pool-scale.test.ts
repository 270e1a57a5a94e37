/**
 * The pool scales with demand (Kubernetes mode, `PoolController` over `KubernetesAgentFleet`): on a
 * real control plane (test/harness/cluster) a SandboxPool with poolMin 1 gets one ready agent Pod and
 * `status.readyAgents` 1; raising poolMin to 2 gives two; demand beyond the free slots (placements
 * in the registry plus creates waiting for a slot) grows it to poolMax and no further; after the
 * sandboxes are released and poolMin lowered, the idle agents go once scaleDownDelaySeconds has
 * passed, while the agent that still holds a sandbox stays.
 *
 * The fake kubelet runs the agent image as the harness's echo server (images.json here), which
 * answers the agent's readiness probe. Demand is simulated in the registry (`registry.place`), as
 * the fast path would place sandboxes; no sandbox runs. The cluster is started for this file only
 * and everything is removed afterwards.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { CoreV1Api, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { API_VERSION, type PoolCapacity, type SandboxPoolStatus } from "@fast-sandbox/api";
import { pino } from "pino";
import { KubernetesAgentFleet } from "../../../../packages/controlplane/src/fleet/kubernetes-agent-fleet.js";
import { PoolController } from "../../../../packages/controlplane/src/kubernetes/pool-controller.js";
import { AgentRegistry } from "../../../../packages/controlplane/src/registry/agent-registry.js";
import { openKubernetesResourceStore, type KubernetesResourceStore } from "../../../../packages/controlplane/src/store/kubernetes-resource-store.js";
import { updateWithRetry } from "../../../../packages/controlplane/src/store/retry-on-conflict.js";
import { REPO_ROOT } from "../../../support/containerd.js";

const HERE = path.join(REPO_ROOT, "test/e2e/kubernetes/pool-scale-up-on-demand");
const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const CRD_DIR = path.join(REPO_ROOT, "config/crd");
const STATE = path.join(os.tmpdir(), `fsb-cluster-pool-scale-${process.pid}-${Date.now()}`);
const NAMESPACE = "fsb-pool-scale";
const POOL = "python";
const AGENT_IMAGE = "fast-sandbox.io/agent:e2e";
const TOKEN_SECRET = "agents-token";
const SCALE_DOWN_DELAY_SECONDS = 6;

const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE, FSB_IMAGE_MAP: path.join(HERE, "images.json") };
delete env.FSB_APISERVER_PORT;
delete env.FSB_CLUSTER_NODES;
delete env.KUBECONFIG;
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

let kubeconfigPath = "";
let core: CoreV1Api;
let store: KubernetesResourceStore | undefined;
let fleet: KubernetesAgentFleet | undefined;
let controller: PoolController | undefined;
const registry = new AgentRegistry();
/** Creates waiting for a slot in the pool, as the fast path would report them. */
let waiting = 0;
let placed = 0;
/**
 * The controller kit's timers (relist back-off, requeues) do not keep a process alive — in the
 * controller the servers do. Here nothing else would while the informer waits to list again (the
 * API server answers 429 while a just-established CRD's storage initializes).
 */
let keepAlive: NodeJS.Timeout | undefined;

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

/** The pool's agent Pods that are not being deleted. */
async function agentPods(): Promise<V1Pod[]> {
  const { items } = await core.listNamespacedPod({ namespace: NAMESPACE, labelSelector: `fast-sandbox.io/pool=${POOL}` });
  return items.filter((pod) => !pod.metadata?.deletionTimestamp);
}

async function poolStatus(): Promise<SandboxPoolStatus | undefined> {
  return (await store?.get("SandboxPool", { namespace: NAMESPACE, name: POOL }))?.status;
}

async function setCapacity(capacity: Partial<PoolCapacity>): Promise<number> {
  assert.ok(store);
  const written = await updateWithRetry(store, "SandboxPool", { namespace: NAMESPACE, name: POOL }, (pool) => ({
    ...pool,
    spec: { ...pool.spec, capacity: { ...pool.spec.capacity, ...capacity } },
  }));
  assert.ok(written?.metadata.generation);
  return written.metadata.generation;
}

/** Pool status and Pods agree on `count` ready agents, for the given generation. */
function readyAgents(count: number, generation: number) {
  return async () => {
    const status = await poolStatus();
    const pods = await agentPods();
    const ready = pods.filter((pod) => (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"));
    return status?.readyAgents === count &&
      status.agents === count &&
      status.observedGeneration === generation &&
      pods.length === count &&
      ready.length === count
      ? status
      : undefined;
  };
}

function place(count: number): string[] {
  return Array.from(
    { length: count },
    () => registry.place({ sandboxKey: `${NAMESPACE}/sandbox-${placed++}`, namespace: NAMESPACE, pool: POOL, image: "python:3.12", ports: [] }).agent.name,
  );
}

describe("pool scales up on demand and down after the delay (PoolController on a real kube-apiserver)", () => {
  before(async () => {
    keepAlive = setInterval(() => undefined, 1000);
    // The first run on a fresh machine builds the binaries (CI builds them in a step before).
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    kubeconfigPath = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfigPath, up.stdout);
    const apply = await kubectl("apply", "-k", CRD_DIR);
    assert.equal(apply.code, 0, apply.stderr);
    const established = await kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/sandboxpools.sandbox.fast.io");
    assert.equal(established.code, 0, established.stderr);
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: NAMESPACE } } });
    await core.createNamespacedSecret({ namespace: NAMESPACE, body: { metadata: { name: TOKEN_SECRET }, stringData: { token: "e2e-agent-token" } } });
    store = openKubernetesResourceStore({ kubeConfig, logger: quiet });
    fleet = new KubernetesAgentFleet({ kubeConfig, namespace: NAMESPACE, logger: quiet, pod: { tokenSecretName: TOKEN_SECRET } });
    controller = new PoolController({
      store,
      fleet,
      registry,
      namespace: NAMESPACE,
      logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "silent" }),
      waitingFor: () => waiting,
      resyncIntervalMs: 1000,
    });
    await controller.start();
    await fleet.start();
  });

  after(async () => {
    await controller?.stop().catch(() => undefined);
    await fleet?.stop().catch(() => undefined);
    await store?.close().catch(() => undefined);
    if (kubeconfigPath) {
      await kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s");
      await kubectl("delete", "-k", CRD_DIR, "--ignore-not-found", "--wait=true", "--timeout=60s");
    }
    await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
    clearInterval(keepAlive);
  });

  it("a pool with poolMin 1 gets one ready agent Pod and status readyAgents 1", async () => {
    assert.ok(store);
    await store.create("SandboxPool", {
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: POOL, namespace: NAMESPACE },
      spec: {
        capacity: { poolMin: 1, poolMax: 3, scaleDownDelaySeconds: SCALE_DOWN_DELAY_SECONDS },
        maxSandboxesPerPod: 2,
        agentTemplate: { spec: { containers: [{ name: "agent", image: AGENT_IMAGE, env: [{ name: "PORT", value: "7071" }] }] } },
      },
    });
    const status = await eventually("one ready agent", readyAgents(1, 1));
    assert.deepEqual(status, { agents: 1, readyAgents: 1, sandboxes: 0, freeSlots: 2, desiredAgents: 1, observedGeneration: 1 });
    const [pod] = await agentPods();
    const agent = registry.getAgent(pod?.metadata?.name ?? "");
    assert.equal(agent?.endpoint, `${pod?.status?.podIP}:7071`);
    assert.equal(agent?.hostIP, pod?.status?.podIP);
    assert.equal(agent?.capacity, 2);
  });

  it("raising poolMin to 2 gives two ready agents", async () => {
    const generation = await setCapacity({ poolMin: 2 });
    const status = await eventually("two ready agents", readyAgents(2, generation));
    assert.equal(status.desiredAgents, 2);
    assert.equal(status.freeSlots, 4);
  });

  it("demand beyond the free slots grows the pool up to poolMax, and not beyond", async () => {
    place(4); // every slot of the two agents
    waiting = 3; // and more creates wait: ceil((4 + 3) / 2) = 4 agents wanted, poolMax is 3
    controller?.wake(NAMESPACE, POOL);
    const generation = (await store?.get("SandboxPool", { namespace: NAMESPACE, name: POOL }))?.metadata.generation ?? 0;
    const grown = await eventually("three ready agents", readyAgents(3, generation));
    assert.equal(grown.desiredAgents, 3);
    assert.equal(grown.sandboxes, 4);
    place(2); // the new agent's slots; one create still waits
    waiting = 1;
    await eventually("status shows the pool full", async () => (await poolStatus())?.freeSlots === 0);
    // Several resyncs later it has not grown past poolMax.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal((await agentPods()).length, 3);
    assert.equal((await poolStatus())?.desiredAgents, 3);
  });

  it("after release and a lower poolMin, idle agents go after scaleDownDelaySeconds while the busy agent stays", async () => {
    waiting = 0;
    // Keep one sandbox; release the others.
    const kept = registry.placementOf(`${NAMESPACE}/sandbox-0`);
    assert.ok(kept);
    for (let i = 1; i < placed; i++) registry.release(`${NAMESPACE}/sandbox-${i}`);
    const generation = await setCapacity({ poolMin: 1 });
    const startedAt = Date.now();
    await eventually("the sizer wants one agent", async () => {
      const status = await poolStatus();
      return status?.desiredAgents === 1 && status.observedGeneration === generation && status.sandboxes === 1;
    });
    if (Date.now() - startedAt < (SCALE_DOWN_DELAY_SECONDS - 2) * 1000) {
      assert.equal((await agentPods()).length, 3, "nothing is released before the delay");
    }
    const status = await eventually("one ready agent left", readyAgents(1, generation), 90_000);
    assert.ok(Date.now() - startedAt >= SCALE_DOWN_DELAY_SECONDS * 1000, "released only after the delay");
    assert.deepEqual(status, { agents: 1, readyAgents: 1, sandboxes: 1, freeSlots: 1, desiredAgents: 1, observedGeneration: generation });
    assert.deepEqual(
      (await agentPods()).map((pod) => pod.metadata?.name),
      [kept.agent.name],
    );
    assert.deepEqual(
      registry.listAgents({ namespace: NAMESPACE, pool: POOL }).map((agent) => [agent.name, agent.ready, agent.allocated]),
      [[kept.agent.name, true, 1]],
    );
  });
});
