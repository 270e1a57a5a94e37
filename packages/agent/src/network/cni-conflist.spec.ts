import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { LOOPBACK_NETWORK, sandboxAddressOf, sandboxNetworkList } from "./cni-conflist.js";

/** What Debian's bridge plugin (1.1.1) answered on this project's machines, chained through firewall. */
const BRIDGE_RESULT = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "fsb0", mac: "3a:11:18:37:2c:a8" },
    { name: "veth69e485b4", mac: "96:32:08:23:7b:4a" },
    { name: "eth0", mac: "a6:4b:59:df:9e:10", sandbox: "/run/netns/fsb-fsb0-abc" },
  ],
  ips: [{ interface: 2, address: "10.213.0.2/16", gateway: "10.213.0.1" }],
  routes: [{ dst: "0.0.0.0/0" }],
  dns: {},
};

describe("sandboxNetworkList", () => {
  it("is bridge (gateway, no masquerading of its own, no hairpin) with host-local IPAM under the state directory, then firewall", () => {
    const list = sandboxNetworkList({ name: "fsbt", subnet: "10.99.0.0/24" }, "/run/fsb/net");
    assert.equal(list.name, "fsbt");
    assert.equal(list.cniVersion, "1.0.0");
    assert.deepEqual(
      list.plugins.map((plugin) => plugin.type),
      ["bridge", "firewall"],
    );
    assert.deepEqual(list.plugins[0], {
      type: "bridge",
      bridge: "fsbt",
      isGateway: true,
      ipMasq: false,
      hairpinMode: false,
      ipam: { type: "host-local", ranges: [[{ subnet: "10.99.0.0/24" }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: "/run/fsb/net/ipam" },
    });
    assert.deepEqual(LOOPBACK_NETWORK.plugins, [{ type: "loopback" }]);
  });
});

describe("sandboxAddressOf", () => {
  it("reads the address, gateway, host-side port and the sandbox's MAC", () => {
    assert.deepEqual(sandboxAddressOf(BRIDGE_RESULT, "/run/netns/fsb-fsb0-abc"), {
      address: "10.213.0.2",
      prefixLength: 16,
      gateway: "10.213.0.1",
      hostInterface: "veth69e485b4",
      sandboxMac: "a6:4b:59:df:9e:10",
    });
  });

  it("refuses a result without an IPv4 address or without the interface in the namespace", () => {
    assert.throws(
      () => sandboxAddressOf({ ...BRIDGE_RESULT, ips: [{ interface: 2, address: "fd00::2/64", gateway: "fd00::1" }] }, "/run/netns/fsb-fsb0-abc"),
      FsbError,
    );
    assert.throws(() => sandboxAddressOf(BRIDGE_RESULT, "/run/netns/another"), FsbError);
  });
});
