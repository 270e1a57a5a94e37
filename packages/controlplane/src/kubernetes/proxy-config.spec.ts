import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { proxyConfigFromEnv } from "./proxy-config.js";

describe("proxyConfigFromEnv", () => {
  it("uses the defaults for everything", () => {
    assert.deepEqual(proxyConfigFromEnv({}), {
      host: "0.0.0.0",
      port: 7072,
      probeHost: "0.0.0.0",
      probePort: 7073,
      proxyAddress: { protocol: "http:", domain: "localhost", portSuffix: ":7072" },
      agentPort: 7071,
    });
  });

  it("takes every setting from its variable", () => {
    const config = proxyConfigFromEnv({
      FSB_PROXY_LISTEN: "127.0.0.1:8443",
      FSB_PROBE_LISTEN: "127.0.0.1:9000",
      FSB_PROXY_BASE_URL: "https://sandboxes.example.com",
      FSB_AGENT_PORT: "7171",
    });
    assert.deepEqual(config, {
      host: "127.0.0.1",
      port: 8443,
      probeHost: "127.0.0.1",
      probePort: 9000,
      proxyAddress: { protocol: "https:", domain: "sandboxes.example.com", portSuffix: "" },
      agentPort: 7171,
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
        () => proxyConfigFromEnv({ [key]: value }),
        (error: unknown) => error instanceof ValidationError && error.field === key,
        key,
      );
    }
  });
});
