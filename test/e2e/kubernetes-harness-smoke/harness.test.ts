// Smoke tests of the Kubernetes test harness (test/harness/cluster): a real
// control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
// plus the fake kubelet. The cluster is started in `before` in a state dir of
// this run only and stopped in the last test / `after`.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { KubeClient, KubeError, readClusterInfo, type ClusterInfo, type KObj, type WatchEvent } from "../../harness/cluster/kube-client.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../../..");
const CLUSTER_SH = path.join(REPO, "test/harness/cluster/cluster.sh");
const STATE = path.join(os.tmpdir(), `fsb-cluster-smoke-${process.pid}-${Date.now()}`);
const NS = "fsb-smoke";

// A cluster of this run only: own state dir, free ports, the default single node.
const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE };
delete env.FSB_APISERVER_PORT;
delete env.FSB_CLUSTER_NODES;
delete env.KUBECONFIG;
let kubeconfig = "";
let info: ClusterInfo;
let admin: KubeClient;

function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      {
        env: opts.env ?? env,
        cwd: REPO,
        maxBuffer: 64 << 20,
        timeout: opts.timeoutMs ?? 120_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

async function cluster(...args: string[]): Promise<string> {
  // The first `up` on a fresh machine builds the binaries: allow an hour.
  const r = await run("bash", [CLUSTER_SH, ...args], {
    timeoutMs: 60 * 60_000,
  });
  assert.equal(r.code, 0, `cluster.sh ${args.join(" ")} failed (${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

async function kubectl(...args: string[]): Promise<string> {
  const r = await run("kubectl", ["--kubeconfig", kubeconfig, ...args]);
  assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

async function kubectlJson(...args: string[]): Promise<KObj> {
  return JSON.parse(await kubectl(...args, "-o", "json")) as KObj;
}

/** Polls fn until it returns a truthy value; generous timeout, no timing assertion. */
async function eventually<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is not alive.
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function portAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(2000);
    s.on("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.on("timeout", () => {
      s.destroy();
      resolve(false);
    });
    s.on("error", () => resolve(false));
  });
}

async function httpJson(url: string): Promise<KObj> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  return (await res.json()) as KObj;
}

describe("kubernetes test harness", { timeout: 90 * 60_000 }, () => {
  const podPids: number[] = [];
  let stopped = false;

  before(async () => {
    const out = await cluster("up");
    const m = /^KUBECONFIG=(.+)$/m.exec(out);
    assert.ok(m, `cluster up printed no KUBECONFIG=: ${out}`);
    kubeconfig = m[1]!;
    info = readClusterInfo(STATE);
    admin = KubeClient.admin(info);
    await kubectl("apply", "-f", path.join(HERE, "namespace.yaml"));
  });

  after(async () => {
    admin?.close();
    if (!stopped) await cluster("down");
  });

  it("has a Ready node played by the fake kubelet", async () => {
    const nodes = await kubectlJson("get", "nodes");
    const names = (nodes.items as KObj[]).map((n) => n.metadata.name);
    assert.deepEqual(names, ["fsb-node-0"]);
    const ready = (nodes.items[0].status.conditions as KObj[]).find((c) => c.type === "Ready");
    assert.equal(ready?.status, "True");
  });

  it("runs a Deployment: pods scheduled, Running with loopback IPs, and the program answers", async () => {
    await kubectl("apply", "-f", path.join(HERE, "deployment.yaml"));
    const pods = await eventually("2 ready echo pods", async () => {
      const list = await kubectlJson("-n", NS, "get", "pods", "-l", "app=echo");
      const items = list.items as KObj[];
      const ok =
        items.length === 2 &&
        items.every(
          (p) =>
            p.status?.phase === "Running" &&
            /^127\.\d+\.\d+\.\d+$/.test(p.status.podIP ?? "") &&
            (p.status.conditions as KObj[] | undefined)?.some((c) => c.type === "Ready" && c.status === "True"),
        );
      return ok ? items : undefined;
    });
    const ips = pods.map((p) => p.status.podIP as string);
    assert.equal(new Set(ips).size, 2, `pods share an IP: ${ips.join(", ")}`);
    for (const p of pods) {
      assert.equal(p.spec.nodeName, "fsb-node-0");
      assert.deepEqual(p.status.podIPs, [{ ip: p.status.podIP }]);
      const cs = p.status.containerStatuses[0];
      assert.ok(cs.state.running, `container not running: ${JSON.stringify(cs.state)}`);
      assert.equal(cs.ready, true);
      const reply = await httpJson(`http://${p.status.podIP}:8080/`);
      assert.equal(reply.pod, p.metadata.name);
      assert.equal(reply.namespace, NS);
      assert.equal(reply.ip, p.status.podIP);
      assert.equal(reply.node, "fsb-node-0");
      assert.equal(reply.message, `hello from ${p.metadata.name}`);
      assert.deepEqual(reply.argv, ["--hello"]);
      podPids.push(reply.pid as number);
    }
    const wide = await kubectl("-n", NS, "get", "pods", "-o", "wide");
    for (const ip of ips) assert.match(wide, new RegExp(ip.replace(/\./g, "\\.")));
  });

  it("deleting the Deployment removes its Pods (GC) and stops their processes", async () => {
    assert.equal(podPids.length, 2);
    await kubectl("-n", NS, "delete", "deployment", "echo", "--wait=false");
    await eventually("echo pods gone", async () => {
      const list = await kubectlJson("-n", NS, "get", "pods", "-l", "app=echo");
      return (list.items as KObj[]).length === 0;
    });
    await eventually("echo processes gone", async () => podPids.every((pid) => !pidAlive(pid)));
    const rs = await kubectlJson("-n", NS, "get", "replicasets");
    assert.equal((rs.items as KObj[]).length, 0, "replicaset left behind");
  });

  it("shows an unmapped image as a visible failure", async () => {
    await kubectl("apply", "-f", path.join(HERE, "unmapped-pod.yaml"));
    const waiting = await eventually("ErrImageNeverPull", async () => {
      const p = await kubectlJson("-n", NS, "get", "pod", "unmapped");
      const w = p.status?.containerStatuses?.[0]?.state?.waiting;
      return w?.reason === "ErrImageNeverPull" ? w : undefined;
    });
    assert.match(waiting.message as string, /not mapped/);
    await kubectl("-n", NS, "delete", "pod", "unmapped", "--wait=true", "--timeout=120s");
  });

  it("takes and renews a Lease (coordination.k8s.io/v1) with optimistic concurrency", async () => {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;
    const t0 = new Date().toISOString().replace(/Z$/, "000Z");
    const created = await admin.post(base, {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "smoke-leader" },
      spec: {
        holderIdentity: "holder-a",
        leaseDurationSeconds: 15,
        acquireTime: t0,
        renewTime: t0,
        leaseTransitions: 0,
      },
    });
    assert.equal(created.spec.holderIdentity, "holder-a");
    const t1 = new Date(Date.now() + 1000).toISOString().replace(/Z$/, "000Z");
    const renewed = await admin.put(`${base}/smoke-leader`, {
      ...created,
      spec: { ...created.spec, renewTime: t1 },
    });
    assert.equal(renewed.spec.renewTime, t1);
    assert.notEqual(renewed.metadata.resourceVersion, created.metadata.resourceVersion);
    // A writer with the stale resourceVersion loses.
    await assert.rejects(
      admin.put(`${base}/smoke-leader`, {
        ...created,
        spec: { ...created.spec, holderIdentity: "holder-b" },
      }),
      (err: unknown) => err instanceof KubeError && err.status === 409,
    );
    const got = await admin.get(`${base}/smoke-leader`);
    assert.equal(got.spec.holderIdentity, "holder-a");
    // The fake kubelet renews its node Lease too.
    const nodeLease = await admin.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fsb-node-0");
    assert.equal(nodeLease.spec.holderIdentity, "fsb-node-0");
  });

  it("a ServiceAccount kubeconfig gets exactly what its Role grants", async () => {
    await kubectl("apply", "-f", path.join(HERE, "rbac.yaml"));
    const kc = await cluster("kubeconfig-for", NS, "reader");
    const token = /token: (\S+)/.exec(kc)?.[1];
    assert.ok(token, "no token in kubeconfig");
    const sa = new KubeClient({ server: info.server, ca: info.ca, token });
    try {
      const cm = await sa.get(`/api/v1/namespaces/${NS}/configmaps/visible`);
      assert.equal(cm.data.greeting, "hello");
      await assert.rejects(sa.get(`/api/v1/namespaces/${NS}/secrets/hidden`), (err: unknown) => err instanceof KubeError && err.status === 403);
      await assert.rejects(sa.get("/api/v1/namespaces/default/configmaps"), (err: unknown) => err instanceof KubeError && err.status === 403);
      await assert.rejects(
        sa.post(`/api/v1/namespaces/${NS}/configmaps`, {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: "nope" },
        }),
        (err: unknown) => err instanceof KubeError && err.status === 403,
      );
      const who = await sa.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", {
        apiVersion: "authentication.k8s.io/v1",
        kind: "SelfSubjectReview",
      });
      assert.equal(who.status.userInfo.username, `system:serviceaccount:${NS}:reader`);
    } finally {
      sa.close();
    }
    // The same through kubectl with the minted kubeconfig file.
    const file = path.join(STATE, "reader.kubeconfig");
    writeFileSync(file, kc);
    const okRun = await run("kubectl", ["--kubeconfig", file, "get", "configmap", "visible", "-o", "name"]);
    assert.equal(okRun.code, 0, okRun.stderr);
    const denied = await run("kubectl", ["--kubeconfig", file, "get", "secret", "hidden"]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /forbidden/i);
  });

  it("installs a CRD and watches its objects (ADDED, MODIFIED, DELETED)", async () => {
    await kubectl("apply", "-f", path.join(HERE, "crd.yaml"));
    await kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd/widgets.test.fast-sandbox.io");
    const base = `/apis/test.fast-sandbox.io/v1/namespaces/${NS}/widgets`;
    const list = await eventually<KObj>("widgets served", () => admin.get(base));
    const events: WatchEvent[] = [];
    const ac = new AbortController();
    const watching = admin.watch(`${base}?watch=1&resourceVersion=${list.metadata.resourceVersion}`, (e) => events.push(e), ac.signal);
    try {
      await admin.post(base, {
        apiVersion: "test.fast-sandbox.io/v1",
        kind: "Widget",
        metadata: { name: "w1" },
        spec: { size: 1 },
      });
      await admin.mergePatch(`${base}/w1`, { spec: { size: 2 } });
      await admin.delete(`${base}/w1`);
      await eventually("3 watch events", async () => events.length >= 3);
    } finally {
      ac.abort();
      await watching.catch(() => undefined);
    }
    assert.deepEqual(
      events.map((e) => e.type),
      ["ADDED", "MODIFIED", "DELETED"],
    );
    assert.equal(events[1]!.object.spec.size, 2);
    assert.ok(events.every((e) => e.object.metadata.name === "w1"));
  });

  it("after down, no process, port or file of the run is left", async () => {
    // A pod that ignores SIGTERM is still running when `down` starts.
    await kubectl("-n", NS, "run", "stubborn", "--image=fast-sandbox.io/test/sleep:dev", "--env=IGNORE_SIGTERM=1", "--restart=Never");
    const podIP = await eventually("stubborn running", async () => {
      const p = await kubectlJson("-n", NS, "get", "pod", "stubborn");
      return p.status?.phase === "Running" ? (p.status.podIP as string) : undefined;
    });
    assert.ok(podIP);
    const pids: number[] = [];
    for (const f of readdirSync(path.join(STATE, "pids"))) pids.push(Number(readFileSync(path.join(STATE, "pids", f), "utf8")));
    const podDir = path.join(STATE, "kubelet", "fsb-node-0", "pods");
    for (const d of readdirSync(podDir)) {
      for (const f of readdirSync(path.join(podDir, d))) if (f.endsWith(".pgid")) pids.push(Number(readFileSync(path.join(podDir, d, f), "utf8")));
    }
    assert.equal(pids.length, 6, `expected etcd, apiserver, kcm, scheduler, kubelet and one pod: ${pids.join(",")}`);
    assert.ok(pids.every(pidAlive));
    assert.ok(await portAccepts("127.0.0.1", info.apiserverPort));

    await cluster("down");
    stopped = true;

    const alive = pids.filter(pidAlive);
    assert.deepEqual(alive, [], `processes left: ${alive.join(",")}`);
    assert.equal(await portAccepts("127.0.0.1", info.apiserverPort), false, "apiserver port still accepts connections");
    assert.equal(await portAccepts("127.0.0.1", info.etcdPort), false, "etcd port still accepts connections");
    assert.equal(existsSync(STATE), false, "state dir still exists");
    const status = await run("bash", [CLUSTER_SH, "status"]);
    assert.equal(status.code, 3, status.stdout);
  });
});
