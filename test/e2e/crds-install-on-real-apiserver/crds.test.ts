/**
 * The CRDs generated into config/crd/ are accepted by a real kube-apiserver as structural schemas,
 * and the API server then enforces them: valid objects with every field round-trip, invalid ones are
 * refused by field, and status is a separate subresource.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../../support/containerd.js";
import { clusterDown, clusterUp } from "../../support/test-cluster.js";

const STATE = path.join(os.tmpdir(), `fsb-cluster-crds-${process.pid}-${Date.now()}`);
const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE };
delete env.FSB_APISERVER_PORT;
delete env.KUBECONFIG;
let kubeconfig = "";

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function kubectl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run("kubectl", ["--kubeconfig", kubeconfig, ...args]);
}

describe("the generated CRDs on a real API server", () => {
  before(async () => {
    // The first run on a fresh machine builds the binaries (CI builds them in a step before).
    kubeconfig = await clusterUp(env);
  });

  after(async () => {
    await clusterDown(env);
    rmSync(STATE, { recursive: true, force: true });
  });

  it("installs both CRDs from config/crd and they become Established", async () => {
    const apply = await kubectl("apply", "-k", path.join(REPO_ROOT, "config/crd"));
    assert.equal(apply.code, 0, apply.stderr);
    const wait = await kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/sandboxes.sandbox.fast.io", "crd/sandboxpools.sandbox.fast.io");
    assert.equal(wait.code, 0, wait.stderr);
    const names = await kubectl("get", "crd", "sandboxes.sandbox.fast.io", "-o", "jsonpath={.status.conditions[?(@.type=='NonStructuralSchema')].status}");
    assert.equal(names.stdout, "", "the schema must be structural");
  });

  it("stores a Sandbox and a SandboxPool with every field and prunes nothing", async () => {
    const apply = await kubectl("apply", "-f", path.join(import.meta.dirname, "objects.yaml"));
    assert.equal(apply.code, 0, apply.stderr);
    const sandbox = JSON.parse((await kubectl("get", "sandbox", "web", "-o", "json")).stdout) as { spec: Record<string, unknown> };
    assert.deepEqual(sandbox.spec.exposedPorts, [8080, 9090]);
    assert.equal(sandbox.spec.recoveryTimeoutSeconds, 30);
    assert.equal(sandbox.spec.consistencyMode, "strong");
    assert.deepEqual(sandbox.spec.envs, [{ name: "PORT", value: "8080" }]);
    assert.deepEqual(sandbox.spec.egress, { policy: "denyAll" });
    const pool = JSON.parse((await kubectl("get", "sandboxpool", "workers", "-o", "json")).stdout) as { spec: Record<string, unknown> };
    // agentTemplate keeps unknown fields (it is a Pod template).
    assert.equal((pool.spec.agentTemplate as { spec: { containers: { image: string }[] } }).spec.containers[0]?.image, "fast-sandbox.io/agent:dev");
    assert.deepEqual(pool.spec.sandboxResources, { cpu: "500m", memory: "256Mi", pids: 128, ephemeralStorage: "2Gi" });
    assert.deepEqual(pool.spec.network, {
      mode: "Isolated",
      egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }, { cidr: "2001:db8::/32" }] },
      allowSandboxToSandbox: true,
    });
    // Printer columns and short names come from the CRD.
    const table = await kubectl("get", "sb");
    assert.match(table.stdout, /NAME\s+PHASE\s+POOL\s+AGENT\s+AGE/);
    assert.match((await kubectl("get", "sbp")).stdout, /NAME\s+AGENTS\s+SANDBOXES\s+PREPARED\s+AGE/);
  });

  it("refuses invalid objects, naming the fields", async () => {
    const apply = await kubectl("apply", "-f", path.join(import.meta.dirname, "invalid-sandbox.yaml"));
    assert.notEqual(apply.code, 0);
    assert.match(apply.stderr, /spec\.exposedPorts\[0\]: Invalid value: 70000/);
    assert.match(apply.stderr, /spec\.failurePolicy: Unsupported value: "Sometimes"/);
    // A pool's disk limit below 1Mi (the CEL rule of the schema's range), and one that is no quantity.
    const small = await kubectl("patch", "sandboxpool", "workers", "--type=merge", "-p", '{"spec":{"sandboxResources":{"ephemeralStorage":"512Ki"}}}');
    assert.notEqual(small.code, 0);
    assert.match(small.stderr, /spec\.sandboxResources\.ephemeralStorage: Invalid value: "512Ki": is out of range; allowed: at least 1Mi/);
    const word = await kubectl("patch", "sandboxpool", "workers", "--type=merge", "-p", '{"spec":{"sandboxResources":{"ephemeralStorage":"lots"}}}');
    assert.notEqual(word.code, 0);
    assert.match(word.stderr, /spec\.sandboxResources\.ephemeralStorage: Invalid value: "lots"/);
  });

  it("keeps status a separate subresource: spec writes do not change it", async () => {
    const patch = await kubectl(
      "patch",
      "sandbox",
      "web",
      "--subresource=status",
      "--type=merge",
      "-p",
      '{"status":{"phase":"Running","assignedPod":"workers-0"}}',
    );
    assert.equal(patch.code, 0, patch.stderr);
    const specPatch = await kubectl("patch", "sandbox", "web", "--type=merge", "-p", '{"spec":{"resetRevision":"2"},"status":{"phase":"Lost"}}');
    assert.equal(specPatch.code, 0, specPatch.stderr);
    const phase = await kubectl("get", "sandbox", "web", "-o", "jsonpath={.status.phase} {.spec.resetRevision}");
    assert.equal(phase.stdout, "Running 2");
  });
});
