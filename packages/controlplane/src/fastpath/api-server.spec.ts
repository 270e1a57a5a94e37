import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { startApiServer } from "./api-server.js";
import { CheckpointManager } from "./checkpoint-manager.js";
import { SandboxManagerFixture } from "./sandbox-manager.fixture.js";

describe("startApiServer", () => {
  it("answers with a URL that parses for an IPv6 host too (bracketed), and serves there", async () => {
    const fixture = new SandboxManagerFixture();
    const { manager, store, registry, agents } = fixture;
    const checkpoints = new CheckpointManager({ manager, store, registry, agents, logger: pino({ level: "silent" }) });
    const api = await startApiServer({ manager, store, registry, agents, checkpoints, token: "test-token-0123456789abcdef", host: "::1", port: 0 });
    try {
      assert.match(api.url, /^http:\/\/\[::1\]:\d+$/);
      const url = new URL("/healthz", api.url);
      assert.equal((await fetch(url)).status, 200);
    } finally {
      await api.close();
      checkpoints.close();
      fixture.close();
    }
  });
});
