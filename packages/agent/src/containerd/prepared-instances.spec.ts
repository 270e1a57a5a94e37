import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { encodeClaim, networkKey, templateKey, writeClaim, type PreparedTemplate } from "./prepared-instances.js";

const TEMPLATE: PreparedTemplate = {
  namespace: "default",
  pool: "python",
  image: "python:3.12",
  runtimeType: "container",
  resources: { cpuMillis: 500, memoryBytes: 256 << 20 },
  network: { mode: "isolated", egress: { kind: "allowAll" } },
};

describe("what a create must match to claim an instance made ahead", () => {
  it("the same template, written differently, has the same key", () => {
    assert.equal(templateKey(TEMPLATE), templateKey({ ...TEMPLATE, image: "docker.io/library/python:3.12", network: { mode: "isolated" } }));
  });

  it("image, runtime, resources and pool each tell templates apart", () => {
    for (const other of [
      { ...TEMPLATE, image: "python:3.13" },
      { ...TEMPLATE, runtimeType: "gvisor" as const },
      { ...TEMPLATE, resources: { cpuMillis: 1000, memoryBytes: 256 << 20 } },
      { ...TEMPLATE, resources: { ...TEMPLATE.resources, ephemeralStorageBytes: 1 << 30 } },
      { ...TEMPLATE, pool: "other" },
      { ...TEMPLATE, namespace: "team-b" },
    ]) {
      assert.notEqual(templateKey(other), templateKey(TEMPLATE), JSON.stringify(other));
    }
  });

  it("an isolated sandbox's egress policy and sandbox-to-sandbox rule are part of its network's key", () => {
    const pool = networkKey({ mode: "isolated", egress: { kind: "allowAll" } });
    assert.equal(networkKey({ mode: "isolated" }), pool, "allowAll is the default policy");
    assert.equal(networkKey({ mode: "isolated", egress: { kind: "allowAll", allow: [] } }), pool, "no rules is no rules");
    const list = (cidr: string) => networkKey({ mode: "isolated", egress: { kind: "allowList", allow: [{ cidr, ports: [443] }] } });
    assert.notEqual(list("10.0.0.0/8"), list("10.0.0.0/16"));
    assert.notEqual(networkKey({ mode: "isolated", egress: { kind: "denyAll" } }), pool);
    assert.notEqual(networkKey({ mode: "isolated", egress: { kind: "allowAll" }, allowSandboxToSandbox: true }), pool);
    assert.notEqual(networkKey({ mode: "shared" }), pool);
    assert.notEqual(templateKey({ ...TEMPLATE, network: { mode: "isolated", egress: { kind: "denyAll" } } }), templateKey(TEMPLATE));
  });

  it("a shared network has no policy of its own: no network spec is a shared one", () => {
    assert.equal(networkKey(undefined), networkKey({ mode: "shared" }));
  });
});

/**
 * The helper's end of a claim FIFO, in a thread of its own: it opens the FIFO for reading at once
 * and drains it when told to — or, should the test's thread never get to say so (its event loop
 * held by the write), on its own a while later, so that the test fails instead of hanging.
 */
const HELPER_END = `
const { parentPort, workerData } = require("node:worker_threads");
const { openSync, constants } = require("node:fs");
const { Socket } = require("node:net");
const fd = openSync(workerData.fifo, constants.O_RDONLY | constants.O_NONBLOCK);
let draining = false;
const drain = (whenTold) => {
  if (draining) return;
  draining = true;
  const chunks = [];
  const reader = new Socket({ fd, readable: true, writable: false });
  reader.on("data", (chunk) => chunks.push(chunk));
  reader.on("end", () => parentPort.postMessage({ whenTold, claim: Buffer.concat(chunks) }));
};
const unprompted = setTimeout(() => drain(false), 10000);
parentPort.once("message", () => (clearTimeout(unprompted), drain(true)));
parentPort.postMessage("open");
`;

describe("writing a claim into the instance's FIFO", () => {
  const directory = mkdtempSync(join(tmpdir(), "fsb-claim-"));
  after(() => rmSync(directory, { recursive: true, force: true }));

  it("a claim bigger than the pipe lets the event loop run while the helper drains it, and arrives whole", async () => {
    const fifo = join(directory, "claim");
    execFileSync("mkfifo", [fifo]);
    const env = ["A", "B", "C", "D"].map((name) => `${name}=${name.repeat(50 << 10)}`);
    const claim = encodeClaim({ workingDir: "/", args: ["sh", "-c", "env"], env });
    assert.ok(claim.length > 64 << 10, "bigger than a pipe's default capacity");
    const helper = new Worker(HELPER_END, { eval: true, workerData: { fifo } });
    try {
      assert.equal((await once(helper, "message"))[0], "open");
      const writing = writeClaim(fifo, claim);
      // A write that held the loop until the pipe was drained comes back only after the helper drained it unprompted.
      await new Promise((resolve) => setImmediate(resolve));
      helper.postMessage("drain");
      const [{ whenTold, claim: received }] = (await once(helper, "message")) as [{ whenTold: boolean; claim: Uint8Array }];
      assert.equal(await writing, true);
      assert.equal(whenTold, true, "the event loop ran while the claim waited for room in the pipe");
      assert.ok(Buffer.from(received).equals(claim), "the helper read the whole claim");
    } finally {
      await helper.terminate();
    }
  });

  it("a helper that stops reading leaves a claim that is no instance after the deadline, and the FIFO's write end closed", async () => {
    const fifo = join(directory, "stalled");
    execFileSync("mkfifo", [fifo]);
    // The helper's end: open (so the write does not fail with ENXIO) but never read until the deadline passed.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const claim = encodeClaim({ workingDir: "/", args: ["env"], env: [`BIG=${"x".repeat(200 << 10)}`] });
      assert.equal(await writeClaim(fifo, claim, 100), false, "a claim cut short is no instance");
      // Drain what reached the pipe: with the write end closed the reader then sees end-of-file, not
      // EAGAIN (a writer still holding the FIFO open).
      const buffer = Buffer.alloc(64 << 10);
      let received = 0;
      for (;;) {
        const n = readSync(reader, buffer);
        if (n === 0) break;
        received += n;
      }
      assert.ok(received > 0 && received < claim.length, `a part of the claim arrived (${received} of ${claim.length} bytes)`);
    } finally {
      closeSync(reader);
    }
  });

  it("a helper that dies while the claim is written (EPIPE) leaves no instance, not an error", async () => {
    const fifo = join(directory, "dying");
    execFileSync("mkfifo", [fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const claim = encodeClaim({ workingDir: "/", args: ["env"], env: [`BIG=${"x".repeat(200 << 10)}`] });
    // The first 64 KiB fill the pipe at once; the rest waits for room, and the reader goes meanwhile.
    const writing = writeClaim(fifo, claim, 5_000);
    closeSync(reader);
    assert.equal(await writing, false);
  });

  it("no helper on the other end (the instance died or was claimed) is no instance", async () => {
    const fifo = join(directory, "unread");
    execFileSync("mkfifo", [fifo]);
    assert.equal(await writeClaim(fifo, encodeClaim({ workingDir: "/", args: ["true"], env: [] })), false);
    assert.equal(await writeClaim(join(directory, "missing"), encodeClaim({ workingDir: "/", args: ["true"], env: [] })), false);
  });

  it("a link or a regular file where the FIFO was (the run directory is the sandbox's) is no instance, and is not written through", async () => {
    const target = join(directory, "agent-file");
    writeFileSync(target, "the agent's own\n");
    symlinkSync(target, join(directory, "linked"));
    assert.equal(await writeClaim(join(directory, "linked"), encodeClaim({ workingDir: "/", args: ["true"], env: [] })), false);
    assert.equal(await writeClaim(target, encodeClaim({ workingDir: "/", args: ["true"], env: [] })), false);
    assert.equal(readFileSync(target, "utf8"), "the agent's own\n");
  });
});
