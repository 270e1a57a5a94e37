import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { CreatedSandbox } from "@fast-sandbox/sdk";
import { printCreated } from "./created-sandbox.js";

/** Runs `fn` and returns what it wrote to stdout and stderr (synchronously, so nothing else writes meanwhile). */
function capture(fn: () => void): { stdout: string; stderr: string } {
  const out: string[] = [];
  const err: string[] = [];
  const writeOut = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  const into = (chunks: string[]) => (chunk: string | Uint8Array) => (chunks.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString()), true);
  process.stdout.write = into(out);
  process.stderr.write = into(err);
  try {
    fn();
  } finally {
    process.stdout.write = writeOut;
    process.stderr.write = writeErr;
  }
  return { stdout: out.join(""), stderr: err.join("") };
}

const TOKEN = "tok_0123456789abcdefghij";
const sandbox = {
  apiVersion: "sandbox.fast.io/v1alpha1",
  kind: "Sandbox",
  metadata: { name: "sb-1234567890", namespace: "default" },
  spec: { poolRef: "default", image: "fast-sandbox.io/base:latest" },
  status: { phase: "Running", assignedPod: "default-0", sandboxIP: "10.88.0.7", endpoints: ["http://8080-x.localhost:7072/"] },
  accessToken: TOKEN,
} as unknown as CreatedSandbox;

describe("what fsb run and fsb fork print for a sandbox they made", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-created-"));
  after(() => rmSync(dataDir, { recursive: true, force: true }));
  const saved = join(dataDir, "access-tokens", "default", "sb-1234567890");

  it("by default: the token (saved in the data directory) and where it runs, the name last", () => {
    const { stdout, stderr } = capture(() => printCreated(sandbox, { namespace: "default", dataDir, origin: "copy of golden" }));
    const lines = stdout.split("\n");
    assert.equal(lines.length, 3);
    assert.match(lines[0] ?? "", new RegExp(`^access token: ${TOKEN} \\(.*saved in ${saved};`));
    assert.equal(lines[1], "sandbox copy of golden running on agent default-0, address 10.88.0.7 (endpoints: http://8080-x.localhost:7072/): sb-1234567890");
    assert.equal(stderr, "");
    assert.equal(readFileSync(saved, "utf8"), `${TOKEN}\n`);
  });

  it("quiet with a data directory: the name alone, the token saved and printed nowhere", () => {
    rmSync(saved, { force: true });
    const { stdout, stderr } = capture(() => printCreated(sandbox, { namespace: "default", dataDir, quiet: true }));
    assert.equal(stdout, "sb-1234567890\n");
    assert.equal(stderr, "");
    assert.equal(readFileSync(saved, "utf8"), `${TOKEN}\n`);
  });

  it("quiet without a data directory (a cluster): the name alone on stdout, the token on stderr since nothing keeps it", () => {
    const { stdout, stderr } = capture(() => printCreated(sandbox, { namespace: "default", dataDir: undefined, quiet: true }));
    assert.equal(stdout, "sb-1234567890\n");
    assert.match(stderr, new RegExp(`^access token: ${TOKEN} \\(send it as the X-Access-Token header`));
  });
});
