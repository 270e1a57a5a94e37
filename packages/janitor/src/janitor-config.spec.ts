import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { janitorConfigFromEnv, parseDuration } from "./janitor-config.js";

describe("janitorConfigFromEnv", () => {
  it("applies the defaults", () => {
    assert.deepEqual(janitorConfigFromEnv({ FSB_URL: "http://127.0.0.1:7070", FSB_TOKEN: "t" }), {
      url: "http://127.0.0.1:7070",
      token: "t",
      containerdNamespaces: ["fast-sandbox"],
      containerdSocket: "/run/containerd/containerd.sock",
      cgroupRoot: "",
      intervalMs: 10_000,
      protectionMs: 120_000,
      checkpointGraceMs: 3_600_000,
    });
  });

  it("reads every setting, the token from a file, and several namespaces", () => {
    const dir = mkdtempSync(join(tmpdir(), "fsb-janitor-config-"));
    try {
      writeFileSync(join(dir, "token"), "secret\n");
      const config = janitorConfigFromEnv({
        FSB_URL: "http://127.0.0.1:1",
        FSB_TOKEN_FILE: join(dir, "token"),
        FSB_CONTAINERD_NAMESPACE: "a, b",
        FSB_CONTAINERD_SOCKET: "/tmp/c.sock",
        FSB_JANITOR_AGENTS_DIR: "/data/agents",
        FSB_CGROUP_ROOT: "fsb",
        FSB_NETWORK_STATE_DIR: "/run/fsb/net-a, /run/fsb/net-b",
        FSB_JANITOR_INTERVAL: "2s",
        FSB_JANITOR_PROTECTION: "0",
        FSB_JANITOR_CHECKPOINT_DIR: "/var/lib/fast-sandbox/checkpoints",
        FSB_JANITOR_CHECKPOINT_GRACE: "10m",
        FSB_JANITOR_METRICS: "127.0.0.1:0",
      });
      assert.deepEqual(config, {
        url: "http://127.0.0.1:1",
        token: "secret",
        containerdNamespaces: ["a", "b"],
        containerdSocket: "/tmp/c.sock",
        agentsDir: "/data/agents",
        cgroupRoot: "fsb",
        networkStateDirs: ["/run/fsb/net-a", "/run/fsb/net-b"],
        intervalMs: 2_000,
        protectionMs: 0,
        checkpointDir: "/var/lib/fast-sandbox/checkpoints",
        checkpointGraceMs: 600_000,
        metricsListen: { host: "127.0.0.1", port: 0 },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads the inventory from Kubernetes with FSB_JANITOR_INVENTORY=kubernetes: no control-plane URL needed", () => {
    const config = janitorConfigFromEnv({
      FSB_JANITOR_INVENTORY: "kubernetes",
      FSB_NODE_NAME: "node-1",
      KUBECONFIG: "/etc/kube/config",
      FSB_CONTAINERD_NAMESPACE: "k8s.io",
    });
    assert.deepEqual(config.kubernetes, { nodeName: "node-1", kubeconfigPath: "/etc/kube/config" });
    assert.equal(config.url, undefined);
    assert.deepEqual(config.containerdNamespaces, ["k8s.io"]);
    assert.deepEqual(janitorConfigFromEnv({ FSB_JANITOR_INVENTORY: "kubernetes", FSB_NODE_NAME: "node-1" }).kubernetes, { nodeName: "node-1" }, "in-cluster");
    assert.throws(() => janitorConfigFromEnv({ FSB_JANITOR_INVENTORY: "kubernetes" }), /FSB_NODE_NAME: environment variable is required/);
    assert.throws(() => janitorConfigFromEnv({ FSB_JANITOR_INVENTORY: "etcd" }), /FSB_JANITOR_INVENTORY: "etcd" is not an inventory/);
  });

  it("names what is missing or wrong", () => {
    assert.throws(() => janitorConfigFromEnv({ FSB_TOKEN: "t" }), /FSB_URL: environment variable is required/);
    assert.throws(() => janitorConfigFromEnv({ FSB_URL: "http://x" }), /FSB_TOKEN: set FSB_TOKEN or FSB_TOKEN_FILE/);
    assert.throws(
      () => janitorConfigFromEnv({ FSB_URL: "http://x", FSB_TOKEN: "t", FSB_JANITOR_INTERVAL: "0" }),
      /FSB_JANITOR_INTERVAL: "0" is not a duration/,
    );
    assert.throws(() => janitorConfigFromEnv({ FSB_URL: "http://x", FSB_TOKEN: "t", FSB_JANITOR_METRICS: "0.0.0.0:1" }), ValidationError);
    // A grace period of 0 would remove a pool's checkpoints the moment a pass misses the pool.
    assert.throws(
      () => janitorConfigFromEnv({ FSB_URL: "http://x", FSB_TOKEN: "t", FSB_JANITOR_CHECKPOINT_GRACE: "0" }),
      /FSB_JANITOR_CHECKPOINT_GRACE: "0" is not a duration/,
    );
  });
});

describe("parseDuration", () => {
  it("takes 0 only where it is allowed", () => {
    assert.equal(parseDuration("0", "--protection", { allowZero: true }), 0);
    assert.equal(parseDuration("0s", "--protection", { allowZero: true }), 0);
    assert.equal(parseDuration("1m30s", "--protection"), 90_000);
    assert.throws(() => parseDuration("0", "--interval"), /--interval/);
  });
});
