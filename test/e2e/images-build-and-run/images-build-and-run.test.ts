/**
 * The Kubernetes mode's images (build/*.Dockerfile), built and run for real: the base image made
 * here without a registry (scripts/build-node-base-image.sh: Debian 12 from a mirror and this
 * machine's Node.js), the three images built with buildah (scripts/build-images.sh), pushed to a
 * registry (`--push`: the same layers and settings there, and the `images:` entries it prints make
 * config/default name them) and imported into containerd, then each run by containerd as its
 * Kubernetes manifest runs it:
 * - agent: the init container's install mode puts the helper, runsc and the in-sandbox daemon on
 *   the "node"; the agent (privileged, the host's containerd, /run/netns shared both ways as the
 *   Pod's Bidirectional mount) creates runc and gVisor sandboxes with their own network namespaces,
 *   which run the command with its environment and serve the in-sandbox daemon.
 * - controller: as uid 1000 on a read-only root file system, with its ServiceAccount's token, against
 *   a real kube-apiserver: it takes the Lease, serves the authenticated fast path, and makes an
 *   agent Pod for a pool applied through it; in its other role (the proxy Deployment's `args:
 *   [proxy]`), it serves with its own ServiceAccount and answers for a sandbox it does not know.
 * - janitor: with its ServiceAccount's token and the Kubernetes inventory, it reclaims what the agent
 *   left when it died (its Pod never existed): sandbox, shim anchors and network namespaces.
 * The Kubernetes e2e suite runs the components from the built packages (the fake kubelet runs no
 * images); this case is what says that the images themselves work.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createAgentClient, type AgentClient } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { UnauthenticatedError } from "@fast-sandbox/api";
import { BASE_IMAGE, REPO_ROOT, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { CLUSTER_SH, clusterDown, clusterUp } from "../../support/test-cluster.js";
import { startTestRegistry, type TestRegistry } from "../../support/registry.js";
import { networkLeftovers, removeTestNetwork, testNetworkSettings } from "../../support/sandbox-network.js";

const IMAGES_NS = "fsb-e2e-images";
const SANDBOX_NS = "fsb-e2e-images-sbx";
const CGROUP_PARENT = "/fsb-e2e-images";
const NODE_BASE = "localhost/fast-sandbox/node-base:20-bookworm";
const TAG = "e2e-images";
const AGENT_NAME = "fsb-e2e-images-agent";
const NODE_NAME = "fsb-e2e-images-node";
const image = (name: string) => `docker.io/fast-sandbox/${name}:${TAG}`;

const work = mkdtempSync(join(tmpdir(), "fsb-e2e-images-"));
chmodSync(work, 0o755);
const agentsDir = join(work, "agents");
const nodeBinaries = join(work, "bin");
const network = testNetworkSettings({ preparedNamespaces: 1 });
const clusterEnv = { ...process.env, FSB_CLUSTER_DIR: join(work, "cluster") };
const agentToken = randomBytes(24).toString("base64url");
/** The controller's (and the proxy's) files: its tokens and the agent Pod template, as its Secrets and ConfigMap would mount them. */
const settings = join(work, "controller");
const apiToken = randomBytes(24).toString("base64url");

/** Runs a script of the repository, its output into `log`; on failure the log's end is in the error. Returns its stdout. */
function script(log: string, env: NodeJS.ProcessEnv, ...args: string[]): string {
  const result = spawnSync("bash", args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", maxBuffer: 256 * 2 ** 20 });
  writeFileSync(join(work, log), `${result.stdout}\n${result.stderr}`);
  if (result.status !== 0) {
    const tail = `${result.stdout}\n${result.stderr}`.split("\n").slice(-40).join("\n");
    throw new Error(`${args.join(" ")} exited with ${result.status}:\n${tail}`);
  }
  return result.stdout;
}

interface ContainerOptions {
  env?: Record<string, string>;
  /** [host path, container path, "ro" | "rw" | "rshared"] */
  mounts?: Array<[string, string, "ro" | "rw" | "rshared"]>;
  privileged?: boolean;
  readOnly?: boolean;
  tmpfs?: string[];
  args?: string[];
}

function ctrRunArgs(id: string, name: string, options: ContainerOptions): string[] {
  const args = ["--net-host"];
  if (options.privileged) args.push("--privileged", "--rootfs-propagation", "rshared");
  if (options.readOnly) args.push("--read-only");
  for (const [source, target, mode] of options.mounts ?? []) {
    const flags = mode === "rshared" ? "rbind:rshared:rw" : `rbind:${mode}`;
    args.push("--mount", `type=bind,src=${source},dst=${target},options=${flags}`);
  }
  for (const target of options.tmpfs ?? []) args.push("--mount", `type=tmpfs,src=tmpfs,dst=${target},options=rw:nosuid:nodev`);
  for (const [key, value] of Object.entries(options.env ?? {})) args.push("--env", `${key}=${value}`);
  return [...args, image(name), id, ...(options.args ?? [])];
}

/** The image's ENTRYPOINT, as built (`ctr run` replaces it with any command given; a Pod's `args` do not). */
function entrypoint(name: string): string[] {
  const inspected = JSON.parse(execFileSync("buildah", ["inspect", "--type", "image", `localhost/fast-sandbox/${name}:${TAG}`], { encoding: "utf8" })) as {
    OCIv1: { config: { Entrypoint?: string[] } };
  };
  return inspected.OCIv1.config.Entrypoint ?? [];
}

/** Runs the image's command to its end; resolves to its standard output. */
function runOnce(id: string, name: string, options: ContainerOptions): string {
  return execFileSync("ctr", ["-n", IMAGES_NS, "run", "--rm", ...ctrRunArgs(id, name, options)], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Starts the image as a detached task logging to `<work>/<id>.log`; resolves to its process id. */
function start(id: string, name: string, options: ContainerOptions): number {
  const log = join(work, `${id}.log`);
  execFileSync("ctr", ["-n", IMAGES_NS, "run", "-d", "--log-uri", `file://${log}`, ...ctrRunArgs(id, name, options)], { stdio: "ignore" });
  const line = ctr(IMAGES_NS, "tasks", "ls")
    .split("\n")
    .find((row) => row.startsWith(`${id} `));
  return Number(line?.trim().split(/\s+/)[1]);
}

function stop(id: string): void {
  try {
    execFileSync("ctr", ["-n", IMAGES_NS, "tasks", "kill", "-s", "SIGKILL", id], { stdio: "ignore" });
  } catch {
    // exited already
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      execFileSync("ctr", ["-n", IMAGES_NS, "tasks", "rm", "-f", id], { stdio: "ignore" });
      break;
    } catch {
      execFileSync("sleep", ["0.1"]);
    }
  }
  execFileSync("ctr", ["-n", IMAGES_NS, "containers", "rm", id], { stdio: "ignore" });
}

const logOf = (id: string) => (existsSync(join(work, `${id}.log`)) ? readFileSync(join(work, `${id}.log`), "utf8") : "");

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address === "string") throw new Error("no port");
  return address.port;
}

async function waitFor<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve()
      .then(check)
      .catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await sleep(200);
  }
}

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

/** A ServiceAccount's kubeconfig with the CA inline (a container sees no host path). */
function serviceAccountKubeconfig(namespace: string, account: string): string {
  const path = join(work, `${account}.kubeconfig`);
  const withPaths = execFileSync("bash", [CLUSTER_SH, "kubeconfig-for", namespace, account, "1h"], { env: clusterEnv, encoding: "utf8" });
  writeFileSync(`${path}.paths`, withPaths);
  const flat = execFileSync("kubectl", ["config", "view", "--raw", "--flatten"], { env: { ...clusterEnv, KUBECONFIG: `${path}.paths` }, encoding: "utf8" });
  writeFileSync(path, flat, { mode: 0o644 });
  return path;
}

describe("the Kubernetes mode's images, built and run", { timeout: 30 * 60_000 }, () => {
  let kubeconfig = "";
  let registry: TestRegistry | undefined;
  /** buildah's login to `registry`, which scripts/build-images.sh --push and skopeo use. */
  const registryAuth = join(work, "registry-auth.json");
  /** What scripts/build-images.sh printed on stdout (the images: entries of the pushed images). */
  let buildOutput = "";
  const kubectl = (...args: string[]) => execFileSync("kubectl", args, { env: { ...clusterEnv, KUBECONFIG: kubeconfig }, encoding: "utf8" });
  let agentPort = 0;
  let agent: AgentClient | undefined;
  const started: string[] = [];

  before(async () => {
    for (const namespace of [IMAGES_NS, SANDBOX_NS]) {
      try {
        removeNamespace(namespace);
      } catch {
        // no leftovers of an earlier run
      }
    }
    script("build-node-base-image.log", process.env, "scripts/build-node-base-image.sh", NODE_BASE);
    // A registry on loopback (plain HTTP, htpasswd) the images are pushed to, with buildah's login.
    registry = await startTestRegistry();
    execFileSync("buildah", ["login", "--authfile", registryAuth, "--tls-verify=false", "-u", registry.username, "--password-stdin", registry.host], {
      input: registry.password,
      stdio: ["pipe", "ignore", "pipe"],
    });
    buildOutput = script(
      "build-images.log",
      { ...process.env, REGISTRY_AUTH_FILE: registryAuth },
      "scripts/build-images.sh",
      "--base",
      NODE_BASE,
      "--tag",
      TAG,
      "--out",
      join(work, "images"),
      "--containerd-namespace",
      IMAGES_NS,
      "--push",
      `${registry.host}/fsb`,
      "--push-tls-verify",
      "false",
    );
    importBaseImage(SANDBOX_NS);
    mkdirSync(agentsDir, { recursive: true });
    mkdirSync(nodeBinaries, { recursive: true });
    kubeconfig = await clusterUp(clusterEnv);
  });

  after(async () => {
    agent?.close();
    for (const id of started.splice(0)) {
      try {
        stop(id);
      } catch {
        // gone already
      }
    }
    for (const namespace of [SANDBOX_NS, IMAGES_NS]) {
      try {
        removeNamespace(namespace);
      } catch (error) {
        process.stderr.write(`# removing ${namespace}: ${String(error)}\n`);
      }
    }
    await removeTestNetwork(network);
    removeCgroupTree(CGROUP_PARENT);
    await clusterDown(clusterEnv);
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("pushes the three images to a registry with --push, and prints the images: entries that make config/default use them", () => {
    const pushedRef = (name: string) => `docker://${registry!.host}/fsb/${name}:${TAG}`;
    const configOf = (reference: string) =>
      JSON.parse(
        execFileSync(
          "skopeo",
          ["inspect", "--config", ...(reference.startsWith("docker:") ? ["--tls-verify=false", "--authfile", registryAuth] : []), reference],
          {
            encoding: "utf8",
          },
        ),
      ) as { config?: { Entrypoint?: string[]; Env?: string[]; User?: string }; rootfs?: { diff_ids?: string[] } };
    for (const name of ["controller", "agent", "janitor"]) {
      const built = configOf(`oci-archive:${join(work, "images", `fast-sandbox-${name}-${TAG}.oci.tar`)}`);
      const pushed = configOf(pushedRef(name));
      // The same layers (uncompressed digests: whatever the compression of either copy) and settings.
      assert.ok((built.rootfs?.diff_ids?.length ?? 0) > 0, `${name}: the built image has layers`);
      assert.deepEqual(pushed.rootfs?.diff_ids, built.rootfs?.diff_ids, `${name}: the pushed image's layers are the built one's`);
      assert.deepEqual(pushed.config, built.config, `${name}: the pushed image's entry point, env and user are the built one's`);
    }
    // What it prints goes as it is into config/default's kustomization.yaml: every image, the
    // controller's FSB_AGENT_IMAGE included, is then the pushed one.
    assert.match(buildOutput, /^images:$/m);
    const overlay = mkdtempSync(join(work, "config-"));
    execFileSync("cp", ["-r", join(REPO_ROOT, "config"), overlay]);
    const kustomization = join(overlay, "config", "default", "kustomization.yaml");
    const original = readFileSync(kustomization, "utf8");
    const withPushed = original.replace(/^images:\n(?: {2}- name: .*\n(?: {4}\w+: .*\n)*)+/m, buildOutput.slice(buildOutput.indexOf("images:\n")));
    assert.notEqual(withPushed, original, "the images: block of config/default was replaced");
    writeFileSync(kustomization, withPushed);
    const rendered = execFileSync("kubectl", ["kustomize", join(overlay, "config", "default")], { encoding: "utf8", maxBuffer: 64 * 2 ** 20 });
    const images = new Set([...rendered.matchAll(/^\s+image: (\S+)$/gm)].map((match) => match[1]));
    assert.deepEqual([...images].sort(), [`${registry!.host}/fsb/controller:${TAG}`, `${registry!.host}/fsb/janitor:${TAG}`]);
    assert.match(rendered, new RegExp(`- name: FSB_AGENT_IMAGE\\n\\s+value: ${registry!.host.replace(/\./g, "\\.")}/fsb/agent:${TAG}\\n`));
  });

  it("the agent image installs the helper, runsc and the in-sandbox daemon on the node, each as the image has it", () => {
    // The init container's `args` after the image's entry point.
    const output = runOnce("install-node-binaries", "agent", {
      mounts: [[nodeBinaries, nodeBinaries, "rw"]],
      args: [...entrypoint("agent"), "install-node-binaries", nodeBinaries],
    });
    const inImage = runOnce("sums", "agent", { args: ["sh", "-c", "cd /opt/fast-sandbox/bin && sha256sum fsb-helper runsc fsb-envd"] });
    for (const name of ["fsb-helper", "runsc", "fsb-envd"]) {
      const path = join(nodeBinaries, name);
      assert.ok(statSync(path).mode & 0o111, `${name} is executable (install said: ${output})`);
      const onNode = execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0];
      assert.match(inImage, new RegExp(`^${onNode}  ${name}$`, "m"), `${name} on the node is the image's`);
    }
    assert.match(execFileSync(join(nodeBinaries, "runsc"), ["--version"], { encoding: "utf8" }), /runsc version/);
  });

  it("an agent run from its image creates runc and gVisor sandboxes in their own network namespaces", async () => {
    agentPort = await freePort();
    started.push("agent");
    start("agent", "agent", {
      privileged: true,
      mounts: [
        ["/run/containerd", "/run/containerd", "rw"],
        ["/var/lib/containerd", "/var/lib/containerd", "rw"],
        [agentsDir, agentsDir, "rw"],
        [nodeBinaries, nodeBinaries, "ro"],
        ["/run/netns", "/run/netns", "rshared"],
        [network.stateDir, network.stateDir, "rw"],
      ],
      env: {
        FSB_AGENT_NAME: AGENT_NAME,
        FSB_AGENT_UID: randomBytes(8).toString("hex"),
        FSB_AGENT_NAMESPACE: "default",
        FSB_AGENT_POOL: "images",
        FSB_NODE_NAME: NODE_NAME,
        FSB_AGENT_LISTEN: `127.0.0.1:${agentPort}`,
        FSB_AGENT_TOKEN: agentToken,
        FSB_CONTAINERD_NAMESPACE: SANDBOX_NS,
        FSB_CGROUP_PARENT: CGROUP_PARENT,
        FSB_AGENT_STATE_DIR: join(agentsDir, AGENT_NAME),
        FSB_HELPER_PATH: join(nodeBinaries, "fsb-helper"),
        FSB_RUNSC_PATH: join(nodeBinaries, "runsc"),
        FSB_ENVD_PATH: join(nodeBinaries, "fsb-envd"),
        FSB_NETWORK_NAME: network.name,
        FSB_NETWORK_SUBNET: network.subnet,
        FSB_NETWORK_STATE_DIR: network.stateDir,
        FSB_NETWORK_DNS: network.upstreamDnsServers.join(","),
        FSB_NETWORK_PREPARED: String(network.preparedNamespaces),
      },
    });
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${agentPort}/readyz`)).ok || undefined,
      60_000,
      () => `the agent's /readyz; its log:\n${logOf("agent")}`,
    );
    agent = createAgentClient(`127.0.0.1:${agentPort}`, agentToken);
    for (const runtimeType of ["container", "gvisor"] as const) {
      const name = `images-${runtimeType}`;
      const sandboxId = `default.${name}.${randomBytes(4).toString("hex")}`;
      const created = await agent.createSandbox({
        sandboxId,
        namespace: "default",
        name,
        image: BASE_IMAGE,
        command: ["sleep", "3600"],
        args: [],
        envs: [{ name: "GREETING", value: `hello from ${runtimeType}` }],
        runtimeType,
        exposedPorts: [],
        network: { mode: "Isolated", egress: { policy: "denyAll" }, allowSandboxToSandbox: false },
      });
      assert.equal(created.state, "running");
      assert.ok(created.address?.startsWith(network.subnet.slice(0, network.subnet.lastIndexOf(".") + 1)), `address ${created.address} in ${network.subnet}`);
      let output = "";
      let exitCode: number | undefined;
      for await (const event of agent.exec({ sandboxId, command: ["sh", "-c", 'echo "$GREETING"; hostname; cat /proc/net/route | wc -l'] })) {
        if (event.type === "exit") exitCode = event.exitCode;
        else output += new TextDecoder().decode(event.data);
      }
      assert.equal(exitCode, 0, output);
      const [greeting, hostname] = lines(output);
      assert.equal(greeting, `hello from ${runtimeType}`);
      assert.equal(hostname, name);
      const health = await waitFor(
        async () => (await fetch(`http://${created.address}:49983/health`)).status,
        20_000,
        () => `the in-sandbox daemon of the ${runtimeType} sandbox`,
      );
      assert.equal(health, 204, `the in-sandbox daemon of the ${runtimeType} sandbox answers /health`);
      if (runtimeType === "gvisor") {
        await agent.deleteSandbox(sandboxId, 1_000);
      }
    }
    const left = await agent.listSandboxes();
    assert.deepEqual(
      left.map((sandbox) => sandbox.name),
      ["images-container"],
      "the gVisor sandbox is deleted; the runc one stays for the janitor",
    );
  });

  it("the controller image runs as uid 1000 on a read-only root, takes the Lease and serves the authenticated fast path", async () => {
    kubectl("apply", "-k", join(REPO_ROOT, "config/crd"));
    kubectl("apply", "-f", join(REPO_ROOT, "config/manager/namespace.yaml"));
    kubectl("apply", "-k", join(REPO_ROOT, "config/rbac"));
    // The agent Pods' ServiceAccount in the pool's namespace (what a user applies with a pool).
    kubectl("apply", "-n", "default", "-f", join(REPO_ROOT, "config/samples/agent-service-account.yaml"));
    await waitFor(
      () => kubectl("get", "sandboxpools", "-A") !== undefined || undefined,
      30_000,
      () => "the SandboxPool CRD to serve",
    );
    mkdirSync(settings, { mode: 0o755 });
    writeFileSync(join(settings, "api-token"), apiToken, { mode: 0o644 });
    writeFileSync(join(settings, "agent-token"), agentToken, { mode: 0o644 });
    writeFileSync(join(settings, "agent-pod-template.yaml"), readFileSync(join(REPO_ROOT, "config/agent/agent-pod-template.yaml")), { mode: 0o644 });
    const controllerKubeconfig = serviceAccountKubeconfig("fast-sandbox-system", "fast-sandbox-controller");
    const port = await freePort();
    const e2bPort = await freePort();
    started.push("controller");
    const pid = start("controller", "controller", {
      readOnly: true,
      tmpfs: ["/tmp"],
      mounts: [
        [settings, "/etc/fast-sandbox", "ro"],
        [controllerKubeconfig, "/etc/fast-sandbox-kube/config", "ro"],
      ],
      env: {
        KUBECONFIG: "/etc/fast-sandbox-kube/config",
        FSB_LISTEN: `127.0.0.1:${port}`,
        FSB_POD_NAME: "fast-sandbox-controller-images",
        FSB_POD_NAMESPACE: "fast-sandbox-system",
        FSB_LEADER_ELECTION_LEASE: "fast-sandbox-controller",
        FSB_TOKEN_FILE: "/etc/fast-sandbox/api-token",
        FSB_AGENT_TOKEN_FILE: "/etc/fast-sandbox/agent-token",
        FSB_AGENT_TEMPLATE_FILE: "/etc/fast-sandbox/agent-pod-template.yaml",
        FSB_AGENT_IMAGE: image("agent"),
        FSB_E2B_LISTEN: `127.0.0.1:${e2bPort}`,
      },
    });
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok || undefined,
      60_000,
      () => `the controller's /readyz; its log:\n${logOf("controller")}`,
    );
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    assert.equal(uid, "1000", "the controller runs as the image's user");
    const holder = await waitFor(
      () => kubectl("-n", "fast-sandbox-system", "get", "lease", "fast-sandbox-controller", "-o", "jsonpath={.spec.holderIdentity}") || undefined,
      30_000,
      () => "the Lease's holder",
    );
    assert.ok(holder.startsWith("fast-sandbox-controller-images"), `the Lease is held by the controller (${holder})`);

    await assert.rejects(new FastSandboxClient({ url: `http://127.0.0.1:${port}`, token: `${apiToken}x` }).pools.list(), UnauthenticatedError);
    const client = new FastSandboxClient({ url: `http://127.0.0.1:${port}`, token: apiToken });
    assert.deepEqual(await client.pools.list(), []);
    await client.pools.apply({
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name: "images", namespace: "default" },
      spec: { runtimeType: "container", maxSandboxesPerPod: 4, capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 } },
    });
    const pod = await waitFor(
      () => lines(kubectl("-n", "default", "get", "pods", "-l", "fast-sandbox.io/pool=images", "-o", "name"))[0],
      30_000,
      () => `an agent Pod of the pool; the controller's log:\n${logOf("controller")}`,
    );
    const images = kubectl("-n", "default", "get", pod, "-o", "jsonpath={.spec.containers[*].image} {.spec.initContainers[*].image}");
    assert.deepEqual(images.split(" ").filter(Boolean), [image("agent"), image("agent")], "the agent Pod runs the agent image (FSB_AGENT_IMAGE)");
    await client.pools.delete("images", { namespace: "default" });
    await waitFor(
      () => lines(kubectl("-n", "default", "get", "pods", "-l", "fast-sandbox.io/pool=images", "-o", "name")).length === 0 || undefined,
      60_000,
      () => "the pool's agent Pods to go with it",
    );
  });

  it("the controller image's other role, the sandbox proxy (args: proxy), serves with its ServiceAccount and says a sandbox is unknown", async () => {
    assert.ok(existsSync(join(settings, "agent-token")), "the controller case wrote the settings");
    for (const file of ["proxy-service-account.yaml", "proxy-cluster-role.yaml", "proxy-cluster-role-binding.yaml"]) {
      kubectl("apply", "-n", "fast-sandbox-system", "-f", join(REPO_ROOT, "config/proxy", file));
    }
    const proxyKubeconfig = serviceAccountKubeconfig("fast-sandbox-system", "fast-sandbox-proxy");
    const port = await freePort();
    const probePort = await freePort();
    started.push("proxy");
    start("proxy", "controller", {
      readOnly: true,
      tmpfs: ["/tmp"],
      mounts: [
        [settings, "/etc/fast-sandbox", "ro"],
        [proxyKubeconfig, "/etc/fast-sandbox-kube/config", "ro"],
      ],
      env: {
        KUBECONFIG: "/etc/fast-sandbox-kube/config",
        FSB_PROXY_LISTEN: `127.0.0.1:${port}`,
        FSB_PROBE_LISTEN: `127.0.0.1:${probePort}`,
        FSB_PROXY_BASE_URL: `http://localhost:${port}`,
        FSB_AGENT_TOKEN_FILE: "/etc/fast-sandbox/agent-token",
        FSB_POD_NAMESPACE: "fast-sandbox-system",
      },
      // The Deployment's `args: ["proxy"]` after the image's entry point.
      args: [...entrypoint("controller"), "proxy"],
    });
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${probePort}/readyz`)).ok || undefined,
      60_000,
      () => `the proxy's /readyz; its log:\n${logOf("proxy")}`,
    );
    const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { "e2b-sandbox-id": "nosuchsandbox", "e2b-sandbox-port": "8080" } });
    const body = (await response.json()) as { message?: string };
    assert.equal(response.status, 502);
    assert.equal(body.message, "The sandbox was not found");
  });

  it("the janitor image reclaims what an agent left when it died: sandbox, shim anchors and network namespaces", async () => {
    assert.ok(agent, "the agent case ran");
    agent.close();
    agent = undefined;
    stop("agent");
    started.splice(started.indexOf("agent"), 1);
    const before = lines(ctr(SANDBOX_NS, "containers", "ls", "-q"));
    assert.ok(before.some((id) => id.startsWith("fsb-anchor.")) && before.length >= 2, `the dead agent left its sandbox and anchors: ${before.join(", ")}`);
    assert.ok(networkLeftovers(network).namespaces.length > 0, "and network namespaces");

    const janitorKubeconfig = serviceAccountKubeconfig("fast-sandbox-system", "fast-sandbox-janitor");
    started.push("janitor");
    start("janitor", "janitor", {
      privileged: true,
      mounts: [
        ["/run/containerd", "/run/containerd", "rw"],
        [agentsDir, agentsDir, "rw"],
        ["/run/netns", "/run/netns", "rshared"],
        [network.stateDir, network.stateDir, "rw"],
        [janitorKubeconfig, "/etc/fast-sandbox-kube/config", "ro"],
      ],
      env: {
        KUBECONFIG: "/etc/fast-sandbox-kube/config",
        FSB_JANITOR_INVENTORY: "kubernetes",
        FSB_NODE_NAME: NODE_NAME,
        FSB_CONTAINERD_NAMESPACE: SANDBOX_NS,
        FSB_JANITOR_AGENTS_DIR: agentsDir,
        FSB_CGROUP_ROOT: "",
        FSB_NETWORK_STATE_DIR: network.stateDir,
        FSB_JANITOR_INTERVAL: "1s",
        FSB_JANITOR_PROTECTION: "0s",
      },
    });
    await waitFor(
      () => (lines(ctr(SANDBOX_NS, "containers", "ls", "-q")).length === 0 && lines(ctr(SANDBOX_NS, "tasks", "ls", "-q")).length === 0) || undefined,
      90_000,
      () =>
        `the janitor to reclaim the dead agent's containers (${lines(ctr(SANDBOX_NS, "containers", "ls", "-q")).join(", ")}); its log:\n${logOf("janitor")}`,
    );
    await waitFor(
      () => networkLeftovers(network).namespaces.length === 0 || undefined,
      30_000,
      () => `the janitor to reclaim the network namespaces: ${JSON.stringify(networkLeftovers(network))}; its log:\n${logOf("janitor")}`,
    );
    // The image's own (committed) layers stay; no sandbox's writable snapshot does.
    const active = lines(ctr(SANDBOX_NS, "snapshots", "ls"))
      .slice(1)
      .filter((line) => !/\sCommitted$/.test(line));
    assert.deepEqual(active, [], "no sandbox snapshot is left");
  });
});
