import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { hashApiKey, newApiKey } from "./api-key.js";
import { MemoryApiKeyStore } from "./memory-api-key-store.js";
import { openSqliteApiKeyStore } from "./sqlite-api-key-store.js";

describe("the API key stores keep the hashes of issued keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-api-keys-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [name, open] of [
    ["SQLite", () => openSqliteApiKeyStore(":memory:")],
    ["memory", () => new MemoryApiKeyStore()],
  ] as const) {
    it(`${name}: knows a hash once added, and only that one; adding it again changes nothing`, async () => {
      const store = open();
      const hash = hashApiKey(newApiKey());
      assert.equal(await store.has(hash), false);
      await store.add(hash, new Date());
      await store.add(hash, new Date());
      assert.equal(await store.has(hash), true);
      assert.equal(await store.has(hashApiKey(newApiKey())), false);
      await store.close();
    });

    it(`${name}: removes a hash (the key revoked), and only that one; removing it again finds none`, async () => {
      const store = open();
      const revoked = hashApiKey(newApiKey());
      const kept = hashApiKey(newApiKey());
      await store.add(revoked, new Date());
      await store.add(kept, new Date());
      assert.equal(await store.remove(revoked), true);
      assert.equal(await store.has(revoked), false);
      assert.equal(await store.has(kept), true);
      assert.equal(await store.remove(revoked), false);
      assert.equal(await store.remove(hashApiKey(newApiKey())), false);
      await store.close();
    });
  }

  it("SQLite: the hashes outlive the process (the file is reopened), and the file holds no key", async () => {
    const path = join(dir, "keys.db");
    const key = newApiKey();
    const first = openSqliteApiKeyStore(path);
    await first.add(hashApiKey(key), new Date("2026-01-02T03:04:05Z"));
    await first.close();
    const second = openSqliteApiKeyStore(path);
    assert.equal(await second.has(hashApiKey(key)), true);
    await second.close();
    // A removal outlives the process too (and leaves the other row).
    const revoked = newApiKey();
    const third = openSqliteApiKeyStore(path);
    await third.add(hashApiKey(revoked), new Date());
    assert.equal(await third.remove(hashApiKey(revoked)), true);
    await third.close();
    const fourth = openSqliteApiKeyStore(path);
    assert.equal(await fourth.has(hashApiKey(revoked)), false);
    await fourth.close();
    const db = new Database(path, { readonly: true });
    const rows = db.prepare("SELECT hash, created_at FROM api_keys").all();
    db.close();
    assert.deepEqual(rows, [{ hash: hashApiKey(key), created_at: "2026-01-02T03:04:05.000Z" }]);
  });

  it("SQLite: refuses a file of a newer schema instead of guessing at it", () => {
    const path = join(dir, "newer.db");
    const db = new Database(path);
    db.pragma("user_version = 99");
    db.close();
    assert.throws(
      () => openSqliteApiKeyStore(path),
      (error: unknown) => error instanceof FailedPreconditionError && /schema version 99/.test(error.message),
    );
  });
});
