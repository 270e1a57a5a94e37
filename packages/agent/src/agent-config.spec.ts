import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { DEFAULT_ENVD_PATH, DEFAULT_HELPER_PATH, agentConfigFromEnv } from "./agent-config.js";

const REQUIRED = {
  FSB_AGENT_NAME: "default-0",
  FSB_AGENT_POOL: "default",
  FSB_AGENT_STATE_DIR: "/var/lib/fsb/agents/default-0",
  FSB_AGENT_TOKEN: "s3cret",
};

const dir = mkdtempSync(join(tmpdir(), "fsb-agent-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function assertValidationError(action: () => unknown, field: string, message?: RegExp): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected ValidationError, got ${String(error)}`);
    assert.equal(error.field, field);
    assert.match(error.message, new RegExp(`^${field}: `));
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe("agentConfigFromEnv", () => {
  it("applies the defaults to a minimal environment", () => {
    assert.deepEqual(agentConfigFromEnv({ ...REQUIRED }), {
      name: "default-0",
      uid: "",
      namespace: "default",
      pool: "default",
      nodeName: hostname(),
      listenHost: "127.0.0.1",
      listenPort: 0,
      token: "s3cret",
      stateDir: "/var/lib/fsb/agents/default-0",
      containerdSocket: "/run/containerd/containerd.sock",
      containerdNamespace: "fast-sandbox",
      cgroupParent: "",
      helperPath: DEFAULT_HELPER_PATH,
      envdPath: DEFAULT_ENVD_PATH,
      registryConfigPath: "",
      runscPath: "",
      checkpointDir: "/var/lib/fsb/agents/default-0/checkpoints/default/default",
      preparedInstances: undefined,
      limits: {},
      ownNetwork: false,
      statsIntervalMs: 5000,
      statsHistorySamples: 720,
      diskCheckIntervalMs: 10_000,
      logMaxBytes: 10 * 1024 * 1024,
    });
  });

  it("reads whether the agent has a network of its own (a Pod's), and refuses what is not true or false", () => {
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_OWN_NETWORK: "true" }).ownNetwork, true);
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_OWN_NETWORK: "false" }).ownNetwork, false);
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_OWN_NETWORK: "yes" }),
      "FSB_AGENT_OWN_NETWORK",
      /not a boolean: give true or false/,
    );
  });

  it("reads how often sandboxes are sampled and how many samples are kept, and refuses what is not a whole number in range", () => {
    const config = agentConfigFromEnv({ ...REQUIRED, FSB_STATS_INTERVAL_MS: "1000", FSB_STATS_HISTORY_SAMPLES: "60" });
    assert.deepEqual([config.statsIntervalMs, config.statsHistorySamples], [1000, 60]);
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_STATS_INTERVAL_MS: "10" }),
      "FSB_STATS_INTERVAL_MS",
      /whole number of milliseconds, at least 100/,
    );
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_STATS_HISTORY_SAMPLES: "0" }),
      "FSB_STATS_HISTORY_SAMPLES",
      /whole number of samples, at least 1/,
    );
  });

  it("reads how often disk use is held to the sandboxes' limits, and refuses what is not a whole number of at least 100 ms", () => {
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_DISK_CHECK_INTERVAL_MS: "500" }).diskCheckIntervalMs, 500);
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_DISK_CHECK_INTERVAL_MS: "50" }),
      "FSB_DISK_CHECK_INTERVAL_MS",
      /whole number of milliseconds, at least 100/,
    );
  });

  it("reads the size a sandbox's log is rotated at (10 MiB unless set), and refuses what is not a whole number of at least 4096 bytes", () => {
    assert.equal(agentConfigFromEnv(REQUIRED).logMaxBytes, 10 * 1024 * 1024);
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_SANDBOX_LOG_MAX_BYTES: "65536" }).logMaxBytes, 65536);
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_SANDBOX_LOG_MAX_BYTES: "1024" }),
      "FSB_SANDBOX_LOG_MAX_BYTES",
      /whole number of bytes, at least 4096/,
    );
    assertValidationError(() => agentConfigFromEnv({ ...REQUIRED, FSB_SANDBOX_LOG_MAX_BYTES: "10Mi" }), "FSB_SANDBOX_LOG_MAX_BYTES", /whole number of bytes/);
  });

  it("reads the agent's limits (the Downward API's limits.cpu in millicores and limits.memory in bytes), and refuses what is not a whole number", () => {
    assert.deepEqual(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_CPU_LIMIT_MILLICORES: "4000", FSB_AGENT_MEMORY_LIMIT_BYTES: "8589934592" }).limits, {
      cpuMillis: 4000,
      memoryBytes: 8589934592,
    });
    assert.deepEqual(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_MEMORY_LIMIT_BYTES: "67108864", FSB_AGENT_CPU_LIMIT_MILLICORES: "" }).limits, {
      memoryBytes: 67108864,
    });
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_CPU_LIMIT_MILLICORES: "1.5" }),
      "FSB_AGENT_CPU_LIMIT_MILLICORES",
      /whole number of millicores, at least 1/,
    );
    assertValidationError(() => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_CPU_LIMIT_MILLICORES: "0" }), "FSB_AGENT_CPU_LIMIT_MILLICORES");
    assertValidationError(
      () => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_MEMORY_LIMIT_BYTES: "512Mi" }),
      "FSB_AGENT_MEMORY_LIMIT_BYTES",
      /whole number of bytes, at least 1/,
    );
    assertValidationError(() => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_MEMORY_LIMIT_BYTES: "-1" }), "FSB_AGENT_MEMORY_LIMIT_BYTES");
    // What Kubernetes allows, however small: the agent starts.
    assert.deepEqual(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_CPU_LIMIT_MILLICORES: "1" }).limits, { cpuMillis: 1 });
  });

  it("reads the pool's prepared-instance template, and refuses a bad count or template", () => {
    const base = { FSB_AGENT_NAME: "default-0", FSB_AGENT_POOL: "default", FSB_AGENT_TOKEN: "t", FSB_AGENT_STATE_DIR: "/tmp/s" };
    const template = JSON.stringify({ image: "busybox", runtimeType: "container", memoryBytes: "67108864" });
    const config = agentConfigFromEnv({ ...base, FSB_PREPARED_INSTANCES: "3", FSB_PREPARED_TEMPLATE: template });
    assert.deepEqual(config.preparedInstances, {
      count: 3,
      template: { namespace: "default", pool: "default", image: "busybox", runtimeType: "container", resources: { memoryBytes: 67108864 } },
    });
    assert.throws(() => agentConfigFromEnv({ ...base, FSB_PREPARED_INSTANCES: "65", FSB_PREPARED_TEMPLATE: template }), /FSB_PREPARED_INSTANCES/);
    assert.throws(() => agentConfigFromEnv({ ...base, FSB_PREPARED_INSTANCES: "2", FSB_PREPARED_TEMPLATE: "{" }), /FSB_PREPARED_TEMPLATE/);
    assert.throws(() => agentConfigFromEnv({ ...base, FSB_PREPARED_INSTANCES: "2", FSB_PREPARED_TEMPLATE: "{}" }), /names no image/);
  });

  it("reads the checkpoint a gVisor pool's instances are restored from, and refuses it for another runtime", () => {
    const base = { FSB_AGENT_NAME: "g-0", FSB_AGENT_POOL: "g", FSB_AGENT_TOKEN: "t", FSB_AGENT_STATE_DIR: "/tmp/s", FSB_PREPARED_INSTANCES: "2" };
    const gvisor = JSON.stringify({ runtimeType: "gvisor", network: { mode: "ISOLATED" } });
    const config = agentConfigFromEnv({ ...base, FSB_PREPARED_TEMPLATE: gvisor, FSB_PREPARED_FROM_CHECKPOINT: "golden" });
    assert.equal(config.preparedInstances?.fromCheckpoint, "golden");
    assert.equal(config.preparedInstances?.template.runtimeType, "gvisor");
    assert.equal(config.preparedInstances?.template.network?.mode, "isolated");
    assert.throws(
      () =>
        agentConfigFromEnv({
          ...base,
          FSB_PREPARED_TEMPLATE: JSON.stringify({ image: "busybox", runtimeType: "container" }),
          FSB_PREPARED_FROM_CHECKPOINT: "golden",
        }),
      /FSB_PREPARED_FROM_CHECKPOINT.*gvisor/,
    );
    assert.throws(() => agentConfigFromEnv({ ...base, FSB_PREPARED_TEMPLATE: gvisor }), /names no image/);
  });

  it("reads every variable when set", () => {
    const config = agentConfigFromEnv({
      ...REQUIRED,
      FSB_AGENT_NAMESPACE: "team-a",
      FSB_NODE_NAME: "node-7",
      FSB_AGENT_LISTEN: "0.0.0.0:7000",
      FSB_CONTAINERD_SOCKET: "/tmp/containerd.sock",
      FSB_CONTAINERD_NAMESPACE: "fsb-test",
      FSB_CGROUP_PARENT: "/fast-sandbox/default-0",
      FSB_HELPER_PATH: "/opt/fsb-helper",
      FSB_REGISTRY_CONFIG: "/var/lib/fsb/registry/config.json",
      FSB_AGENT_UID: "0b6d3c1e-5f2a-4c8e-9d7b-1a2b3c4d5e6f",
      FSB_RUNSC_PATH: "/opt/gvisor/runsc",
      FSB_CHECKPOINT_DIR: "/var/lib/fsb/checkpoints",
    });
    assert.equal(config.namespace, "team-a");
    assert.equal(config.nodeName, "node-7");
    assert.equal(config.listenHost, "0.0.0.0");
    assert.equal(config.listenPort, 7000);
    assert.equal(config.containerdSocket, "/tmp/containerd.sock");
    assert.equal(config.containerdNamespace, "fsb-test");
    assert.equal(config.cgroupParent, "/fast-sandbox/default-0");
    assert.equal(config.helperPath, "/opt/fsb-helper");
    assert.equal(config.registryConfigPath, "/var/lib/fsb/registry/config.json");
    assert.equal(config.uid, "0b6d3c1e-5f2a-4c8e-9d7b-1a2b3c4d5e6f");
    assert.equal(config.runscPath, "/opt/gvisor/runsc");
    // One directory per pool, shared by the pool's agents on the node.
    assert.equal(config.checkpointDir, "/var/lib/fsb/checkpoints/team-a/default");
  });

  it("uses the helper built beside the package when FSB_HELPER_PATH is unset or empty", () => {
    assert.match(DEFAULT_HELPER_PATH, /[/\\]agent[/\\]helper[/\\]build[/\\]fsb-helper$/);
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_HELPER_PATH: "" }).helperPath, DEFAULT_HELPER_PATH);
  });

  it("uses the in-sandbox daemon built in packages/envd unless FSB_ENVD_PATH names another or is empty (none)", () => {
    assert.match(DEFAULT_ENVD_PATH, /[/\\]packages[/\\]envd[/\\]build[/\\]fsb-envd$/);
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_ENVD_PATH: "/opt/fsb-envd" }).envdPath, "/opt/fsb-envd");
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_ENVD_PATH: "" }).envdPath, "");
  });

  for (const key of ["FSB_AGENT_NAME", "FSB_AGENT_POOL", "FSB_AGENT_STATE_DIR"] as const) {
    it(`names ${key} when it is missing or empty`, () => {
      const { [key]: _dropped, ...without } = REQUIRED;
      assertValidationError(() => agentConfigFromEnv(without), key, /is required/);
      assertValidationError(() => agentConfigFromEnv({ ...REQUIRED, [key]: "" }), key, /is required/);
    });
  }

  it("takes an IPv6 host in brackets and strips them", () => {
    const config = agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_LISTEN: "[::1]:8443" });
    assert.equal(config.listenHost, "::1");
    assert.equal(config.listenPort, 8443);
  });

  it("reads the token file when FSB_AGENT_TOKEN is set but empty", () => {
    const directory = mkdtempSync(join(tmpdir(), "fsb-agent-config-"));
    const file = join(directory, "token");
    writeFileSync(file, "from-the-file-0123456789\n");
    const config = agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_TOKEN: "", FSB_AGENT_TOKEN_FILE: file });
    assert.equal(config.token, "from-the-file-0123456789");
    rmSync(directory, { recursive: true, force: true });
  });

  for (const listen of [
    "7000",
    "localhost:http",
    "127.0.0.1:70000",
    "127.0.0.1:-1",
    "127.0.0.1:1.5",
    "127.0.0.1:",
    "127.0.0.1:0x1F",
    "127.0.0.1:1e3",
    "::1:8443",
  ]) {
    it(`refuses FSB_AGENT_LISTEN=${JSON.stringify(listen)}`, () => {
      assertValidationError(() => agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_LISTEN: listen }), "FSB_AGENT_LISTEN", /is not host:port/);
    });
  }

  it("reads the token from FSB_AGENT_TOKEN_FILE, trimmed", () => {
    const file = join(dir, "token");
    writeFileSync(file, "  from-file\n");
    const { FSB_AGENT_TOKEN: _token, ...withoutToken } = REQUIRED;
    assert.equal(agentConfigFromEnv({ ...withoutToken, FSB_AGENT_TOKEN_FILE: file }).token, "from-file");
  });

  it("prefers FSB_AGENT_TOKEN over the file", () => {
    const file = join(dir, "other-token");
    writeFileSync(file, "from-file");
    assert.equal(agentConfigFromEnv({ ...REQUIRED, FSB_AGENT_TOKEN_FILE: file }).token, "s3cret");
  });

  it("requires a token, naming both ways to give it", () => {
    const { FSB_AGENT_TOKEN: _token, ...withoutToken } = REQUIRED;
    assertValidationError(() => agentConfigFromEnv(withoutToken), "FSB_AGENT_TOKEN", /FSB_AGENT_TOKEN_FILE/);
  });

  it("refuses a token file that is empty", () => {
    const file = join(dir, "empty-token");
    writeFileSync(file, " \n");
    const { FSB_AGENT_TOKEN: _token, ...withoutToken } = REQUIRED;
    assertValidationError(() => agentConfigFromEnv({ ...withoutToken, FSB_AGENT_TOKEN_FILE: file }), "FSB_AGENT_TOKEN");
  });

  it("fails on a token file that does not exist", () => {
    const { FSB_AGENT_TOKEN: _token, ...withoutToken } = REQUIRED;
    assert.throws(() => agentConfigFromEnv({ ...withoutToken, FSB_AGENT_TOKEN_FILE: join(dir, "missing") }), { code: "ENOENT" });
  });
});
