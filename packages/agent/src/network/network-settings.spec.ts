import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { networkSettingsFromEnv } from "./network-settings.js";

function assertInvalid(env: NodeJS.ProcessEnv, field: string, message?: RegExp): void {
  assert.throws(
    () => networkSettingsFromEnv(env),
    (error: unknown) => error instanceof ValidationError && error.field === field && (!message || message.test(error.message)),
  );
}

describe("networkSettingsFromEnv", () => {
  it("applies the defaults to an empty environment", () => {
    assert.deepEqual(networkSettingsFromEnv({}), {
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

  it("denies the API server's Service address and the node's to sandboxes in a Pod unless FSB_NETWORK_DENY says what to deny", () => {
    assert.deepEqual(networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.96.0.1" }).deniedCidrs, ["10.96.0.1/32"]);
    assert.deepEqual(networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "fd00::1" }).deniedCidrs, []);
    assert.deepEqual(networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_HOST_IP: "172.18.0.2" }).deniedCidrs, [
      "10.96.0.1/32",
      "172.18.0.2/32",
    ]);
    assert.deepEqual(networkSettingsFromEnv({ FSB_HOST_IP: "172.18.0.2" }).deniedCidrs, [], "outside a Pod, nothing");
    assert.deepEqual(networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_NETWORK_DENY: "10.96.0.0/12,10.244.0.0/16" }).deniedCidrs, [
      "10.96.0.0/12",
      "10.244.0.0/16",
    ]);
    assert.deepEqual(networkSettingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.96.0.1", FSB_NETWORK_DENY: "" }).deniedCidrs, []);
    assertInvalid({ FSB_NETWORK_DENY: "kubernetes.default" }, "FSB_NETWORK_DENY", /not an IPv4 address or CIDR/);
    assertInvalid({ FSB_NETWORK_DENY: "10.96.0.1/12" }, "FSB_NETWORK_DENY", /did you mean 10\.96\.0\.0\/12/);
  });

  it("refuses bad resolvers and counts", () => {
    assertInvalid({ FSB_NETWORK_DNS: "dns.google" }, "FSB_NETWORK_DNS");
    assertInvalid({ FSB_NETWORK_PREPARED: "-1" }, "FSB_NETWORK_PREPARED");
    assertInvalid({ FSB_NETWORK_PREPARED: "65" }, "FSB_NETWORK_PREPARED");
    assertInvalid({ FSB_CNI_PATH: ":" }, "FSB_CNI_PATH");
  });
});
