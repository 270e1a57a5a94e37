import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api/core";
import { TOKEN_FILE_REFRESH_MS, TokenFile } from "./token-file.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-token-file-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("TokenFile", () => {
  it("reads the token (trimmed) when made, and again once a refresh period has passed, as the file is renewed", () => {
    const path = join(dir, "renewed");
    writeFileSync(path, "first-token\n");
    let now = 1_000;
    const file = new TokenFile(path, "tokenFile", () => now);
    writeFileSync(path, "second-token\n");
    now += TOKEN_FILE_REFRESH_MS - 1;
    assert.equal(file.current(), "first-token");
    now += 1;
    assert.equal(file.current(), "second-token");
  });

  it("keeps the token read before while the file cannot be read (being rewritten), and reads it again a period later", () => {
    const path = join(dir, "flaky");
    writeFileSync(path, "kept-token");
    let now = 0;
    const file = new TokenFile(path, "tokenFile", () => now);
    rmSync(path);
    now += TOKEN_FILE_REFRESH_MS;
    assert.equal(file.current(), "kept-token");
    writeFileSync(path, "new-token");
    assert.equal(file.current(), "kept-token", "not read again before a period");
    now += TOKEN_FILE_REFRESH_MS;
    assert.equal(file.current(), "new-token");
  });

  it("keeps its file whatever the working directory becomes, and reads again when the clock went back", () => {
    const path = join(dir, "relative");
    writeFileSync(path, "one");
    const cwd = process.cwd();
    let now = 10 * TOKEN_FILE_REFRESH_MS;
    let file: TokenFile;
    try {
      process.chdir(dir);
      file = new TokenFile("relative", "tokenFile", () => now);
    } finally {
      process.chdir(cwd);
    }
    assert.equal(file.path, path);
    writeFileSync(path, "two");
    now -= 1_000;
    assert.equal(file.current(), "two");
  });

  it("refuses a file that cannot be read or is empty at once, naming the setting and the path", () => {
    assert.throws(
      () => new TokenFile(join(dir, "missing"), "FSB_TOKEN_FILE"),
      (error: unknown) => error instanceof ValidationError && error.field === "FSB_TOKEN_FILE" && /missing cannot be read: ENOENT/.test(error.message),
    );
    writeFileSync(join(dir, "empty"), " \n");
    assert.throws(
      () => new TokenFile(join(dir, "empty"), "tokenFile"),
      (error: unknown) => error instanceof ValidationError && error.field === "tokenFile" && /empty is empty: it should hold the API token/.test(error.message),
    );
  });
});
