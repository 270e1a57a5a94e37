/**
 * E2B's official Python SDK (PyPI `e2b`, pinned in requirements.txt) runs its own pytest modules
 * (written from E2B's public documentation) against a real embedded Fast Sandbox, with nothing but
 * the three variables `fsb e2b env` prints: test_e2b_python_sdk.py on the default (runc) template,
 * test_e2b_python_sdk_pause.py — pause, connect resuming a paused sandbox, fork — on a gVisor
 * template (pool `gvisor`) on the real runsc. The SDK is installed into a virtualenv under the cache
 * directory (made once per requirements.txt), never into the repository.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { e2bEnvironment } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { assertPytestPasses, virtualenv } from "../../support/python-venv.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const REQUIREMENTS = join(HERE, "requirements.txt");

describe("E2B's official Python SDK against the E2B-compatible API", () => {
  let embedded: EmbeddedCase;
  let venv = "";

  before(
    async () => {
      venv = await virtualenv("e2b-python-sdk", REQUIREMENTS);
      // The agents (child processes) sample their sandboxes every half second instead of every 5 s: get_metrics' history fills fast.
      process.env.FSB_STATS_INTERVAL_MS = "500";
      embedded = await startEmbedded({
        name: "e2b-py-sdk",
        pools: [pool("default", { maxSandboxesPerPod: 8 }), pool("gvisor", { maxSandboxesPerPod: 6, runtimeType: "gvisor" })],
      });
    },
    { timeout: 900_000 },
  );

  after(async () => {
    await embedded.stop();
  });

  it(
    "passes the SDK's pytest module: create, commands, background, stdin, PTY, files, watch, signed URLs, timeout, list, connect, kill, idempotency keys",
    { timeout: 600_000 },
    async () => {
      const env = await e2bEnvironment(embedded);
      await assertPytestPasses(venv, "test_e2b_python_sdk.py", { env, cwd: HERE, timeoutMs: 540_000, atLeast: 16 });
    },
  );

  it(
    "passes the SDK's pause module on a gVisor template: pause (True, then False), connect resuming files and a process's memory, fork, refusals, kill",
    { timeout: 600_000 },
    async () => {
      const env = { ...(await e2bEnvironment(embedded)), FSB_E2B_GVISOR_TEMPLATE: "gvisor" };
      await assertPytestPasses(venv, "test_e2b_python_sdk_pause.py", { env, cwd: HERE, timeoutMs: 540_000, atLeast: 5 });
    },
  );

  it("leaves no sandbox behind", async () => {
    const sandboxes = await embedded.client.sandboxes.list({ namespace: "*" });
    assert.deepEqual(
      sandboxes.map((sandbox) => sandbox.metadata.name),
      [],
    );
    assert.deepEqual(
      containerdLeftovers(embedded.containerdNamespace).containers.filter((id) => !id.startsWith("fsb-anchor")),
      [],
    );
    const checkpoints = join(embedded.dataDir, "checkpoints", "default", "gvisor");
    assert.deepEqual(existsSync(checkpoints) ? readdirSync(checkpoints) : [], [], "no checkpoint of a pause or fork is left");
  });
});
