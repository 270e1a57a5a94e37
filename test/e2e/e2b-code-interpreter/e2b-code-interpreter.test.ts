/**
 * E2B's code-interpreter SDK for Python (PyPI `e2b-code-interpreter`, pinned in requirements.txt)
 * runs its pytest module (written from E2B's public documentation) against a real embedded Fast
 * Sandbox, with nothing but the three variables `fsb e2b env` prints. Its default template,
 * `code-interpreter-v1`, is the sample pool of that name (config/samples/code-interpreter-pool.yaml) running the code-interpreter image
 * (scripts/build-code-interpreter-image.sh: images/code-interpreter/code_interpreter.py, E2B's
 * code-interpreter API on port 49999, reached through the sandbox proxy like any port of a sandbox
 * made through the E2B-compatible API). The SDK is installed into a virtualenv under the cache
 * directory (made once per requirements.txt), never into the repository.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import type { SandboxPool } from "@fast-sandbox/api";
import { CODE_INTERPRETER_IMAGE, REPO_ROOT, importCodeInterpreterImage } from "../../support/containerd.js";
import { e2bEnvironment } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { assertPytestPasses, virtualenv } from "../../support/python-venv.js";

const HERE = dirname(fileURLToPath(import.meta.url));

describe("E2B's code-interpreter SDK against the E2B-compatible API and the code-interpreter image", () => {
  let embedded: EmbeddedCase;
  let venv = "";

  before(
    async () => {
      venv = await virtualenv("e2b-code-interpreter", join(HERE, "requirements.txt"));
      embedded = await startEmbedded({ name: "e2b-code-interp", pools: [pool("default", { maxSandboxesPerPod: 4 })] });
      importCodeInterpreterImage(embedded.containerdNamespace);
      // The pool as the README has users apply it.
      const sample = parse(readFileSync(join(REPO_ROOT, "config/samples/code-interpreter-pool.yaml"), "utf8")) as SandboxPool;
      assert.equal(sample.spec.image, CODE_INTERPRETER_IMAGE);
      await embedded.client.pools.apply(sample);
    },
    { timeout: 900_000 },
  );

  after(async () => {
    await embedded.stop();
  });

  it(
    "passes the SDK's pytest module: run_code's results, streams, errors, envs, display, contexts, interrupted runs, and the sandbox's other APIs",
    { timeout: 600_000 },
    async () => {
      const env = await e2bEnvironment(embedded);
      await assertPytestPasses(venv, "test_e2b_code_interpreter.py", { env, cwd: HERE, timeoutMs: 540_000, atLeast: 9 });
    },
  );

  it("leaves no sandbox behind", async () => {
    const sandboxes = await embedded.client.sandboxes.list({ namespace: "*" });
    assert.deepEqual(
      sandboxes.map((sandbox) => sandbox.metadata.name),
      [],
    );
    assert.deepEqual(
      containerdLeftovers(embedded.containerdNamespace).containers.filter((id) => !id.startsWith("fsb-anchor") && !id.startsWith("fsb-prepared-")),
      [],
    );
  });
});
