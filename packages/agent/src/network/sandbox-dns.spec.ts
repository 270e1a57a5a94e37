import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cachedFor, hostIpv4Addresses, hostsText, resolvConfText, sandboxResolvers } from "./sandbox-dns.js";

const UPSTREAM = ["8.8.8.8", "1.1.1.1"];

describe("sandboxResolvers", () => {
  it("keeps the host's reachable resolvers with its search domains and options", () => {
    const conf = [
      "# comment",
      "nameserver 10.255.255.53",
      "nameserver 192.0.2.53 ; trailing",
      "search corp.example svc.local",
      "options ndots:2",
      "options timeout:1",
    ].join("\n");
    assert.deepEqual(sandboxResolvers(conf, new Set(["192.0.2.2"]), UPSTREAM), {
      nameservers: ["10.255.255.53", "192.0.2.53"],
      search: ["corp.example", "svc.local"],
      options: ["ndots:2", "timeout:1"],
    });
  });

  it("replaces loopback, host, link-local and IPv6 resolvers with the upstream ones", () => {
    const conf = ["nameserver 127.0.0.53", "nameserver 192.0.2.2", "nameserver 169.254.169.253", "nameserver fd00::53", "search example"].join("\n");
    assert.deepEqual(sandboxResolvers(conf, new Set(["192.0.2.2"]), UPSTREAM), { nameservers: UPSTREAM, search: ["example"], options: [] });
    assert.deepEqual(sandboxResolvers("", new Set(), UPSTREAM).nameservers, UPSTREAM);
  });

  it("drops reachable resolvers the host lists twice and keeps at most three", () => {
    const conf = ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map((server) => `nameserver ${server}`).join("\n");
    assert.deepEqual(sandboxResolvers(conf, new Set(), UPSTREAM).nameservers, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  });

  it("hostIpv4Addresses includes loopback", () => {
    assert.ok(hostIpv4Addresses().has("127.0.0.1"));
  });
});

describe("the sandbox's files", () => {
  it("resolv.conf lists the nameservers, the search domains and the options", () => {
    assert.equal(
      resolvConfText({ nameservers: ["10.0.0.1", "10.0.0.2"], search: ["a.example"], options: ["ndots:5"] }),
      "# Written by the Fast Sandbox agent for this sandbox.\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch a.example\noptions ndots:5\n",
    );
  });

  it("hosts names localhost and the sandbox's own address", () => {
    assert.equal(hostsText("box-1", "10.213.0.7"), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.213.0.7\tbox-1\n");
  });
});

describe("cachedFor (the host's addresses, read at most once per TTL)", () => {
  it("answers from the last read while it is younger than the TTL, then reads again", () => {
    let clock = 1_000;
    let reads = 0;
    const addresses = cachedFor(
      5_000,
      () => new Set([`10.0.0.${++reads}`]),
      () => clock,
    );
    assert.deepEqual([...addresses()], ["10.0.0.1"]);
    clock += 4_999;
    assert.deepEqual([...addresses()], ["10.0.0.1"]);
    assert.equal(reads, 1);
    clock += 1;
    assert.deepEqual([...addresses()], ["10.0.0.2"], "read again once the TTL has passed");
    clock += 10;
    assert.deepEqual([...addresses()], ["10.0.0.2"]);
    assert.equal(reads, 2);
  });

  it("keeps no failed read: the next call reads again", () => {
    let reads = 0;
    const flaky = cachedFor(
      5_000,
      () => {
        reads += 1;
        if (reads === 1) throw new Error("no interfaces");
        return "ok";
      },
      () => 0,
    );
    assert.throws(() => flaky(), /no interfaces/);
    assert.equal(flaky(), "ok");
    assert.equal(flaky(), "ok");
    assert.equal(reads, 2);
  });
});
