import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { proxyConfigFromEnv } from "./proxy-config.js";

describe("proxyConfigFromEnv", () => {
  const token = { FSB_AGENT_TOKEN: "agent-token-0123456789" };

  it("uses the defaults for everything but the agent token", () => {
    assert.deepEqual(proxyConfigFromEnv(token), {
      host: "0.0.0.0",
      port: 7072,
      probeHost: "0.0.0.0",
      probePort: 7073,
      proxyAddress: { protocol: "http:", domain: "localhost", portSuffix: ":7072" },
      agentPort: 7071,
      agentToken: "agent-token-0123456789",
      agentTokenForOldPods: false,
      e2bSecretNamespace: undefined,
    });
  });

  it("requires the agent token, from the variable or the file it names", () => {
    assert.throws(
      () => proxyConfigFromEnv({}),
      (error: unknown) => error instanceof ValidationError && error.field === "FSB_AGENT_TOKEN" && /relays/.test(error.message),
    );
    const dir = mkdtempSync(join(tmpdir(), "fsb-proxy-config-"));
    try {
      writeFileSync(join(dir, "token"), "from-a-mounted-secret\n");
      assert.equal(proxyConfigFromEnv({ FSB_AGENT_TOKEN_FILE: join(dir, "token") }).agentToken, "from-a-mounted-secret");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("takes every setting from its variable", () => {
    const config = proxyConfigFromEnv({
      FSB_PROXY_LISTEN: "127.0.0.1:8443",
      FSB_PROBE_LISTEN: "127.0.0.1:9000",
      FSB_PROXY_BASE_URL: "https://sandboxes.example.com",
      FSB_AGENT_PORT: "7171",
      FSB_POD_NAMESPACE: "fast-sandbox-system",
      FSB_AGENT_TOKEN_FOR_OLD_PODS: "true",
      ...token,
    });
    assert.deepEqual(config, {
      host: "127.0.0.1",
      port: 8443,
      probeHost: "127.0.0.1",
      probePort: 9000,
      proxyAddress: { protocol: "https:", domain: "sandboxes.example.com", portSuffix: "" },
      agentPort: 7171,
      agentToken: "agent-token-0123456789",
      agentTokenForOldPods: true,
      e2bSecretNamespace: "fast-sandbox-system",
    });
  });

  it("names the variable that is wrong", () => {
    for (const [key, value] of [
      ["FSB_PROXY_LISTEN", "7072"],
      ["FSB_PROBE_LISTEN", "x:y"],
      ["FSB_PROXY_BASE_URL", "sandboxes.example.com"],
      ["FSB_AGENT_PORT", "0"],
    ] as const) {
      assert.throws(
        () => proxyConfigFromEnv({ ...token, [key]: value }),
        (error: unknown) => error instanceof ValidationError && error.field === key,
        key,
      );
    }
  });
});
