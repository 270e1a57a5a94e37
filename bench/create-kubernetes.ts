/**
 * `bench create --kubernetes`: the same measurement as the embedded bench (create-rounds.ts), with
 * Fast Sandbox deployed on a cluster instead of in this process. The cluster is the Kubernetes e2e
 * suite's (test/support/kubernetes-suite.ts): a fresh cluster of the test harness (a real
 * kube-apiserver + etcd, and a fake kubelet that runs Pods as local processes on this host), Fast
 * Sandbox applied from config/ through test/e2e/kubernetes/deploy (controller Deployment with 2
 * replicas, janitor DaemonSet, CRDs, RBAC), containerd namespace `fsb-e2e-kubernetes` with the base
 * image imported.
 *
 * What differs from the embedded bench: the SDK calls a Ready controller replica on its Pod IP
 * (port 7070, a loopback address here: Pods share the host's network); the controller's store is
 * the kube-apiserver (etcd behind it) instead of SQLite; the agents are Pods of the pool (started
 * by the fake kubelet). The baseline is `ctr run -d` in the suite's containerd namespace, so both
 * sides share containerd, snapshotter and image. The baseline's containers carry no
 * `fast-sandbox.io/managed` label, which the deployment's janitor never touches.
 *
 * Self-contained: the cluster is started for the run and removed at the end (also on failure, and
 * on SIGINT/SIGTERM); what the teardown reports left is part of the result. Only one run of the
 * suite's cluster may exist on a machine at a time (`flock /tmp/fsb-k8s-suite.lock …`).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { NetworkMode } from "@fast-sandbox/api";
import { BASE_IMAGE, CONTAINERD_NAMESPACE, KubernetesSuite, SYSTEM_NAMESPACE } from "../test/support/kubernetes-suite.js";
import { benchPool, CreateRounds } from "./create-rounds.js";
import { machine, type CreateBenchResult } from "./create.js";

const POOL = "bench";

export interface KubernetesCreateBenchOptions {
  count: number;
  warmup: number;
  concurrency: number;
  /** Agent Pods of the pool (poolMin = poolMax). */
  agents: number;
  /** The bench pool's network mode. */
  network: NetworkMode;
  command: string[];
  /** Progress and diagnostics (stderr). */
  log: (message: string) => void;
}

interface PodList {
  items: {
    metadata: { name: string; namespace: string; deletionTimestamp?: string };
    spec?: { initContainers?: { name: string }[]; containers?: { name: string }[] };
    status?: { conditions?: { type: string; status: string }[] };
  }[];
}

/**
 * Saves what every Pod's containers wrote (controller replicas, janitor, agents) and the Sandbox
 * objects into `dir`, for a run that went wrong: the teardown removes them all.
 */
async function saveClusterLogs(suite: KubernetesSuite, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const pods = JSON.parse(await suite.kubectlOk("get", "pods", "--all-namespaces", "-o", "json")) as PodList;
  for (const pod of pods.items) {
    for (const container of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
      const log = suite.podLog(pod.metadata.namespace, pod.metadata.name, container.name);
      writeFileSync(join(dir, `${pod.metadata.namespace}_${pod.metadata.name}_${container.name}.log`), log);
    }
  }
  writeFileSync(join(dir, "sandboxes.yaml"), (await suite.kubectl("get", "sandboxes", "--all-namespaces", "-o", "yaml")).stdout);
  writeFileSync(join(dir, "sandboxpools.yaml"), (await suite.kubectl("get", "sandboxpools", "--all-namespaces", "-o", "yaml")).stdout);
  writeFileSync(join(dir, "events.txt"), (await suite.kubectl("get", "events", "--all-namespaces", "--sort-by=.lastTimestamp")).stdout);
}

export async function runKubernetesCreateBench(options: KubernetesCreateBenchOptions): Promise<CreateBenchResult> {
  const { count, warmup, concurrency, agents, network, command, log } = options;
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups, the cluster's host dirs)");
  const image = BASE_IMAGE;
  const suite = new KubernetesSuite();
  let rounds: CreateRounds | undefined;
  let kubernetes: CreateBenchResult["kubernetes"] | undefined;
  let cleanup: CreateBenchResult["cleanup"] = { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0, problems: [] };

  // Interrupted: the cluster, its Pods and the containerd namespace go too (removeEverything runs once).
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: removing the cluster`);
    void suite.removeEverything().then(
      (left) => {
        if (left.length > 0) log(`left after the teardown:\n  ${left.join("\n  ")}`);
        process.exit(signal === "SIGINT" ? 130 : 143);
      },
      () => process.exit(1),
    );
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  let measuredAndDeleted = false;
  try {
    log("starting the cluster and deploying Fast Sandbox (test/e2e/kubernetes/deploy)");
    const clusterStarted = performance.now();
    await suite.start();
    const clusterMs = performance.now() - clusterStarted;
    log(`cluster up, controller Available after ${(clusterMs / 1000).toFixed(1)} s`);

    const namespace = await suite.createNamespace("bench");
    const poolStarted = performance.now();
    await suite.apply(JSON.stringify(benchPool({ name: POOL, namespace, image, agents, total: count + warmup, concurrency, network })), namespace);
    await suite.eventually(
      `${agents} ready agent(s) in the status of SandboxPool ${namespace}/${POOL}`,
      async () => Number((await suite.kubectlOk("-n", namespace, "get", "sandboxpool", POOL, "-o", "jsonpath={.status.readyAgents}")).trim() || 0) >= agents,
      { timeoutMs: 180_000, intervalMs: 250 },
    );

    const controllerUrl = await suite.controllerUrl();
    const controllers = JSON.parse(
      await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=controller", "-o", "json"),
    ) as PodList;
    const controllerReplicas = controllers.items.filter(
      (pod) => !pod.metadata.deletionTimestamp && (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
    ).length;
    rounds = new CreateRounds({
      target: { url: controllerUrl, token: suite.apiToken, pool: POOL, namespace },
      ctr: { namespace: CONTAINERD_NAMESPACE },
      count,
      warmup,
      concurrency,
      image,
      command,
      log,
    });
    // The replica called places on its own view of the agents: wait until it knows them too.
    await rounds.waitForReadyAgents(agents, 60_000);
    const poolMs = performance.now() - poolStarted;
    log(`${agents} agent Pod(s) ready after ${(poolMs / 1000).toFixed(1)} s; controller replica ${controllerUrl} (${controllerReplicas} Ready)`);
    kubernetes = { controllerUrl, controllerReplicas, namespace, setupMs: { clusterAndDeployment: clusterMs, poolReady: poolMs } };

    await rounds.run();
    await rounds.deleteSandboxes();
    measuredAndDeleted = true;
  } finally {
    await rounds?.close();
    await rounds?.removeCtrContainers();
    // Checked while the cluster still runs: the agents' own shim anchors are not the run's.
    const left = rounds
      ? await rounds.leftoversOfTheRun().catch((error: unknown) => ({ tasks: [String(error)], containers: [] }))
      : { tasks: [], containers: [] };
    if (rounds && (!measuredAndDeleted || rounds.deleteErrors.length + left.tasks.length + left.containers.length > 0)) {
      const dir = join(tmpdir(), `fsb-bench-kubernetes-${rounds.runId}`);
      await saveClusterLogs(suite, dir).then(
        () => log(`the run went wrong: the Pods' logs and the Sandbox objects are in ${dir}`),
        (error: unknown) => log(`could not save the Pods' logs: ${String(error)}`),
      );
    }
    log("removing the cluster and everything it ran");
    const problems = await suite.removeEverything();
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    cleanup = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft: 0, problems };
    if (left.tasks.length + left.containers.length + problems.length > 0) log(`clean-up left something behind: ${JSON.stringify(cleanup)}`);
  }

  const measured = rounds.results();
  return {
    benchmark: "create",
    count,
    warmup,
    concurrency,
    agents,
    image,
    runtimeType: "container",
    containerdNamespace: CONTAINERD_NAMESPACE,
    command,
    network,
    // The suite's pool keeps none (main.ts refuses --prepared with --kubernetes).
    prepared: 0,
    sdkProcess: false,
    order: rounds.order(0),
    fastSandbox: measured.fastSandbox,
    ctrBaseline: measured.ctrBaseline,
    wallMs: measured.wallMs,
    burstWallMs: measured.burstWallMs,
    ...(kubernetes ? { kubernetes } : {}),
    throughputPerSecond: measured.throughputPerSecond,
    ratioP50: measured.ratioP50,
    machine: machine(),
    cleanup,
  };
}
