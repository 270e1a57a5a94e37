/**
 * Everything an isolated sandbox gets on the host — network namespace, veth pair and bridge port,
 * address and IPAM reservation, nftables and iptables rules, its record — goes with it: after 50
 * creates and deletes (runc and runsc), after creates that fail half-way, after an agent restart
 * (which keeps what its sandboxes still use and adopts its prepared namespaces), and after the
 * janitor reclaims what a killed agent left. Real containerd, runc, runsc, CNI plugins and nftables,
 * on a sandbox network of the test's own.
 */
import assert from "node:assert/strict";
import { execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import {
  AttachmentStore,
  DEFAULT_HELPER_PATH,
  createContainerdRuntime,
  type ContainerdRuntime,
  type RuntimeSandboxSpec,
  type RuntimeType,
} from "@fast-sandbox/agent";
import { Janitor, LocalHostLeftovers, LocalNodeNetworks, createContainerdNodeContainers, staticInventory } from "@fast-sandbox/janitor";
import { pino } from "pino";
import { createIsolatedSleepers, startAgentProcess, stopAgentProcess } from "../../support/agent-process.js";
import { BASE_IMAGE, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { networkLeftovers, removeTestNetwork, testNetworkSettings, type NetworkLeftovers } from "../../support/sandbox-network.js";

const suffix = randomBytes(3).toString("hex");
const NAMESPACE = `fsb-e2e-netdown-${suffix}`;
const CGROUP_PARENT = `/${NAMESPACE}`;
const logger = pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" });
const settings = testNetworkSettings();
const workDir = mkdtempSync(join(tmpdir(), "fsb-e2e-netdown-"));
const runtimes: ContainerdRuntime[] = [];
let killed: ChildProcess | undefined;

const NOTHING: NetworkLeftovers = { namespaces: [], ports: [], addresses: [], records: [], reservations: [], rules: [], iptablesRules: [] };

function newRuntime(agentName = "netdown-0"): ContainerdRuntime {
  const runtime = createContainerdRuntime({
    namespace: NAMESPACE,
    agentName,
    stateDir: join(workDir, "agents", agentName),
    cgroupParent: `${CGROUP_PARENT}/${agentName}`,
    helperPath: DEFAULT_HELPER_PATH,
    network: settings,
    logger,
  });
  runtimes.push(runtime);
  return runtime;
}

let counter = 0;
function isolated(runtimeType: RuntimeType = "container", overrides: Partial<RuntimeSandboxSpec> = {}): RuntimeSandboxSpec {
  counter += 1;
  // Fixed width: Debian's runsc (2022) finds a container by id prefix and calls "sb-5" ambiguous next to "sb-50".
  const sandboxId = `sb-${suffix}-${String(counter).padStart(3, "0")}`;
  return {
    sandboxId,
    namespace: "team",
    name: sandboxId,
    pool: "pool",
    image: BASE_IMAGE,
    command: ["sleep", "3600"],
    args: [],
    env: [],
    runtimeType,
    logPath: join(workDir, `${sandboxId}.log`),
    network: { mode: "isolated", egress: { kind: "allowAll" }, allowSandboxToSandbox: counter % 2 === 0 },
    ...overrides,
  };
}

/** The records of one agent's network namespaces. */
const recordsOf = (agent: string) =>
  new AttachmentStore(settings.stateDir)
    .list()
    .map(({ record }) => record)
    .filter((record) => record.owner.agent === agent);

before(() => {
  importBaseImage(NAMESPACE);
});

after(async () => {
  killed?.kill("SIGKILL");
  const steps: [string, () => unknown][] = [
    [
      "runtimes",
      async () => {
        // The last of an agent's runtimes cleans up (an earlier one of the same agent may be closed).
        for (const runtime of runtimes.reverse()) {
          try {
            for (const sandbox of await runtime.list()) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
            await runtime.unprepare();
          } catch {
            // closed
          }
          runtime.close();
        }
      },
    ],
    [
      "what a failed case left",
      async () => {
        const node = createContainerdNodeContainers({ containerdNamespace: NAMESPACE });
        const networks = new LocalNodeNetworks({ stateDirs: [settings.stateDir] });
        await new Janitor({ inventory: staticInventory(), nodes: [node], networks, protectionMs: 0, logger }).runPass();
        node.close();
      },
    ],
    ["network", () => removeTestNetwork(settings)],
    ["containerd namespace", () => removeNamespace(NAMESPACE)],
    ["cgroups", () => removeCgroupTree(CGROUP_PARENT)],
    ["work directory", () => rmSync(workDir, { recursive: true, force: true })],
  ];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      console.error(`clean-up of ${what} failed:`, error);
    }
  }
});

describe("sandbox network teardown", () => {
  it("creating and deleting 50 isolated sandboxes (runc and runsc) leaves no namespace, port, address, reservation, rule or record of theirs", async () => {
    const runtime = newRuntime();
    await runtime.prepare();
    const specs = Array.from({ length: 50 }, (_, index) => isolated(index % 5 === 4 ? "gvisor" : "container"));
    const addresses = new Set<string>();
    // Five at a time, as concurrent creates on one agent.
    for (let batch = 0; batch < specs.length; batch += 5) {
      const created = await Promise.all(specs.slice(batch, batch + 5).map((spec) => runtime.create(spec)));
      for (const sandbox of created) addresses.add(sandbox.address ?? "");
    }
    assert.equal(addresses.size, 50);
    assert.equal((await runtime.list()).filter((sandbox) => sandbox.address).length, 50);
    assert.equal(networkLeftovers(settings).ports.length >= 50, true);
    for (let batch = 0; batch < specs.length; batch += 5) {
      await Promise.all(specs.slice(batch, batch + 5).map((spec) => runtime.delete(spec.sandboxId, { gracePeriodMs: 0 })));
    }
    await runtime.unprepare();
    assert.deepEqual(networkLeftovers(settings), NOTHING);
  });

  it("a create that fails after its namespace was claimed gives the namespace back, completely", async () => {
    const runtime = newRuntime();
    await runtime.prepare();
    for (const runtimeType of ["container", "gvisor"] as const) {
      await assert.rejects(runtime.create(isolated(runtimeType, { command: ["/no/such/program"] })), /no\/such\/program/);
    }
    await runtime.networks?.warm();
    assert.deepEqual(networkLeftovers(settings, { exceptPrepared: true }), NOTHING);
    await runtime.unprepare();
    assert.deepEqual(networkLeftovers(settings), NOTHING);
  });

  it("an agent restart keeps its sandboxes' namespaces, adopts its prepared ones and reclaims those of sandboxes that are gone", async () => {
    const before = newRuntime("restarts-0");
    await before.prepare();
    const kept = await before.create(isolated());
    const vanishing = await before.create(isolated());
    await before.networks?.warm();
    const prepared = recordsOf("restarts-0").filter((record) => record.state === "prepared");
    assert.equal(prepared.length, 2);
    // The agent dies; meanwhile one of its containers is removed behind its back.
    before.close();
    ctr(NAMESPACE, "tasks", "rm", "-f", vanishing.sandboxId);
    ctr(NAMESPACE, "containers", "rm", vanishing.sandboxId);

    const after = newRuntime("restarts-0");
    await after.prepare();
    const records = recordsOf("restarts-0");
    assert.deepEqual(
      records.filter((record) => record.state === "claimed").map((record) => record.sandboxId),
      [kept.sandboxId],
    );
    assert.deepEqual(
      records
        .filter((record) => record.state === "prepared")
        .map((record) => record.id)
        .sort(),
      prepared.map((record) => record.id).sort(),
    );
    assert.equal(after.networks?.preparedCount, 2);
    assert.equal((await after.get(kept.sandboxId))?.address, kept.address);
    assert.ok(!networkLeftovers(settings).reservations.includes(vanishing.address ?? "?"));

    // The adopted namespaces are claimed first, and the kept one goes with its sandbox.
    const next = await after.create(isolated());
    assert.ok(prepared.some((record) => record.address?.address === next.address));
    await after.delete(kept.sandboxId, { gracePeriodMs: 0 });
    await after.delete(next.sandboxId, { gracePeriodMs: 0 });
    await after.unprepare();
    assert.deepEqual(networkLeftovers(settings), NOTHING);
  });

  it("the janitor reclaims the namespaces of a killed agent — its sandboxes' and its prepared ones — with its containers", async () => {
    const agentName = "killed-0";
    const stateDir = join(workDir, "agents", agentName);
    const token = randomBytes(16).toString("hex");
    const agent = await startAgentProcess(
      {
        FSB_AGENT_NAME: agentName,
        FSB_AGENT_POOL: "pool",
        FSB_AGENT_TOKEN: token,
        FSB_AGENT_STATE_DIR: stateDir,
        FSB_CONTAINERD_NAMESPACE: NAMESPACE,
        FSB_CGROUP_PARENT: `${CGROUP_PARENT}/${agentName}`,
        FSB_NETWORK_NAME: settings.name,
        FSB_NETWORK_SUBNET: settings.subnet,
        FSB_NETWORK_STATE_DIR: settings.stateDir,
        FSB_NETWORK_PREPARED: "2",
      },
      { keepStdin: true },
    );
    killed = agent.process;
    const addresses = await createIsolatedSleepers(
      agent,
      token,
      ["container", "gvisor"].map((runtimeType, index) => ({ sandboxId: `killed-${suffix}-${index}`, name: `killed-${index}`, runtimeType })),
    );
    for (const address of addresses) assert.notEqual(address, "");
    // Its prepared namespaces are made in the background after the first isolated create.
    const prepared = () => recordsOf(agentName).filter((record) => record.state === "prepared").length;
    for (let attempt = 0; attempt < 400 && prepared() < 2; attempt++) await sleep(50);
    assert.equal(prepared(), 2);
    await stopAgentProcess(agent, "SIGKILL");
    assert.equal(recordsOf(agentName).length, 4);

    const node = createContainerdNodeContainers({ containerdNamespace: NAMESPACE });
    const janitor = new Janitor({
      // The agent is gone; the control plane still holds its sandboxes' records (it has not noticed
      // yet), so nothing is an orphan before the agent's absence has lasted a whole window, however
      // long ago the sandboxes were made (a loaded machine takes over a second to get here).
      inventory: staticInventory([], [`killed-${suffix}-0`, `killed-${suffix}-1`]),
      nodes: [node],
      host: new LocalHostLeftovers({ agentsDir: join(workDir, "agents") }),
      networks: new LocalNodeNetworks({ stateDirs: [settings.stateDir] }),
      protectionMs: 1_000,
      logger,
    });
    try {
      // The first pass starts the agent's absence clock; the window passes; the next one reclaims.
      assert.deepEqual((await janitor.runPass()).removed, []);
      await sleep(1_100);
      const result = await janitor.runPass();
      assert.equal(result.failures, 0);
      const networks = result.removed.filter((object) => object.kind === "network");
      assert.equal(networks.length, 4);
      assert.ok(networks.every((object) => object.reason === "agent_gone" && object.agent === agentName));
      assert.deepEqual(
        networks
          .map((object) => object.sandboxId)
          .filter(Boolean)
          .sort(),
        [`killed-${suffix}-0`, `killed-${suffix}-1`],
      );
    } finally {
      node.close();
    }
    assert.deepEqual(networkLeftovers(settings), NOTHING);
    assert.equal(
      execFileSync("ctr", ["-n", NAMESPACE, "containers", "ls", "-q"], { encoding: "utf8" })
        .split("\n")
        .filter((id) => id.includes("killed")).length,
      0,
    );
  });
});
