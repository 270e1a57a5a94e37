/** Against the real nftables of this host, in tables of its own (removed at the end). */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, describe, it } from "node:test";
import { peerGroupOf } from "./firewall-rules.js";
import { SandboxFirewall } from "./sandbox-firewall.js";

const TABLE = `fsbfw${process.pid % 100000}`;
const firewall = new SandboxFirewall({ table: TABLE, bridge: TABLE, subnet: "10.78.0.0/24" });

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
    assert.match(nftList("bridge"), /iifname vmap @ports/);
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

  it("removeNode deletes both tables, and again without complaint", async () => {
    await firewall.removeNode();
    await firewall.removeNode();
    assert.equal(nftList("inet"), "");
    assert.equal(nftList("bridge"), "");
  });
});
