import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeNft } from "./fake-nft.fixture.js";
import {
  emptyGroupSets,
  firewallGaps,
  nodeCommands,
  peerGroupOf,
  portGroupOf,
  portGuardCommands,
  removalCommands,
  sandboxPolicyCommands,
  type FirewallNetwork,
  type NftCommand,
  type NftListing,
  type SandboxPolicy,
} from "./firewall-rules.js";
import { Nft } from "./nft.js";

const NETWORK: FirewallNetwork = { table: "fsbrules", bridge: "fsbrules", subnet: "10.77.0.0/16" };
const GUARD = { id: "a1b2c3d4e5f6", hostInterface: "veth1234", sandboxMac: "a6:4b:59:df:9e:10", address: "10.77.0.2" };

function policy(overrides: Partial<SandboxPolicy> = {}): SandboxPolicy {
  return {
    id: GUARD.id,
    address: GUARD.address,
    hostInterface: GUARD.hostInterface,
    egress: { kind: "allowAll" },
    dnsServers: ["10.255.255.53"],
    ...overrides,
  };
}

/** The rules a batch adds to one chain, each as its expressions' JSON. */
function rulesOf(commands: NftCommand[], chainName: string): string[] {
  return commands.flatMap((command) => {
    const body = "add" in command ? command.add.rule : undefined;
    return body && body.chain === chainName ? [JSON.stringify(body.expr)] : [];
  });
}

/** nft's own check of a batch (`nft -c`, nothing is changed): the builder's JSON is what this nft understands. */
async function assertNftAccepts(commands: NftCommand[]): Promise<void> {
  await new Nft().apply([...nodeCommands(NETWORK), ...commands], { check: true });
}

describe("nodeCommands", () => {
  it("creates both tables and rewrites their base chains in one idempotent batch", async () => {
    const commands = nodeCommands(NETWORK);
    const flushed = commands.flatMap((command) => ("flush" in command ? [`${String(command.flush.chain?.family)} ${String(command.flush.chain?.name)}`] : []));
    assert.deepEqual(flushed, [
      "inet input",
      "inet forward",
      "inet output",
      "inet from_sandbox",
      "bridge prerouting",
      "bridge forward",
      "inet before_nat",
      "inet postrouting",
    ]);
    // Nothing from the bridge reaches the host but replies; unknown sources are dropped.
    assert.deepEqual(rulesOf(commands, "input"), [
      JSON.stringify([
        { match: { op: "==", left: { meta: { key: "iifname" } }, right: "fsbrules" } },
        { match: { op: "in", left: { ct: { key: "state" } }, right: ["established", "related"] } },
        { accept: null },
      ]),
      JSON.stringify([{ match: { op: "==", left: { meta: { key: "iifname" } }, right: "fsbrules" } }, { drop: null }]),
    ]);
    // The same verdict before the host's destination NAT: a connection to a host address is dropped
    // before a DNAT rule (a published port) can make it forwarded traffic.
    const beforeNat = commands.find((command) => "add" in command && command.add.chain?.name === "before_nat");
    assert.deepEqual(beforeNat, {
      add: { chain: { family: "inet", table: "fsbrules", name: "before_nat", type: "filter", hook: "prerouting", prio: -150, policy: "accept" } },
    });
    assert.deepEqual(rulesOf(commands, "before_nat"), [
      JSON.stringify([
        { match: { op: "==", left: { meta: { key: "iifname" } }, right: "fsbrules" } },
        { match: { op: "in", left: { ct: { key: "state" } }, right: ["established", "related"] } },
        { accept: null },
      ]),
      JSON.stringify([
        { match: { op: "==", left: { meta: { key: "iifname" } }, right: "fsbrules" } },
        { match: { op: "==", left: { fib: { result: "type", flags: ["daddr"] } }, right: "local" } },
        { drop: null },
      ]),
    ]);
    assert.equal(rulesOf(commands, "from_sandbox").at(-1), JSON.stringify([{ drop: null }]));
    // Of the host's own processes, only root's open connections to sandboxes.
    assert.deepEqual(rulesOf(commands, "output"), [
      JSON.stringify([
        { match: { op: "==", left: { meta: { key: "oifname" } }, right: "fsbrules" } },
        { match: { op: "in", left: { ct: { key: "state" } }, right: "new" } },
        { match: { op: "!=", left: { meta: { key: "skuid" } }, right: 0 } },
        { reject: null },
      ]),
    ]);
    // Outbound traffic leaves with the host's address; traffic inside the subnet keeps its own.
    assert.deepEqual(rulesOf(commands, "postrouting"), [
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "saddr" } }, right: { prefix: { addr: "10.77.0.0", len: 16 } } } },
        { match: { op: "!=", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "10.77.0.0", len: 16 } } } },
        { masquerade: null },
      ]),
    ]);
    await assertNftAccepts([]);
  });
});

describe("the bridge table", () => {
  /** The rules of a chain of the bridge table, each as its expressions' JSON. */
  const bridgeRules = (chainName: string) =>
    nodeCommands(NETWORK).flatMap((command) => {
      const body = "add" in command ? command.add.rule : undefined;
      return body && body.family === "bridge" && body.chain === chainName ? [JSON.stringify(body.expr)] : [];
    });

  it("fails closed: after the port (or peer) chains, whatever a port of the network sends is dropped", async () => {
    const group = portGroupOf(NETWORK);
    const drops = [
      JSON.stringify([{ match: { op: "==", left: { meta: { key: "iifname" } }, right: "@sandbox_ports" } }, { drop: null }]),
      JSON.stringify([{ match: { op: "==", left: { meta: { key: "iifgroup" } }, right: group } }, { drop: null }]),
    ];
    assert.deepEqual(bridgeRules("prerouting"), [JSON.stringify([{ vmap: { key: { meta: { key: "iifname" } }, data: "@ports" } }]), ...drops]);
    assert.deepEqual(bridgeRules("forward"), [JSON.stringify([{ vmap: { key: { meta: { key: "iifname" } }, data: "@peers" } }]), ...drops]);
    // A port chain ends in accept: a guarded port's frames go no further in prerouting.
    assert.equal(rulesOf(portGuardCommands(NETWORK, GUARD), "port_a1b2c3d4e5f6").at(-1), JSON.stringify([{ accept: null }]));
    await assertNftAccepts([]);
  });

  it("the port group is the network's: stable, never an interface's default, another for another network", () => {
    const group = portGroupOf(NETWORK);
    assert.equal(portGroupOf({ ...NETWORK }), group);
    assert.ok(Number.isInteger(group) && group >= 0x10000 && group < 0x80000000, String(group));
    assert.notEqual(portGroupOf({ ...NETWORK, table: "fsb1", bridge: "fsb1" }), group);
  });
});

describe("firewallGaps", () => {
  const OTHER = { ...GUARD, id: "0123456789ab", hostInterface: "veth5678", address: "10.77.0.3", sandboxMac: "a6:4b:59:df:9e:11" };
  const expected = { ports: [GUARD.hostInterface, OTHER.hostInterface], addresses: [GUARD.address] };
  const firewall = async (...commands: NftCommand[][]) => {
    const nft = new FakeNft();
    for (const batch of commands) await nft.apply(batch);
    return nft;
  };
  const listing = async (nft: FakeNft) => [...((await nft.list("inet", "fsbrules")) ?? []), ...((await nft.list("bridge", "fsbrules")) ?? [])];

  it("finds nothing missing when the node's rules, the port guards and the policies are there", async () => {
    const nft = await firewall(
      nodeCommands(NETWORK),
      portGuardCommands(NETWORK, GUARD),
      portGuardCommands(NETWORK, OTHER),
      sandboxPolicyCommands(NETWORK, policy()),
    );
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), expected), []);
    // Another agent's attachments in the same tables are no concern of this one's.
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), { ports: [GUARD.hostInterface], addresses: [] }), []);
  });

  it("names the tables after a flush of the ruleset, the emptied base chains, and the lost guards and policies", async () => {
    const nft = await firewall(nodeCommands(NETWORK), portGuardCommands(NETWORK, GUARD), sandboxPolicyCommands(NETWORK, policy()));
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), expected), ["the port guards of veth5678"]);
    nft.flushRuleset();
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), expected), [
      "table inet fsbrules",
      "table bridge fsbrules",
      "the port guards of veth1234, veth5678",
      "the egress policies of 10.77.0.2",
    ]);
    // The tables made again (e.g. by another agent of the node), but nothing of this agent's.
    await nft.apply(nodeCommands(NETWORK));
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), expected), ["the port guards of veth1234, veth5678", "the egress policies of 10.77.0.2"]);
    await nft.apply([{ flush: { chain: { family: "bridge", table: "fsbrules", name: "forward" } } }]);
    assert.deepEqual(firewallGaps(NETWORK, await listing(nft), { ports: [], addresses: [] }), ["the rules of chain bridge forward"]);
  });
});

describe("portGuardCommands", () => {
  it("accepts only the sandbox's MAC, IPv4 address and ARP on its port", async () => {
    const commands = portGuardCommands(NETWORK, GUARD);
    assert.deepEqual(
      rulesOf(commands, "port_a1b2c3d4e5f6").map((text) => JSON.parse(text).map((expr: Record<string, unknown>) => Object.keys(expr)[0])),
      [["match", "drop"], ["match", "drop"], ["match", "drop"], ["match", "drop"], ["accept"]],
    );
    assert.match(JSON.stringify(commands), /"a6:4b:59:df:9e:10"/);
    assert.match(JSON.stringify(commands), /"saddr ip"/);
    await assertNftAccepts(commands);
  });
});

describe("sandboxPolicyCommands", () => {
  it("allowAll: DNS, then the sandbox subnet, then the always-denied destinations, then everything else", async () => {
    const commands = sandboxPolicyCommands(NETWORK, policy());
    const rules = rulesOf(commands, "sandbox_a1b2c3d4e5f6");
    assert.equal(rules.length, 7);
    assert.match(rules[0] ?? "", /"10\.255\.255\.53".*"protocol":"th","field":"dport"\}\},"right":53\}\},\{"accept":null\}/);
    assert.match(rules[1] ?? "", /"addr":"10\.77\.0\.0","len":16.*drop/);
    assert.match(rules[2] ?? "", /"addr":"169\.254\.0\.0","len":16.*drop/);
    assert.match(rules[3] ?? "", /"right":"100\.100\.100\.200"\}\},\{"drop":null\}/, "Alibaba Cloud's metadata");
    assert.match(rules[4] ?? "", /"right":"168\.63\.129\.16"\}\},\{"drop":null\}/, "Azure's WireServer");
    assert.match(rules[5] ?? "", /"addr":"127\.0\.0\.0","len":8.*drop/);
    assert.equal(rules[6], JSON.stringify([{ accept: null }]));
    // The sandbox's address leads to its chain.
    assert.match(JSON.stringify(commands.at(-1)), /"egress".*\["10\.77\.0\.2",\{"jump":\{"target":"sandbox_a1b2c3d4e5f6"\}\}\]/);
    await assertNftAccepts([...portGuardCommands(NETWORK, GUARD), ...commands]);
  });

  it("denyAll: no DNS either, and a final drop", async () => {
    const commands = sandboxPolicyCommands(NETWORK, policy({ egress: { kind: "denyAll" } }));
    const rules = rulesOf(commands, "sandbox_a1b2c3d4e5f6");
    assert.ok(!rules.some((rule) => rule.includes("10.255.255.53")));
    assert.equal(rules.at(-1), JSON.stringify([{ drop: null }]));
    await assertNftAccepts(commands);
  });

  it("allowList: each IPv4 entry with its protocol and ports, IPv6 entries left out, then a drop", async () => {
    const commands = sandboxPolicyCommands(
      NETWORK,
      policy({
        egress: {
          kind: "allowList",
          allow: [
            { cidr: "192.0.2.0/24", ports: [80, 443], protocol: "tcp" },
            { cidr: "198.51.100.7/32", protocol: "udp" },
            { cidr: "203.0.113.0/24", ports: [8080] },
            { cidr: "10.0.0.0/8" },
            { cidr: "2001:db8::/32" },
          ],
        },
      }),
    );
    const rules = rulesOf(commands, "sandbox_a1b2c3d4e5f6").slice(6);
    assert.deepEqual(rules, [
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "192.0.2.0", len: 24 } } } },
        { match: { op: "==", left: { payload: { protocol: "tcp", field: "dport" } }, right: { set: [80, 443] } } },
        { accept: null },
      ]),
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: "198.51.100.7" } },
        { match: { op: "==", left: { meta: { key: "l4proto" } }, right: "udp" } },
        { accept: null },
      ]),
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "203.0.113.0", len: 24 } } } },
        { match: { op: "==", left: { meta: { key: "l4proto" } }, right: { set: ["tcp", "udp"] } } },
        { match: { op: "==", left: { payload: { protocol: "th", field: "dport" } }, right: 8080 } },
        { accept: null },
      ]),
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "10.0.0.0", len: 8 } } } },
        { accept: null },
      ]),
      JSON.stringify([{ drop: null }]),
    ]);
    await assertNftAccepts(commands);
  });

  it("the network's denied ranges (FSB_NETWORK_DENY) are dropped as the metadata addresses are, after DNS, whatever the egress", async () => {
    const network = { ...NETWORK, denied: ["10.96.0.0/12", "192.168.7.4/32"] };
    const commands = sandboxPolicyCommands(network, policy({ dnsServers: ["10.96.0.10"] }));
    const rules = rulesOf(commands, "sandbox_a1b2c3d4e5f6");
    const dns = rules.findIndex((rule) => rule.includes('"dport"') && rule.includes("53"));
    const serviceRange = rules.indexOf(
      JSON.stringify([
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "10.96.0.0", len: 12 } } } },
        { drop: null },
      ]),
    );
    const oneAddress = rules.indexOf(
      JSON.stringify([{ match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: "192.168.7.4" } }, { drop: null }]),
    );
    assert.ok(dns === 0 && serviceRange > dns && oneAddress > dns, JSON.stringify(rules));
    assert.equal(rules.at(-1), JSON.stringify([{ accept: null }]), "then allowAll");
    await assertNftAccepts(commands);
  });

  it("a deny list that covers the sandbox subnet (a Pod's default: the private ranges) is read after the peers and the subnet", async () => {
    const group = peerGroupOf("team-a", "pool-1");
    const network = { ...NETWORK, denied: ["10.0.0.0/8"] };
    const rules = rulesOf(sandboxPolicyCommands(network, policy({ peerGroup: group })), "sandbox_a1b2c3d4e5f6");
    const groupRule = rules.findIndex((rule) => rule.includes(`@group_${group}`) && rule.includes("accept"));
    const subnetRule = rules.findIndex((rule) => rule.includes('"10.77.0.0"'));
    const deniedRule = rules.findIndex((rule) => rule.includes('"10.0.0.0"'));
    assert.ok(groupRule >= 0 && groupRule < subnetRule && subnetRule < deniedRule, JSON.stringify(rules));
  });

  it("a peer group lets members through at both layers before the subnet is denied", async () => {
    const group = peerGroupOf("team-a", "pool-1");
    assert.match(group, /^[0-9a-f]{16}$/);
    assert.notEqual(group, peerGroupOf("team-a", "pool-2"));
    const commands = sandboxPolicyCommands(NETWORK, policy({ peerGroup: group }));
    const rules = rulesOf(commands, "sandbox_a1b2c3d4e5f6");
    const groupRule = rules.findIndex((rule) => rule.includes(`@group_${group}`) && rule.includes("accept"));
    const subnetRule = rules.findIndex((rule) => rule.includes('"10.77.0.0"'));
    assert.ok(groupRule >= 0 && groupRule < subnetRule);
    // Never the peers' in-sandbox daemon nor their code interpreter, at either layer.
    const daemonPort = { match: { op: "==", left: { payload: { protocol: "tcp", field: "dport" } }, right: { set: [49983, 49999] } } };
    assert.deepEqual(
      rules[groupRule - 1],
      JSON.stringify([{ match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: `@group_${group}` } }, daemonPort, { drop: null }]),
    );
    assert.deepEqual(rulesOf(commands, "peers_a1b2c3d4e5f6"), [
      JSON.stringify([daemonPort, { drop: null }]),
      JSON.stringify([{ match: { op: "==", left: { meta: { key: "oifname" } }, right: `@group_${group}` } }, { accept: null }]),
    ]);
    const text = JSON.stringify(commands);
    assert.match(text, new RegExp(`"family":"inet","table":"fsbrules","name":"group_${group}","elem":\\["10\\.77\\.0\\.2"\\]`));
    assert.match(text, new RegExp(`"family":"bridge","table":"fsbrules","name":"group_${group}","elem":\\["veth1234"\\]`));
    await assertNftAccepts([...portGuardCommands(NETWORK, GUARD), ...commands]);
  });
});

describe("removalCommands", () => {
  const listing: NftListing = [
    { table: { family: "inet", name: "fsbrules" } },
    {
      map: {
        family: "inet",
        table: "fsbrules",
        name: "egress",
        elem: [
          ["10.77.0.2", { jump: { target: "sandbox_a1b2c3d4e5f6" } }],
          ["10.77.0.3", { jump: { target: "sandbox_other" } }],
        ],
      },
    },
    { set: { family: "inet", table: "fsbrules", name: "group_1", elem: ["10.77.0.2", "10.77.0.3"] } },
    { set: { family: "bridge", table: "fsbrules", name: "group_1", elem: [{ elem: { val: "veth1234", counter: {} } }] } },
    { set: { family: "bridge", table: "fsbrules", name: "sandbox_ports", elem: ["veth1234", "veth9999"] } },
    { map: { family: "bridge", table: "fsbrules", name: "ports", elem: [["veth9999", { jump: { target: "port_other" } }]] } },
    { set: { family: "bridge", table: "fsbrules", name: "group_2" } },
    { chain: { family: "inet", table: "fsbrules", name: "sandbox_a1b2c3d4e5f6" } },
    { chain: { family: "inet", table: "fsbrules", name: "sandbox_other" } },
    { chain: { family: "bridge", table: "fsbrules", name: "port_a1b2c3d4e5f6" } },
    { chain: { family: "bridge", table: "another", name: "port_a1b2c3d4e5f6" } },
  ];

  it("deletes the attachment's elements everywhere, then its chains, and nothing of others", () => {
    assert.deepEqual(removalCommands(NETWORK, listing, { id: GUARD.id, address: GUARD.address, hostInterface: GUARD.hostInterface }), [
      { delete: { element: { family: "inet", table: "fsbrules", name: "egress", elem: ["10.77.0.2"] } } },
      { delete: { element: { family: "inet", table: "fsbrules", name: "group_1", elem: ["10.77.0.2"] } } },
      { delete: { element: { family: "bridge", table: "fsbrules", name: "group_1", elem: ["veth1234"] } } },
      { delete: { element: { family: "bridge", table: "fsbrules", name: "sandbox_ports", elem: ["veth1234"] } } },
      { flush: { chain: { family: "inet", table: "fsbrules", name: "sandbox_a1b2c3d4e5f6" } } },
      { delete: { chain: { family: "inet", table: "fsbrules", name: "sandbox_a1b2c3d4e5f6" } } },
      { flush: { chain: { family: "bridge", table: "fsbrules", name: "port_a1b2c3d4e5f6" } } },
      { delete: { chain: { family: "bridge", table: "fsbrules", name: "port_a1b2c3d4e5f6" } } },
    ]);
  });

  it("is empty when the attachment has nothing left, and finds empty group sets", () => {
    assert.deepEqual(removalCommands(NETWORK, listing, { id: "000000000000", address: "10.77.0.99", hostInterface: "veth0000" }), []);
    assert.deepEqual(emptyGroupSets(NETWORK, listing), [{ family: "bridge", name: "group_2" }]);
  });
});
