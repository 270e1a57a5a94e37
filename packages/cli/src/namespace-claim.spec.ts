import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { files, writeSettings } from "./data-dir.js";
import { identity } from "./spec-processes.fixture.js";
import { claimCgroupRoot, claimContainerdNamespace, releaseCgroupRoot, releaseContainerdNamespace } from "./namespace-claim.js";

const root = mkdtempSync(join(tmpdir(), "fsb-namespace-claim-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A data directory whose `fsb up` ran in `namespace`, under `cgroupRoot`. */
function dataDir(name: string, namespace?: string, cgroupRoot = "fsb"): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  if (namespace) writeSettings(dir, { containerdNamespace: namespace, containerdSocket: "/run/containerd/containerd.sock", cgroupRoot });
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
    for (const name of ["../etc", "a/b", "", ".hidden", "a..b", "trailing-"]) {
      assert.throws(() => claimContainerdNamespace(name, dataDir("v"), claims), ValidationError, name);
    }
    writeFileSync(join(claims, "keep"), "x");
    assert.deepEqual(readFileSync(join(claims, "keep"), "utf8"), "x");
  });

  it("creates the claims directory's missing parents 0700: by default the parent is root's default data directory", () => {
    // As root's defaults: <parent>/fast-sandbox/containerd-namespaces, claimed for another data directory before the default one's `fsb up` ran.
    const parent = mkdtempSync(join(root, "defaults-"));
    const defaultDataDir = join(parent, "var", "fast-sandbox");
    const claims = join(defaultDataDir, "containerd-namespaces");
    claimContainerdNamespace("ns-a", dataDir("elsewhere", "ns-a"), claims);
    assert.equal(readFileSync(join(claims, "ns-a"), "utf8").trim(), join(root, "elsewhere"));
    assert.equal(statSync(defaultDataDir).mode & 0o777, 0o700);
    assert.equal(statSync(join(parent, "var")).mode & 0o777, 0o700);
  });
});

describe("claimCgroupRoot", () => {
  const claimOf = (claims: string, cgroupRoot: string): string => readFileSync(join(claims, `cgroup-root:${cgroupRoot}`), "utf8").trim();

  it("gives a cgroup root to the first data directory, again to it, and refuses another while the first runs under it", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    // Two namespaces, one cgroup root: the agents of both would be /fast-sandbox/default-0.
    const a = dataDir("cg-a", "fast-sandbox", "fast-sandbox");
    const b = dataDir("cg-b", "team-b", "fast-sandbox");
    claimCgroupRoot("fast-sandbox", a, claims);
    assert.equal(claimOf(claims, "fast-sandbox"), a);
    claimCgroupRoot("fast-sandbox", a, claims);
    // Spelt with slashes, it is the same cgroup.
    for (const spelling of ["fast-sandbox", "/fast-sandbox/", "fast-sandbox//"]) {
      assert.throws(
        () => claimCgroupRoot(spelling, b, claims),
        (error: unknown) =>
          error instanceof FsbError &&
          error.code === "failed_precondition" &&
          error.message.startsWith(`cgroup root /fast-sandbox belongs to the Fast Sandbox of data directory ${a}: `) &&
          error.message.includes("Give this one its own (--cgroup-root NAME or FSB_CGROUP_ROOT)") &&
          error.message.includes(
            `start it with 'fsb up --detach --data-dir ${a} --containerd-namespace fast-sandbox', then 'fsb down --delete-sandboxes --data-dir ${a}'`,
          ),
        spelling,
      );
    }
    assert.equal(claimOf(claims, "fast-sandbox"), a);
    // Another cgroup root is free, also one named like a namespace another data directory claimed: the kinds do not meet.
    claimContainerdNamespace("team-b", a, claims);
    claimCgroupRoot("team-b", b, claims);
    claimCgroupRoot("fsb/team-b", b, claims);
    assert.deepEqual([readFileSync(join(claims, "team-b"), "utf8").trim(), claimOf(claims, "team-b"), claimOf(claims, "fsb%2Fteam-b")], [a, b, b]);
  });

  it("takes over a claim whose owner no longer runs under it: its data directory removed, or run under another cgroup root or none", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const gone = dataDir("cg-gone", "ns-gone", "shared");
    const next = dataDir("cg-next", "ns-next", "shared");
    claimCgroupRoot("shared", gone, claims);
    rmSync(gone, { recursive: true });
    claimCgroupRoot("shared", next, claims);
    assert.equal(claimOf(claims, "shared"), next);

    for (const [name, later] of [
      ["cg-moved", "elsewhere"],
      ["cg-off", ""],
    ] as const) {
      const claims = mkdtempSync(join(root, "claims-"));
      const moved = dataDir(name, `ns-${name}`, "other");
      claimCgroupRoot("other", moved, claims);
      writeSettings(moved, { containerdNamespace: `ns-${name}`, containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: later });
      claimCgroupRoot("other", next, claims);
      assert.equal(claimOf(claims, "other"), next);
    }
  });

  it("claims nothing for no cgroup root: instances without one share nothing", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    claimCgroupRoot("", dataDir("cg-none-a", "ns-a", ""), claims);
    claimCgroupRoot("", dataDir("cg-none-b", "ns-b", ""), claims);
    assert.deepEqual(readdirSync(claims), []);
  });

  it("is released by its owner only, and with its namespace when 'fsb down --delete-sandboxes' releases that", () => {
    const claims = mkdtempSync(join(root, "claims-"));
    const a = dataDir("cg-ra", "ns-ra", "/team/");
    const b = dataDir("cg-rb", "ns-rb", "team");
    claimContainerdNamespace("ns-ra", a, claims);
    claimCgroupRoot("/team/", a, claims);
    releaseCgroupRoot("team", b, claims);
    releaseContainerdNamespace("ns-ra", b, claims);
    assert.deepEqual(readdirSync(claims).sort(), ["cgroup-root:team", "ns-ra"]);
    releaseContainerdNamespace("ns-ra", a, claims);
    assert.deepEqual(readdirSync(claims), []);
    claimCgroupRoot("team", b, claims);
    releaseCgroupRoot("team", b, claims);
    assert.deepEqual(readdirSync(claims), []);
  });
});
