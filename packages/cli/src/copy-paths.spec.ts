import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { baseName, parseCopyArguments, parseSandboxPath } from "./copy-paths.js";

describe("fsb cp arguments", () => {
  it("read NAME:PATH as a sandbox path and anything else as local", () => {
    assert.deepEqual(parseSandboxPath("sb-1:/tmp/a.txt"), { sandbox: "sb-1", path: "/tmp/a.txt" });
    assert.deepEqual(parseSandboxPath("web.v2:relative/b"), { sandbox: "web.v2", path: "relative/b" });
    for (const local of ["./a:b", "/abs/a:b", "data.csv", "-", "C:/x" /* not a lower-case name */]) assert.equal(parseSandboxPath(local), undefined, local);
  });

  it("tell an upload from a download", () => {
    assert.deepEqual(parseCopyArguments("./data.csv", "sb-1:/tmp/"), { upload: true, local: "./data.csv", remote: { sandbox: "sb-1", path: "/tmp/" } });
    assert.deepEqual(parseCopyArguments("sb-1:/etc/hosts", "-"), { upload: false, remote: { sandbox: "sb-1", path: "/etc/hosts" }, local: "-" });
  });

  it("refuse two sandboxes, no sandbox and an empty path, saying what to write", () => {
    for (const [source, destination, message] of [
      ["a:/x", "b:/y", /both sides are in sandboxes/],
      ["a.txt", "b.txt", /neither "a.txt" nor "b.txt" is NAME:PATH/],
      ["./a", "sb-1:", /names no path; write NAME:PATH/],
      ["sb-1:/x", "", /the local path is empty/],
    ] as const) {
      assert.throws(
        () => parseCopyArguments(source, destination),
        (error: unknown) => error instanceof ValidationError && message.test(error.message),
      );
    }
  });

  it("name a file copied into a directory after its source", () => {
    assert.equal(baseName("/tmp/dir/file.txt"), "file.txt");
    assert.equal(baseName("dir/sub/"), "sub");
  });
});
