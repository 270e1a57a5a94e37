/**
 * The Python SDK (sdk/python, `fast_sandbox`) against a real embedded Fast Sandbox: real sandboxes
 * on containerd, their in-sandbox daemon reached through the sandbox proxy. The SDK's own pytest
 * suite does the work — its unit tests (an in-memory fake behind httpx.MockTransport) and its
 * integration tests (tests/integration, here against this case's instance) — after `mypy --strict`
 * and ruff.
 *
 * Python comes from a virtual environment outside the repository (FSB_PYTHON_VENV, default
 * ${XDG_CACHE_HOME:-~/.cache}/fast-sandbox/python-sdk-venv), made with `python3 -m venv` and filled
 * with `pip install -e sdk/python[test]` from PyPI; it is made again only when sdk/python's
 * pyproject.toml or the checkout it points at change. The integration tests get only FSB_URL and
 * FSB_TOKEN: they find the sandbox proxy by asking the control plane (GetSandboxProxy).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../../support/containerd.js";
import { pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";

const SDK_DIR = join(REPO_ROOT, "sdk/python");
const VENV_DIR = process.env.FSB_PYTHON_VENV ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "fast-sandbox", "python-sdk-venv");
const PYTHON = join(VENV_DIR, "bin", "python");

/** What the venv was made for: the SDK's declared dependencies and the checkout its editable install points at. */
function venvKey(): string {
  return createHash("sha256")
    .update(readFileSync(join(SDK_DIR, "pyproject.toml")))
    .update(`\0${SDK_DIR}`)
    .digest("hex");
}

/** Makes the venv when it is missing or stale (idempotent; pip reaches PyPI only then). */
function ensureVenv(): void {
  const stamp = join(VENV_DIR, ".fast-sandbox-key");
  const key = venvKey();
  if (existsSync(PYTHON) && existsSync(stamp) && readFileSync(stamp, "utf8") === key) return;
  rmSync(VENV_DIR, { recursive: true, force: true });
  mkdirSync(join(VENV_DIR, ".."), { recursive: true });
  const python = process.env.FSB_PYTHON ?? "python3";
  const run = (file: string, args: string[]) => execFileSync(file, args, { stdio: ["ignore", "inherit", "inherit"], timeout: 600_000 });
  run(python, ["-m", "venv", VENV_DIR]);
  run(PYTHON, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--editable", `${SDK_DIR}[test]`]);
  writeFileSync(stamp, key);
}

interface Finished {
  code: number | null;
  output: string;
}

/** Runs a program of the venv asynchronously: the control plane it talks to runs in this process. */
function runInVenv(args: string[], env: Record<string, string>, timeoutMs: number): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, args, {
      cwd: SDK_DIR,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The counts of pytest's closing line, e.g. `45 passed, 2 failed in 12.3s`. */
function pytestCounts(output: string): Record<string, number> {
  const summary = output.trimEnd().split("\n").at(-1) ?? "";
  const counts: Record<string, number> = {};
  for (const match of summary.matchAll(/(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)/g)) {
    counts[match[2] ?? ""] = Number(match[1]);
  }
  return counts;
}

describe("the Python SDK", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    ensureVenv();
    // The agents (child processes) sample their sandboxes every half second: stats_history() fills fast.
    process.env.FSB_STATS_INTERVAL_MS = "500";
    embedded = await startEmbedded({ name: "python-sdk", pools: [pool("default", { maxSandboxesPerPod: 8 })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("type-checks with mypy --strict and passes ruff's lint and format checks (sources and tests)", async () => {
    const mypy = await runInVenv(["-m", "mypy", "--cache-dir", join(VENV_DIR, ".mypy_cache")], {}, 300_000);
    assert.equal(mypy.code, 0, mypy.output);
    assert.match(mypy.output, /Success: no issues found in \d+ source files/);
    const lint = await runInVenv(["-m", "ruff", "check", "--no-cache", "."], {}, 120_000);
    assert.equal(lint.code, 0, lint.output);
    const format = await runInVenv(["-m", "ruff", "format", "--no-cache", "--check", "."], {}, 120_000);
    assert.equal(format.code, 0, format.output);
  });

  it("passes its unit tests and its integration tests against real sandboxes", async (t) => {
    const result = await runInVenv(
      ["-m", "pytest", "-p", "no:cacheprovider", "-ra", "tests"],
      { FSB_URL: embedded.controlPlane.url, FSB_TOKEN: embedded.token, FSB_PYTEST_RUN: `e2e-${process.pid}` },
      600_000,
    );
    assert.equal(result.code, 0, result.output);
    t.diagnostic(`pytest: ${result.output.trimEnd().split("\n").at(-1) ?? ""}`);
    const counts = pytestCounts(result.output);
    // Both suites ran, and nothing passed by being skipped.
    assert.ok((counts.passed ?? 0) >= 90, result.output);
    assert.deepEqual([counts.failed, counts.skipped, counts.error, counts.errors], [undefined, undefined, undefined, undefined], result.output);
    assert.match(result.output, /tests\/integration\/test_sandbox\.py/);
    assert.match(result.output, /tests\/unit\/test_sandbox\.py/);
  });

  it("leaves no sandbox of its run behind", async () => {
    const left = await embedded.client.sandboxes.list({ namespace: "*" });
    assert.deepEqual(
      left.map((sandbox) => sandbox.metadata.name),
      [],
    );
  });
});
