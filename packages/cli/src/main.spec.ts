/**
 * Exit codes and error output of the `fsb` program. main.ts runs the program when imported, so these
 * tests run it in a child process (from source, like `npm run fsb` after a build).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";

const MAIN = join(import.meta.dirname, "main.ts");
const REPO_ROOT = join(import.meta.dirname, "..", "..", "..");
/** Nothing listens on port 1, so calls fail fast with ECONNREFUSED. */
const UNREACHABLE = "http://127.0.0.1:1";

const dataDir = mkdtempSync(join(tmpdir(), "fsb-main-spec-"));
writeFileSync(join(dataDir, "token"), "test-token-0123456789abcdef\n", {
  mode: 0o600,
});
after(() => rmSync(dataDir, { recursive: true, force: true }));

function fsb(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    for (const name of ["FSB_URL", "FSB_TOKEN", "FSB_DATA_DIR", "FSB_DEBUG", "NODE_TEST_CONTEXT"]) delete env[name];
    const child = spawn(process.execPath, ["--conditions=development", "--import", "tsx", MAIN, ...args], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("fsb exit codes", () => {
  it("exits 2 when an option is missing its value", async () => {
    const result = await fsb("run", "--port");
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--port <port>' argument missing/);
  });

  it("exits 2 for an unknown command", async () => {
    const result = await fsb("bogus");
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /unknown command 'bogus'/);
  });

  it("exits 2 for a port out of range, naming --port", async () => {
    const result = await fsb("run", "--image", "x", "--port", "70000", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --port: "70000" is not a port; allowed: 1\.\.65535$/m);
  });

  it("exits 0 for --help", async () => {
    const result = await fsb("--help");
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /Usage: fsb/);
  });

  it("exits 1 with 'error:' on stderr when the control plane is unreachable", async () => {
    const result = await fsb("get", "x", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: /m);
    assert.equal(result.stdout, "");
  });

  it("exits 2 for 'fsb delete pool' without a name, and says how to delete a sandbox called pool", async () => {
    const result = await fsb("delete", "pool", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /name the pools to delete, e\.g\. fsb delete pool NAME \(a sandbox called pool: fsb rm pool\)/);
  });

  it("exits 2 for 'fsb get' with two words when the first is not a kind", async () => {
    const result = await fsb("get", "web", "extra", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /"web" is not a kind; allowed: sandbox, pool/);
  });

  it("reaches the control plane for every form of get, delete and pools (exit 1 when it is unreachable)", async () => {
    const forms = [
      ["get", "pool", "workers"],
      ["get", "sandbox", "web"],
      ["get", "pools"],
      ["pools", "-A", "-o", "json"],
      ["delete", "pool", "workers"],
      ["delete", "sandbox", "web"],
      ["delete", "web"],
    ];
    for (const args of forms) {
      const result = await fsb(...args, "--url", UNREACHABLE, "--data-dir", dataDir);
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /^error: /m);
    }
  });

  it("exits 1 and says how to start Fast Sandbox when no URL is known", async () => {
    const result = await fsb("ls", "--data-dir", dataDir);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: Fast Sandbox is not running for data directory .*fsb up/m);
  });
});
