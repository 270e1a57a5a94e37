/**
 * SandboxNetworks against the real CNI plugins, iproute2 and nftables (root), on a network of its
 * own (name, subnet, state directory), removed at the end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { AlreadyExistsError, FailedPreconditionError } from "@fast-sandbox/api";
import { AttachmentStore } from "./attachment-store.js";
import { CniError } from "./cni-error.js";
import { CniInvoker } from "./cni-invoker.js";
import { IpNetworkNamespaces } from "./network-namespace.js";
import { portGroupOf } from "./firewall-rules.js";
import { SandboxFirewall } from "./sandbox-firewall.js";
import { Conntrack } from "./conntrack.js";
import type { SandboxNetworkSettings } from "./network-settings.js";
import { SandboxNetworks } from "./sandbox-networks.js";

const NAME = `fsbsn${process.pid % 10000}`;
const dir = mkdtempSync(join(tmpdir(), "fsb-sandbox-networks-"));
const resolvConf = join(dir, "resolv.conf");
writeFileSync(resolvConf, "nameserver 127.0.0.53\nnameserver 10.80.9.53\nsearch example.test\n");
const settings: SandboxNetworkSettings = {
  name: NAME,
  subnet: "10.80.0.0/24",
  stateDir: join(dir, "state"),
  cniPluginDirs: ["/usr/lib/cni"],
  upstreamDnsServers: ["192.0.2.53"],
  hostResolvConfPath: resolvConf,
  deniedCidrs: [],
  preparedNamespaces: 2,
};
const logger = pino({ level: "silent" });
// Firewall checks only when a test asks for one (checkFirewall).
const networks = (agent = "agent-a", overrides: Partial<SandboxNetworkSettings> = {}) =>
  new SandboxNetworks({ settings: { ...settings, ...overrides }, owner: { agent, containerdNamespace: "fsb-spec" }, logger, firewallCheckIntervalMs: 0 });

const sh = (command: string, ...args: string[]) => execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const records = () => new AttachmentStore(settings.stateDir).list().map((stored) => stored.record);
const namespacesOfNetwork = () =>
  sh("ip", "netns", "list")
    .split("\n")
    .filter((line) => line.startsWith(`fsb-${NAME}-`));
const reservations = () => {
  try {
    return readdirSync(join(settings.stateDir, "ipam", NAME)).filter((name) => /^\d+\.\d+\.\d+\.\d+$/.test(name));
  } catch {
    return [];
  }
};
/** Both tables of the network as `nft list` prints them ("" for one that does not exist). */
const nftables = () =>
  ["inet", "bridge"]
    .map((family) => {
      try {
        return sh("nft", "list", "table", family, NAME);
      } catch {
        return "";
      }
    })
    .join("");
/** What `nft flush ruleset` would do to this network (the spec leaves the host's other tables alone). */
const deleteTables = () => ["inet", "bridge"].forEach((family) => sh("nft", "delete", "table", family, NAME));
const claim = (sandboxId: string, allowSandboxToSandbox = false) => ({
  sandboxId,
  namespace: "team",
  pool: "pool",
  hostname: sandboxId,
  network: { mode: "isolated" as const, egress: { kind: "allowAll" as const }, allowSandboxToSandbox },
});

after(async () => {
  for (const record of records()) await networks(record.owner.agent).release(record.sandboxId ?? "");
  await networks("cleanup").releasePrepared();
  await networks()
    .removeNode()
    .catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe("SandboxNetworks", () => {
  it("makes a namespace on demand when none is prepared, then keeps the prepared count, and claims those first", async () => {
    const agent = networks();
    assert.equal(agent.preparedCount, 0);
    const first = await agent.claim(claim("sb-1"));
    await first.policyApplied;
    assert.equal(first.prepared, false);
    assert.match(first.address, /^10\.80\.0\.\d+$/);
    assert.equal(first.netnsPath, `/run/netns/fsb-${NAME}-${first.attachmentId}`);
    assert.equal(first.files["/etc/hosts"]?.split("\n")[2], `${first.address}\tsb-1`);
    // The loopback resolver is left out; the host's other one is kept with its search domain.
    assert.equal(first.files["/etc/resolv.conf"], "# Written by the Fast Sandbox agent for this sandbox.\nnameserver 10.80.9.53\nsearch example.test\n");
    await agent.warm();
    assert.equal(agent.preparedCount, 2);
    const second = await agent.claim(claim("sb-2"));
    await second.policyApplied;
    assert.equal(second.prepared, true);
    // A second create of the same sandbox gets no namespace and takes nothing from the first.
    await assert.rejects(agent.claim(claim("sb-2")), AlreadyExistsError);
    assert.notEqual(second.address, first.address);
    assert.deepEqual(
      records()
        .filter((record) => record.state === "claimed")
        .map((record) => record.sandboxId)
        .sort(),
      ["sb-1", "sb-2"],
    );

    await agent.release("sb-1");
    await agent.release("sb-1");
    await agent.release("sb-2");
    await agent.warm();
    await agent.releasePrepared();
    assert.deepEqual(records(), []);
    assert.deepEqual(namespacesOfNetwork(), []);
    assert.deepEqual(reservations(), []);
  });

  it("two deletes of one sandbox at once tear it down once, and a DEL that lost a race to another process is retried", async () => {
    // The real tools, with the sandbox network's DEL counted and, once, failing the way the bridge
    // plugin does when another process removed the interface between finding and deleting it.
    const cni = new CniInvoker({ pluginDirs: settings.cniPluginDirs });
    let sandboxDels = 0;
    let loseRace = false;
    const del = cni.del.bind(cni);
    cni.del = async (list, attachment, prevResult) => {
      if (attachment.ifName === "lo") return del(list, attachment, prevResult);
      sandboxDels += 1;
      await del(list, attachment, prevResult);
      if (loseRace) {
        loseRace = false;
        throw new CniError({ plugin: "bridge", command: "DEL", cniCode: 999, message: 'failed to delete "eth0": no such device' });
      }
    };
    const tools = {
      cni,
      namespaces: new IpNetworkNamespaces(),
      firewall: new SandboxFirewall({ table: NAME, bridge: NAME, subnet: settings.subnet }),
      conntrack: new Conntrack(),
      store: new AttachmentStore(settings.stateDir),
    };
    const agent = new SandboxNetworks({
      settings: { ...settings, preparedNamespaces: 0 },
      owner: { agent: "agent-a", containerdNamespace: "fsb-spec" },
      tools,
      logger,
    });

    const claimed = await agent.claim(claim("twice"));
    await claimed.policyApplied;
    await Promise.all([agent.release("twice"), agent.release("twice")]);
    assert.equal(sandboxDels, 1);
    assert.deepEqual(records(), []);

    const raced = await agent.claim(claim("raced"));
    await raced.policyApplied;
    loseRace = true;
    await agent.release("raced");
    assert.equal(sandboxDels, 3);
    assert.deepEqual(records(), []);
    assert.deepEqual(namespacesOfNetwork(), []);
    assert.deepEqual(reservations(), []);
  });

  it("after a restart keeps the namespaces of existing sandboxes, adopts prepared ones and reclaims the rest", async () => {
    const before = networks();
    const kept = await before.claim(claim("kept"));
    const gone = await before.claim(claim("gone"));
    await Promise.all([kept.policyApplied, gone.policyApplied]);
    await before.warm();
    const other = networks("agent-b", { preparedNamespaces: 0 });
    const others = await other.claim(claim("of-agent-b"));
    await others.policyApplied;
    assert.equal(records().length, 5);

    // The claim's policy is in its record, for whoever must apply it again.
    const keptRecord = records().find((record) => record.sandboxId === "kept");
    assert.deepEqual(keptRecord?.policy, { egress: { kind: "allowAll" }, dnsServers: ["10.80.9.53"] });

    // A new process of the same agent: only "kept" still exists. Meanwhile the host's ruleset was flushed.
    deleteTables();
    const after = networks();
    assert.deepEqual(await after.recover(new Set(["kept"])), { kept: 1, adopted: 2, reclaimed: 1 });
    // The kept sandbox's guard and policy, and the adopted namespaces' guards, are back.
    const restored = nftables();
    for (const record of records().filter((each) => each.owner.agent === "agent-a")) {
      assert.match(restored, new RegExp(`"${record.address?.hostInterface}" : jump port_${record.id}`), record.id);
    }
    assert.match(restored, new RegExp(`${kept.address.replace(/\./g, "\\.")} : jump sandbox_${kept.attachmentId}`));
    assert.deepEqual(
      records()
        .map((record) => `${record.owner.agent} ${record.state} ${record.sandboxId ?? "-"}`)
        .sort(),
      ["agent-a claimed kept", "agent-a prepared -", "agent-a prepared -", "agent-b claimed of-agent-b"],
    );
    // Adopted namespaces are claimed before any new one is made.
    const next = await after.claim(claim("next"));
    await next.policyApplied;
    assert.equal(next.prepared, true);

    await after.release("kept");
    await after.release("next");
    await other.release("of-agent-b");
    await after.releasePrepared();
    assert.deepEqual(records(), []);
    assert.deepEqual(namespacesOfNetwork(), []);
    assert.deepEqual(reservations(), []);
  });

  it("marks its ports as the network's, and a firewall check rebuilds the rules after the tables were deleted behind its back", async () => {
    const agent = networks("agent-a", { preparedNamespaces: 0 });
    const claimed = await agent.claim(claim("checked", true));
    await claimed.policyApplied;
    const record = records().find((each) => each.sandboxId === "checked");
    const port = record?.address?.hostInterface ?? "?";
    assert.match(sh("ip", "-d", "link", "show", "dev", port), new RegExp(`\\bgroup ${portGroupOf({ table: NAME, bridge: NAME, subnet: settings.subnet })}\\b`));
    await agent.checkFirewall();
    const intact = nftables();

    deleteTables();
    await agent.checkFirewall();
    const rebuilt = nftables();
    assert.match(rebuilt, new RegExp(`"${port}" : jump port_${claimed.attachmentId}`));
    assert.match(rebuilt, new RegExp(`${claimed.address.replace(/\./g, "\\.")} : jump sandbox_${claimed.attachmentId}`));
    assert.match(rebuilt, new RegExp(`"${port}" : jump peers_${claimed.attachmentId}`));
    // The same rules as before they were lost (handles aside).
    const withoutHandles = (text: string) => text.replace(/ # handle \d+/g, "");
    assert.equal(withoutHandles(rebuilt), withoutHandles(intact));
    await agent.release("checked");
    await agent.stop();
  });

  it("skips a prepared namespace deleted behind its back, and refuses to give the node up while namespaces exist", async () => {
    const agent = networks();
    await agent.warm();
    const [victim] = records();
    assert.ok(victim);
    sh("ip", "netns", "delete", victim.netnsName);
    const claimed = await agent.claim(claim("survivor"));
    await claimed.policyApplied;
    assert.notEqual(claimed.attachmentId, victim.id);
    await assert.rejects(agent.removeNode(), FailedPreconditionError);
    await agent.release("survivor");
    await agent.releasePrepared();
    // The vanished one was torn down in the background; the janitor would take it otherwise.
    for (let attempt = 0; attempt < 100 && records().length > 0; attempt++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(records(), []);
    await agent.removeNode();
    assert.doesNotMatch(sh("ip", "-o", "link"), new RegExp(`: ${NAME}:`));
  });
});
