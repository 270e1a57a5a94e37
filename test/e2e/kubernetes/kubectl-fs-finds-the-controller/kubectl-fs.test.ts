/**
 * `kubectl fs` against a real Kubernetes API server (test/harness/cluster), through the real kubectl,
 * which finds the plugin as `kubectl-fs` on the PATH (packages/cli/bin; `npm run build` first).
 *
 * The cluster holds what an installation holds: namespace fast-sandbox-system, the Secret
 * fast-sandbox-api-token and the Service fast-sandbox-controller selecting the controller Pods. The
 * controller Pod is a stand-in run by the fake kubelet: a TCP relay on its Pod IP (127.0.0.N:7070)
 * to the fast-path API of an embedded control plane this test starts in-process on the real
 * containerd. `kubectl fs` must find the controller, read the token from the Secret, and run, list,
 * show, log, exec, remove and apply sandboxes through it; the kubeconfig's context namespace
 * (team-a) is the default of -n.
 *
 * The harness's Pod IPs are loopback addresses, which an EndpointSlice may not hold (the
 * EndpointSlice controller's writes are refused), so there the CLI finds the Pod through the
 * Service's selector. A second Service without selector has an EndpointSlice written by hand that
 * points at a relay on this host's own non-loopback address: that one is found through the slice.
 * Then what goes wrong: a refused token, no controller, an unreachable one, a user who may not read
 * the Secret and whose own token the controller does not take — each with an error that says what to do.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../../../support/containerd.js";
import { pool, startEmbedded, type EmbeddedCase } from "../../../support/embedded.js";

const HERE = path.join(REPO_ROOT, "test/e2e/kubernetes/kubectl-fs-finds-the-controller");
const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const STATE = path.join(os.tmpdir(), `fsb-cluster-kubectl-fs-${process.pid}-${Date.now()}`);
const WORK = mkdtempSync(path.join(os.tmpdir(), "fsb-kubectl-fs-"));
const USER_KUBECONFIG = path.join(WORK, "user.kubeconfig");
const VIEWER_KUBECONFIG = path.join(WORK, "viewer.kubeconfig");
const SYSTEM = "fast-sandbox-system";
const TEAM = "team-a";

const clusterEnv: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE, FSB_IMAGE_MAP: path.join(HERE, "images.json") };
delete clusterEnv.FSB_APISERVER_PORT;
delete clusterEnv.FSB_CLUSTER_NODES;
delete clusterEnv.KUBECONFIG;

/** What a user's shell holds: kubectl-fs on the PATH, KUBECONFIG, nothing of Fast Sandbox's own variables. */
const userEnv: NodeJS.ProcessEnv = {
  ...clusterEnv,
  PATH: `${path.join(REPO_ROOT, "packages/cli/bin")}${path.delimiter}${process.env.PATH ?? ""}`,
  KUBECONFIG: USER_KUBECONFIG,
  // No ~/.kube/config and no data directory of an `fsb up` on this machine get in the way.
  HOME: WORK,
  FSB_DATA_DIR: path.join(WORK, "no-fsb-up"),
};
for (const name of ["FSB_URL", "FSB_TOKEN", "FSB_SYSTEM_NAMESPACE", "FSB_CLUSTER_DIR", "FSB_IMAGE_MAP", "NODE_TEST_CONTEXT"]) delete userEnv[name];

let adminKubeconfig = "";
let embedded: EmbeddedCase | undefined;
/** This host's first non-loopback IPv4 address, which an EndpointSlice may hold; undefined when it has none. */
const HOST_ADDRESS = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a && a.family === "IPv4" && !a.internal)?.address;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop: the control plane answering it runs in this process. */
function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? clusterEnv, cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

const kubectl = (...args: string[]) => run("kubectl", ["--kubeconfig", adminKubeconfig, ...args]);
const kubectlApply = (manifest: unknown[]) =>
  run("kubectl", ["--kubeconfig", adminKubeconfig, "apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: manifest }) });
/** `kubectl fs ARGS` as a user runs it. */
const kubectlFs = (args: string[], extraEnv: NodeJS.ProcessEnv = {}, input?: string) =>
  run("kubectl", ["fs", ...args], { env: { ...userEnv, ...extraEnv }, ...(input !== undefined ? { input } : {}) });

async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const namespace = (name: string) => ({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
const tokenSecret = (ns: string, token: string) => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: "fast-sandbox-api-token", namespace: ns },
  stringData: { token },
});
const controllerLabels = { "app.kubernetes.io/name": "fast-sandbox", "app.kubernetes.io/component": "controller" };
/** An EndpointSlice of Service fast-sandbox-controller, written by hand (for a Service without selector). */
const endpointSlice = (ns: string, endpoints: unknown[], port: number) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: {
    name: "fast-sandbox-controller-by-hand",
    namespace: ns,
    labels: { "kubernetes.io/service-name": "fast-sandbox-controller", "endpointslice.kubernetes.io/managed-by": "kubectl-fs-e2e" },
  },
  addressType: "IPv4",
  endpoints,
  ports: [{ name: "fast-path", port, protocol: "TCP" }],
});
const controllerService = (ns: string, selector: Record<string, string> | undefined) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "fast-sandbox-controller", namespace: ns },
  spec: { ...(selector ? { selector } : {}), ports: [{ name: "fast-path", port: 7070, targetPort: selector ? "fast-path" : 7070, protocol: "TCP" }] },
});

describe("kubectl fs against a Kubernetes cluster", () => {
  before(async () => {
    const up = await run("bash", [CLUSTER_SH, "up"], { timeoutMs: 60 * 60_000 });
    assert.equal(up.code, 0, up.stderr);
    adminKubeconfig = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(adminKubeconfig, up.stdout);
    // The user's kubeconfig: the admin's, with team-a as the context's namespace.
    copyFileSync(adminKubeconfig, USER_KUBECONFIG);
    const setNamespace = await run("kubectl", ["--kubeconfig", USER_KUBECONFIG, "config", "set-context", "--current", `--namespace=${TEAM}`]);
    assert.equal(setNamespace.code, 0, setNamespace.stderr);

    embedded = await startEmbedded({
      name: "kubectl-fs",
      pools: [pool("default", { maxSandboxesPerPod: 4 }), pool("default", { maxSandboxesPerPod: 4 }, TEAM)],
    });
    const upstream = new URL(embedded.controlPlane.url);

    const applied = await kubectlApply([
      namespace(SYSTEM),
      tokenSecret(SYSTEM, embedded.token),
      controllerService(SYSTEM, controllerLabels),
      {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "fast-sandbox-controller-0", namespace: SYSTEM, labels: controllerLabels },
        spec: {
          containers: [
            {
              name: "controller",
              image: "fast-sandbox.io/controller:kubectl-fs-e2e",
              env: [{ name: "FSB_UPSTREAM", value: upstream.host }],
              ports: [{ name: "fast-path", containerPort: 7070 }],
              readinessProbe: { httpGet: { path: "/readyz", port: "fast-path" }, periodSeconds: 1 },
            },
          ],
        },
      },
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    await eventually("the controller Pod to be ready", async () => {
      const ready = await kubectl("-n", SYSTEM, "get", "pod", "fast-sandbox-controller-0", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}");
      return ready.stdout === "True";
    });
  });

  after(async () => {
    await embedded?.stop();
    if (adminKubeconfig) await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
    rmSync(WORK, { recursive: true, force: true });
  });

  it("kubectl runs the plugin as kubectl fs", async () => {
    const help = await kubectlFs(["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: kubectl fs /m);
    assert.match(help.stdout, /port-forward svc\/fast-sandbox-controller 7070:7070/);
  });

  it("finds the controller behind its Service and runs, shows, logs, execs and removes a sandbox in the context's namespace", async () => {
    const created = await kubectlFs(["run", "--", "sh", "-c", "echo one; sleep 1; echo two"]);
    assert.equal(created.code, 0, created.stderr);
    const name = created.stdout.trim().split(/\s+/).at(-1) ?? "";
    assert.match(name, /^sb-[0-9a-f]{10}$/);

    const shown = await kubectlFs(["get", name, "-o", "json"]);
    assert.equal(shown.code, 0, shown.stderr);
    const sandbox = JSON.parse(shown.stdout) as { metadata: { namespace: string }; spec: { poolRef: string }; status: { phase: string } };
    assert.equal(sandbox.metadata.namespace, TEAM, "-n defaults to the kubeconfig context's namespace");
    assert.equal(sandbox.status.phase, "Running");

    const followed = await kubectlFs(["logs", "-f", name]);
    assert.equal(followed.code, 0, followed.stderr);
    assert.equal(followed.stdout, "one\ntwo\n");

    const exec = await kubectlFs(["exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(exec.code, 3, exec.stderr);
    assert.equal(exec.stdout, "out\n");
    assert.equal(exec.stderr, "err\n");

    const listed = await kubectlFs(["ls"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(`^${name} +Running +default `, "m"));
    const elsewhere = await kubectlFs(["ls", "--namespace", "default"]);
    assert.equal(elsewhere.code, 0, elsewhere.stderr);
    assert.doesNotMatch(elsewhere.stdout, new RegExp(name));
    const everywhere = await kubectlFs(["ls", "-A"]);
    assert.match(everywhere.stdout, /^NAMESPACE +NAME +PHASE/);
    assert.match(everywhere.stdout, new RegExp(`^${TEAM} +${name} +Running `, "m"));
    const pools = await kubectlFs(["pools", "-A", "-o", "json"]);
    assert.equal(pools.code, 0, pools.stderr);
    const poolNames = (JSON.parse(pools.stdout) as { items: { metadata: { namespace: string; name: string } }[] }).items.map(
      (p) => `${p.metadata.namespace}/${p.metadata.name}`,
    );
    assert.deepEqual(poolNames.sort(), ["default/default", `${TEAM}/default`]);

    const removed = await kubectlFs(["rm", name]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(removed.stdout, `sandbox ${name} deleted\n`);
    const gone = await kubectlFs(["get", name]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, new RegExp(`^error: sandbox ${TEAM}/${name} not found`, "m"));
  });

  it("applies a manifest into the context's namespace, and into -n's", async () => {
    const manifest = [
      "apiVersion: sandbox.fast.io/v1alpha1",
      "kind: Sandbox",
      "metadata:",
      "  name: applied",
      "spec:",
      "  poolRef: default",
      "  image: fast-sandbox.io/base:latest",
      "  command: [sh, -c, 'echo applied']",
      "",
    ].join("\n");
    const file = path.join(WORK, "sandbox.yaml");
    writeFileSync(file, manifest);
    const applied = await kubectlFs(["apply", "-f", file]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stdout, "sandbox/applied created\n");
    const fromStdin = await kubectlFs(["apply", "-f", "-", "-n", "default"], {}, manifest);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    assert.equal(fromStdin.stdout, "sandbox/applied created\n");

    const all = await kubectlFs(["get", "sandbox", "-A", "-o", "json"]);
    assert.equal(all.code, 0, all.stderr);
    const names = (JSON.parse(all.stdout) as { items: { metadata: { namespace: string; name: string } }[] }).items.map(
      (s) => `${s.metadata.namespace}/${s.metadata.name}`,
    );
    assert.deepEqual(names.sort(), ["default/applied", `${TEAM}/applied`]);
    assert.equal((await kubectlFs(["rm", "applied"])).code, 0);
    assert.equal((await kubectlFs(["delete", "sandbox", "applied", "-n", "default"])).code, 0);
  });

  it("finds the controller through the ready endpoint of an EndpointSlice", async () => {
    // The API server refuses loopback addresses in EndpointSlices: the relay needs this host's own.
    assert.ok(HOST_ADDRESS, "this host has no non-loopback IPv4 address for the EndpointSlice to name");
    assert.ok(embedded);
    const upstream = new URL(embedded.controlPlane.url);
    let relayed = 0;
    const relay = net.createServer((client) => {
      relayed++;
      const target = net.connect({ host: upstream.hostname, port: Number(upstream.port) });
      client.on("error", () => target.destroy()).on("close", () => target.destroy());
      target.on("error", () => client.destroy()).on("close", () => client.destroy());
      client.pipe(target).pipe(client);
    });
    await new Promise<void>((resolve) => relay.listen(0, HOST_ADDRESS, resolve));
    try {
      const { port } = relay.address() as net.AddressInfo;
      const applied = await kubectlApply([
        namespace("fsb-sliced"),
        tokenSecret("fsb-sliced", embedded.token),
        controllerService("fsb-sliced", undefined),
        endpointSlice(
          "fsb-sliced",
          [
            { addresses: ["192.0.2.254"], conditions: { ready: false } },
            { addresses: [HOST_ADDRESS], conditions: { ready: true }, targetRef: { kind: "Pod", name: "sliced-controller", namespace: "fsb-sliced" } },
          ],
          port,
        ),
      ]);
      assert.equal(applied.code, 0, applied.stderr);
      const listed = await kubectlFs(["pools", "--fsb-namespace", "fsb-sliced"]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /^default +1\/1 /m, "team-a's pool");
      assert.ok(relayed >= 2, `${relayed} connections through the slice's endpoint: the reachability check and the call`);
    } finally {
      relay.close();
    }
  });

  it("with --url (as through kubectl port-forward) uses that address and still reads the token from the Secret", async () => {
    assert.ok(embedded);
    const listed = await kubectlFs(["ls", "--url", embedded.controlPlane.url]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^No sandboxes( in namespace [a-z0-9-]+)?\./);
  });

  it("says where a refused token came from: FSB_TOKEN, or the Secret", async () => {
    const wrongEnv = await kubectlFs(["ls"], { FSB_TOKEN: "not-the-token-0123456789" });
    assert.equal(wrongEnv.code, 1);
    assert.match(
      wrongEnv.stderr,
      /^error: the controller at 127\.0\.0\.\d+:7070 \(Pod fast-sandbox-controller-0\), found through Service fast-sandbox-system\/fast-sandbox-controller of context \S+ did not accept the API token from FSB_TOKEN: unset FSB_TOKEN/m,
    );

    assert.ok(embedded);
    assert.equal((await kubectlApply([tokenSecret(SYSTEM, "a-rotated-token-0123456789")])).code, 0);
    try {
      const wrongSecret = await kubectlFs(["ls"]);
      assert.equal(wrongSecret.code, 1);
      assert.match(
        wrongSecret.stderr,
        /did not accept the API token from Secret fast-sandbox-system\/fast-sandbox-api-token: set FSB_TOKEN to the controller's token, or fix the Secret/,
      );
    } finally {
      assert.equal((await kubectlApply([tokenSecret(SYSTEM, embedded.token)])).code, 0);
    }
  });

  it("says what is missing when there is no controller: no Service, no ready Pod, or none reachable from here", async () => {
    const notInstalled = await kubectlFs(["ls", "--fsb-namespace", "nothing-here"]);
    assert.equal(notInstalled.code, 1);
    assert.match(
      notInstalled.stderr,
      /^error: there is no Service nothing-here\/fast-sandbox-controller: install Fast Sandbox in the cluster \(kubectl apply -k config\/default\)/m,
    );

    // Installed, but no controller Pod is ready (none exists).
    const applied = await kubectlApply([namespace("fsb-stopped"), tokenSecret("fsb-stopped", "t"), controllerService("fsb-stopped", controllerLabels)]);
    assert.equal(applied.code, 0, applied.stderr);
    const stopped = await kubectlFs(["ls", "--fsb-namespace", "fsb-stopped"]);
    assert.equal(stopped.code, 1);
    assert.match(
      stopped.stderr,
      /^error: no ready controller behind Service fsb-stopped\/fast-sandbox-controller \(no endpoints\): is the controller running\?/m,
    );

    // A ready endpoint nothing listens on, as a Pod IP is from outside the cluster network
    // (192.0.2.0/24 is for documentation: nothing answers there unless this host has an address in it).
    const closedPort = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, HOST_ADDRESS ?? "0.0.0.0", () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const address = HOST_ADDRESS ?? "192.0.2.254";
    const unreachable = await kubectlApply([
      namespace("fsb-unreachable"),
      tokenSecret("fsb-unreachable", "t"),
      controllerService("fsb-unreachable", undefined),
      endpointSlice("fsb-unreachable", [{ addresses: [address], conditions: { ready: true } }], closedPort),
    ]);
    assert.equal(unreachable.code, 0, unreachable.stderr);
    const cannotReach = await kubectlFs(["ls", "--fsb-namespace", "fsb-unreachable"]);
    assert.equal(cannotReach.code, 1);
    assert.match(
      cannotReach.stderr,
      new RegExp(
        `^error: cannot reach the controller at ${address.replaceAll(".", "\\.")}:${closedPort} within 3000 ms: Pod IPs are reachable only inside the cluster network`,
        "m",
      ),
    );
    assert.match(
      cannotReach.stderr,
      /run 'kubectl -n fsb-unreachable port-forward svc\/fast-sandbox-controller 7070:7070' and pass --url http:\/\/127\.0\.0\.1:7070$/m,
    );
  });

  it("calls as a user who may not read the Secret, with their own token, and when it is refused says to set FSB_TOKEN, which then works", async () => {
    const role = await kubectlApply([
      { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "viewer", namespace: SYSTEM } },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "fast-sandbox-viewer", namespace: SYSTEM },
        rules: [
          { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list"] },
          { apiGroups: [""], resources: ["services"], verbs: ["get"] },
          { apiGroups: [""], resources: ["pods"], verbs: ["list"] },
        ],
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "fast-sandbox-viewer", namespace: SYSTEM },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "fast-sandbox-viewer" },
        subjects: [{ kind: "ServiceAccount", name: "viewer", namespace: SYSTEM }],
      },
    ]);
    assert.equal(role.code, 0, role.stderr);
    const viewer = await run("bash", [CLUSTER_SH, "kubeconfig-for", SYSTEM, "viewer", "1h"]);
    assert.equal(viewer.code, 0, viewer.stderr);
    writeFileSync(VIEWER_KUBECONFIG, viewer.stdout);

    // Its kubeconfig has a bearer token (its ServiceAccount's), which the CLI sends instead; this
    // controller (embedded, standing in for one with FSB_KUBERNETES_USERS=off) takes none.
    const refused = await kubectlFs(["ls", "--kubeconfig", VIEWER_KUBECONFIG]);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /^error: the controller at .* did not accept your own Kubernetes credential \(context [^;]+; you may not read Secret fast-sandbox-system\/fast-sandbox-api-token\): the controller takes Kubernetes users' tokens unless it runs with FSB_KUBERNETES_USERS=off, .*: set FSB_TOKEN to the controller's token/m,
    );
    assert.ok(embedded);
    const withToken = await kubectlFs(["ls", "--kubeconfig", VIEWER_KUBECONFIG], { FSB_TOKEN: embedded.token });
    assert.equal(withToken.code, 0, withToken.stderr);
  });
});
