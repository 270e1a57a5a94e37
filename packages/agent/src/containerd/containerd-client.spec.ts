import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ContainerdClient, RECONNECT_OPTIONS } from "./containerd-client.js";

describe("ContainerdClient", () => {
  it("tries containerd's socket again within 2 s after it went away (not grpc-js's up to 120 s)", () => {
    const client = new ContainerdClient({ socketPath: "/nonexistent/containerd.sock", namespace: "fast-sandbox" });
    try {
      // The options the channel was made with (grpc-js keeps them on its internal channel).
      const channel = (
        client as unknown as { grpcClient: { getChannel(): { internalChannel?: { options?: Record<string, unknown> } } } }
      ).grpcClient.getChannel();
      const options = channel.internalChannel?.options ?? {};
      assert.equal(options["grpc.initial_reconnect_backoff_ms"], 200);
      assert.equal(options["grpc.max_reconnect_backoff_ms"], 2_000);
      assert.deepEqual(RECONNECT_OPTIONS, { "grpc.initial_reconnect_backoff_ms": 200, "grpc.max_reconnect_backoff_ms": 2_000 });
    } finally {
      client.close();
    }
  });
});
