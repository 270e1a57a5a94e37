import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { checkSandboxNetwork, ipv4InCidr, parseIpv4Cidr } from "./egress-policy.js";

function assertInvalid(action: () => unknown, field: string): void {
  assert.throws(action, (error: unknown) => error instanceof ValidationError && error.field === field);
}

describe("parseIpv4Cidr", () => {
  it("clears host bits and reads a bare address as /32", () => {
    assert.deepEqual(parseIpv4Cidr("10.1.2.3/8"), { network: "10.0.0.0", prefixLength: 8, text: "10.0.0.0/8" });
    assert.deepEqual(parseIpv4Cidr("203.0.113.7"), { network: "203.0.113.7", prefixLength: 32, text: "203.0.113.7/32" });
    assert.deepEqual(parseIpv4Cidr("0.0.0.0/0"), { network: "0.0.0.0", prefixLength: 0, text: "0.0.0.0/0" });
    assert.equal(parseIpv4Cidr("255.255.255.255/31")?.text, "255.255.255.254/31");
  });

  it("refuses anything that is not one IPv4 CIDR", () => {
    for (const text of ["10.0.0.0/33", "10.0.0/8", "::1/128", "10.0.0.0/8/1", "10.0.0.0/-1", "10.0.0.0/", "host"])
      assert.equal(parseIpv4Cidr(text), undefined, text);
  });

  it("ipv4InCidr tells members from outsiders", () => {
    const cidr = parseIpv4Cidr("10.213.0.0/16");
    assert.ok(cidr);
    assert.ok(ipv4InCidr("10.213.255.254", cidr));
    assert.ok(!ipv4InCidr("10.214.0.1", cidr));
  });
});

describe("checkSandboxNetwork", () => {
  it("applies the defaults of an isolated sandbox: allowAll, no sandbox-to-sandbox", () => {
    assert.deepEqual(checkSandboxNetwork({ mode: "isolated" }), { mode: "isolated", egress: { kind: "allowAll" }, allowSandboxToSandbox: false });
  });

  it("normalises an allow list: CIDRs, ports sorted once each, protocol kept", () => {
    assert.deepEqual(
      checkSandboxNetwork({
        mode: "isolated",
        egress: {
          kind: "allowList",
          allow: [{ cidr: "10.9.8.7/16", ports: [443, 80, 443], protocol: "tcp" }, { cidr: "2001:db8::/32" }, { cidr: "192.0.2.1", ports: [] }],
        },
        allowSandboxToSandbox: true,
      }),
      {
        mode: "isolated",
        egress: { kind: "allowList", allow: [{ cidr: "10.9.0.0/16", ports: [80, 443], protocol: "tcp" }, { cidr: "2001:db8::/32" }, { cidr: "192.0.2.1/32" }] },
        allowSandboxToSandbox: true,
      },
    );
  });

  it("refuses bad destinations, ports and protocols, naming the field", () => {
    const isolated = (allow: { cidr: string; ports?: number[]; protocol?: "tcp" | "udp" }[]) => () =>
      checkSandboxNetwork({ mode: "isolated", egress: { kind: "allowList", allow } });
    assertInvalid(isolated([{ cidr: "10.0.0.0/40" }]), "network.egress.allow[0].cidr");
    assertInvalid(isolated([{ cidr: "10.0.0.0/8" }, { cidr: "example.com" }]), "network.egress.allow[1].cidr");
    assertInvalid(isolated([{ cidr: "10.0.0.0/8", ports: [0] }]), "network.egress.allow[0].ports");
    assertInvalid(isolated([{ cidr: "10.0.0.0/8", ports: [65536] }]), "network.egress.allow[0].ports");
    assertInvalid(isolated([{ cidr: "10.0.0.0/8", protocol: "icmp" as "tcp" }]), "network.egress.allow[0].protocol");
    assertInvalid(() => checkSandboxNetwork({ mode: "isolated", egress: { kind: "denyAll", allow: [{ cidr: "10.0.0.0/8" }] } }), "network.egress.allow");
  });

  it("a shared sandbox takes no egress policy and no sandbox-to-sandbox setting", () => {
    assert.deepEqual(checkSandboxNetwork({ mode: "shared", egress: { kind: "allowAll" } }), { mode: "shared" });
    assertInvalid(() => checkSandboxNetwork({ mode: "shared", egress: { kind: "denyAll" } }), "network.egress");
    assertInvalid(() => checkSandboxNetwork({ mode: "shared", allowSandboxToSandbox: true }), "network.allowSandboxToSandbox");
  });
});
