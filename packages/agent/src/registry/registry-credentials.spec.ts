import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { findCredentials, loadRegistryCredentials } from "./registry-credentials.js";

const auth = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");

describe("findCredentials", () => {
  it("decodes the base64 auth of the registry's entry", () => {
    const config = { auths: { "127.0.0.1:5000": { auth: auth("alice", "s3cret:with:colons") }, "ghcr.io": { auth: auth("bob", "x") } } };
    assert.deepEqual(findCredentials(config, "127.0.0.1:5000"), { username: "alice", password: "s3cret:with:colons" });
    assert.deepEqual(findCredentials(config, "ghcr.io"), { username: "bob", password: "x" });
  });

  it("finds Docker Hub under any of the keys Docker writes for it", () => {
    for (const key of ["https://index.docker.io/v1/", "docker.io", "index.docker.io", "registry-1.docker.io"]) {
      assert.deepEqual(findCredentials({ auths: { [key]: { auth: auth("u", "p") } } }, "docker.io"), { username: "u", password: "p" }, key);
    }
  });

  it("matches keys written as URLs and ignores other ports and hosts", () => {
    const config = { auths: { "http://127.0.0.1:5000/": { auth: auth("u", "p") } } };
    assert.deepEqual(findCredentials(config, "127.0.0.1:5000"), { username: "u", password: "p" });
    assert.equal(findCredentials(config, "127.0.0.1:5001"), undefined);
    assert.equal(findCredentials(config, "127.0.0.1"), undefined);
  });

  it("accepts username and password fields", () => {
    assert.deepEqual(findCredentials({ auths: { "r.io": { username: "u", password: "p" } } }, "r.io"), { username: "u", password: "p" });
  });

  it("returns nothing for a config without auths or without the registry", () => {
    assert.equal(findCredentials({}, "r.io"), undefined);
    assert.equal(findCredentials({ auths: {} }, "r.io"), undefined);
    assert.equal(findCredentials({ auths: { "r.io": {} } }, "r.io"), undefined);
  });

  it("refuses an auth that is not user:password, naming the entry", () => {
    assert.throws(
      () => findCredentials({ auths: { "r.io": { auth: Buffer.from("nocolon").toString("base64") } } }, "r.io", "/x/config.json"),
      (error: unknown) =>
        error instanceof FailedPreconditionError && /\/x\/config\.json: auths\["r\.io"\]\.auth is not base64 of "user:password"/.test(error.message),
    );
    assert.throws(() => findCredentials([], "r.io"), FailedPreconditionError);
    assert.throws(() => findCredentials({ auths: "x" }, "r.io"), /"auths" is not an object/);
  });
});

describe("loadRegistryCredentials", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-registry-credentials-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("reads the file at every call", async () => {
    const path = join(dir, "config.json");
    writeFileSync(path, JSON.stringify({ auths: { "r.io": { auth: auth("u", "one") } } }));
    assert.deepEqual(await loadRegistryCredentials(path, "r.io"), { username: "u", password: "one" });
    writeFileSync(path, JSON.stringify({ auths: { "r.io": { auth: auth("u", "two") } } }));
    assert.deepEqual(await loadRegistryCredentials(path, "r.io"), { username: "u", password: "two" });
  });

  it("means anonymous when no file is configured or it does not exist", async () => {
    assert.equal(await loadRegistryCredentials(undefined, "r.io"), undefined);
    assert.equal(await loadRegistryCredentials(join(dir, "missing.json"), "r.io"), undefined);
  });

  it("names a malformed file", async () => {
    const path = join(dir, "broken.json");
    writeFileSync(path, "{ not json");
    await assert.rejects(loadRegistryCredentials(path, "r.io"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.match(error.message, /broken\.json is not valid JSON.*run 'fsb login' again/);
      return true;
    });
  });

  it("never quotes the file's text when it is malformed: a password beside the fault would be in every pull's error", async () => {
    const path = join(dir, "unquoted.json");
    writeFileSync(path, '{"auths":{"ghcr.io":{"username":"robot","password":hunter2pw}}}');
    await assert.rejects(loadRegistryCredentials(path, "ghcr.io"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.doesNotMatch(error.message, /hunter2/);
      return true;
    });
  });
});
