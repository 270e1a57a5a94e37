/**
 * The janitor on the real containerd, runc and agent processes: a dead agent's sandboxes (task,
 * container, snapshot, cgroup, run directory, log, exec FIFOs), shim anchors and prepared instances
 * are reclaimed once the protection window has passed, with counts per reason; record-less
 * containers of a live agent go after the window and not before; a live agent's prepared instances
 * (and a sandbox that claimed one) are left alone; nothing without the managed label is touched.
 * Then the janitor process that the embedded control plane supervises does the same by itself.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { destination, pino } from "pino";
import { ContainerdClient } from "@fast-sandbox/agent";
import { createAgentClient, type AgentClient, type AgentSandboxSpec } from "@fast-sandbox/controlplane";
import { Janitor, LocalHostLeftovers, controlPlaneInventory, createContainerdNodeContainers, type NodeContainers } from "@fast-sandbox/janitor";
import { startAgentProcess } from "../../support/agent-process.js";
import { isPreparedInstance, preparedStock, recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { BASE_IMAGE, ctr, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const PROTECTION_MS = 5_000;
const logger = pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }, destination(2));

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
const containers = (namespace: string) => lines(ctr(namespace, "containers", "ls", "-q"));
const tasks = (namespace: string) => lines(ctr(namespace, "tasks", "ls", "-q"));
const snapshots = (namespace: string) =>
  lines(ctr(namespace, "snapshots", "ls"))
    .slice(1)
    .map((line) => line.split(/\s+/)[0] ?? "");

/** The directories of a cgroup that exist, in every hierarchy (v1) or the unified tree (v2). */
function cgroupDirectories(cgroupPath: string): string[] {
  const roots = ["/sys/fs/cgroup", ...readdirSync("/sys/fs/cgroup").map((entry) => `/sys/fs/cgroup/${entry}`)];
  return roots.map((root) => `${root}${cgroupPath}`).filter((path) => existsSync(path));
}

/** The stdio FIFOs `ctr run` made for a container's task under containerd's FIFO directory. */
function containerdFifos(id: string): string[] {
  const root = "/run/containerd/fifo";
  const directories = existsSync(root) ? readdirSync(root) : [];
  return directories.flatMap((directory) =>
    ["stdin", "stdout", "stderr"].map((stream) => join(root, directory, `${id}-${stream}`)).filter((path) => existsSync(path)),
  );
}

/** Removes what `ctr run` made for the case's own containers under containerd's FIFO directory. */
async function removeCtrFifos(ids: string[]): Promise<void> {
  const host = new LocalHostLeftovers();
  for (const id of ids) await host.removeContainerdFifos(id);
}

/** The containerd shims serving a namespace, as `ps` shows them (`containerd-shim-runc-v2 -namespace NS -id GROUP …`). */
function shimProcesses(namespace: string): string[] {
  return lines(execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })).filter(
    (args) => args.includes("containerd-shim") && args.includes(`-namespace ${namespace} `),
  );
}

interface GhostAgent {
  name: string;
  client: AgentClient;
  process: ChildProcess;
  stateDir: string;
}

/**
 * The ghost's prepared instances: 64 MiB ones, so its own creates (no limits) do not claim them and
 * they are left unclaimed when it dies.
 */
const GHOST_PREPARED_TEMPLATE = JSON.stringify({
  namespace: "default",
  image: BASE_IMAGE,
  runtimeType: "container",
  memoryBytes: String(64 << 20),
  network: { mode: "SHARED" },
});

/** An agent process no control plane knows (as after its pool was deleted): started, used, then killed for good. */
async function startGhostAgent(embedded: EmbeddedCase, name: string): Promise<GhostAgent> {
  const token = randomBytes(16).toString("hex");
  const stateDir = join(embedded.dataDir, "agents", name);
  const { process: child, endpoint } = await startAgentProcess(
    {
      FSB_AGENT_NAME: name,
      FSB_AGENT_POOL: "ghost",
      FSB_AGENT_TOKEN: token,
      FSB_AGENT_STATE_DIR: stateDir,
      FSB_CONTAINERD_NAMESPACE: embedded.containerdNamespace,
      FSB_CGROUP_PARENT: `/${embedded.cgroupRoot}/${name}`,
      FSB_PREPARED_INSTANCES: "2",
      FSB_PREPARED_TEMPLATE: GHOST_PREPARED_TEMPLATE,
    },
    { keepStdin: true },
  );
  return { name, client: createAgentClient(endpoint, token), process: child, stateDir };
}

function sleeperRequest(sandboxId: string): AgentSandboxSpec {
  return {
    sandboxId,
    namespace: "default",
    name: sandboxId,
    image: BASE_IMAGE,
    command: ["sleep", "3600"],
    args: [],
    envs: [],
    runtimeType: "container",
    exposedPorts: [],
    network: { mode: "Shared" },
  };
}

/** A container started with `ctr run`, with exactly the labels given. */
function ctrRun(namespace: string, id: string, labels: Record<string, string>): void {
  ctr(namespace, "run", "-d", ...Object.entries(labels).flatMap(([key, value]) => ["--label", `${key}=${value}`]), BASE_IMAGE, id, "sleep", "3600");
}

/** A pull's lease, labelled as an agent's ImagePuller labels it. */
function pullLease(namespace: string, id: string, agent: string): void {
  ctr(namespace, "leases", "create", "--id", id, "fast-sandbox.io/managed=true", `fast-sandbox.io/agent=${agent}`, "fast-sandbox.io/role=pull-lease");
}

const managedBy = (agent: string, sandboxId: string) => ({
  "fast-sandbox.io/managed": "true",
  "fast-sandbox.io/agent": agent,
  "fast-sandbox.io/sandbox-id": sandboxId,
});

describe("the janitor reclaims what a dead agent and lost records leave behind", () => {
  let embedded: EmbeddedCase;
  let node: NodeContainers;
  let janitor: Janitor;
  let ghost: GhostAgent | undefined;
  /**
   * The janitor's time, set by the case before each pass: a window is then measured from moments
   * the case took, never from how long its steps happened to take (a loaded machine's creates,
   * waits and kills may outlast the window between two of them).
   */
  const clock = { now: Date.now(), nowMs: () => clock.now };

  before(async () => {
    embedded = await startEmbedded({ name: "janitor", pools: [pool("live", { maxSandboxesPerPod: 4 })], heartbeatIntervalMs: 300 });
    node = createContainerdNodeContainers({ containerdNamespace: embedded.containerdNamespace });
    janitor = new Janitor({
      inventory: controlPlaneInventory(embedded.client),
      nodes: [node],
      host: new LocalHostLeftovers({ agentsDir: join(embedded.dataDir, "agents"), cgroupRoot: embedded.cgroupRoot }),
      protectionMs: PROTECTION_MS,
      clock,
      logger,
    });
  });

  after(async () => {
    ghost?.process.kill("SIGKILL");
    ghost?.client.close();
    node?.close();
    // The case's pull leases: the live agent's always, the ghost's when the case failed before the janitor took it.
    for (const lease of ["fsb-pull-live", "fsb-pull-ghost"]) {
      try {
        if (embedded) ctr(embedded.containerdNamespace, "leases", "rm", "--sync", lease);
      } catch {
        // gone, or never made
      }
    }
    await embedded?.stop();
    await removeCtrFifos(["stray-old", "stray-young", "imposter", "plain"]);
  });

  it("removes a dead agent's sandboxes, FIFOs, cgroups and anchors, and record-less containers, only after the window", async () => {
    const ns = embedded.containerdNamespace;
    const kept = await embedded.client.sandboxes.create({ pool: "live", image: BASE_IMAGE, command: ["sleep", "3600"], name: "kept" });
    const keptId = kept.status?.sandboxID ?? "";
    // The live pool keeps prepared instances (2 by default); "kept" may have claimed one and live in
    // its container, counted as stock until relabelled (just after the create answered).
    const keptContainer = await recordedContainerOfSandbox(ns, keptId);
    const madeStock = (agent: string) => preparedStock(ns, { "fast-sandbox.io/agent": agent }).filter((id) => tasks(ns).includes(id));
    await waitFor(() => madeStock("live-0").length === 2, 30_000, "the live agent's prepared instances");
    const liveStock = madeStock("live-0");

    // A ghost agent runs two sandboxes and an exec, then dies for good in the middle of the exec.
    const beforeGhost = Date.now();
    ghost = await startGhostAgent(embedded, "ghost-0");
    await ghost.client.createSandbox(sleeperRequest("ghost.a"));
    await ghost.client.createSandbox(sleeperRequest("ghost.b"));
    const exec = (async () => {
      for await (const _ of ghost.client.exec({ sandboxId: "ghost.a", command: ["sleep", "3600"] })) {
        // no output
      }
    })().catch(() => undefined);
    const fifos = () => readdirSync(ghost?.stateDir ?? "").filter((name) => /^ghost\.a\.exec-[0-9a-f]+\.std(out|err)$/.test(name));
    await waitFor(() => fifos().length === 2, 10_000, "the exec's FIFOs");
    await waitFor(() => madeStock("ghost-0").length === 2, 30_000, "the ghost's prepared instances");
    const ghostStock = madeStock("ghost-0");
    assert.ok(existsSync(join(ghost.stateDir, "run", ghostStock[0] ?? "?")), "a prepared instance has a run directory");
    const ghostAnchors = containers(ns).filter((id) => id.startsWith("fsb-anchor.ghost-0."));
    const liveAnchors = containers(ns).filter((id) => id.startsWith("fsb-anchor.live-0."));
    assert.ok(ghostAnchors.length >= 1 && liveAnchors.length >= 1, `anchors: ${containers(ns).join(", ")}`);
    const ghostCgroup = `/${embedded.cgroupRoot}/ghost-0`;
    assert.ok(cgroupDirectories(`${ghostCgroup}/sandboxes/ghost.a`).length > 0, "the ghost's sandbox has a cgroup");
    assert.ok(existsSync(join(ghost.stateDir, "run", "ghost.a")) && existsSync(join(ghost.stateDir, "logs", "ghost.a.log")));
    ghost.process.kill("SIGKILL");
    await new Promise((resolve) => ghost?.process.once("exit", resolve));
    ghost.client.close();
    await exec;

    // Beside them: a record-less managed container of the live agent, a container without the
    // managed label that claims the ghost, and a plain one.
    ctrRun(ns, "stray-old", managedBy("live-0", "stray-old"));
    ctrRun(ns, "imposter", { "fast-sandbox.io/agent": "ghost-0", "fast-sandbox.io/sandbox-id": "imposter" });
    ctrRun(ns, "plain", {});
    const untouchable = ["imposter", "plain", keptContainer, ...liveAnchors, ...liveStock];
    // Pull leases, as an agent's pulls make them: one the ghost was killed in, holding a blob it had
    // downloaded (nothing else references it), and one of the live agent (a pull under way).
    const download = randomBytes(64);
    const downloaded = `sha256:${createHash("sha256").update(download).digest("hex")}`;
    pullLease(ns, "fsb-pull-ghost", "ghost-0");
    pullLease(ns, "fsb-pull-live", "live-0");
    const containerd = new ContainerdClient({ namespace: ns });
    try {
      await containerd.leases.addResource({ id: "fsb-pull-ghost", resource: { id: downloaded, type: "content" } });
    } finally {
      containerd.close();
    }
    execFileSync("ctr", ["-n", ns, "content", "ingest", "--expected-digest", downloaded, "--expected-size", String(download.length), "ghost-download"], {
      input: download,
    });
    assert.ok(ctr(ns, "content", "ls", "-q").includes(downloaded), "the lease keeps the ghost's download");
    const afterStrays = Date.now();

    // First pass, as if right when the ghost started: its absence begins, everything is too young.
    clock.now = beforeGhost;
    const first = await janitor.runPass();
    assert.equal(first.outcome, "completed");
    assert.deepEqual(first.removed, []);
    assert.ok(first.protectedOrphans >= 1);
    assert.ok(containers(ns).includes("stray-old"));

    // Created after afterStrays: inside the window at the next pass.
    ctrRun(ns, "stray-young", managedBy("live-0", "stray-young"));
    assert.ok(containerdFifos("stray-old").length >= 3, "ctr made stdio FIFOs for stray-old's task");
    const afterYoung = Date.now();

    // A window after the strays were made: the ghost has been missing for longer than a window.
    clock.now = afterStrays + PROTECTION_MS;
    const second = await janitor.runPass();
    assert.equal(second.outcome, "completed", second.error?.message);
    assert.equal(second.failures, 0);
    assert.deepEqual(second.reclaimed, { agent_gone: 2, record_gone: 1, anchor_orphaned: ghostAnchors.length, prepared_orphaned: 2 });
    const removedOf = (kind: string) =>
      second.removed
        .filter((object) => object.kind === kind)
        .map((object) => object.id)
        .sort();
    assert.deepEqual(removedOf("container"), ["ghost.a", "ghost.b", ...ghostAnchors, ...ghostStock, "stray-old"].sort());
    assert.deepEqual(removedOf("snapshot"), ["ghost.a", "ghost.b", ...ghostStock, "stray-old"].sort());
    // The dead agent's exec FIFOs, and the stdio FIFOs ctr made for stray-old's task.
    assert.ok(removedOf("fifo").filter((path) => path.startsWith("/run/containerd/fifo/")).length >= 3);
    assert.equal(removedOf("fifo").filter((path) => !path.startsWith("/run/containerd/fifo/")).length, 2);
    assert.deepEqual(containerdFifos("stray-old"), []);
    assert.ok(containerdFifos("plain").length >= 3, "the FIFOs of a container left alone stay");
    // The ghost's pull lease went, and with it (at once: the removal collects synchronously) its download; the live agent's stays.
    assert.deepEqual(removedOf("lease"), ["fsb-pull-ghost"]);
    const leases = ctr(ns, "leases", "ls", "-q").split("\n");
    assert.ok(!leases.includes("fsb-pull-ghost") && leases.includes("fsb-pull-live"), `leases: ${leases.join(", ")}`);
    assert.ok(!ctr(ns, "content", "ls", "-q").includes(downloaded), "the ghost's download is collected with its lease");

    // containerd's own view.
    const leftContainers = containers(ns);
    for (const id of ["ghost.a", "ghost.b", "stray-old", ...ghostAnchors, ...ghostStock]) {
      assert.ok(!leftContainers.includes(id), `container ${id} is gone`);
      assert.ok(!tasks(ns).includes(id), `task ${id} is gone`);
      assert.ok(!snapshots(ns).includes(id), `snapshot ${id} is gone`);
    }
    for (const id of [...untouchable, "stray-young"]) assert.ok(leftContainers.includes(id), `container ${id} is left alone`);
    for (const id of untouchable.filter((id) => !id.startsWith("fsb-anchor."))) assert.ok(tasks(ns).includes(id), `task ${id} still runs`);

    // The host: cgroups of the sandboxes and of the agent itself, FIFOs, run directories, logs.
    assert.deepEqual(cgroupDirectories(ghostCgroup), []);
    assert.deepEqual(fifos(), []);
    assert.ok(!existsSync(join(ghost.stateDir, "run", "ghost.a")) && !existsSync(join(ghost.stateDir, "logs", "ghost.a.log")));
    assert.deepEqual(readdirSync(join(ghost.stateDir, "run")).filter(isPreparedInstance), [], "the ghost's prepared instances' run directories are gone");
    assert.deepEqual(readdirSync(join(ghost.stateDir, "logs")).filter(isPreparedInstance), [], "the ghost's prepared instances' logs are gone");
    assert.ok(cgroupDirectories(`/${embedded.cgroupRoot}/live-0/sandboxes/${keptContainer}`).length > 0, "the live sandbox keeps its cgroup");
    // The ghost's shims exit with their last container.
    await waitFor(() => !shimProcesses(ns).some((args) => args.includes("-id ghost-0.")), 10_000, "the ghost's shims to exit");

    const metrics = await janitor.metrics.text();
    assert.match(metrics, /^fsb_janitor_orphans_reclaimed_total\{reason="agent_gone"\} 2$/m);
    assert.match(metrics, /^fsb_janitor_orphans_reclaimed_total\{reason="record_gone"\} 1$/m);
    assert.match(metrics, new RegExp(`^fsb_janitor_orphans_reclaimed_total\\{reason="anchor_orphaned"\\} ${ghostAnchors.length}$`, "m"));
    assert.match(metrics, /^fsb_janitor_orphans_reclaimed_total\{reason="prepared_orphaned"\} 2$/m);

    // The live sandbox still works, and a pass after the young one's window takes only it.
    assert.equal((await embedded.client.sandboxes.exec("kept", ["sh", "-c", "echo alive"])).stdout, "alive\n");
    clock.now = afterYoung + PROTECTION_MS;
    const third = await janitor.runPass();
    assert.deepEqual(third.reclaimed, { agent_gone: 0, record_gone: 1, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.deepEqual(
      containers(ns)
        .filter((id) => untouchable.includes(id))
        .sort(),
      [...untouchable].sort(),
    );
  });

  it("removes nothing while the control plane cannot be asked", async () => {
    const ns = embedded.containerdNamespace;
    ctrRun(ns, "stray-while-down", managedBy("nobody-0", "stray-while-down"));
    await embedded.shutdown();
    const unreachable = new Janitor({
      inventory: controlPlaneInventory(embedded.client),
      nodes: [node],
      protectionMs: 0,
      logger,
    });
    const result = await unreachable.runPass();
    assert.equal(result.outcome, "inventory_unavailable");
    assert.deepEqual(result.removed, []);
    assert.ok(containers(ns).includes("stray-while-down"));
    await embedded.restart();
  });
});

describe("the janitor process the embedded control plane supervises", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "janitor-proc",
      pools: [pool("live", { maxSandboxesPerPod: 2 })],
      janitor: { intervalMs: 300, protectionMs: 1_000, metricsListen: "127.0.0.1:0", checkpointGraceMs: 1_000 },
    });
  });

  after(async () => {
    await embedded?.stop();
    await removeCtrFifos(["plain"]);
  });

  it("reclaims orphans by itself, counts them on /metrics, and comes back when killed", async () => {
    const ns = embedded.containerdNamespace;
    const janitor = embedded.controlPlane.janitor;
    assert.ok(janitor);
    await waitFor(() => janitor.metricsUrl !== undefined, 30_000, "the janitor's metrics endpoint");
    ctrRun(ns, "orphan-1", managedBy("nobody-0", "orphan-1"));
    ctrRun(ns, "plain", {});
    await waitFor(() => !containers(ns).includes("orphan-1"), 30_000, "the supervised janitor to reclaim orphan-1");
    // Removed before its container: ctr's stdio FIFOs for its task.
    assert.deepEqual(containerdFifos("orphan-1"), []);
    // No record and no agent: whichever the janitor saw first names the reason. The janitor counts
    // an orphan once all it held is gone, a moment after the container disappears from the list.
    const reclaimed = (metrics: string, reason: string) =>
      Number(new RegExp(`^fsb_janitor_orphans_reclaimed_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(metrics)?.[1]);
    const metrics = await metricsOnceThey(janitor.metricsUrl ?? "", (text) => reclaimed(text, "agent_gone") + reclaimed(text, "record_gone") >= 1);
    assert.equal(reclaimed(metrics, "agent_gone") + reclaimed(metrics, "record_gone"), 1, metrics);
    assert.equal(reclaimed(metrics, "anchor_orphaned"), 0);
    assert.ok(containers(ns).includes("plain"));
    assert.ok(
      containers(ns).some((id) => id.startsWith("fsb-anchor.live-0.")),
      "the live agent's anchors stay",
    );

    const firstPid = janitor.pid;
    janitor.kill("SIGKILL");
    await waitFor(() => janitor.pid !== undefined && janitor.pid !== firstPid, 30_000, "the janitor to be restarted");
    ctrRun(ns, "orphan-2", managedBy("nobody-1", "orphan-2"));
    await waitFor(() => !containers(ns).includes("orphan-2"), 30_000, "the restarted janitor to reclaim orphan-2");
    assert.deepEqual(containerdFifos("orphan-2"), []);
    assert.ok(containers(ns).includes("plain"));
  });

  it("removes the checkpoint directory of a pool the control plane does not have, once it has been gone for the grace period, and keeps a live pool's", async () => {
    const janitor = embedded.controlPlane.janitor;
    assert.ok(janitor);
    const checkpoints = join(embedded.dataDir, "checkpoints", "default");
    // What a deleted pool's agents left when the pool went (the control plane's own removal failed, or it was down).
    for (const poolName of ["gone", "live"]) {
      mkdirSync(join(checkpoints, poolName, "ck-1"), { recursive: true });
      writeFileSync(join(checkpoints, poolName, "ck-1", "checkpoint.img"), "memory");
    }
    await waitFor(() => !existsSync(join(checkpoints, "gone")), 30_000, "the supervised janitor to remove the gone pool's checkpoint directory");
    assert.ok(existsSync(join(checkpoints, "live", "ck-1", "checkpoint.img")), "the live pool's checkpoints stay");
    await waitFor(() => janitor.metricsUrl !== undefined, 30_000, "the janitor's metrics endpoint");
    // Counted once the directory, moved aside first, is deleted: a moment after it disappears.
    const counted = /^fsb_janitor_objects_removed_total\{kind="checkpoint_dir",reason="pool_gone"\} (\d+)$/m;
    const metrics = await metricsOnceThey(janitor.metricsUrl ?? "", (text) => counted.test(text));
    assert.match(metrics, /^fsb_janitor_objects_removed_total\{kind="checkpoint_dir",reason="pool_gone"\} 1$/m);
  });
});

/** The janitor's /metrics once `ready` holds of them (its last text, for the assertion, after 10 s). */
async function metricsOnceThey(url: string, ready: (metrics: string) => boolean): Promise<string> {
  let metrics = "";
  await waitFor(
    async () => {
      metrics = await fetch(url).then(
        async (response) => response.text(),
        (error: unknown) => String(error),
      );
      return ready(metrics);
    },
    10_000,
    "the janitor's metrics to count it",
  ).catch(() => undefined);
  return metrics;
}
