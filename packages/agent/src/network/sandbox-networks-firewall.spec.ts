/**
 * SandboxNetworks' care of the firewall, with fakes for every tool (nft: fake-nft.fixture.ts):
 * what a restarted agent puts back, and the check that rebuilds the firewall once its tables are
 * gone (`nft flush ruleset`, e.g. Debian's `systemctl reload nftables`); teardowns that fail and
 * are tried again; the warning about a Pod's default deny list.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { AttachmentStore, type AttachmentPolicy, type AttachmentRecord } from "./attachment-store.js";
import type { BridgePorts } from "./bridge-ports.js";
import { LOOPBACK_NETWORK, sandboxNetworkList } from "./cni-conflist.js";
import type { CniInvoker } from "./cni-invoker.js";
import { Conntrack } from "./conntrack.js";
import { FakeNft } from "./fake-nft.fixture.js";
import { firewallGaps, nodeCommands, peerGroupOf, portGroupOf, type NftCommand } from "./firewall-rules.js";
import type { AttachmentTools } from "./network-attachment.js";
import type { NetworkNamespaces } from "./network-namespace.js";
import type { SandboxNetworkSettings } from "./network-settings.js";
import { SandboxFirewall } from "./sandbox-firewall.js";
import { SandboxNetworks, type NetworkClaim } from "./sandbox-networks.js";

const NAME = "fsbunit";
const NETWORK = { table: NAME, bridge: NAME, subnet: "10.81.0.0/24" };
const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

class FakePorts implements BridgePorts {
  readonly marked = new Map<string, number>();
  /** Resolved before a mark is done, when set (to hold a rebuild where it is). */
  gate: Promise<void> | undefined;
  async mark(interfaces: readonly string[], group: number): Promise<void> {
    await this.gate;
    for (const name of interfaces) this.marked.set(name, group);
  }
}

const OWNER = { agent: "agent-a", containerdNamespace: "fsb-spec" };
const KEPT_POLICY: AttachmentPolicy = {
  egress: { kind: "allowList", allow: [{ cidr: "192.0.2.0/24", ports: [443], protocol: "tcp" }] },
  dnsServers: ["10.81.9.53"],
  peerGroup: peerGroupOf("team", "pool"),
};

function record(id: string, n: number, extra: Partial<AttachmentRecord>, stateDir: string): AttachmentRecord {
  const netnsName = `fsb-${NAME}-${id}`;
  return {
    version: 1,
    id,
    state: "prepared",
    owner: OWNER,
    network: { name: NAME, subnet: NETWORK.subnet },
    netnsName,
    netnsPath: `/run/netns/${netnsName}`,
    cniContainerId: netnsName,
    cniPluginDirs: [],
    lists: { loopback: LOOPBACK_NETWORK, sandbox: sandboxNetworkList({ name: NAME, subnet: NETWORK.subnet }, stateDir) },
    results: { sandbox: { cniVersion: "1.0.0", ips: [{ address: `10.81.0.${n}/24`, gateway: "10.81.0.1" }] } },
    address: { address: `10.81.0.${n}`, prefixLength: 24, gateway: "10.81.0.1", hostInterface: `veth${id.slice(0, 8)}`, sandboxMac: `02:00:00:00:00:0${n}` },
    createdAt: new Date().toISOString(),
    ...extra,
  };
}

/**
 * A restarted agent's network over fakes, with the records a previous process left: one kept
 * sandbox, one of an older agent (no policy), one prepared namespace. `failing` makes the next
 * calls of a step fail (one per count); `dels` are the CNI DELs, and whether they were given the
 * ADD's result.
 */
function agent(options: { firewallCheckIntervalMs?: number; teardownRetryMs?: number; settings?: Partial<SandboxNetworkSettings> } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "fsb-networks-firewall-"));
  dirs.push(dir);
  const stateDir = join(dir, "state");
  const store = new AttachmentStore(stateDir);
  const kept = record("aaaaaaaaaaaa", 2, { state: "claimed", sandboxId: "kept", policy: KEPT_POLICY }, stateDir);
  const old = record("bbbbbbbbbbbb", 3, { state: "claimed", sandboxId: "old" }, stateDir);
  const prepared = record("cccccccccccc", 4, {}, stateDir);
  for (const each of [kept, old, prepared]) store.write(each);
  const nft = new FakeNft();
  const ports = new FakePorts();
  const cniDels: string[] = [];
  const dels: { containerId: string; ifName: string; prevResult: boolean }[] = [];
  const failing = { sandboxDel: 0, namespaceDelete: 0 };
  const timedOut = (what: string) => Promise.reject(new Error(`${what} timed out`));
  const namespaces: NetworkNamespaces = {
    path: (name) => `/run/netns/${name}`,
    exists: () => true,
    create: (name) => Promise.resolve(`/run/netns/${name}`),
    delete: () => (failing.namespaceDelete-- > 0 ? timedOut("ip netns delete") : Promise.resolve()),
  };
  const tools: AttachmentTools = {
    cni: {
      pluginDirs: [],
      add: () => Promise.reject(new Error("no CNI ADD in this spec")),
      del: (_list: unknown, attachment: { containerId: string; ifName: string }, prevResult?: unknown) => {
        cniDels.push(`${attachment.containerId} ${attachment.ifName}`);
        dels.push({ containerId: attachment.containerId, ifName: attachment.ifName, prevResult: prevResult !== undefined });
        return attachment.ifName !== "lo" && failing.sandboxDel-- > 0 ? timedOut("CNI DEL") : Promise.resolve();
      },
    } as unknown as CniInvoker,
    namespaces,
    firewall: new SandboxFirewall(NETWORK, nft, ports),
    conntrack: new Conntrack(),
    store,
  };
  const settings: SandboxNetworkSettings = {
    name: NAME,
    subnet: NETWORK.subnet,
    stateDir,
    cniPluginDirs: [],
    upstreamDnsServers: [],
    hostResolvConfPath: join(dir, "resolv.conf"),
    deniedCidrs: [],
    preparedNamespaces: 0,
    ...options.settings,
  };
  const logs: { level: number; msg: string; [key: string]: unknown }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => logs.push(JSON.parse(line) as (typeof logs)[number]) });
  const networks = new SandboxNetworks({
    settings,
    owner: OWNER,
    tools,
    logger,
    firewallCheckIntervalMs: options.firewallCheckIntervalMs ?? 0,
    ...(options.teardownRetryMs !== undefined ? { teardownRetryMs: options.teardownRetryMs } : {}),
  });
  return { networks, nft, ports, logs, kept, old, prepared, cniDels, dels, failing, tools, store };
}

/** A claim of an isolated sandbox with the default egress. */
function isolated(sandboxId: string): NetworkClaim {
  return { sandboxId, namespace: "team", pool: "pool", hostname: sandboxId, network: { mode: "isolated", egress: { kind: "allowAll" } } };
}

/** Waits (a while at most) until `done` says so. */
async function until(done: () => boolean): Promise<void> {
  for (let waited = 0; waited < 2_000 && !done(); waited += 10) await sleep(10);
}

/** The chains and elements the commands add, as `family chain` and `family set key`. */
function added(commands: NftCommand[]): string[] {
  return commands.flatMap((command) => {
    if (!("add" in command)) return [];
    const { chain, element } = command.add;
    if (chain) return [`${String(chain.family)} chain ${String(chain.name)}`];
    if (element)
      return (element.elem as unknown[]).map(
        (item) => `${String(element.family)} ${String(element.name)} ${JSON.stringify(Array.isArray(item) ? item[0] : item)}`,
      );
    return [];
  });
}

async function gaps(nft: FakeNft, expected = { ports: ["vethaaaaaaaa", "vethbbbbbbbb", "vethcccccccc"], addresses: ["10.81.0.2"] }) {
  const listing = [...((await nft.list("inet", NAME)) ?? []), ...((await nft.list("bridge", NAME)) ?? [])];
  return firewallGaps(NETWORK, listing, expected);
}

describe("SandboxNetworks and the firewall", () => {
  it("recover puts back the port guards of kept and adopted namespaces, and the stored policies of kept sandboxes", async () => {
    const { networks, nft, ports, logs, kept, old, prepared } = agent();
    assert.deepEqual(await networks.recover(new Set(["kept", "old"])), { kept: 2, adopted: 1, reclaimed: 0 });
    const commands = nft.commandsSince(0);
    const chains = added(commands);
    // The node's rules (nothing of the network may exist any more), then every attachment's.
    assert.deepEqual(nft.batches[0], nodeCommands(NETWORK));
    for (const each of [kept, old, prepared]) {
      assert.ok(chains.includes(`bridge chain port_${each.id}`), each.id);
      assert.ok(chains.includes(`bridge ports "${each.address?.hostInterface}"`), each.id);
      assert.equal(ports.marked.get(each.address?.hostInterface ?? ""), portGroupOf(NETWORK));
    }
    // The kept sandbox's stored policy, peer group included; a prepared namespace has none yet.
    assert.ok(chains.includes(`inet chain sandbox_${kept.id}`));
    assert.ok(chains.includes(`inet egress "10.81.0.2"`));
    assert.ok(chains.includes(`bridge chain peers_${kept.id}`));
    assert.match(JSON.stringify(commands), /"192\.0\.2\.0","len":24.*"dport"\}\},"right":443/);
    assert.match(JSON.stringify(commands), /"10\.81\.9\.53"/);
    assert.ok(!chains.includes(`inet chain sandbox_${prepared.id}`));
    // A record of an older agent has no policy to put back: said so, and its sandbox is kept.
    assert.ok(!chains.includes(`inet chain sandbox_${old.id}`));
    const warning = logs.find((line) => line.level === 40 && /older agent/.test(line.msg));
    assert.deepEqual(warning?.sandboxes, ["old"]);
    assert.deepEqual(await gaps(nft), []);
  });

  it("the firewall check finds nothing to do while the rules are there, and rebuilds everything once the tables vanished", async () => {
    const { networks, nft, logs, old } = agent();
    await networks.recover(new Set(["kept", "old"]));
    const applied = nft.batches.length;
    await networks.checkFirewall();
    assert.equal(nft.batches.length, applied, "nothing applied while nothing is missing");

    nft.flushRuleset();
    await networks.checkFirewall();
    const commands = nft.commandsSince(applied);
    assert.deepEqual(nft.batches[applied], nodeCommands(NETWORK), "the node's rules first");
    assert.deepEqual(await gaps(nft), [], "every guard and the kept sandbox's policy are back");
    assert.ok(!added(commands).includes(`inet chain sandbox_${old.id}`));
    const error = logs.find((line) => line.level === 50 && /lost rules/.test(line.msg));
    assert.ok(error, JSON.stringify(logs));
    assert.ok((error.gaps as string[]).includes(`table inet ${NAME}`));

    // Rebuilt: the next check is quiet again.
    const rebuilt = nft.batches.length;
    await networks.checkFirewall();
    assert.equal(nft.batches.length, rebuilt);
  });

  it("checks every firewallCheckIntervalMs until stopped", async () => {
    const { networks, nft } = agent({ firewallCheckIntervalMs: 10 });
    await networks.recover(new Set(["kept", "old"]));
    nft.flushRuleset();
    for (let waited = 0; waited < 2_000 && (await gaps(nft)).length > 0; waited += 10) await sleep(10);
    assert.deepEqual(await gaps(nft), []);

    await networks.stop();
    nft.flushRuleset();
    await sleep(100);
    assert.equal(await nft.list("inet", NAME), undefined, "no check after stop");
  });

  it("a sandbox deleted during a rebuild loses its rules after it: none are put back behind its teardown", async () => {
    const { networks, nft, ports, kept, cniDels } = agent();
    await networks.recover(new Set(["kept", "old"]));
    nft.flushRuleset();
    let open = () => {};
    ports.gate = new Promise((resolve) => (open = resolve));
    const checked = networks.checkFirewall();
    // The rebuild is under way (held at marking the ports); the sandbox is deleted meanwhile.
    for (let waited = 0; waited < 2_000 && !(await nft.list("inet", NAME)); waited += 5) await sleep(5);
    const released = networks.release("kept");
    await sleep(20);
    assert.deepEqual(cniDels, [], "the teardown waits for the rebuild");
    open();
    await Promise.all([checked, released]);
    assert.deepEqual(cniDels, [`${kept.cniContainerId} eth0`, `${kept.cniContainerId} lo`]);
    const listing = JSON.stringify([await nft.list("inet", NAME), await nft.list("bridge", NAME)]);
    assert.doesNotMatch(listing, new RegExp(`${kept.id}|10\\.81\\.0\\.2"|${kept.address?.hostInterface}`));
    assert.deepEqual(await gaps(nft, { ports: ["vethbbbbbbbb", "vethcccccccc"], addresses: [] }), []);
  });

  it("a teardown that failed is tried again later until it succeeds, and its record goes then", async () => {
    const { networks, store, prepared, failing, dels, logs } = agent({ teardownRetryMs: 20 });
    await networks.recover(new Set(["kept", "old"]));
    // The sandbox network's DEL times out twice (the DEL and its immediate second try), then works.
    failing.sandboxDel = 2;
    await networks.releasePrepared();
    assert.ok(store.read(prepared.id), "the first attempt failed: the record stays");
    const warning = logs.find((line) => line.level === 40 && line.attachment === prepared.id);
    assert.match(warning?.msg ?? "", /the agent tries again/);

    await until(() => store.read(prepared.id) === undefined);
    assert.equal(store.read(prepared.id), undefined, "the retry removed the namespace and its record");
    assert.ok(logs.some((line) => line.level === 30 && line.attachment === prepared.id && /torn down now/.test(line.msg)));
    // Only the first DEL was given the ADD's result: the ones after it may come after the address went to another namespace.
    const sandboxDels = dels.filter((del) => del.containerId === prepared.cniContainerId && del.ifName === "eth0");
    assert.deepEqual(
      sandboxDels.map((del) => del.prevResult),
      [true, false, false],
    );
    await networks.stop();
  });

  it("what is left of a prepare whose undo failed is torn down later as well", async () => {
    const { networks, store, failing } = agent({ teardownRetryMs: 20 });
    const before = new Set(store.list().map(({ record }) => record.id));
    const made = () => store.list().filter(({ record }) => !before.has(record.id));
    // The fake CNI refuses every ADD: the prepare fails and its undo's DEL times out.
    failing.sandboxDel = 2;
    await assert.rejects(networks.claim(isolated("fresh")), /no CNI ADD/);
    assert.deepEqual(
      made().map(({ record }) => record.state),
      ["preparing"],
    );

    await until(() => made().length === 0);
    assert.deepEqual(made(), []);
    await networks.stop();
  });

  it("a teardown retried after its DEL gave the address back neither DELs again nor removes the rules of the address's next holder", async () => {
    const { networks, nft, tools, store, kept, failing, dels } = agent({ teardownRetryMs: 60_000 });
    await networks.recover(new Set(["kept", "old"]));
    // The firewall rules go and the DEL succeeds (the address is free again); deleting the namespace times out.
    failing.namespaceDelete = 1;
    await assert.rejects(networks.release("kept"), /timed out/);
    assert.ok(store.read(kept.id), "the teardown is not finished");
    // host-local hands the address to a new namespace, whose sandbox is of the same peer group.
    const next = { id: "dddddddddddd", address: "10.81.0.2", hostInterface: "vethdddddddd", sandboxMac: "02:00:00:00:00:0d" };
    await tools.firewall.guardPort(next);
    await tools.firewall.applyPolicy({ ...next, egress: { kind: "allowAll" }, dnsServers: [], peerGroup: KEPT_POLICY.peerGroup ?? "" });

    // The sandbox's delete, tried again.
    await networks.release("kept");
    assert.equal(store.read(kept.id), undefined);
    const sandboxDels = dels.filter((del) => del.containerId === kept.cniContainerId && del.ifName === "eth0");
    assert.equal(sandboxDels.length, 1, "the DEL that succeeded is not run again (its firewall plugin would remove the next holder's rules)");
    assert.deepEqual(await gaps(nft, { ports: [next.hostInterface], addresses: [next.address] }), [], "the next holder's guard and policy");
    const group = ((await nft.list("inet", NAME)) ?? []).find((object) => object.set?.name === `group_${KEPT_POLICY.peerGroup}`);
    assert.deepEqual(group?.set?.elem, [next.address], "the next holder stays in its peer group");
    await networks.stop();
  });

  it("says at start in a Pod without FSB_NETWORK_DENY what its sandboxes do not reach and how to change it", () => {
    const denied = ["34.118.224.1/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
    const { logs } = agent({ settings: { deniedCidrs: denied, defaultDenyInPod: true } });
    const said = logs.find((line) => line.level === 30 && /FSB_NETWORK_DENY is unset/.test(line.msg));
    assert.ok(said, JSON.stringify(logs));
    assert.match(said.msg, /the private ranges, where the cluster's Pods, Services and nodes are/);
    assert.match(said.msg, /set FSB_NETWORK_DENY to the cluster's own CIDRs/);
    assert.deepEqual(said.denied, denied);

    const configured = agent({ settings: { deniedCidrs: ["10.0.0.0/8"] } });
    assert.ok(!configured.logs.some((line) => /FSB_NETWORK_DENY/.test(line.msg)), "nothing to say once it is set");
  });
});
