/**
 * What a test run stopped midway leaves is removed by the sweep `npm test` runs before and after
 * itself (test/support/test-leftovers.ts): an agent killed with its isolated runc and gVisor
 * sandboxes still running and its prepared network namespaces made, a server namespace with its
 * metadata routes, a DNAT table — as a SIGTERM to the runner leaves them, `after` hooks skipped.
 * Objects outside the names it is given stay. Real containerd, runc, runsc, CNI plugins, nftables.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { AttachmentStore } from "@fast-sandbox/agent";
import { createIsolatedSleepers, startAgentProcess, stopAgentProcess, type AgentProcess } from "../../support/agent-process.js";
import { cgroupRoots, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { networkLeftovers, removeTestNetwork, ServerNamespace, testNetworkSettings, type NetworkLeftovers } from "../../support/sandbox-network.js";
import { sweepTestLeftovers } from "../../support/test-leftovers.js";

const suffix = randomBytes(3).toString("hex");
const NAMESPACE = `fsb-e2e-sweep-${suffix}`;
/** A test object of another run: the sweep is told only this run's names, so it stays. */
const KEPT_CGROUP = `fsb-e2e-sweepkept-${suffix}`;
const KEPT_NETNS = `fsbt-sweepkept-${suffix}`;
const DNAT_TABLE = `fsbt-dnat-${suffix}`;
const settings = testNetworkSettings();
const workDir = mkdtempSync(join(tmpdir(), "fsb-e2e-sweep-"));
const NOTHING: NetworkLeftovers = { namespaces: [], ports: [], addresses: [], records: [], reservations: [], rules: [], iptablesRules: [] };

const run = (command: string, ...args: string[]) => execFileSync(command, args, { encoding: "utf8" });
const quietly = (command: string, ...args: string[]) => {
  try {
    return run(command, ...args);
  } catch {
    return "";
  }
};
const cgroupDirs = (name: string) =>
  cgroupRoots()
    .map((root) => join(root, name))
    .filter((dir) => existsSync(dir));
const netnsNames = () =>
  quietly("ip", "netns", "list")
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "");

describe("the sweep of what interrupted test runs leave", () => {
  let agent: AgentProcess | undefined;
  let server: ServerNamespace | undefined;

  before(() => {
    importBaseImage(NAMESPACE);
  });

  after(async () => {
    await stopAgentProcess(agent, "SIGKILL");
    server?.remove();
    quietly("nft", "delete", "table", "ip", DNAT_TABLE);
    quietly("ip", "netns", "delete", KEPT_NETNS);
    for (const dir of cgroupDirs(KEPT_CGROUP)) rmdirSync(dir);
    try {
      removeNamespace(NAMESPACE);
    } catch {
      // the sweep removed it
    }
    removeCgroupTree(`/${NAMESPACE}`);
    await removeTestNetwork(settings);
    rmSync(workDir, { recursive: true, force: true });
  });

  it("removes the sandboxes of a killed agent, their cgroups and namespaces, its prepared ones, a server namespace's routes and a DNAT table — and nothing else", async () => {
    const token = randomBytes(16).toString("hex");
    agent = await startAgentProcess({
      FSB_AGENT_NAME: "swept-0",
      FSB_AGENT_POOL: "pool",
      FSB_AGENT_TOKEN: token,
      FSB_AGENT_STATE_DIR: join(workDir, "agent"),
      FSB_CONTAINERD_NAMESPACE: NAMESPACE,
      FSB_CGROUP_PARENT: `/${NAMESPACE}/swept-0`,
      FSB_NETWORK_NAME: settings.name,
      FSB_NETWORK_SUBNET: settings.subnet,
      FSB_NETWORK_STATE_DIR: settings.stateDir,
      FSB_NETWORK_PREPARED: "2",
    });
    await createIsolatedSleepers(
      agent,
      token,
      ["container", "gvisor"].map((runtimeType, index) => ({ sandboxId: `swept-${suffix}-${index}`, name: `swept-${index}`, runtimeType })),
    );
    const records = () => new AttachmentStore(settings.stateDir).list().length;
    for (let attempt = 0; attempt < 400 && records() < 4; attempt++) await sleep(50);
    assert.equal(records(), 4, "two sandboxes' network namespaces and two prepared ones");
    await stopAgentProcess(agent, "SIGKILL");
    server = ServerNamespace.create();
    await server.serveTcp(8000);
    run("nft", "add", "table", "ip", DNAT_TABLE);
    run("ip", "netns", "add", KEPT_NETNS);
    for (const root of ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"].filter(existsSync)) mkdirSync(join(root, KEPT_CGROUP));
    // The sandboxes and their shims' anchors run on after their agent died.
    const running = ctr(NAMESPACE, "tasks", "ls")
      .split("\n")
      .slice(1)
      .filter((line) => line.includes("RUNNING"));
    assert.equal(running.filter((line) => line.startsWith(`swept-${suffix}-`)).length, 2, running.join("\n"));
    const taskPids = running.map((line) => Number(line.split(/\s+/)[1]));
    assert.notEqual(run("ip", "route", "show", "169.254.169.254/32").trim(), "");
    assert.ok(cgroupDirs(NAMESPACE).length > 0);

    const serverSuffix = server.name.slice("fsbt-srv-".length);
    const result = await sweepTestLeftovers({
      namespaces: new RegExp(`^${NAMESPACE}$`),
      networkObjects: new RegExp(`^(fsb-)?(${settings.name}|fsbt-srv-${serverSuffix}|fsbs${serverSuffix}|${DNAT_TABLE})`),
    });
    server = undefined;

    assert.deepEqual(result.problems, []);
    // `ctr` cannot delete the gVisor task once killed (runsc: "sandbox is not running"): its shim goes first.
    assert.ok(
      result.removed.some((line) => line.startsWith(`containerd namespace ${NAMESPACE}`)),
      result.removed.join("\n"),
    );
    assert.ok(!run("ctr", "namespaces", "ls", "-q").split("\n").includes(NAMESPACE));
    // Killed, a task's process leaves /proc once its parent has reaped it, which may take a moment.
    for (const pid of taskPids) {
      for (let waited = 0; existsSync(`/proc/${pid}`) && waited < 10_000; waited += 100) await sleep(100);
      assert.ok(!existsSync(`/proc/${pid}`), `task process ${pid} is gone`);
    }
    assert.deepEqual(cgroupDirs(NAMESPACE), []);
    assert.deepEqual(networkLeftovers(settings), NOTHING);
    assert.equal(quietly("ip", "link", "show", settings.name), "", "the test network's bridge is gone");
    assert.ok(!existsSync(settings.stateDir), "the test network's state directory is gone");
    assert.ok(!netnsNames().some((name) => name.startsWith("fsbt-srv-") && name.endsWith(serverSuffix)));
    assert.equal(quietly("ip", "route", "show", "169.254.169.254/32").trim(), "", "the server namespace's metadata route went with its link");
    assert.equal(quietly("nft", "list", "table", "ip", DNAT_TABLE), "");
    // What the sweep was not told about stays.
    assert.ok(netnsNames().includes(KEPT_NETNS));
    assert.ok(cgroupDirs(KEPT_CGROUP).length > 0);
  });
});
