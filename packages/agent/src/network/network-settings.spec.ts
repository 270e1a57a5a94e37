import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { defaultGatewaysOf, directSubnetsOf, networkSettingsFromEnv, type LocalNetwork } from "./network-settings.js";

/** A Pod's network as the agent finds it: its interfaces' addresses and its default gateways. */
function localNetwork(addresses: string[] = [], defaultGateways: string[] = [], directSubnets: string[] = []): LocalNetwork & { consulted: number } {
  return {
    consulted: 0,
    addresses() {
      this.consulted += 1;
      return addresses;
    },
    defaultGateways: () => defaultGateways,
    directSubnets() {
      this.consulted += 1;
      return directSubnets;
    },
  };
}

function assertInvalid(env: NodeJS.ProcessEnv, field: string, message?: RegExp): void {
  assert.throws(
    () => networkSettingsFromEnv(env),
    (error: unknown) => error instanceof ValidationError && error.field === field && (!message || message.test(error.message)),
  );
}

describe("networkSettingsFromEnv", () => {
  it("applies the defaults to an empty environment", () => {
    assert.deepEqual(networkSettingsFromEnv({}, localNetwork()), {
      name: "fsb0",
      subnet: "10.213.0.0/16",
      stateDir: "/run/fast-sandbox/network/fsb0",
      cniPluginDirs: ["/usr/lib/cni", "/opt/cni/bin"],
      upstreamDnsServers: ["8.8.8.8", "1.1.1.1"],
      hostResolvConfPath: "/etc/resolv.conf",
      preparedNamespaces: 2,
      deniedCidrs: [],
    });
  });

  it("reads every variable when set; the state directory follows the name", () => {
    assert.deepEqual(
      networkSettingsFromEnv({
        FSB_NETWORK_NAME: "fsbt-1",
        FSB_NETWORK_SUBNET: "10.99.4.0/24",
        FSB_CNI_PATH: "/opt/cni/bin: /usr/lib/cni",
        FSB_NETWORK_DNS: "9.9.9.9, 149.112.112.112",
        FSB_NETWORK_RESOLV_CONF: "/tmp/resolv.conf",
        FSB_NETWORK_PREPARED: "0",
        FSB_NETWORK_DENY: "10.96.0.0/12, 192.168.7.4",
      }),
      {
        name: "fsbt-1",
        subnet: "10.99.4.0/24",
        stateDir: "/run/fast-sandbox/network/fsbt-1",
        cniPluginDirs: ["/opt/cni/bin", "/usr/lib/cni"],
        upstreamDnsServers: ["9.9.9.9", "149.112.112.112"],
        hostResolvConfPath: "/tmp/resolv.conf",
        preparedNamespaces: 0,
        deniedCidrs: ["10.96.0.0/12", "192.168.7.4/32"],
      },
    );
    assert.equal(networkSettingsFromEnv({ FSB_NETWORK_STATE_DIR: "/var/lib/fsb/net" }).stateDir, "/var/lib/fsb/net");
  });

  it("refuses a name that cannot name a bridge", () => {
    assertInvalid({ FSB_NETWORK_NAME: "a-name-longer-than-15" }, "FSB_NETWORK_NAME");
    assertInvalid({ FSB_NETWORK_NAME: "Upper" }, "FSB_NETWORK_NAME");
    assertInvalid({ FSB_NETWORK_NAME: "0abc" }, "FSB_NETWORK_NAME");
  });

  it("refuses subnets that are not IPv4 network addresses with a /8 to /29 prefix", () => {
    assertInvalid({ FSB_NETWORK_SUBNET: "10.213.0.1/16" }, "FSB_NETWORK_SUBNET", /did you mean 10\.213\.0\.0\/16/);
    assertInvalid({ FSB_NETWORK_SUBNET: "10.0.0.0/30" }, "FSB_NETWORK_SUBNET");
    assertInvalid({ FSB_NETWORK_SUBNET: "fd00::/64" }, "FSB_NETWORK_SUBNET");
    assertInvalid({ FSB_NETWORK_SUBNET: "10.213.0.0" }, "FSB_NETWORK_SUBNET");
  });

  it("denies the private ranges (and the API server's Service address and the node's outside them) to sandboxes in a Pod unless FSB_NETWORK_DENY says what to deny", () => {
    const settings = (env: NodeJS.ProcessEnv) => networkSettingsFromEnv(env, localNetwork());
    const PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "10.96.0.1" }).deniedCidrs, PRIVATE);
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "fd00::1" }).deniedCidrs, PRIVATE);
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_HOST_IP: "172.18.0.2" }).deniedCidrs, PRIVATE);
    // A cluster on public addresses: those the agent knows of are denied besides.
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "34.118.224.1", FSB_HOST_IP: "35.1.2.3" }).deniedCidrs, [
      "34.118.224.1/32",
      "35.1.2.3/32",
      ...PRIVATE,
    ]);
    assert.deepEqual(settings({ FSB_HOST_IP: "172.18.0.2" }).deniedCidrs, [], "outside a Pod, not the node's address (the host's own are dropped anyway)");
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_NETWORK_DENY: "10.96.0.0/12,10.244.0.0/16" }).deniedCidrs, [
      "10.96.0.0/12",
      "10.244.0.0/16",
    ]);
    assert.deepEqual(settings({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_NETWORK_DENY: "" }).deniedCidrs, []);
    assertInvalid({ FSB_NETWORK_DENY: "kubernetes.default" }, "FSB_NETWORK_DENY", /not an IPv4 address or CIDR/);
    assertInvalid({ FSB_NETWORK_DENY: "10.96.0.1/12" }, "FSB_NETWORK_DENY", /did you mean 10\.96\.0\.0\/12/);
  });

  it("in a Pod without FSB_NETWORK_DENY, also denies the Pod's own addresses and its default gateway, and says the list is the default", () => {
    const PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
    // The Pod's eth0, its loopback, the sandbox bridge, a link-local address; the gateway is the node on the Pod network.
    const local = localNetwork(["127.0.0.1", "34.1.0.7", "10.213.0.1", "169.254.1.9"], ["34.1.0.1"]);
    const inPod = networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "34.118.224.1", FSB_HOST_IP: "35.1.2.3" }, local);
    assert.deepEqual(inPod.deniedCidrs, ["34.118.224.1/32", "35.1.2.3/32", "34.1.0.7/32", "34.1.0.1/32", ...PRIVATE]);
    assert.equal(inPod.defaultDenyInPod, true, "the agent says at start what it denies by default");
    // A Pod in the node's network: its address and the node's are one, listed once.
    const hostNetwork = networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "34.118.224.1", FSB_HOST_IP: "35.1.2.3" }, localNetwork(["35.1.2.3"], ["35.1.2.1"]));
    assert.deepEqual(hostNetwork.deniedCidrs, ["34.118.224.1/32", "35.1.2.3/32", "35.1.2.1/32", ...PRIVATE]);
    // On private addresses (most clusters), the ranges cover them all.
    const privateCluster = networkSettingsFromEnv(
      { KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_HOST_IP: "172.18.0.2" },
      localNetwork(["10.244.1.7"], ["10.244.1.1"]),
    );
    assert.deepEqual(privateCluster.deniedCidrs, PRIVATE);

    // FSB_NETWORK_DENY set, even empty, is the whole list: no warning, the Pod's network is not even looked at.
    const configured = localNetwork(["10.244.1.7"]);
    for (const deny of ["10.96.0.0/12", ""]) {
      const settings = networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_NETWORK_DENY: deny }, configured);
      assert.equal(settings.defaultDenyInPod, undefined);
    }
    assert.equal(configured.consulted, 0);
    const outside = networkSettingsFromEnv({}, configured);
    assert.equal(outside.defaultDenyInPod, undefined, "outside a Pod, no warning");
  });

  it("outside a Pod without FSB_NETWORK_DENY, denies the host's directly connected subnets but the sandboxes' own, loopback and link-local ones", () => {
    // The host's LAN, Docker's bridge, this network's own bridge, a link-local route, another installation's sandbox bridge.
    const host = localNetwork([], ["192.168.1.1"], ["192.168.1.0/24", "172.17.0.0/16", "10.213.0.0/16", "169.254.0.0/16", "10.214.0.0/16"]);
    assert.deepEqual(networkSettingsFromEnv({}, host).deniedCidrs, ["192.168.1.0/24", "172.17.0.0/16", "10.214.0.0/16"]);
    // A route inside the sandbox subnet, or one around it, is the sandboxes' own: left to the firewall's sandbox-to-sandbox rules.
    const around = localNetwork([], [], ["10.0.0.0/8", "10.213.4.0/24", "192.168.1.0/24"]);
    assert.deepEqual(networkSettingsFromEnv({}, around).deniedCidrs, ["192.168.1.0/24"]);
    // FSB_NETWORK_DENY set, even empty, is the whole list; the routes are not read.
    const configured = localNetwork([], [], ["192.168.1.0/24"]);
    assert.deepEqual(networkSettingsFromEnv({ FSB_NETWORK_DENY: "" }, configured).deniedCidrs, []);
    assert.deepEqual(networkSettingsFromEnv({ FSB_NETWORK_DENY: "203.0.113.0/24" }, configured).deniedCidrs, ["203.0.113.0/24"]);
    assert.equal(configured.consulted, 0);
  });

  it("reads the directly connected subnets from the kernel's routing table: no gateway, up, not a default route, not loopback", () => {
    const table = [
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
      "eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0",
      "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
      "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0",
      // Through a gateway: another network, not this host's neighbours.
      "eth0\t0000A8C0\t0102000A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0",
      // Down, and loopback's.
      "virbr0\t007AA8C0\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0",
      "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0",
      "",
    ].join("\n");
    assert.deepEqual(directSubnetsOf(table, "LE"), ["10.0.2.0/24", "172.17.0.0/16"]);
    assert.deepEqual(directSubnetsOf(""), []);
  });

  it("reads the default gateways from the kernel's routing table, in the host's byte order", () => {
    const table = [
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
      "eth0\t00000000\t0101F40A\t0003\t0\t0\t0\t00000000\t0\t0\t0",
      "eth0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
      // A default route without a gateway (a point-to-point device): nothing to deny.
      "tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0",
      "",
    ].join("\n");
    assert.deepEqual(defaultGatewaysOf(table, "LE"), ["10.244.1.1"]);
    assert.deepEqual(defaultGatewaysOf(table.replace("0101F40A", "0AF40101"), "BE"), ["10.244.1.1"]);
    assert.deepEqual(defaultGatewaysOf(""), []);
  });

  it("refuses bad resolvers and counts", () => {
    assertInvalid({ FSB_NETWORK_DNS: "dns.google" }, "FSB_NETWORK_DNS");
    assertInvalid({ FSB_NETWORK_PREPARED: "-1" }, "FSB_NETWORK_PREPARED");
    assertInvalid({ FSB_NETWORK_PREPARED: "65" }, "FSB_NETWORK_PREPARED");
    assertInvalid({ FSB_CNI_PATH: ":" }, "FSB_CNI_PATH");
  });
});
