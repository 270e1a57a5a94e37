/**
 * Python for e2e cases that drive Fast Sandbox with a Python package from PyPI (E2B's SDKs): a
 * virtualenv per requirements file under the cache directory (made once per its content, through a
 * temporary name and a rename), never in the repository; and a runner that collects a program's output.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

const CACHE = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");

/** Runs `command` to its end (killed after `timeoutMs`): its exit code and its stdout and stderr together. */
export function runProgram(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd: string; timeoutMs: number },
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
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

/** The virtualenv `<cache>/fast-sandbox/venvs/<name>-<digest of requirements>` with `requirements` installed. */
export async function virtualenv(name: string, requirements: string): Promise<string> {
  const digest = createHash("sha256").update(readFileSync(requirements)).digest("hex").slice(0, 12);
  const dir = join(CACHE, "fast-sandbox", "venvs", `${name}-${digest}`);
  if (existsSync(join(dir, "bin", "python"))) return dir;
  const building = `${dir}.building-${process.pid}`;
  const cwd = dirname(requirements);
  rmSync(building, { recursive: true, force: true });
  const made = await runProgram("python3", ["-m", "venv", building], { cwd, timeoutMs: 120_000 });
  assert.equal(made.code, 0, `python3 -m venv failed (apt-get install -y python3-venv): ${made.output}`);
  const installed = await runProgram(join(building, "bin", "pip"), ["install", "--quiet", "--disable-pip-version-check", "-r", requirements], {
    cwd,
    timeoutMs: 600_000,
  });
  assert.equal(installed.code, 0, `pip install -r ${requirements} failed: ${installed.output}`);
  // The venv's scripts name their interpreter by path: it is built at its final name's sibling and
  // its python is called by absolute path, so the rename keeps it working.
  renameSync(building, dir);
  return dir;
}

/**
 * Runs a pytest module of `cwd` with the virtualenv's python and asserts that it passed whole: exit
 * code 0, at least `atLeast` tests passed (so a module that collected nothing fails), none failed,
 * skipped or in error.
 */
export async function assertPytestPasses(
  venv: string,
  module: string,
  options: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs: number; atLeast: number },
): Promise<void> {
  const result = await runProgram(join(venv, "bin", "python"), ["-m", "pytest", "-q", "-p", "no:cacheprovider", module], options);
  assert.equal(result.code, 0, result.output);
  const passed = /(\d+) passed/.exec(result.output);
  assert.ok(passed && Number(passed[1]) >= options.atLeast, `pytest summary: ${result.output.split("\n").slice(-3).join(" ")}`);
  assert.doesNotMatch(result.output, /\d+ (failed|skipped|error)/);
}
