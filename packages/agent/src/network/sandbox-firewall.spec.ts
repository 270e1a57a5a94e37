/** Against the real nftables of this host, in tables of its own (removed at the end); bridge ports are marked in a fake. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import type { BridgePorts } from "./bridge-ports.js";
import { FakeNft } from "./fake-nft.fixture.js";
import { peerGroupOf, portGroupOf, type NftCommand } from "./firewall-rules.js";
import { Nft } from "./nft.js";
import { SandboxFirewall } from "./sandbox-firewall.js";

const TABLE = `fsbfw${process.pid % 100000}`;
const NETWORK = { table: TABLE, bridge: TABLE, subnet: "10.78.0.0/24" };
const GROUP = portGroupOf(NETWORK);

/** The ports this spec's interfaces (which do not exist) were marked with, in order. */
class FakePorts implements BridgePorts {
  readonly marks: string[] = [];
  failing = new Set<string>();
  mark(interfaces: readonly string[], group: number): Promise<void> {
    if (interfaces.some((name) => this.failing.has(name))) return Promise.reject(new Error(`Cannot find device "${interfaces.join(", ")}"`));
    this.marks.push(...interfaces.map((name) => `${name} ${group}`));
    return Promise.resolve();
  }
}

const ports = new FakePorts();
const firewall = new SandboxFirewall(NETWORK, new Nft(), ports);

const nftList = (family: string) => {
  try {
    return execFileSync("nft", ["list", "table", family, TABLE], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return "";
  }
};

after(async () => {
  await firewall.removeNode();
});

const A = { id: "aaaaaaaaaaaa", hostInterface: "vethaaaa", sandboxMac: "02:00:00:00:00:0a", address: "10.78.0.10" };
const B = { id: "bbbbbbbbbbbb", hostInterface: "vethbbbb", sandboxMac: "02:00:00:00:00:0b", address: "10.78.0.11" };

describe("SandboxFirewall on nftables", () => {
  it("sets up the node once however often it is asked, with its base chains filled once", async () => {
    await firewall.ensureNode();
    await new SandboxFirewall(firewall.network).ensureNode();
    const inet = nftList("inet");
    assert.equal(inet.match(/iifname "fsbfw\d+" drop/g)?.length, 1);
    assert.match(inet, /type filter hook input priority filter; policy accept;/);
    const bridge = nftList("bridge");
    assert.match(bridge, /iifname vmap @ports/);
    // Fail closed: what a port of the network sends is dropped unless its own chain accepted it.
    assert.match(bridge, new RegExp(`chain prerouting \\{[^}]*iifname vmap @ports\\s+iifname @sandbox_ports drop\\s+iifgroup ${GROUP} drop`));
    assert.match(bridge, new RegExp(`chain forward \\{[^}]*iifname vmap @peers\\s+iifname @sandbox_ports drop\\s+iifgroup ${GROUP} drop`));
  });

  it("guards ports, applies policies with a peer group, and removes one sandbox's everything but not the other's", async () => {
    const group = peerGroupOf("team", "pool");
    for (const sandbox of [A, B]) {
      await firewall.guardPort(sandbox);
      await firewall.applyPolicy({
        ...sandbox,
        egress: { kind: "allowList", allow: [{ cidr: "192.0.2.0/24", ports: [443], protocol: "tcp" }] },
        dnsServers: ["10.255.255.53"],
        peerGroup: group,
      });
    }
    // Each port was marked as the network's.
    assert.deepEqual(ports.marks, [`vethaaaa ${GROUP}`, `vethbbbb ${GROUP}`]);
    const inet = nftList("inet");
    assert.match(inet, /10\.78\.0\.10 : jump sandbox_aaaaaaaaaaaa/);
    assert.match(inet, /chain sandbox_aaaaaaaaaaaa \{[^}]*ip daddr 10\.255\.255\.53 meta l4proto \{ tcp, udp \} th dport 53 accept/);
    assert.match(inet, /ip daddr 192\.0\.2\.0\/24 tcp dport 443 accept/);
    assert.match(nftList("bridge"), /chain port_bbbbbbbbbbbb \{\s*ether saddr != 02:00:00:00:00:0b drop/);

    await firewall.remove(A);
    await firewall.remove(A);
    const afterInet = nftList("inet");
    const afterBridge = nftList("bridge");
    for (const text of [afterInet, afterBridge]) {
      assert.doesNotMatch(text, /aaaaaaaaaaaa|10\.78\.0\.10|vethaaaa/);
      assert.match(text, /bbbbbbbbbbbb/);
    }
    // B's group still holds B, at both layers.
    assert.match(afterInet, new RegExp(`set group_${group} \\{[^}]*elements = \\{ 10\\.78\\.0\\.11 \\}`));

    await firewall.remove(B);
    for (const text of [nftList("inet"), nftList("bridge")]) {
      assert.doesNotMatch(text, /bbbbbbbbbbbb|10\.78\.0\.11|vethbbbb/);
      // The last member took the group's sets with it.
      assert.doesNotMatch(text, /group_/);
    }
  });

  it("restore puts back guards and policies after the tables are gone, in one transaction, and each alone when that one fails", async () => {
    const policy = (sandbox: typeof A) => ({ ...sandbox, egress: { kind: "denyAll" as const }, dnsServers: [] });
    const batches: NftCommand[][] = [];
    const nft = new Nft();
    const apply = nft.apply.bind(nft);
    nft.apply = (commands, options) => {
      batches.push([...commands]);
      return apply(commands, options);
    };
    const restoring = new SandboxFirewall(NETWORK, nft, new FakePorts());
    await firewall.removeNode();
    assert.deepEqual(await restoring.restore([{ guard: A, policy: policy(A) }, { guard: B }]), []);
    assert.equal(batches.length, 2, "the node's rules, then one transaction for both");
    const inet = nftList("inet");
    const bridge = nftList("bridge");
    assert.match(inet, /10\.78\.0\.10 : jump sandbox_aaaaaaaaaaaa/);
    assert.doesNotMatch(inet, /sandbox_bbbbbbbbbbbb/, "B is prepared: no policy yet");
    assert.match(bridge, /"vethaaaa" : jump port_aaaaaaaaaaaa/);
    assert.match(bridge, /"vethbbbb" : jump port_bbbbbbbbbbbb/);

    // A port that cannot be marked (its interface is gone) spoils the batch: the others are restored one by one.
    const failingPorts = new FakePorts();
    failingPorts.failing.add("vethbbbb");
    await firewall.removeNode();
    const failed = await new SandboxFirewall(NETWORK, new Nft(), failingPorts).restore([{ guard: A, policy: policy(A) }, { guard: B }]);
    assert.deepEqual(
      failed.map(({ attachment }) => attachment.guard.id),
      [B.id],
    );
    assert.deepEqual(failingPorts.marks, [`vethaaaa ${GROUP}`]);
    assert.match(nftList("bridge"), /"vethaaaa" : jump port_aaaaaaaaaaaa/);
    assert.match(nftList("inet"), /10\.78\.0\.10 : jump sandbox_aaaaaaaaaaaa/);
    await firewall.remove(B);
    await firewall.remove(A);
  });

  it("restore keeps each transaction within what nft takes as one argument (128 KiB)", async () => {
    const nft = new FakeNft();
    const allow = Array.from({ length: 40 }, (_, index) => ({ cidr: `198.51.${index}.0/24`, ports: [443, 8443], protocol: "tcp" as const }));
    const attachments = Array.from({ length: 60 }, (_, index) => {
      const id = index.toString(16).padStart(12, "0");
      const guard = { id, hostInterface: `veth${id.slice(-8)}`, sandboxMac: "02:00:00:00:00:01", address: `10.78.1.${index + 1}` };
      return { guard, policy: { ...guard, egress: { kind: "allowList" as const, allow }, dnsServers: ["10.78.9.53"] } };
    });
    assert.deepEqual(await new SandboxFirewall(NETWORK, nft, new FakePorts()).restore(attachments), []);
    const [node, ...batches] = nft.batches.map((batch) => JSON.stringify({ nftables: batch }).length);
    assert.ok(node !== undefined && batches.length > 1, `${batches.length} transactions`);
    for (const size of batches) assert.ok(size < 128 * 1024, String(size));
    assert.equal(nft.commandsSince(1).filter((command) => "add" in command && command.add.chain?.name === "sandbox_" + attachments[59]?.guard.id).length, 1);
  });

  it("removeNode deletes both tables, and again without complaint", async () => {
    await firewall.removeNode();
    await firewall.removeNode();
    assert.equal(nftList("inet"), "");
    assert.equal(nftList("bridge"), "");
  });
});

describe("SandboxFirewall, a port guard that fails", () => {
  /** nft taking 50 ms a transaction, as a real nft process on a busy host. */
  class SlowNft extends FakeNft {
    override async apply(commands: readonly NftCommand[], options: { check?: boolean } = {}): Promise<void> {
      await sleep(50);
      return super.apply(commands, options);
    }
  }

  it("fails only once its nft transaction has landed, so the undo that follows leaves nothing of it", async () => {
    const nft = new SlowNft();
    const failingPorts = new FakePorts();
    failingPorts.failing.add(A.hostInterface);
    const slow = new SandboxFirewall({ table: "fsbslow", bridge: "fsbslow", subnet: "10.79.0.0/24" }, nft, failingPorts);
    await slow.ensureNode();
    await assert.rejects(slow.guardPort(A), /Cannot find device/);
    await slow.remove({ id: A.id, address: A.address, hostInterface: A.hostInterface });
    const left = (await slow.listing()).filter((object) => JSON.stringify(object).includes(A.id) || JSON.stringify(object).includes(A.hostInterface));
    assert.deepEqual(left, []);
  });
});
