import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/sdk";
import { cgroupRootFor, embeddedSettingsFor, ensureToken, files, readIfExists, resolveDataDir, upCommandFor, writeSettings } from "./data-dir.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-data-dir-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

describe("ensureToken", () => {
  it("creates a long random token in a mode 0600 file inside a new directory", () => {
    const dataDir = join(directory, "new", "nested");
    const token = ensureToken(dataDir);
    assert.match(token, /^[A-Za-z0-9_-]{40,}$/);
    assert.equal(statSync(files.token(dataDir)).mode & 0o777, 0o600);
    assert.equal(readFileSync(files.token(dataDir), "utf8").trim(), token);
  });

  it("reuses the existing token and tightens its mode back to 0600", () => {
    const dataDir = join(directory, "reuse");
    const first = ensureToken(dataDir);
    // Recreate the file world-readable (writing an existing file would keep its mode).
    rmSync(files.token(dataDir));
    writeFileSync(files.token(dataDir), `${first}\n`, { mode: 0o644 });
    assert.equal(statSync(files.token(dataDir)).mode & 0o777, 0o644);
    assert.equal(ensureToken(dataDir), first);
    assert.equal(statSync(files.token(dataDir)).mode & 0o777, 0o600);
  });

  it("gives different data directories different tokens", () => {
    assert.notEqual(ensureToken(join(directory, "one")), ensureToken(join(directory, "two")));
  });
});

describe("readIfExists", () => {
  it("returns the trimmed contents, or undefined for a missing file", () => {
    const path = join(directory, "url");
    writeFileSync(path, "http://127.0.0.1:7070\n");
    assert.equal(readIfExists(path), "http://127.0.0.1:7070");
    assert.equal(readIfExists(join(directory, "missing")), undefined);
  });
});

describe("resolveDataDir", () => {
  const saved = {
    FSB_DATA_DIR: process.env.FSB_DATA_DIR,
    XDG_DATA_HOME: process.env.XDG_DATA_HOME,
  };
  beforeEach(() => {
    delete process.env.FSB_DATA_DIR;
    delete process.env.XDG_DATA_HOME;
  });
  afterEach(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it("prefers the --data-dir flag over FSB_DATA_DIR", () => {
    process.env.FSB_DATA_DIR = "/from/env";
    assert.equal(resolveDataDir("/from/flag"), "/from/flag");
  });

  it("uses FSB_DATA_DIR without a flag", () => {
    process.env.FSB_DATA_DIR = "/from/env";
    process.env.XDG_DATA_HOME = "/xdg";
    assert.equal(resolveDataDir(), "/from/env");
    assert.equal(resolveDataDir(""), "/from/env");
  });

  it("falls back to /var/lib/fast-sandbox for root and the XDG data home for others", () => {
    process.env.XDG_DATA_HOME = "/xdg";
    if (process.getuid?.() === 0) {
      assert.equal(resolveDataDir(), "/var/lib/fast-sandbox");
    } else {
      assert.equal(resolveDataDir(), "/xdg/fast-sandbox");
      delete process.env.XDG_DATA_HOME;
      assert.equal(resolveDataDir(), join(homedir(), ".local", "share", "fast-sandbox"));
    }
  });
});

describe("cgroupRootFor", () => {
  it("names the cgroup root after the containerd namespace when none is given: fast-sandbox for the default namespace", () => {
    assert.equal(cgroupRootFor("fast-sandbox", undefined), "fast-sandbox");
    assert.equal(cgroupRootFor("team-b", undefined), "team-b");
    assert.equal(cgroupRootFor("fsb_2", undefined), "fsb_2");
  });

  it("takes the one given as it is, also in another namespace, and '' for none", () => {
    assert.equal(cgroupRootFor("team-b", "fast-sandbox"), "fast-sandbox");
    assert.equal(cgroupRootFor("fast-sandbox", "fsb/team"), "fsb/team");
    assert.equal(cgroupRootFor("team-b", ""), "");
    // A namespace that makes no cgroup root of its own runs under the one given.
    assert.equal(cgroupRootFor("k8s.io", "k8s-io"), "k8s-io");
  });

  it("refuses to name one after a namespace that could name a cgroup's own file or a systemd unit, asking for --cgroup-root", () => {
    for (const namespace of ["k8s.io", "cgroup.procs", "memory.max", "system.slice", "tasks", "release_agent"]) {
      assert.throws(
        () => cgroupRootFor(namespace, undefined),
        (error: unknown) =>
          error instanceof ValidationError && error.field === "--cgroup-root" && /--cgroup-root NAME \(or FSB_CGROUP_ROOT\)/.test(error.message),
        namespace,
      );
    }
  });

  it("refuses a namespace containerd would not take, whatever the cgroup root", () => {
    for (const namespace of ["", "../etc", "a/b", ".hidden", "a..b", "trailing-", "x".repeat(77)]) {
      for (const given of [undefined, "fsb"]) {
        assert.throws(
          () => cgroupRootFor(namespace, given),
          (error: unknown) => error instanceof ValidationError && error.field === "--containerd-namespace",
          namespace,
        );
      }
    }
    assert.equal(cgroupRootFor("x".repeat(76), undefined), "x".repeat(76));
  });
});

describe("embeddedSettingsFor (where an fsb up of a data directory runs)", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
  const dataDir = (settings?: { containerdNamespace: string; containerdSocket: string; cgroupRoot: string }) => {
    const dir = mkdtempSync(join(tmpdir(), "fsb-settings-"));
    dirs.push(dir);
    if (settings) writeSettings(dir, settings);
    return dir;
  };

  it("runs where the data directory's last fsb up ran when nothing is given, so it adopts the sandboxes it left", () => {
    const warnings: string[] = [];
    const ran = dataDir({ containerdNamespace: "team-a", containerdSocket: "/run/other.sock", cgroupRoot: "custom-root" });
    assert.deepEqual(
      embeddedSettingsFor({}, ran, (line) => warnings.push(line)),
      {
        containerdNamespace: "team-a",
        containerdSocket: "/run/other.sock",
        cgroupRoot: "custom-root",
      },
    );
    assert.deepEqual(warnings, []);
    // The defaults for a data directory no fsb up ran in.
    assert.deepEqual(embeddedSettingsFor({}, dataDir()), {
      containerdNamespace: "fast-sandbox",
      containerdSocket: "/run/containerd/containerd.sock",
      cgroupRoot: "fast-sandbox",
    });
  });

  it("takes what is given over the last run's, and says when the namespace moves (its sandboxes there are not adopted)", () => {
    const warnings: string[] = [];
    const ran = dataDir({ containerdNamespace: "team-a", containerdSocket: "/run/other.sock", cgroupRoot: "custom-root" });
    assert.deepEqual(
      embeddedSettingsFor({ containerdNamespace: "team-b" }, ran, (line) => warnings.push(line)),
      {
        containerdNamespace: "team-b",
        containerdSocket: "/run/other.sock",
        // Another namespace's cgroup root is not this one's: the default, named after it.
        cgroupRoot: "team-b",
      },
    );
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? "", /last ran in containerd namespace team-a, now in team-b: sandboxes left running in team-a are not adopted/);
    assert.equal(embeddedSettingsFor({ containerdNamespace: "team-a", cgroupRoot: "" }, ran).cgroupRoot, "", "an empty cgroup root given is none");
  });
});

describe("upCommandFor", () => {
  const socket = "/run/containerd/containerd.sock";

  it("names the cgroup root only when a plain 'fsb up' in that namespace would choose another: it follows the namespace", () => {
    const dir = mkdtempSync(join(directory, "up-command-"));
    const command = (containerdNamespace: string, cgroupRoot: string): string => {
      writeSettings(dir, { containerdNamespace, containerdSocket: socket, cgroupRoot });
      return upCommandFor(dir);
    };
    assert.equal(command("fast-sandbox", "fast-sandbox"), `fsb up --detach --data-dir ${dir} --containerd-namespace fast-sandbox`);
    assert.equal(command("team-b", "team-b"), `fsb up --detach --data-dir ${dir} --containerd-namespace team-b`);
    // Run in another namespace under the default one's cgroup root (given, or from before the root followed the namespace).
    assert.equal(command("team-b", "fast-sandbox"), `fsb up --detach --data-dir ${dir} --containerd-namespace team-b --cgroup-root fast-sandbox`);
    assert.equal(command("fast-sandbox", "team-b"), `fsb up --detach --data-dir ${dir} --containerd-namespace fast-sandbox --cgroup-root team-b`);
    assert.equal(command("team-b", ""), `fsb up --detach --data-dir ${dir} --containerd-namespace team-b --cgroup-root ''`);
    // A namespace that makes no cgroup root of its own: the one it ran under is always named.
    assert.equal(command("k8s.io", "k8s.io"), `fsb up --detach --data-dir ${dir} --containerd-namespace k8s.io --cgroup-root k8s.io`);
  });
});
