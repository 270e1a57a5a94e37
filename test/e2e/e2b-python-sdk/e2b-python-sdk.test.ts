/**
 * E2B's official Python SDK (PyPI `e2b`, pinned in requirements.txt) runs its own pytest modules
 * (written from E2B's public documentation) against a real embedded Fast Sandbox, with nothing but
 * the three variables `fsb e2b env` prints: test_e2b_python_sdk.py on the default (runc) template,
 * test_e2b_python_sdk_pause.py — pause, connect resuming a paused sandbox, fork — on a gVisor
 * template (pool `gvisor`) on the real runsc. The SDK is installed into a virtualenv under the cache
 * directory (made once per requirements.txt), never into the repository.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { e2bEnvironment } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const REQUIREMENTS = join(HERE, "requirements.txt");
const CACHE = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");

function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number },
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd ?? HERE, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, output });
    });
  });
}

/** The virtualenv with requirements.txt installed: made once (through a temporary name and a rename), then reused. */
async function virtualenv(): Promise<string> {
  const digest = createHash("sha256").update(readFileSync(REQUIREMENTS)).digest("hex").slice(0, 12);
  const dir = join(CACHE, "fast-sandbox", "venvs", `e2b-python-sdk-${digest}`);
  if (existsSync(join(dir, "bin", "python"))) return dir;
  const building = `${dir}.building-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  const made = await run("python3", ["-m", "venv", building], { timeoutMs: 120_000 });
  assert.equal(made.code, 0, `python3 -m venv failed (apt-get install -y python3-venv): ${made.output}`);
  const installed = await run(join(building, "bin", "pip"), ["install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS], { timeoutMs: 600_000 });
  assert.equal(installed.code, 0, `pip install -r requirements.txt failed: ${installed.output}`);
  // The venv's scripts name their interpreter by path: it is built at its final name's sibling and
  // its python is called by absolute path below, so the rename keeps it working.
  renameSync(building, dir);
  return dir;
}

describe("E2B's official Python SDK against the E2B-compatible API", () => {
  let embedded: EmbeddedCase;
  let venv = "";

  before(
    async () => {
      venv = await virtualenv();
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
    "passes the SDK's pytest module: create, commands, background, stdin, PTY, files, watch, signed URLs, timeout, list, connect, kill",
    { timeout: 600_000 },
    async () => {
      const env = await e2bEnvironment(embedded);
      const result = await run(join(venv, "bin", "python"), ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_e2b_python_sdk.py"], {
        env,
        timeoutMs: 540_000,
      });
      assert.equal(result.code, 0, result.output);
      const passed = /(\d+) passed/.exec(result.output);
      assert.ok(passed && Number(passed[1]) >= 12, `pytest summary: ${result.output.split("\n").slice(-3).join(" ")}`);
      assert.doesNotMatch(result.output, /\d+ (failed|skipped|error)/);
    },
  );

  it(
    "passes the SDK's pause module on a gVisor template: pause (True, then False), connect resuming files and a process's memory, fork, refusals, kill",
    { timeout: 600_000 },
    async () => {
      const env = { ...(await e2bEnvironment(embedded)), FSB_E2B_GVISOR_TEMPLATE: "gvisor" };
      const result = await run(join(venv, "bin", "python"), ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_e2b_python_sdk_pause.py"], {
        env,
        timeoutMs: 540_000,
      });
      assert.equal(result.code, 0, result.output);
      const passed = /(\d+) passed/.exec(result.output);
      assert.ok(passed && Number(passed[1]) >= 5, `pytest summary: ${result.output.split("\n").slice(-3).join(" ")}`);
      assert.doesNotMatch(result.output, /\d+ (failed|skipped|error)/);
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
