/**
 * The manifests in config/ install Fast Sandbox with `kubectl apply -k config/default` on a real
 * control plane (test/harness/cluster) exactly as they are (production image names, no test
 * overlay), and leave nothing behind when removed with `kubectl delete -k`. What each component's
 * role allows and denies is checked on the suite's cluster, where they run
 * (../rbac-least-privilege).
 *
 * Only objects are asserted: the controller and janitor images are not built here (and the
 * harness's node runs no containers), so their Pods never run and the test does not wait for them.
 * FSB_CONFIG_DIR points the test at another copy of config/ (default: the repository's).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { REPO_ROOT } from "../../../support/containerd.js";

const CONFIG_DIR = process.env.FSB_CONFIG_DIR ?? path.join(REPO_ROOT, "config");
const DEFAULT_DIR = path.join(CONFIG_DIR, "default");
const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");
const STATE = path.join(os.tmpdir(), `fsb-cluster-manifests-${process.pid}-${Date.now()}`);
const SYSTEM = "fast-sandbox-system";
const SAMPLES_NAMESPACE = "fsb-manifests-samples";
const CONTROLLER = `system:serviceaccount:${SYSTEM}:fast-sandbox-controller`;

const env: NodeJS.ProcessEnv = { ...process.env, FSB_CLUSTER_DIR: STATE };
delete env.FSB_APISERVER_PORT;
delete env.FSB_CLUSTER_NODES;
delete env.KUBECONFIG;
let kubeconfig = "";

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  automountServiceAccountToken?: boolean;
}

interface Container {
  name: string;
  image?: string;
  env?: { name: string; value?: string }[];
  args?: string[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: unknown; httpGet?: unknown } };
}

interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
  affinity?: {
    podAntiAffinity?: {
      preferredDuringSchedulingIgnoredDuringExecution?: {
        weight: number;
        podAffinityTerm: { topologyKey: string; labelSelector?: { matchLabels?: Record<string, string> } };
      }[];
    };
  };
}

/**
 * How long a controller replica's shutdown may take once SIGTERM arrives: it exits after 20 s
 * whatever is still in flight (packages/controlplane/src/kubernetes/main.ts). The proxy's takes
 * less (it cuts its connections at once), and is held to the same bound.
 */
const SHUTDOWN_SECONDS = 20;

function run(command: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, cwd: REPO_ROOT, timeout: timeoutMs, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function kubectl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run("kubectl", ["--kubeconfig", kubeconfig, ...args]);
}

async function kubectlOk(...args: string[]): Promise<string> {
  const result = await kubectl(...args);
  assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

async function renderDefault(): Promise<KubeObject[]> {
  const result = await run("kubectl", ["kustomize", DEFAULT_DIR]);
  assert.equal(result.code, 0, `kubectl kustomize ${DEFAULT_DIR} failed:\n${result.stderr}`);
  return parseAllDocuments(result.stdout).map((document) => document.toJS() as KubeObject);
}

function find(objects: KubeObject[], kind: string, name: string): KubeObject {
  const found = objects.find((object) => object.kind === kind && object.metadata.name === name);
  assert.ok(found, `${kind}/${name} is not rendered`);
  return found;
}

function podSpecOf(workload: KubeObject): PodSpec {
  return (workload.spec as { template: { spec: PodSpec } }).template.spec;
}

/** The agent Pod the controller makes from the default template (the ConfigMap's YAML): name, pool label, images. */
function agentPodFrom(templateYaml: string, name: string): object {
  const template = parse(templateYaml) as { metadata: { labels: Record<string, string> }; spec: { containers: Container[]; initContainers: Container[] } };
  for (const container of [...template.spec.containers, ...template.spec.initContainers]) container.image = "fast-sandbox/agent:0.1.0";
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { ...template.metadata.labels, "fast-sandbox.io/pool": "default" } },
    spec: template.spec,
  };
}

/** `kubectl create --dry-run=server` of `object` in fast-sandbox-system, as `user` (the admin when none). */
function createDryRun(object: object, user?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run("bash", [
    "-c",
    `kubectl --kubeconfig "$1" -n ${SYSTEM} create --dry-run=server ${user ? `--as=${user}` : ""} -o json -f - <<'EOF'\n${JSON.stringify(object)}\nEOF`,
    "dry-run",
    kubeconfig,
  ]);
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

describe("config/default rendered by kustomize", () => {
  it("renders every component into fast-sandbox-system with the images of `images:`", async () => {
    const objects = await renderDefault();
    for (const [kind, name] of [
      ["Namespace", SYSTEM],
      ["CustomResourceDefinition", "sandboxes.sandbox.fast.io"],
      ["CustomResourceDefinition", "sandboxpools.sandbox.fast.io"],
      ["ServiceAccount", "fast-sandbox-controller"],
      ["ServiceAccount", "fast-sandbox-janitor"],
      ["ServiceAccount", "fast-sandbox-agent"],
      ["ClusterRole", "fast-sandbox-controller"],
      ["ClusterRoleBinding", "fast-sandbox-controller"],
      // The fast path's Kubernetes users: TokenReviews and SubjectAccessReviews, and the role users are bound to.
      ["ClusterRoleBinding", "fast-sandbox-controller-auth-delegator"],
      ["ClusterRole", "fast-sandbox-user"],
      ["Role", "fast-sandbox-leader-election"],
      ["RoleBinding", "fast-sandbox-leader-election"],
      ["Role", "fast-sandbox-e2b-secrets"],
      ["RoleBinding", "fast-sandbox-e2b-secrets"],
      ["ClusterRole", "fast-sandbox-janitor"],
      ["ClusterRoleBinding", "fast-sandbox-janitor"],
      ["Deployment", "fast-sandbox-controller"],
      ["Service", "fast-sandbox-controller"],
      ["PodDisruptionBudget", "fast-sandbox-controller"],
      ["DaemonSet", "fast-sandbox-janitor"],
      ["ServiceAccount", "fast-sandbox-proxy"],
      ["ClusterRole", "fast-sandbox-proxy"],
      ["ClusterRoleBinding", "fast-sandbox-proxy"],
      ["Role", "fast-sandbox-proxy-e2b-secret"],
      ["RoleBinding", "fast-sandbox-proxy-e2b-secret"],
      ["Deployment", "fast-sandbox-proxy"],
      ["Service", "fast-sandbox-proxy"],
      ["PodDisruptionBudget", "fast-sandbox-proxy"],
    ]) {
      find(objects, kind!, name!);
    }
    const clusterScoped = new Set(["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"]);
    for (const object of objects.filter((candidate) => !clusterScoped.has(candidate.kind))) {
      assert.equal(object.metadata.namespace, SYSTEM, `${object.kind}/${object.metadata.name}`);
    }

    const controller = podSpecOf(find(objects, "Deployment", "fast-sandbox-controller"));
    assert.equal(controller.serviceAccountName, "fast-sandbox-controller");
    assert.equal(controller.containers[0]?.image, "fast-sandbox/controller:0.1.0");
    // The agent image reaches the controller as an environment value and follows `images:` too.
    assert.equal(controller.containers[0]?.env?.find((variable) => variable.name === "FSB_AGENT_IMAGE")?.value, "fast-sandbox/agent:0.1.0");
    const janitor = podSpecOf(find(objects, "DaemonSet", "fast-sandbox-janitor"));
    assert.equal(janitor.serviceAccountName, "fast-sandbox-janitor");
    assert.equal(janitor.containers[0]?.image, "fast-sandbox/janitor:0.1.0");
    // The sandbox proxy: the controller image in its `proxy` role, with the agent token for the agents' relays.
    const sandboxProxy = podSpecOf(find(objects, "Deployment", "fast-sandbox-proxy"));
    assert.equal(sandboxProxy.serviceAccountName, "fast-sandbox-proxy");
    assert.equal(sandboxProxy.containers[0]?.image, "fast-sandbox/controller:0.1.0");
    assert.deepEqual(sandboxProxy.containers[0]?.args, ["proxy"]);
    assert.ok(sandboxProxy.containers[0]?.env?.some((variable) => variable.name === "FSB_AGENT_TOKEN_FILE"));

    const agentServiceAccount = find(objects, "ServiceAccount", "fast-sandbox-agent");
    assert.equal(agentServiceAccount.automountServiceAccountToken, false);
    const template = objects.find((object) => object.kind === "ConfigMap" && object.metadata.name.startsWith("fast-sandbox-agent-template"));
    assert.ok(template?.data?.["agent-pod-template.yaml"], "the agent Pod template ConfigMap is rendered");
    const podTemplate = parse(template.data["agent-pod-template.yaml"]) as { spec: { automountServiceAccountToken?: boolean; serviceAccountName?: string } };
    assert.equal(podTemplate.spec.automountServiceAccountToken, false);
    assert.equal(podTemplate.spec.serviceAccountName, "fast-sandbox-agent");
  });

  it("keeps the controller and the proxy answering through rollouts and drains", async () => {
    const objects = await renderDefault();
    for (const name of ["fast-sandbox-controller", "fast-sandbox-proxy"]) {
      const deployment = find(objects, "Deployment", name);
      const { replicas, selector } = deployment.spec as { replicas: number; selector: { matchLabels: Record<string, string> } };
      assert.ok(replicas >= 2, `${name}: ${replicas} replica(s)`);
      const spec = podSpecOf(deployment);
      // SIGTERM waits until kube-proxy and load balancers have stopped sending the Pod new
      // connections, by the kubelet's sleep action (the image needs no `sleep`).
      const pause = spec.containers[0]?.lifecycle?.preStop?.sleep?.seconds;
      assert.ok(typeof pause === "number" && pause >= 3, `${name}: a preStop sleep of a few seconds (${pause})`);
      // The grace period covers the pause and the shutdown after it: the kubelet never kills a replica mid-shutdown.
      const grace = spec.terminationGracePeriodSeconds ?? 30;
      assert.ok(grace >= pause + SHUTDOWN_SECONDS, `${name}: terminationGracePeriodSeconds ${grace} < preStop ${pause} s + shutdown ${SHUTDOWN_SECONDS} s`);
      // A drain never takes every replica at once, and never blocks for good either.
      const budget = find(objects, "PodDisruptionBudget", name).spec as {
        minAvailable?: number;
        maxUnavailable?: number;
        selector: { matchLabels: Record<string, string> };
      };
      assert.deepEqual(budget.selector.matchLabels, selector.matchLabels, `${name}: the PodDisruptionBudget selects the Deployment's Pods`);
      const kept = budget.minAvailable ?? replicas - (budget.maxUnavailable ?? replicas);
      assert.ok(kept >= 1 && kept < replicas, `${name}: the budget keeps ${kept} of ${replicas} replicas available`);
      // Replicas on different nodes where there are several (preferred: a one-node cluster still runs them all).
      const spread = spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
      assert.ok(
        spread.some(
          (term) =>
            term.podAffinityTerm.topologyKey === "kubernetes.io/hostname" &&
            JSON.stringify(term.podAffinityTerm.labelSelector?.matchLabels) === JSON.stringify(selector.matchLabels),
        ),
        `${name}: a preferred podAntiAffinity on kubernetes.io/hostname over its own Pods`,
      );
    }
  });

  it("names cpu and memory requests and limits for every container of the agent Pod template, the init container's too", async () => {
    const objects = await renderDefault();
    const template = objects.find((object) => object.kind === "ConfigMap" && object.metadata.name.startsWith("fast-sandbox-agent-template"));
    const podTemplate = parse(template?.data?.["agent-pod-template.yaml"] ?? "") as { spec: PodSpec };
    const containers = [...(podTemplate.spec.initContainers ?? []), ...podTemplate.spec.containers];
    assert.ok(containers.some((container) => container.name === "install-node-binaries"));
    // A namespace whose ResourceQuota counts cpu or memory refuses a Pod with a container that names none.
    for (const container of containers) {
      for (const kind of ["requests", "limits"] as const) {
        for (const resource of ["cpu", "memory"]) {
          assert.ok(container.resources?.[kind]?.[resource], `${container.name}: no ${kind}.${resource}`);
        }
      }
    }
  });
});

describe("kubectl apply -k config/default on a real control plane", () => {
  let templateConfigMap = "";

  before(async () => {
    // The first run on a fresh machine builds the binaries (CI builds them in a step before).
    const up = await run("bash", [CLUSTER_SH, "up"], 60 * 60_000);
    assert.equal(up.code, 0, up.stderr);
    kubeconfig = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] ?? "";
    assert.ok(kubeconfig, up.stdout);
  });

  after(async () => {
    if (existsSync(STATE)) await run("bash", [CLUSTER_SH, "down"]);
    rmSync(STATE, { recursive: true, force: true });
  });

  it("installs everything with server-side apply, and the CRDs become Established", async () => {
    await kubectlOk("apply", "--server-side", "-k", DEFAULT_DIR);
    await kubectlOk("wait", "--for=condition=Established", "--timeout=60s", "crd/sandboxes.sandbox.fast.io", "crd/sandboxpools.sandbox.fast.io");
    // The Pods cannot run here (no images); keep the controller's and the proxy's out of the way.
    await kubectlOk("-n", SYSTEM, "scale", "deployment/fast-sandbox-controller", "deployment/fast-sandbox-proxy", "--replicas=0");
  });

  it("creates the ServiceAccounts, roles, bindings and workloads of every component", async () => {
    await kubectlOk("-n", SYSTEM, "get", "serviceaccount/fast-sandbox-controller", "serviceaccount/fast-sandbox-janitor", "serviceaccount/fast-sandbox-agent");
    await kubectlOk(
      "get",
      "clusterrole/fast-sandbox-controller",
      "clusterrolebinding/fast-sandbox-controller",
      "clusterrole/fast-sandbox-janitor",
      "clusterrolebinding/fast-sandbox-janitor",
    );
    await kubectlOk("-n", SYSTEM, "get", "role/fast-sandbox-leader-election", "rolebinding/fast-sandbox-leader-election");
    await kubectlOk(
      "-n",
      SYSTEM,
      "get",
      "deployment/fast-sandbox-controller",
      "service/fast-sandbox-controller",
      "daemonset/fast-sandbox-janitor",
      "poddisruptionbudget/fast-sandbox-controller",
      "deployment/fast-sandbox-proxy",
      "service/fast-sandbox-proxy",
      "poddisruptionbudget/fast-sandbox-proxy",
    );
    templateConfigMap = (
      await kubectlOk("-n", SYSTEM, "get", "configmap", "-l", "app.kubernetes.io/component=agent", "-o", "jsonpath={.items[0].metadata.name}")
    ).trim();
    assert.match(templateConfigMap, /^fast-sandbox-agent-template-/);
    const port = await kubectlOk("-n", SYSTEM, "get", "service/fast-sandbox-controller", "-o", "jsonpath={.spec.ports[0].port}");
    assert.equal(port, "7070");
  });

  it("makes a valid agent Pod from the default template, which the controller may create", async () => {
    const templateYaml = await kubectlOk("-n", SYSTEM, "get", "configmap", templateConfigMap, "-o", "jsonpath={.data.agent-pod-template\\.yaml}");
    const dryRun = await createDryRun(agentPodFrom(templateYaml, "default-agent-check"), CONTROLLER);
    assert.equal(dryRun.code, 0, dryRun.stderr);
    const created = JSON.parse(dryRun.stdout) as { spec: { automountServiceAccountToken: boolean; volumes: { name: string }[] } };
    assert.equal(created.spec.automountServiceAccountToken, false);
    assert.ok(!created.spec.volumes.some((volume) => volume.name.startsWith("kube-api-access-")), "no API token volume is injected");
  });

  it("admits the default agent Pod in a namespace whose ResourceQuota counts cpu and memory", async () => {
    const quota = {
      apiVersion: "v1",
      kind: "ResourceQuota",
      metadata: { name: "fsb-manifests-compute", namespace: SYSTEM },
      spec: { hard: { "requests.cpu": "64", "requests.memory": "256Gi", "limits.cpu": "64", "limits.memory": "256Gi" } },
    };
    const created = await run("bash", ["-c", `kubectl --kubeconfig "$1" create -f - <<'EOF'\n${JSON.stringify(quota)}\nEOF`, "quota", kubeconfig]);
    assert.equal(created.code, 0, created.stderr);
    try {
      // Once the quota is in force, a container naming no cpu or memory is refused.
      const bare = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "quota-check" },
        spec: { containers: [{ name: "bare", image: "fast-sandbox/agent:0.1.0" }] },
      };
      await eventually("the ResourceQuota to be in force", async () => {
        const refused = await createDryRun(bare);
        return refused.code !== 0 && /must specify/.test(refused.stderr);
      });
      const templateYaml = await kubectlOk("-n", SYSTEM, "get", "configmap", templateConfigMap, "-o", "jsonpath={.data.agent-pod-template\\.yaml}");
      const dryRun = await createDryRun(agentPodFrom(templateYaml, "default-agent-quota-check"), CONTROLLER);
      assert.equal(dryRun.code, 0, dryRun.stderr);
    } finally {
      await kubectlOk("-n", SYSTEM, "delete", "resourcequota", quota.metadata.name);
    }
  });

  it("stores the samples as they are", async () => {
    await kubectlOk("create", "namespace", SAMPLES_NAMESPACE);
    await kubectlOk("-n", SAMPLES_NAMESPACE, "apply", "-f", path.join(CONFIG_DIR, "samples"));
    const pool = JSON.parse(await kubectlOk("-n", SAMPLES_NAMESPACE, "get", "sandboxpool", "default", "-o", "json")) as KubeObject;
    assert.equal((pool.spec as { maxSandboxesPerPod: number }).maxSandboxesPerPod, 8);
    const sandbox = JSON.parse(await kubectlOk("-n", SAMPLES_NAMESPACE, "get", "sandbox", "hello", "-o", "json")) as KubeObject;
    assert.equal((sandbox.spec as { poolRef: string }).poolRef, "default");
    const interpreter = JSON.parse(await kubectlOk("-n", SAMPLES_NAMESPACE, "get", "sandboxpool", "code-interpreter-v1", "-o", "json")) as KubeObject;
    assert.equal((interpreter.spec as { image: string }).image, "fast-sandbox.io/code-interpreter:latest");
    await kubectlOk("delete", "namespace", SAMPLES_NAMESPACE, "--timeout=120s");
  });

  it("kubectl delete -k removes everything it installed", async () => {
    await kubectlOk("delete", "-k", DEFAULT_DIR, "--timeout=180s");
    await eventually("fast-sandbox-system to be gone", async () => (await kubectl("get", "namespace", SYSTEM)).code !== 0);
    const crds = await kubectlOk("get", "crd", "-o", "name");
    assert.doesNotMatch(crds, /sandbox\.fast\.io/);
    const clusterRbac = await kubectlOk("get", "clusterroles,clusterrolebindings", "-o", "name");
    assert.doesNotMatch(clusterRbac, /fast-sandbox/);
    const pods = await kubectlOk("get", "pods", "--all-namespaces", "-l", "app.kubernetes.io/name=fast-sandbox", "-o", "name");
    assert.equal(pods.trim(), "");
  });

  it("stops the cluster and leaves no process or file of the run", async () => {
    const pids = readdirSync(path.join(STATE, "pids")).map((file) => Number(readFileSync(path.join(STATE, "pids", file), "utf8")));
    const down = await run("bash", [CLUSTER_SH, "down"]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(existsSync(STATE), false, "the cluster's state dir still exists");
    // A process may still be exiting when `down` returns; a zombie (state Z) is gone already.
    const running = (pid: number): boolean => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
      } catch {
        return false;
      }
    };
    await eventually("the cluster's processes to exit", async () => !pids.some(running), 15_000);
  });
});
