import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { files, writeSettings } from "./data-dir.js";
import { identity } from "./spec-processes.fixture.js";
import { claimContainerdNamespace, releaseContainerdNamespace } from "./namespace-claim.js";

const root = mkdtempSync(join(tmpdir(), "fsb-namespace-claim-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A data directory whose `fsb up` ran in `namespace`. */
function dataDir(name: string, namespace?: string): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  if (namespace) writeSettings(dir, { containerdNamespace: namespace, containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "fsb" });
  return dir;
}

describe("claimContainerdNamespace", () => {
  it("gives a namespace to the first data directory, again to it, and refuses another while the first uses it", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const a = dataDir("a", "fast-sandbox");
    const b = dataDir("b");
    claimContainerdNamespace("fast-sandbox", a, claims);
    assert.equal(readFileSync(join(claims, "fast-sandbox"), "utf8").trim(), a);
    claimContainerdNamespace("fast-sandbox", a, claims);
    assert.throws(
      () => claimContainerdNamespace("fast-sandbox", b, claims),
      (error: unknown) =>
        error instanceof FsbError &&
        error.code === "failed_precondition" &&
        error.message.includes(`belongs to the Fast Sandbox of data directory ${a}`) &&
        error.message.includes("--containerd-namespace"),
    );
    // Another namespace is free.
    claimContainerdNamespace("fsb-b", b, claims);
    assert.deepEqual([readFileSync(join(claims, "fast-sandbox"), "utf8").trim(), readFileSync(join(claims, "fsb-b"), "utf8").trim()], [a, b]);
  });

  it("says how to remove the owner: 'fsb down --delete-sandboxes' while its fsb up runs, else start it in its namespace first", async () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const owner = dataDir("owner", "team-ns");
    claimContainerdNamespace("team-ns", owner, claims);
    const refusal = (): string => {
      try {
        claimContainerdNamespace("team-ns", dataDir("other"), claims);
      } catch (error) {
        assert.ok(error instanceof FsbError && error.code === "failed_precondition");
        return error.message;
      }
      return assert.fail("refused");
    };
    assert.match(
      refusal(),
      new RegExp(
        `remove that one and its sandboxes first \\(its 'fsb up' does not run: start it with 'fsb up --detach --data-dir ${owner} --containerd-namespace team-ns --cgroup-root fsb', ` +
          `then 'fsb down --delete-sandboxes --data-dir ${owner}'\\)$`,
      ),
    );
    // A process that runs `fsb up` for it holds its lock.
    const script = join(owner, "fsb.js");
    writeFileSync(script, 'console.log("ready"); setInterval(() => {}, 1000)');
    const fsbUp = spawn(process.execPath, [script, "--data-dir", owner, "up"], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await once(createInterface({ input: fsbUp.stdout }), "line");
      writeFileSync(files.lock(owner), `${JSON.stringify(identity(fsbUp.pid ?? 0))}\n`);
      assert.match(refusal(), new RegExp(`remove that one and its sandboxes first \\('fsb down --delete-sandboxes --data-dir ${owner}'\\)$`));
    } finally {
      fsbUp.kill("SIGKILL");
    }
  });

  it("takes over a claim whose owner no longer uses the namespace: its data directory removed, or run in another namespace", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const gone = dataDir("gone", "shared");
    const moved = dataDir("moved", "shared");
    const next = dataDir("next");
    claimContainerdNamespace("shared", gone, claims);
    rmSync(gone, { recursive: true });
    claimContainerdNamespace("shared", next, claims);
    assert.equal(readFileSync(join(claims, "shared"), "utf8").trim(), next);

    claimContainerdNamespace("other", moved, claims);
    writeSettings(moved, { containerdNamespace: "elsewhere", containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "fsb" });
    claimContainerdNamespace("other", next, claims);
    assert.equal(readFileSync(join(claims, "other"), "utf8").trim(), next);
  });

  it("is released by its owner only", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const a = dataDir("ra", "ns");
    const b = dataDir("rb", "ns");
    claimContainerdNamespace("ns", a, claims);
    releaseContainerdNamespace("ns", b, claims);
    assert.ok(existsSync(join(claims, "ns")));
    releaseContainerdNamespace("ns", a, claims);
    assert.ok(!existsSync(join(claims, "ns")));
    claimContainerdNamespace("ns", b, claims);
    assert.equal(readFileSync(join(claims, "ns"), "utf8").trim(), b);
  });

  it("refuses a name containerd would not take, before writing anything", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    for (const name of ["../etc", "a/b", "", ".hidden"]) {
      assert.throws(() => claimContainerdNamespace(name, dataDir("v"), claims), ValidationError, name);
    }
    writeFileSync(join(claims, "keep"), "x");
    assert.deepEqual(readFileSync(join(claims, "keep"), "utf8"), "x");
  });
});
