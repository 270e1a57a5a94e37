import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { ensureToken, files, readIfExists, resolveDataDir } from "./data-dir.js";

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
