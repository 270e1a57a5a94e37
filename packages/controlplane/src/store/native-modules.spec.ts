/**
 * Native dependencies load and work on this Node.js. A wrong native build (better-sqlite3 13 on
 * Node 20) installs fine and then segfaults, so the probe runs in a child process: a crash fails
 * this test with a readable message instead of killing the test runner.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { test } from "node:test";

const require = createRequire(import.meta.url);

test("better-sqlite3 loads and runs a query in a separate process", () => {
  const probe = `
    const Database = require(${JSON.stringify(require.resolve("better-sqlite3"))});
    const db = new Database(":memory:");
    db.exec("CREATE TABLE t (n INTEGER)");
    db.prepare("INSERT INTO t VALUES (?)").run(41);
    const row = db.prepare("SELECT n + 1 AS n, sqlite_version() AS version FROM t").get();
    db.close();
    process.stdout.write(JSON.stringify(row));
  `;
  const result = spawnSync(process.execPath, ["-e", probe], { encoding: "utf8", timeout: 30_000 });
  assert.equal(
    result.signal,
    null,
    `loading better-sqlite3 killed Node ${process.version} with ${String(result.signal)}: its native build does not fit this Node (see docs/stack.md)`,
  );
  assert.equal(result.status, 0, `loading better-sqlite3 failed:\n${result.stderr}`);
  const row = JSON.parse(result.stdout) as { n: number; version: string };
  assert.equal(row.n, 42);
  assert.match(row.version, /^3\.\d+\.\d+$/);
});

test("better-sqlite3 works in this process with WAL on a file", async () => {
  const { default: Database } = await import("better-sqlite3");
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const directory = mkdtempSync(join(tmpdir(), "fsb-native-"));
  try {
    const db = new Database(join(directory, "probe.db"));
    assert.equal(db.pragma("journal_mode = WAL", { simple: true }), "wal");
    assert.deepEqual(db.prepare("SELECT 1 + 1 AS two").get(), { two: 2 });
    db.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
