/**
 * One contract, three stores: the `ResourceStore` cases of resource-store.contract.ts pass on the
 * embedded SQLite store, on the in-memory store the controllers' unit tests use, and on a real
 * kube-apiserver (the test harness's cluster) with the CRDs from config/crd/. Then what only the API
 * server does: its own validation (422 → ValidationError with the field path), printer columns,
 * metadata the port does not model surviving updates, RBAC refusals (403 → PermissionDeniedError).
 * The cluster is started once for this file and everything is removed afterwards.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { PermissionDeniedError, ValidationError, type Sandbox } from "@fast-sandbox/api";
import { MemoryResourceStore } from "../../../packages/controlplane/src/store/memory-resource-store.js";
import { openKubernetesResourceStore, type KubernetesResourceStore } from "../../../packages/controlplane/src/store/kubernetes-resource-store.js";
import { describeResourceStoreContract } from "../../../packages/controlplane/src/store/resource-store.contract.js";
import { openSqliteResourceStore } from "../../../packages/controlplane/src/store/sqlite-resource-store.js";
import { REPO_ROOT } from "../../support/containerd.js";

const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const CRD_DIR = path.join(REPO_ROOT, "config/crd");
const STATE = path.join(os.tmpdir(), `fsb-cluster-store-contract-${process.pid}-${Date.now()}`);
const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE };
delete env.FSB_APISERVER_PORT;
delete env.KUBECONFIG;
const quiet = { warn: () => undefined };

let kubeconfigPath = "";
let kubeConfig: KubeConfig;
let core: CoreV1Api;
/** Every namespace a case created, removed in `after`. */
const namespaces: string[] = [];
let namespaceCounter = 0;

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const kubectl = (...args: string[]) => run("kubectl", ["--kubeconfig", kubeconfigPath, ...args]);

async function createNamespace(name = `store-contract-${++namespaceCounter}`): Promise<string> {
  await core.createNamespace({ body: { metadata: { name, labels: { "fast-sandbox.io/test": "store-contract" } } } });
  namespaces.push(name);
  return name;
}

function kubernetesStore(): KubernetesResourceStore {
  return openKubernetesResourceStore({ kubeConfig, logger: quiet });
}

/** Lets every object of the test's namespaces go: finalizers dropped, then the namespaces deleted. */
async function removeTestObjects(): Promise<void> {
  const store = kubernetesStore();
  try {
    for (const kind of ["Sandbox", "SandboxPool"] as const) {
      for (const object of (await store.list(kind)).items) {
        if (!namespaces.includes(object.metadata.namespace ?? "")) continue;
        if (object.metadata.finalizers?.length) {
          await store.update(kind, { ...object, metadata: { ...object.metadata, finalizers: [] } }, { unconditional: true }).catch(() => undefined);
        }
        await store.delete(kind, { namespace: object.metadata.namespace ?? "", name: object.metadata.name }).catch(() => undefined);
      }
    }
  } finally {
    await store.close();
  }
  for (const name of namespaces) await core.deleteNamespace({ name }).catch(() => undefined);
}

describe("the ResourceStore contract on SQLite, in memory and on a real kube-apiserver", () => {
  before(async () => {
    // The first run on a fresh machine builds the binaries (CI builds them in a step before).
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    kubeconfigPath = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfigPath, up.stdout);
    const apply = await kubectl("apply", "-k", CRD_DIR);
    assert.equal(apply.code, 0, apply.stderr);
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
  });

  after(async () => {
    if (kubeconfigPath) {
      await removeTestObjects().catch((error: unknown) => console.error("cleanup of the test namespaces failed:", error));
      await kubectl("delete", "-k", CRD_DIR, "--ignore-not-found", "--wait=true", "--timeout=60s");
    }
    await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
  });

  describeResourceStoreContract({
    name: "SQLite",
    open: () => {
      const store = openSqliteResourceStore({ path: ":memory:", watchHistory: 64, logger: quiet });
      return Promise.resolve({ store, namespaces: ["team", "team-b"], close: () => store.close() });
    },
    expiredResourceVersion: async ({ store, namespaces: [, filler] }) => {
      const first = await store.create("SandboxPool", {
        apiVersion: "sandbox.fast.io/v1alpha1",
        kind: "SandboxPool",
        metadata: { name: "filler", namespace: filler },
        spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1 },
      });
      for (let i = 0; i < 70; i++) await store.updateStatus("SandboxPool", { ...first, status: { agents: i } }, { unconditional: true });
      return first.metadata.resourceVersion ?? "";
    },
  });

  describeResourceStoreContract({
    name: "memory",
    open: () => {
      const store = new MemoryResourceStore({ logger: quiet });
      return Promise.resolve({ store, namespaces: ["team", "team-b"], close: () => store.close() });
    },
    expiredResourceVersion: async (context) => {
      const { resourceVersion } = await context.store.list("Sandbox");
      (context.store as MemoryResourceStore).expireWatches();
      return resourceVersion;
    },
  });

  describeResourceStoreContract({
    name: "Kubernetes API server",
    open: async () => {
      const store = kubernetesStore();
      // The second the first's name and "-b" (ContractContext.namespaces): key order puts it first.
      const first = await createNamespace();
      return { store, namespaces: [first, await createNamespace(`${first}-b`)], close: () => store.close() };
    },
    // The API server's watch cache starts at the revision the CRD was established at: older ones are gone (410).
    expiredResourceVersion: () => Promise.resolve("1"),
    quietMs: 300,
    eventTimeoutMs: 15_000,
  });

  describe("what only the API server does", () => {
    const sandbox = (namespace: string, name: string, labels?: Record<string, string>): Sandbox => ({
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "Sandbox",
      metadata: { name, namespace, ...(labels ? { labels } : {}) },
      spec: { image: "python:3.12", poolRef: "pool" },
    });

    it("translates the API server's 422 into ValidationError with the field path", async () => {
      const store = kubernetesStore();
      const ns = await createNamespace();
      try {
        // The schemas allow any annotation key (labels are checked as Kubernetes checks them); the API server does not.
        const base = sandbox(ns, "bad-annotation");
        const bad = { ...base, metadata: { ...base.metadata, annotations: { "not a key!": "x" } } };
        await assert.rejects(store.create("Sandbox", bad), (error: unknown) => {
          assert.ok(error instanceof ValidationError, String(error));
          assert.equal(error.field, "metadata.annotations");
          assert.match(error.message, /^metadata\.annotations: Invalid value: "not a key!"/);
          return true;
        });
      } finally {
        await store.close();
      }
    });

    it("shows phase, pool, agent and age as printer columns", async () => {
      const store = kubernetesStore();
      const ns = await createNamespace();
      try {
        const created = await store.create("Sandbox", sandbox(ns, "web"));
        await store.updateStatus("Sandbox", { ...created, status: { phase: "Running", assignedPod: "default-agent-0" } });
        const table = await kubectl("get", "sandboxes", "-n", ns);
        assert.equal(table.code, 0, table.stderr);
        assert.match(table.stdout, /^NAME\s+PHASE\s+POOL\s+AGENT\s+AGE\n/);
        assert.match(table.stdout, /\nweb\s+Running\s+pool\s+default-agent-0\s+\d+s\n/);
      } finally {
        await store.close();
      }
    });

    it("keeps owner references through updates, sends them on create, and reads objects kubectl wrote", async () => {
      const store = kubernetesStore();
      const ns = await createNamespace();
      try {
        const owner = await store.create("SandboxPool", {
          apiVersion: "sandbox.fast.io/v1alpha1",
          kind: "SandboxPool",
          metadata: { name: "pool", namespace: ns },
          spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1 },
        });
        const manifest = {
          ...sandbox(ns, "owned"),
          metadata: {
            name: "owned",
            namespace: ns,
            ownerReferences: [{ apiVersion: "sandbox.fast.io/v1alpha1", kind: "SandboxPool", name: "pool", uid: owner.metadata.uid }],
          },
        };
        const apply = await run("bash", ["-c", `kubectl --kubeconfig ${kubeconfigPath} apply -f - <<'EOF'\n${JSON.stringify(manifest)}\nEOF`]);
        assert.equal(apply.code, 0, apply.stderr);
        const read = await store.get("Sandbox", { namespace: ns, name: "owned" });
        assert.ok(read);
        // Only the fields the schema knows (kubectl adds its last-applied annotation; managedFields are not read).
        assert.deepEqual(Object.keys(read.metadata).sort(), [
          "annotations",
          "creationTimestamp",
          "generation",
          "name",
          "namespace",
          "ownerReferences",
          "resourceVersion",
          "uid",
        ]);
        assert.equal(read.metadata.ownerReferences?.[0]?.uid, owner.metadata.uid);
        await store.update("Sandbox", { ...read, metadata: { ...read.metadata, labels: { team: "x" } } });
        await store.updateStatus("Sandbox", { ...read, status: { phase: "Pending" } }, { unconditional: true });
        const raw = JSON.parse((await kubectl("get", "sandbox", "owned", "-n", ns, "-o", "json")).stdout);
        assert.equal(raw.metadata.ownerReferences?.[0]?.uid, owner.metadata.uid);
        assert.deepEqual(raw.metadata.labels, { team: "x" });
        assert.equal(raw.status.phase, "Pending");

        // What the fast path creates for a pool: the owner goes with the create.
        const reference = { apiVersion: "sandbox.fast.io/v1alpha1", kind: "SandboxPool", name: "pool", uid: owner.metadata.uid ?? "" };
        const created = await store.create("Sandbox", {
          ...sandbox(ns, "created-owned"),
          metadata: { name: "created-owned", namespace: ns, ownerReferences: [reference] },
        });
        assert.deepEqual(created.metadata.ownerReferences, [reference]);
        const createdRaw = JSON.parse((await kubectl("get", "sandbox", "created-owned", "-n", ns, "-o", "json")).stdout);
        assert.deepEqual(createdRaw.metadata.ownerReferences, [reference]);
      } finally {
        await store.close();
      }
    });

    it("turns RBAC refusals into PermissionDeniedError, for calls and watches", async () => {
      const ns = await createNamespace();
      const sa = await kubectl("create", "serviceaccount", "nobody", "-n", ns);
      assert.equal(sa.code, 0, sa.stderr);
      const generated = await run("bash", [CLUSTER_SH, "kubeconfig-for", ns, "nobody", "1h"]);
      assert.equal(generated.code, 0, generated.stderr);
      const limited = new KubeConfig();
      limited.loadFromString(generated.stdout);
      const store = openKubernetesResourceStore({ kubeConfig: limited, logger: quiet });
      try {
        await assert.rejects(store.list("Sandbox", { namespace: ns }), (error: unknown) => {
          assert.ok(error instanceof PermissionDeniedError, String(error));
          assert.match(error.message, /cannot list resource "sandboxes"/);
          return true;
        });
        await assert.rejects(store.create("Sandbox", sandbox(ns, "nope")), PermissionDeniedError);
        await assert.rejects(
          store.watch("Sandbox", { namespace: ns, resourceVersion: "1" }, () => assert.fail("no event expected")).done,
          PermissionDeniedError,
        );
      } finally {
        await store.close();
      }
    });
  });
});
