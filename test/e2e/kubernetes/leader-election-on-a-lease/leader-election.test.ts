/**
 * Leader election on a real coordination.k8s.io/v1 Lease (the harness's kube-apiserver): of two
 * candidates exactly one leads; a leader that stops releases the lease and the other takes the
 * released lease (without waiting for it to expire); a leader that stops renewing (its requests cut
 * off, as if frozen or partitioned) steps down, and the other takes over after that and only once
 * the lease has expired; and at no sampled moment do two candidates lead. Short timings (TIMINGS):
 * lease 6 s, renew deadline 4 s, retry 500 ms. The cluster is started for this file and stopped
 * afterwards.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CoordinationV1Api, CoreV1Api, KubeConfig, type V1ContainerState } from "@kubernetes/client-node";
import { pino } from "pino";
import { UnavailableError } from "@fast-sandbox/api";
import { kubernetesLeaseClient } from "../../../../packages/controlplane/src/leader/kubernetes-lease-client.js";
import { KubernetesReplicaLiveness } from "../../../../packages/controlplane/src/leader/kubernetes-replica-liveness.js";
import { LeaseLeaderElector, type LeaseClient } from "../../../../packages/controlplane/src/leader/lease-leader-elector.js";
import type { LeaseSpecRecord } from "../../../../packages/controlplane/src/leader/lease-decision.js";
import { REPO_ROOT } from "../../../support/containerd.js";

const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const STATE = path.join(os.tmpdir(), `fsb-cluster-leader-election-${process.pid}-${Date.now()}`);
const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE };
delete env.FSB_APISERVER_PORT;
delete env.KUBECONFIG;
const NAMESPACE = "default";
const LEASE = "fsb-leader-election-test";
// Shorter than the product's defaults (15 s, 10 s, 2 s) to keep the case short, yet loose enough
// for a loaded machine: a renewal may take up to 4 s before the leader steps down.
const TIMINGS = { leaseDurationSeconds: 6, renewDeadlineMs: 4_000, retryPeriodMs: 500 };

let kubeConfig: KubeConfig;

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

interface Candidate {
  elector: LeaseLeaderElector;
  /** While true every request of this candidate fails, as if its process were frozen or cut off. */
  cut: { value: boolean };
  startedAt: number[];
  stoppedAt: number[];
  /** The renewTime of the last of its Lease writes that succeeded: the Lease runs from there. */
  lastRenewTime: number;
  /** Each Lease spec it read, by resourceVersion: what a conditional replace of that version replaced. */
  read: Map<string, LeaseSpecRecord>;
  /** Its replaces that succeeded: the Lease on the API server before (as read) and after. */
  replaced: { from: LeaseSpecRecord | undefined; to: LeaseSpecRecord }[];
}

function candidate(identity: string): Candidate {
  const real = kubernetesLeaseClient({ kubeConfig, namespace: NAMESPACE, name: LEASE });
  const cut = { value: false };
  const guard = <T>(call: () => Promise<T>): Promise<T> => (cut.value ? Promise.reject(new UnavailableError("cut off")) : call());
  const written = <T>(spec: LeaseSpecRecord, call: () => Promise<T>): Promise<T> =>
    guard(call).then((value) => {
      result.lastRenewTime = Math.max(result.lastRenewTime, spec.renewTime?.getTime() ?? 0);
      return value;
    });
  const lease: LeaseClient = {
    get: () =>
      guard(() => real.get()).then((observed) => {
        if (observed) result.read.set(observed.resourceVersion, observed.spec);
        return observed;
      }),
    create: (spec) => written(spec, () => real.create(spec)),
    replace: (version, spec) =>
      written(spec, () => real.replace(version, spec)).then((value) => {
        result.replaced.push({ from: result.read.get(version), to: spec });
        return value;
      }),
  };
  const elector = new LeaseLeaderElector({ lease, identity, ...TIMINGS });
  const result: Candidate = { elector, cut, startedAt: [], stoppedAt: [], lastRenewTime: 0, read: new Map(), replaced: [] };
  elector.run({ onStartedLeading: () => result.startedAt.push(Date.now()), onStoppedLeading: () => void result.stoppedAt.push(Date.now()) });
  return result;
}

/** Samples every candidate's isLeader() every 10 ms; records every moment two led at once. */
class Sampler {
  readonly overlaps: string[] = [];
  samples = 0;
  readonly #timer: NodeJS.Timeout;
  /** `candidates` is read at each sample: candidates added later are sampled too. */
  constructor(readonly candidates: Candidate[]) {
    this.#timer = setInterval(() => {
      this.samples++;
      const leaders = this.candidates.filter((c) => c.elector.isLeader()).map((c) => c.elector.identity);
      if (leaders.length > 1) this.overlaps.push(`${new Date().toISOString()} ${leaders.join("+")}`);
    }, 10);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

async function until(what: string, condition: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(10);
  }
  return Date.now() - start;
}

async function holder(): Promise<string | undefined> {
  const lease = await kubeConfig.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: LEASE, namespace: NAMESPACE });
  return lease.spec?.holderIdentity;
}

describe("leader election on a coordination.k8s.io Lease of a real kube-apiserver", () => {
  const all: Candidate[] = [];
  let sampler: Sampler;

  before(async () => {
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    const kubeconfigPath = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfigPath, up.stdout);
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    all.push(candidate("replica-a"), candidate("replica-b"));
    sampler = new Sampler(all);
  });

  after(async () => {
    sampler?.stop();
    for (const c of all) await c.elector.stop().catch(() => undefined);
    if (kubeConfig) {
      await kubeConfig
        .makeApiClient(CoordinationV1Api)
        .deleteNamespacedLease({ name: LEASE, namespace: NAMESPACE })
        .catch(() => undefined);
    }
    await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
  });

  it("of two candidates exactly one leads, holds the Lease and keeps it", async () => {
    await until("a leader", () => all.some((c) => c.elector.isLeader()), 10_000);
    await sleep(3 * TIMINGS.leaseDurationSeconds * 1000);
    const leaders = all.filter((c) => c.elector.isLeader());
    assert.equal(leaders.length, 1);
    assert.equal(leaders[0]?.startedAt.length, 1, "it never lost the lease while renewing");
    assert.equal(await holder(), leaders[0]?.elector.identity);
  });

  it("a leader that stops releases the Lease: the other takes the released Lease, without waiting for it to expire", async () => {
    const leader = all.find((c) => c.elector.isLeader());
    const follower = all.find((c) => c !== leader && !c.elector.isLeader());
    assert.ok(leader && follower);
    await leader.elector.stop();
    assert.equal(leader.elector.isLeader(), false);
    // stop() wrote the release: no holder, as releasedLease writes it.
    const release = leader.replaced.at(-1);
    assert.equal(release?.from?.holderIdentity, leader.elector.identity);
    assert.equal(release?.to.holderIdentity, undefined, "stop() released the Lease");
    await until("the follower leads", () => follower.elector.isLeader(), 30_000);
    // The mechanism, not the time: the Lease the follower replaced to lead (as it read it from the
    // API server) was the released one, so it did not wait for the leader's lease to expire.
    const takeover = follower.replaced.findLast(
      (r) => r.to.holderIdentity === follower.elector.identity && r.from?.holderIdentity !== follower.elector.identity,
    );
    assert.ok(takeover, "the follower led by replacing the Lease");
    assert.equal(takeover.from?.holderIdentity, undefined, `took a Lease held by ${takeover.from?.holderIdentity}, not the released one`);
    assert.equal(await holder(), follower.elector.identity);
  });

  it("a leader that stops renewing without releasing steps down by its renew deadline; the other leads once the Lease expires", async () => {
    const newcomer = candidate("replica-c");
    all.push(newcomer);
    const leader = all.find((c) => c.elector.isLeader());
    assert.ok(leader && leader !== newcomer);
    await sleep(1_000);
    assert.equal(newcomer.elector.isLeader(), false, "the newcomer follows while the leader renews");
    const cutAt = Date.now();
    leader.cut.value = true;
    // Generous waits: the order of the step-down and the takeover is asserted below, not their times.
    await until("the cut-off leader steps down", () => !leader.elector.isLeader(), 30_000);
    await until("the newcomer leads", () => newcomer.elector.isLeader(), 30_000);
    const takenOverAt = newcomer.startedAt.at(-1) ?? 0;
    const takeoverMs = takenOverAt - cutAt;
    // The lease ran from the leader's last renewal that reached the API server (its renewTime, this
    // process's clock), however long the server took with it: not a moment of it was taken.
    const sinceRenewalMs = takenOverAt - leader.lastRenewTime;
    assert.ok(
      sinceRenewalMs >= TIMINGS.leaseDurationSeconds * 1000,
      `took over ${sinceRenewalMs} ms after the leader's last renewal (${takeoverMs} ms after the cut): before the lease could have expired`,
    );
    // The callbacks' own times: the old leader had stopped leading when the newcomer started.
    const steppedDownAt = leader.stoppedAt.at(-1) ?? Infinity;
    assert.ok(steppedDownAt <= takenOverAt, `stepped down ${steppedDownAt - cutAt} ms after the cut, taken over after ${takeoverMs} ms`);
    assert.equal(await holder(), newcomer.elector.identity);
    // Reconnected, the old leader finds the new holder and stays a follower.
    leader.cut.value = false;
    await sleep(1_000);
    assert.equal(leader.elector.isLeader(), false);
    assert.equal(newcomer.elector.isLeader(), true);
  });

  it("at no sampled moment did two candidates lead", () => {
    assert.ok(sampler.samples > 500, `${sampler.samples} samples`);
    assert.deepEqual(sampler.overlaps, []);
  });

  describe("whether other replicas may still run, from their Pods (KubernetesReplicaLiveness)", () => {
    const POD_NAMESPACE = "fsb-replica-liveness";
    const REPLICA = { "app.kubernetes.io/name": "fast-sandbox", "app.kubernetes.io/component": "controller" };
    const T = (seconds: number) => new Date(Date.UTC(2026, 11, 6, 12, 0, seconds));
    let core: CoreV1Api;

    /** A Pod no node takes (its nodeSelector matches none), with its container's state written as a kubelet would. */
    async function replicaPod(name: string, labels: Record<string, string>, state: V1ContainerState): Promise<void> {
      await core.createNamespacedPod({
        namespace: POD_NAMESPACE,
        body: {
          metadata: { name, labels },
          spec: { nodeSelector: { "fsb-test/no-such-node": "true" }, containers: [{ name: "controller", image: "fast-sandbox/controller" }] },
        },
      });
      await setState(name, state);
    }

    /** Writes the container's state into the Pod's status, again on a conflict (the scheduler writes its condition meanwhile). */
    async function setState(name: string, state: V1ContainerState): Promise<void> {
      for (let attempt = 1; ; attempt++) {
        const pod = await core.readNamespacedPodStatus({ name, namespace: POD_NAMESPACE });
        pod.status = {
          ...pod.status,
          phase: "Running",
          containerStatuses: [{ name: "controller", image: "fast-sandbox/controller", imageID: "", ready: "running" in state, restartCount: 0, state }],
        };
        try {
          await core.replaceNamespacedPodStatus({ name, namespace: POD_NAMESPACE, body: pod });
          return;
        } catch (error) {
          if ((error as { code?: number }).code !== 409 || attempt >= 10) throw error;
        }
      }
    }

    const liveness = (podName: string) => new KubernetesReplicaLiveness({ kubeConfig, namespace: POD_NAMESPACE, podName, logger: pino({ level: "silent" }) });

    before(async () => {
      core = kubeConfig.makeApiClient(CoreV1Api);
      await core.createNamespace({ body: { metadata: { name: POD_NAMESPACE } } });
      await replicaPod("controller-a", { ...REPLICA, "pod-template-hash": "new" }, { running: { startedAt: T(0) } });
      await replicaPod("controller-b", { ...REPLICA, "pod-template-hash": "old" }, { running: { startedAt: T(0) } });
      // Not a replica: the proxy's Pod shares the name label only.
      await replicaPod("proxy-x", { "app.kubernetes.io/name": "fast-sandbox", "app.kubernetes.io/component": "proxy" }, { running: { startedAt: T(0) } });
    });

    after(async () => {
      await core?.deleteNamespace({ name: POD_NAMESPACE }).catch(() => undefined);
    });

    it("another replica (of the other side of a rollout too) running since before the time may run; restarted since, crash-looping or gone, it does not", async () => {
      assert.equal(await liveness("controller-a").othersMayRunSince(T(10)), true, "controller-b runs since 12:00:00");
      await setState("controller-b", { running: { startedAt: T(20) } });
      assert.equal(await liveness("controller-a").othersMayRunSince(T(10)), false, "controller-b restarted at 12:00:20; the proxy is no replica");
      assert.equal(await liveness("controller-a").othersMayRunSince(T(30)), true, "its new process ran at 12:00:30");
      await setState("controller-b", { waiting: { reason: "CrashLoopBackOff" } });
      assert.equal(await liveness("controller-a").othersMayRunSince(T(30)), false, "crash-looping: no process");
      assert.equal(await liveness("controller-b").othersMayRunSince(T(30)), true, "seen from controller-b, controller-a runs since 12:00:00");
      await core.deleteNamespacedPod({ name: "controller-a", namespace: POD_NAMESPACE, gracePeriodSeconds: 0 });
      for (let tries = 0; (await core.listNamespacedPod({ namespace: POD_NAMESPACE })).items.some((pod) => pod.metadata?.name === "controller-a"); tries++) {
        assert.ok(tries < 300, "controller-a's Pod deleted within 30 s");
        await sleep(100);
      }
      assert.equal(await liveness("controller-b").othersMayRunSince(T(30)), false, "controller-a's Pod is gone");
    });

    it("a replica without a Pod of its own (run outside Kubernetes) counts the others as running", async () => {
      assert.equal(await liveness("no-such-pod").othersMayRunSince(T(30)), true);
    });
  });
});
