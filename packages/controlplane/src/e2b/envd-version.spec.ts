import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { ENVD_VERSION_FILE, readEnvdVersion } from "./envd-version.js";

describe("the envdVersion the E2B API reports", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-envd-version-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("is the in-sandbox daemon's own, from packages/envd/version.json", () => {
    assert.match(ENVD_VERSION_FILE, /packages\/envd\/version\.json$/);
    const { envdVersion } = JSON.parse(readFileSync(ENVD_VERSION_FILE, "utf8")) as { envdVersion: string };
    assert.equal(readEnvdVersion(), envdVersion);
    assert.match(readEnvdVersion(), /^\d+\.\d+\.\d+$/, "E2B's SDKs compare it as a version");
  });

  it("is refused when the file is missing or holds no x.y.z, naming the file", () => {
    const bad = join(dir, "version.json");
    writeFileSync(bad, '{"envdVersion": "latest"}');
    assert.throws(
      () => readEnvdVersion(bad),
      (error: unknown) => error instanceof FailedPreconditionError && error.message.includes(bad),
    );
    assert.throws(
      () => readEnvdVersion(join(dir, "missing.json")),
      (error: unknown) => error instanceof FailedPreconditionError && /cannot read/.test(error.message),
    );
  });
});
