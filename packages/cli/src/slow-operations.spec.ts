/**
 * The CLI's slow operations (creates, restores, forks, pauses, resumes, deletes) wait for the control
 * plane without a client deadline, so a create of an image still being pulled is not given up on (and
 * its sandbox left behind, unnamed); Ctrl-C ends the wait and names the sandbox it may still make.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { requestSandboxName } from "@fast-sandbox/sdk";
import { closeConnections } from "./connection.js";
import { pause, resume } from "./commands/checkpoints.js";
import { remove, run } from "./commands/sandboxes.js";
import { fakeSandbox, startFakeControlPlane, type FakeControlPlane } from "./fake-control-plane.fixture.js";

const TOKEN = "slow-spec-token-0123456789";

/** Captures what is written to stdout and stderr as strings until `restore`. */
function capture(): { printed: () => string; restore(): void } {
  const printed: string[] = [];
  const writes = { stdout: process.stdout.write.bind(process.stdout), stderr: process.stderr.write.bind(process.stderr) };
  for (const stream of ["stdout", "stderr"] as const) {
    const write = writes[stream];
    process[stream].write = (chunk: string | Uint8Array, ...rest: never[]) => (typeof chunk === "string" ? (printed.push(chunk), true) : write(chunk, ...rest));
  }
  return {
    printed: () => printed.join(""),
    restore: () => {
      process.stdout.write = writes.stdout;
      process.stderr.write = writes.stderr;
    },
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (const started = Date.now(); !condition(); await new Promise((resolve) => setTimeout(resolve, 10))) {
    if (Date.now() - started > 5_000) assert.fail(`not within 5 s: ${what}`);
  }
}

describe("the CLI's slow operations", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-slow-spec-"));
  const savedToken = process.env.FSB_TOKEN;
  let controlPlane: FakeControlPlane;
  const runOptions = () => ({ url: controlPlane.url, dataDir, pool: "default", image: "busybox", port: [], env: [], egress: [] });

  before(() => {
    process.env.FSB_TOKEN = TOKEN;
  });
  afterEach(async () => {
    closeConnections();
    await controlPlane.close();
  });
  after(() => {
    if (savedToken === undefined) delete process.env.FSB_TOKEN;
    else process.env.FSB_TOKEN = savedToken;
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("wait for the control plane without a client deadline: create (slower than its answer), pause, resume, delete", async () => {
    controlPlane = await startFakeControlPlane({ token: TOKEN, sandboxes: [fakeSandbox("web")], createDelayMs: 200 });
    const output = capture();
    try {
      await run([], { ...runOptions(), name: "slow" });
      await pause("web", { url: controlPlane.url, dataDir });
      await resume("web", { url: controlPlane.url, dataDir });
      await remove(["slow"], { url: controlPlane.url, dataDir });
    } finally {
      output.restore();
    }
    assert.match(output.printed(), /running on agent agent-0.*: slow\n/);
    assert.deepEqual(
      controlPlane.deadlines,
      [
        { call: "CreateSandbox default/slow", timeoutMs: undefined },
        { call: "PauseSandbox default/web", timeoutMs: undefined },
        { call: "ResumeSandbox default/web", timeoutMs: undefined },
        { call: "DeleteSandbox default/slow", timeoutMs: undefined },
      ],
      "no Connect-Timeout-Ms: the CLI waits as long as the control plane works",
    );
  });

  it("a Ctrl-C during a create ends the wait, exit 130, naming the sandbox it may still make and the request id", async () => {
    controlPlane = await startFakeControlPlane({ token: TOKEN, createDelayMs: 60_000 });
    const output = capture();
    let created: Promise<void>;
    try {
      created = run([], runOptions());
      await until(() => controlPlane.calls.includes("CreateSandbox default"), "the create was asked");
      process.emit("SIGINT", "SIGINT");
      await created;
    } finally {
      output.restore();
    }
    const exitCode = process.exitCode;
    process.exitCode = undefined;
    assert.equal(exitCode, 130);
    const [, requestId = ""] = /\(request id ([^)]+)\)/.exec(output.printed()) ?? [];
    const name = requestSandboxName("default", requestId);
    assert.match(output.printed(), new RegExp(`^error: interrupted while sandbox default/${name} was being created .*'fsb rm ${name}' deletes it$`, "m"));
    assert.equal(process.listenerCount("SIGINT"), 0, "no listener left to swallow the next Ctrl-C");
  });
});
