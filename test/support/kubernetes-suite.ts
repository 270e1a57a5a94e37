/**
 * The shared fixture of the Kubernetes e2e suite (test/e2e/kubernetes/suite.test.ts): one cluster
 * of the test harness (test/harness/cluster: a real control plane and a fake kubelet that runs Pods
 * as local processes) for every case, with Fast Sandbox deployed from config/ through the suite's
 * overlay (test/e2e/kubernetes/deploy), and a check at the end that the run left nothing behind.
 *
 * `start()`: a fresh cluster (its own state dir, the suite's image map), the namespace
 * fast-sandbox-system with random API and agent tokens, `kubectl apply -k` of the overlay, then waits
 * until the janitor's Pod is Ready and the controller Deployment is Available.
 * `removeEverything()`: deletes the cases' namespaces (while the controller still runs, so
 * finalizers are honoured), `kubectl delete -k` the overlay (CRDs, RBAC, controller, janitor),
 * stops the cluster, and reports what is left: Pods, processes of the run, Pod IPs still allocated,
 * containers, tasks and active snapshots in the suite's containerd namespace, its cgroups, the
 * cluster's state dir.
 *
 * The suite owns the containerd namespace `fsb-e2e-kubernetes` and the host dir
 * /run/fast-sandbox-e2e-kubernetes (see deploy/kustomization.yaml), never production ones; it
 * removes both at the end, and at the start what an earlier run that died left there (refusing to
 * start while another run of the suite is alive).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BASE_IMAGE, REPO_ROOT, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "./containerd.js";
import { outputLines } from "./containerd-contents.js";
import { liveProcesses, processAlive } from "./pod-processes.js";
import { CLUSTER_SH, clusterDown, clusterUp } from "./test-cluster.js";

export { BASE_IMAGE };

const SUITE_DIR = path.join(REPO_ROOT, "test/e2e/kubernetes");
/** The suite's overlay over config/default. */
export const DEPLOY_DIR = path.join(SUITE_DIR, "deploy");
const IMAGE_MAP = path.join(SUITE_DIR, "images.json");
/** Where Fast Sandbox's own objects live. */
export const SYSTEM_NAMESPACE = "fast-sandbox-system";
/** The suite's containerd namespace (the agent template's and the janitor's FSB_CONTAINERD_NAMESPACE). */
export const CONTAINERD_NAMESPACE = "fsb-e2e-kubernetes";
/** The suite's host dir: the agents' state dirs and the node binaries (hostPath volumes of the overlay). */
export const HOST_DIR = "/run/fast-sandbox-e2e-kubernetes";
/** The cluster's one node. */
export const NODE_NAME = "fsb-node-0";
/** The fast-path port of every controller replica (config/manager). */
export const FAST_PATH_PORT = 7070;
/** The controller replicas' Pods (config/manager). */
export const CONTROLLER_SELECTOR = "app.kubernetes.io/component=controller";
/** The janitor's Pods (config/janitor). */
export const JANITOR_SELECTOR = "app.kubernetes.io/component=janitor";
/** Every agent Pod, whatever its pool (config/agent). */
export const AGENT_SELECTOR = "app.kubernetes.io/component=agent";
/** The controller replicas' Lease (in SYSTEM_NAMESPACE). */
export const CONTROLLER_LEASE = "fast-sandbox-controller";
const STATE_PREFIX = "fsb-k8s-suite-";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface EventuallyOptions {
  /** @default 60_000 */
  timeoutMs?: number;
  /** @default 250 */
  intervalMs?: number;
}

/** What a case gets from the suite. Valid once the suite's `before` has run (inside hooks and tests). */
export interface KubernetesSuiteContext {
  /** The cluster's admin kubeconfig. */
  readonly kubeconfigPath: string;
  /** Bearer token of the fast-path API (Secret fast-sandbox-api-token). */
  readonly apiToken: string;
  /** The deployment's agent token (Secret fast-sandbox-agent-token of the controller's namespace; each pool's agents get one derived from it). */
  readonly agentToken: string;
  /** The containerd namespace the suite's agents and janitor use. */
  readonly containerdNamespace: string;
  /** The node every Pod runs on. */
  readonly nodeName: string;
  /** `kubectl --kubeconfig <admin> ARGS…`; never throws on a non-zero exit. */
  kubectl(...args: string[]): Promise<CommandResult>;
  /** As `kubectl`, but fails the test on a non-zero exit; returns stdout. */
  kubectlOk(...args: string[]): Promise<string>;
  /** `kubectl apply --server-side -f -` of YAML or JSON text, in `namespace` when given; returns stdout. */
  apply(manifest: string, namespace?: string): Promise<string>;
  /** `http://<Pod IP>:7070` of a Ready controller replica (no Service networking in the test cluster). */
  controllerUrl(): Promise<string>;
  /** Polls `check` until it returns something truthy (errors count as "not yet"); fails with the last error after the timeout. */
  eventually<T>(what: string, check: () => Promise<T | undefined | false | null> | T | undefined | false | null, options?: EventuallyOptions): Promise<T>;
  /**
   * A new namespace `<prefix>-<random>` that can run pools: it holds the agents' ServiceAccount
   * (config/samples/agent-service-account.yaml) and a copy of the agent token Secret. Deleted by
   * the suite at the end (cases may delete it earlier).
   */
  createNamespace(prefix: string): Promise<string>;
  /** What a Pod's container wrote to stdout and stderr so far (the fake kubelet has no `kubectl logs`). */
  podLog(namespace: string, pod: string, container: string): string;
  /** The Pods of a label selector, without those being deleted unless `includeDeleting`. */
  pods(namespace: string, selector: string, options?: { includeDeleting?: boolean }): Promise<PodJson[]>;
}

/** A case module (`test/e2e/kubernetes/<what-it-proves>/case.ts`) registers its `describe` with this. */
export type RegisterCase = (suite: KubernetesSuiteContext) => void;

/** A container's status in a Pod of the test cluster (the fields the suite and its cases read). */
export interface ContainerStatus {
  name: string;
  ready: boolean;
  restartCount: number;
  /** `fsb-local://<pid of the container's process group leader>` (the fake kubelet's; see pod-processes.ts). */
  containerID?: string;
  state?: Record<string, { reason?: string; message?: string; exitCode?: number }>;
}

/** A Pod as `kubectl get pod -o json` shows it (the fields the suite and its cases read). */
export interface PodJson {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec: { nodeName?: string; containers: { name: string; env?: { name: string; value?: string }[] }[] };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}

/** Whether the Pod's Ready condition is True. */
export function isPodReady(pod: PodJson): boolean {
  return (pod.status?.conditions ?? []).some((condition) => condition.type === "Ready" && condition.status === "True");
}

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: REPO_ROOT, env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${options.timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 120_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}${error.message}` });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  options: EventuallyOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const reason = lastError instanceof Error ? lastError.message : lastError === undefined ? "" : String(lastError);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${reason ? `: ${reason}` : ""}`);
    }
    await sleep(options.intervalMs ?? 250);
  }
}

/** Processes whose command line or environment names `needle` (a state dir): cluster components, Pod processes and their children. */
function processesMentioning(needle: string): { pid: number; command: string }[] {
  return liveProcesses((environment, command) => command.includes(needle) || environment.some((entry) => entry.includes(needle)));
}

function containerdNamespaceExists(): boolean {
  return outputLines(execFileSync("ctr", ["namespaces", "ls", "-q"], { encoding: "utf8" })).includes(CONTAINERD_NAMESPACE);
}

/** What the suite's containerd namespace holds besides images: tasks, containers, active snapshots. */
function containerdLeftovers(): string[] {
  if (!containerdNamespaceExists()) return [];
  const left: string[] = [];
  for (const task of outputLines(ctr(CONTAINERD_NAMESPACE, "tasks", "ls", "-q"))) left.push(`task ${task}`);
  for (const container of outputLines(ctr(CONTAINERD_NAMESPACE, "containers", "ls", "-q"))) left.push(`container ${container}`);
  // Image layers are committed snapshots; an active one is a container's (or a sandbox's) root.
  for (const line of outputLines(ctr(CONTAINERD_NAMESPACE, "snapshots", "ls")).slice(1)) {
    const [key, , kind] = line.split(/\s+/);
    if (kind === "Active") left.push(`active snapshot ${key}`);
  }
  return left;
}

function cgroupLeftovers(): string[] {
  const roots = ["/sys/fs/cgroup", ...readdirSync("/sys/fs/cgroup").map((controller) => `/sys/fs/cgroup/${controller}`)];
  return roots.map((root) => `${root}/${CONTAINERD_NAMESPACE}`).filter((dir) => existsSync(dir));
}

/** Removes the suite's containerd namespace (images included), its cgroups and its host dir. */
function removeSuiteResources(): string[] {
  const problems: string[] = [];
  try {
    if (containerdNamespaceExists()) removeNamespace(CONTAINERD_NAMESPACE);
  } catch (error) {
    problems.push(`could not remove containerd namespace ${CONTAINERD_NAMESPACE}: ${(error as Error).message}`);
  }
  removeCgroupTree(`/${CONTAINERD_NAMESPACE}`);
  for (const dir of cgroupLeftovers()) problems.push(`cgroup ${dir} is left (processes still in it?)`);
  rmSync(HOST_DIR, { recursive: true, force: true });
  return problems;
}

/** The state dirs of earlier runs of the suite (`<tmp>/fsb-k8s-suite-<pid>-<time>`) and whether their runner lives. */
function earlierRuns(): { dir: string; pid: number; alive: boolean }[] {
  return readdirSync(os.tmpdir())
    .map((name) => ({ name, match: new RegExp(`^${STATE_PREFIX}(\\d+)-\\d+$`).exec(name) }))
    .filter((entry) => entry.match)
    .map(({ name, match }) => {
      const pid = Number(match![1]);
      let alive = false;
      try {
        alive = processAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("node");
      } catch {
        alive = false;
      }
      return { dir: path.join(os.tmpdir(), name), pid, alive };
    });
}

/**
 * The fixture. Cases see it as a `KubernetesSuiteContext`; the suite file calls `start()` in its
 * `before` and `removeEverything()` at the end.
 */
export class KubernetesSuite implements KubernetesSuiteContext {
  private readonly stateDir = path.join(os.tmpdir(), `${STATE_PREFIX}${process.pid}-${Date.now()}`);
  private readonly clusterEnv: NodeJS.ProcessEnv;
  private kubeconfig = "";
  private tokens: { api: string; agent: string } | undefined;
  private readonly namespaces = new Set<string>();
  private teardown: Promise<string[]> | undefined;
  readonly containerdNamespace = CONTAINERD_NAMESPACE;
  readonly nodeName = NODE_NAME;
  readonly eventually = eventually;

  constructor() {
    this.clusterEnv = { ...process.env, FSB_CLUSTER_DIR: this.stateDir, FSB_IMAGE_MAP: IMAGE_MAP };
    delete this.clusterEnv.FSB_APISERVER_PORT;
    delete this.clusterEnv.FSB_CLUSTER_NODES;
    delete this.clusterEnv.KUBECONFIG;
  }

  get kubeconfigPath(): string {
    assert.ok(this.kubeconfig, "the Kubernetes suite has not started: use it inside hooks and tests only");
    return this.kubeconfig;
  }

  get apiToken(): string {
    assert.ok(this.tokens, "the Kubernetes suite has not started: use it inside hooks and tests only");
    return this.tokens.api;
  }

  get agentToken(): string {
    assert.ok(this.tokens, "the Kubernetes suite has not started: use it inside hooks and tests only");
    return this.tokens.agent;
  }

  readonly kubectl = (...args: string[]): Promise<CommandResult> => this.kubectlWith({}, ...args);

  readonly kubectlOk = async (...args: string[]): Promise<string> => {
    const result = await this.kubectl(...args);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
    return result.stdout;
  };

  readonly apply = async (manifest: string, namespace?: string): Promise<string> => {
    const args = [...(namespace ? ["-n", namespace] : []), "apply", "--server-side", "--field-manager=fsb-e2e", "-f", "-"];
    const result = await this.kubectlWith({ input: manifest }, ...args);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
    return result.stdout;
  };

  readonly controllerUrl = async (): Promise<string> => {
    const [replica] = await this.readyPods(SYSTEM_NAMESPACE, CONTROLLER_SELECTOR, "a Ready controller replica", 60_000);
    return `http://${replica!.status!.podIP}:${FAST_PATH_PORT}`;
  };

  readonly createNamespace = async (prefix: string): Promise<string> => {
    const name = `${prefix}-${randomBytes(3).toString("hex")}`;
    this.namespaces.add(name);
    await this.kubectlOk("create", "namespace", name);
    // The agents' ServiceAccount alone: their token is their pool's own, which the controller gives them.
    await this.kubectlOk("-n", name, "apply", "-f", path.join(REPO_ROOT, "config/samples/agent-service-account.yaml"));
    return name;
  };

  readonly podLog = (namespace: string, pod: string, container: string): string => {
    const podsDir = path.join(this.stateDir, "kubelet", NODE_NAME, "pods");
    // <namespace>_<name>_<uid>: the newest, when a Pod of that name was recreated.
    const dirs = existsSync(podsDir) ? readdirSync(podsDir).filter((name) => name.startsWith(`${namespace}_${pod}_`)) : [];
    const newest = dirs
      .map((dir) => path.join(podsDir, dir))
      .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs)
      .at(-1);
    const file = newest ? path.join(newest, `${container}.log`) : undefined;
    return file && existsSync(file) ? readFileSync(file, "utf8") : "";
  };

  private kubectlWith(options: { input?: string; timeoutMs?: number }, ...args: string[]): Promise<CommandResult> {
    return run("kubectl", ["--kubeconfig", this.kubeconfigPath, ...args], { env: this.clusterEnv, ...options });
  }

  /** A Secret with the key `token` (through stdin: a token never shows on a command line). */
  private async createTokenSecret(namespace: string, name: string, token: string): Promise<void> {
    const secret = { apiVersion: "v1", kind: "Secret", metadata: { name, namespace }, type: "Opaque", stringData: { token } };
    const result = await this.kubectlWith({ input: JSON.stringify(secret) }, "create", "-f", "-");
    assert.equal(result.code, 0, `creating Secret ${namespace}/${name} failed:\n${result.stderr}`);
  }

  readonly pods = async (namespace: string, selector: string, options: { includeDeleting?: boolean } = {}): Promise<PodJson[]> => {
    const list = JSON.parse(await this.kubectlOk("-n", namespace, "get", "pods", "-l", selector, "-o", "json")) as { items: PodJson[] };
    return options.includeDeleting ? list.items : list.items.filter((pod) => !pod.metadata.deletionTimestamp);
  };

  /** Pod states and the tail of each container's log, for failure messages. */
  private async describePods(namespace: string, selector: string): Promise<string> {
    let pods: PodJson[];
    try {
      pods = await this.pods(namespace, selector);
    } catch (error) {
      return `(cannot list Pods: ${(error as Error).message})`;
    }
    if (pods.length === 0) return `no Pod matches ${selector} in ${namespace}`;
    return pods
      .map((pod) => {
        const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
        const containers = statuses.map((status) => {
          const log = this.podLog(namespace, pod.metadata.name, status.name).trimEnd().split("\n").slice(-15).join("\n    ");
          return `  ${status.name}: ready=${status.ready} restarts=${status.restartCount} state=${JSON.stringify(status.state)}\n    ${log}`;
        });
        return `${pod.metadata.name} (${pod.status?.phase ?? "?"}, ${pod.status?.podIP ?? "no IP"}):\n${containers.join("\n")}`;
      })
      .join("\n");
  }

  private async readyPods(namespace: string, selector: string, what: string, timeoutMs: number): Promise<PodJson[]> {
    try {
      return await eventually(
        what,
        async () => {
          const ready = (await this.pods(namespace, selector)).filter(isPodReady);
          return ready.length > 0 ? ready : undefined;
        },
        { timeoutMs, intervalMs: 500 },
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${await this.describePods(namespace, selector)}`);
    }
  }

  /** Refuses to run beside a live run of the suite; removes what runs that died left. */
  private cleanUpAfterEarlierRuns(): void {
    const runs = earlierRuns();
    const alive = runs.find((earlier) => earlier.alive);
    assert.ok(
      !alive,
      `another run of the Kubernetes suite is alive (pid ${alive?.pid}, ${alive?.dir}); it owns containerd namespace ${CONTAINERD_NAMESPACE} and ${HOST_DIR}`,
    );
    for (const earlier of runs) {
      console.error(`kubernetes suite: removing what the run of pid ${earlier.pid} left (${earlier.dir})`);
      execFileSync("bash", [CLUSTER_SH, "down"], { env: { ...this.clusterEnv, FSB_CLUSTER_DIR: earlier.dir }, stdio: "ignore" });
      rmSync(earlier.dir, { recursive: true, force: true });
    }
    const leftovers = [...containerdLeftovers(), ...cgroupLeftovers(), ...(existsSync(HOST_DIR) ? [HOST_DIR] : [])];
    if (leftovers.length > 0) {
      console.error(`kubernetes suite: removing what an earlier run left: ${leftovers.join(", ")}`);
      assert.deepEqual(removeSuiteResources(), [], "could not remove what an earlier run left");
    }
  }

  async start(): Promise<void> {
    assert.equal(process.getuid?.(), 0, "the Kubernetes suite needs root (containerd, cgroups, host dirs)");
    const containerd = await run("ctr", ["version"]);
    assert.equal(containerd.code, 0, `containerd does not answer (bash scripts/start-containerd.sh starts it):\n${containerd.stderr}`);
    for (const built of [
      "packages/controlplane/dist/kubernetes/main.js",
      "packages/janitor/dist/main.js",
      "packages/agent/dist/main.js",
      "packages/agent/helper/build/fsb-helper",
    ]) {
      assert.ok(existsSync(path.join(REPO_ROOT, built)), `${built} is missing: run npm run build`);
    }
    this.cleanUpAfterEarlierRuns();
    // The sandboxes' image (no registry on the internet here): the cases' pools use BASE_IMAGE.
    importBaseImage(CONTAINERD_NAMESPACE);

    // The hostPath volumes' dirs (DirectoryOrCreate, which the fake kubelet does not create).
    mkdirSync(path.join(HOST_DIR, "agents"), { recursive: true });
    mkdirSync(path.join(HOST_DIR, "bin"), { recursive: true });

    // On a fresh machine this builds the binaries first (`npm run cluster -- build`; scripts/test.sh and CI do it before).
    this.kubeconfig = await clusterUp(this.clusterEnv);

    // config/manager's required Secrets, with random tokens.
    this.tokens = { api: randomBytes(32).toString("hex"), agent: randomBytes(32).toString("hex") };
    await this.kubectlOk("create", "namespace", SYSTEM_NAMESPACE);
    await this.createTokenSecret(SYSTEM_NAMESPACE, "fast-sandbox-api-token", this.tokens.api);
    await this.createTokenSecret(SYSTEM_NAMESPACE, "fast-sandbox-agent-token", this.tokens.agent);
    // Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
    await this.kubectlOk("apply", "--server-side", "--field-manager=fsb-e2e", "-k", DEPLOY_DIR);
    await this.kubectlOk("wait", "--for=condition=Established", "--timeout=60s", "crd/sandboxes.sandbox.fast.io", "crd/sandboxpools.sandbox.fast.io");

    await this.readyPods(SYSTEM_NAMESPACE, JANITOR_SELECTOR, "the janitor's Pod to be Ready", 120_000);
    await this.controllerAvailable();
  }

  private async controllerAvailable(): Promise<void> {
    try {
      await eventually(
        "the controller Deployment to be Available",
        async () => {
          const jsonPath = `jsonpath={.status.conditions[?(@.type=="Available")].status}`;
          return (await this.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "deployment/fast-sandbox-controller", "-o", jsonPath)).trim() === "True";
        },
        { timeoutMs: 180_000, intervalMs: 500 },
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\n` + (await this.describePods(SYSTEM_NAMESPACE, CONTROLLER_SELECTOR)));
    }
  }

  /**
   * Removes everything the run installed and created, stops the cluster, and returns what was left
   * (empty: nothing). Runs once; later calls return the first call's result.
   */
  removeEverything(): Promise<string[]> {
    this.teardown ??= this.removeEverythingOnce();
    return this.teardown;
  }

  private async removeEverythingOnce(): Promise<string[]> {
    const problems: string[] = [];
    const clusterExists = existsSync(this.stateDir);
    if (clusterExists && this.kubeconfig) {
      // The cases' namespaces first, while the controller runs: it removes its finalizers.
      if (this.namespaces.size > 0) {
        const deleted = await this.kubectlWith({ timeoutMs: 240_000 }, "delete", "namespace", ...this.namespaces, "--ignore-not-found", "--timeout=180s");
        if (deleted.code !== 0) problems.push(`deleting the cases' namespaces failed: ${deleted.stderr.trim()}`);
      }
      const removed = await this.kubectlWith({ timeoutMs: 240_000 }, "delete", "-k", DEPLOY_DIR, "--ignore-not-found", "--timeout=180s");
      if (removed.code !== 0) problems.push(`kubectl delete -k ${path.relative(REPO_ROOT, DEPLOY_DIR)} failed: ${removed.stderr.trim()}`);
      const pods = await this.kubectl("get", "pods", "--all-namespaces", "-o", "name");
      if (pods.code !== 0 || pods.stdout.trim() !== "") problems.push(`Pods left in the cluster: ${outputLines(pods.stdout).join(", ")}${pods.stderr}`);
    }

    if (clusterExists) {
      const down = await clusterDown(this.clusterEnv);
      if (down.code !== 0) problems.push(`cluster.sh down failed: ${down.stderr.trim()}`);
    }
    if (existsSync(this.stateDir)) problems.push(`the cluster's state dir ${this.stateDir} is left`);
    rmSync(this.stateDir, { recursive: true, force: true });

    // Cluster components name the state dir on their command line, Pod processes in their
    // environment (FSB_VOLUME_MOUNTS and the like), which their children inherit.
    try {
      await eventually("the run's processes to exit", () => processesMentioning(this.stateDir).length === 0, { timeoutMs: 15_000 });
    } catch {
      const left = processesMentioning(this.stateDir);
      problems.push(`processes of the run are left: ${left.map((p) => `${p.pid} ${p.command}`).join("; ")}`);
      for (const { pid } of left) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile
        }
      }
    }

    // Pod IPs are allocated machine-wide, one dir per IP naming its owner's state dir (fake-kubelet.ts).
    const ipPool = process.env.FSB_IP_POOL_DIR ?? path.join(os.tmpdir(), "fsb-loopback-ips");
    for (const ip of existsSync(ipPool) ? readdirSync(ipPool) : []) {
      try {
        if (readFileSync(path.join(ipPool, ip, "owner"), "utf8").includes(JSON.stringify(this.stateDir)))
          problems.push(`Pod IP ${ip} is still allocated to the run`);
      } catch {
        // released meanwhile
      }
    }

    for (const leftover of containerdLeftovers()) problems.push(`containerd namespace ${CONTAINERD_NAMESPACE}: ${leftover} is left`);
    problems.push(...removeSuiteResources());
    return problems;
  }
}
