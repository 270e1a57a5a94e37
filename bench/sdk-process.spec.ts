import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pino } from "pino";
import { API_VERSION } from "@fast-sandbox/api";
import { startEmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { SdkProcess } from "./sdk-process.js";
import { SimulatedAgents } from "./simulated-agent.js";

describe("SdkProcess", () => {
  it("makes a burst's creates in a process of its own and reports each one's time and status", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "fsb-sdk-process-spec-"));
    const token = "sdk-process-spec-token";
    const agents = new SimulatedAgents({ images: ["busybox"] });
    const controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      logger: pino({ level: "silent" }),
      agents,
      containerdSocket: "/nonexistent/containerd.sock",
      cgroupRoot: "",
      heartbeatIntervalMs: 200,
    });
    let sdk: SdkProcess | undefined;
    try {
      sdk = await SdkProcess.start(controlPlane.url, token);
      assert.ok(sdk.pid !== undefined && sdk.pid !== process.pid);
      const client = new FastSandboxClient({ url: controlPlane.url, token });
      await client.pools.apply({
        apiVersion: API_VERSION,
        kind: "SandboxPool",
        metadata: { name: "sim", namespace: "default" },
        spec: { capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 }, maxSandboxesPerPod: 8, image: "busybox" },
      });
      client.close();
      const created = await sdk.burst(["a", "b", "c"].map((name) => ({ name, pool: "sim", image: "busybox", command: ["sleep", "60"] })));
      assert.deepEqual(
        created.map((c) => c.name),
        ["a", "b", "c"],
      );
      for (const c of created) {
        assert.equal(c.phase, "Running");
        assert.ok(c.sandboxID);
        assert.ok(c.elapsedMs > 0);
      }
      assert.equal(agents.sandboxCount, 3);
      // A refused create fails the burst (the name is taken), and the process serves the next one.
      await assert.rejects(sdk.burst([{ name: "a", pool: "sim", image: "busybox", command: ["sleep", "60"] }]), /SDK process: /);
      assert.equal((await sdk.burst([{ name: "d", pool: "sim", image: "busybox", command: ["true"] }]))[0]?.name, "d");
    } finally {
      await sdk?.close();
      await controlPlane.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
