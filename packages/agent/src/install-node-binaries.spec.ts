import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { DEFAULT_HELPER_PATH } from "./agent-config.js";
import { findOnPath, installNodeBinaries, nodeBinariesFromEnv, runInstallNodeBinaries } from "./install-node-binaries.js";

const root = mkdtempSync(join(tmpdir(), "fsb-install-node-binaries-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

function freshDir(name: string): string {
  const dir = join(root, `${name}-${++dirs}`);
  mkdirSync(dir);
  return dir;
}

function executable(dir: string, name: string, content: string): string {
  const file = join(dir, name);
  writeFileSync(file, content);
  chmodSync(file, 0o700);
  return file;
}

/** A helper, a runsc on a PATH dir, an empty target dir. */
function fixture(): { helper: string; runsc: string; bin: string; target: string } {
  const sources = freshDir("sources");
  const bin = freshDir("path");
  return {
    helper: executable(sources, "my-helper", "#!/bin/sh\necho helper\n"),
    runsc: executable(bin, "runsc", "#!/bin/sh\necho runsc\n"),
    bin,
    target: freshDir("target"),
  };
}

function run(args: string[], env: NodeJS.ProcessEnv): { code: number; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const code = runInstallNodeBinaries(
    args,
    env,
    (line) => out.push(line),
    (line) => err.push(line),
  );
  return { code, out, err };
}

describe("install-node-binaries", () => {
  it("copies the helper and the runsc found on PATH into the directory, executable", () => {
    const { helper, runsc, bin, target } = fixture();
    const result = run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, PATH: `${join(root, "no-such-dir")}:${bin}` });
    assert.equal(result.code, 0, result.err.join("\n"));
    assert.deepEqual(result.err, []);
    assert.deepEqual(result.out, [
      `install-node-binaries: ${helper} -> ${join(target, "fsb-helper")}`,
      `install-node-binaries: ${runsc} -> ${join(target, "runsc")}`,
    ]);
    assert.equal(readFileSync(join(target, "fsb-helper"), "utf8"), "#!/bin/sh\necho helper\n");
    assert.equal(readFileSync(join(target, "runsc"), "utf8"), "#!/bin/sh\necho runsc\n");
    for (const name of ["fsb-helper", "runsc"]) assert.equal(statSync(join(target, name)).mode & 0o777, 0o755, name);
    assert.deepEqual(readdirSync(target).sort(), ["fsb-helper", "runsc"], "no temporary file is left");
  });

  it("copies the in-sandbox daemon from FSB_ENVD_SOURCE, or the one built beside the agent, and warns when there is none", () => {
    const { helper, bin, target } = fixture();
    const envd = executable(freshDir("image"), "fsb-envd", "the image's daemon");
    const fromEnv = run([target], { FSB_HELPER_PATH: helper, FSB_ENVD_SOURCE: envd, PATH: bin });
    assert.equal(fromEnv.code, 0, fromEnv.err.join("\n"));
    assert.equal(readFileSync(join(target, "fsb-envd"), "utf8"), "the image's daemon");
    assert.equal(statSync(join(target, "fsb-envd")).mode & 0o777, 0o755);

    const built = executable(freshDir("build"), "fsb-envd", "the daemon built beside the agent");
    const besides = nodeBinariesFromEnv({ FSB_HELPER_PATH: helper, PATH: bin }, { envd: built });
    assert.deepEqual(
      besides.binaries.find((b) => b.name === "fsb-envd"),
      { name: "fsb-envd", source: built },
    );
    assert.deepEqual(besides.warnings, []);

    const none = nodeBinariesFromEnv({ FSB_HELPER_PATH: helper, PATH: bin }, { envd: join(root, "no-such-envd") });
    assert.equal(
      none.binaries.find((b) => b.name === "fsb-envd"),
      undefined,
    );
    assert.equal(none.warnings.length, 1);
    assert.match(none.warnings[0]!, /^no in-sandbox daemon: .*no-such-envd is missing .*run without it/);

    // Set but empty: none, on purpose, without a warning.
    assert.deepEqual(nodeBinariesFromEnv({ FSB_HELPER_PATH: helper, PATH: bin, FSB_ENVD_SOURCE: "" }, { envd: built }).warnings, []);
    const missing = run([freshDir("target")], { FSB_HELPER_PATH: helper, FSB_ENVD_SOURCE: join(root, "no-such-envd"), PATH: bin });
    assert.equal(missing.code, 1);
    assert.match(missing.err.join("\n"), /error: FSB_ENVD_SOURCE: .*no-such-envd is not an executable file/);
  });

  it("takes runsc from FSB_RUNSC_SOURCE before PATH", () => {
    const { helper, bin, target } = fixture();
    const runsc = executable(freshDir("image"), "runsc", "the image's runsc");
    const result = run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, FSB_RUNSC_SOURCE: runsc, PATH: bin });
    assert.equal(result.code, 0, result.err.join("\n"));
    assert.equal(readFileSync(join(target, "runsc"), "utf8"), "the image's runsc");
  });

  it("installs the helper only, with a warning, when there is no runsc", () => {
    const { helper, target } = fixture();
    const result = run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, PATH: freshDir("empty-path") });
    assert.equal(result.code, 0);
    assert.equal(result.err.length, 1);
    assert.match(result.err[0]!, /^install-node-binaries: warning: no runsc: .*gvisor pools cannot run on this node/);
    assert.deepEqual(readdirSync(target), ["fsb-helper"]);
  });

  it("replaces installed files by a rename: a reader of the old file keeps reading the old content", () => {
    const { helper, bin, target } = fixture();
    writeFileSync(join(target, "fsb-helper"), "old helper");
    const reader = openSync(join(target, "fsb-helper"), "r");
    try {
      assert.equal(run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, PATH: bin }).code, 0);
      const buffer = Buffer.alloc(64);
      assert.equal(buffer.toString("utf8", 0, readSync(reader, buffer, 0, 64, 0)), "old helper");
    } finally {
      closeSync(reader);
    }
    assert.equal(readFileSync(join(target, "fsb-helper"), "utf8"), "#!/bin/sh\necho helper\n");
  });

  it("uses the helper the agent itself would use when FSB_HELPER_PATH is not set", () => {
    if (existsSync(DEFAULT_HELPER_PATH)) {
      assert.deepEqual(nodeBinariesFromEnv({ PATH: "", FSB_ENVD_SOURCE: "" }).binaries, [{ name: "fsb-helper", source: DEFAULT_HELPER_PATH }]);
    } else {
      // Not built (npm run build): the error names the path it looked at.
      assert.throws(
        () => nodeBinariesFromEnv({ PATH: "", FSB_ENVD_SOURCE: "" }),
        (error: Error) => error.message.includes(DEFAULT_HELPER_PATH),
      );
    }
  });

  it("fails, naming the file, when the helper is missing, and installs nothing", () => {
    const { bin, target } = fixture();
    const missing = join(root, "no-such-helper");
    const result = run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: missing, PATH: bin });
    assert.equal(result.code, 1);
    assert.match(result.err.join("\n"), new RegExp(`^install-node-binaries: error: the in-sandbox helper is missing at ${missing} .*npm run build`));
    assert.deepEqual(readdirSync(target), []);
  });

  it("fails when FSB_RUNSC_SOURCE names no executable file, rather than falling back to PATH", () => {
    const { helper, bin, target } = fixture();
    const result = run([target], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, FSB_RUNSC_SOURCE: join(root, "no-such-runsc"), PATH: bin });
    assert.equal(result.code, 1);
    assert.match(result.err.join("\n"), /error: FSB_RUNSC_SOURCE: .*no-such-runsc is not an executable file/);
    assert.deepEqual(readdirSync(target), []);
  });

  it("fails when the target is not a directory", () => {
    const { helper, bin } = fixture();
    const missing = join(root, "no-such-target");
    const result = run([missing], { FSB_ENVD_SOURCE: "", FSB_HELPER_PATH: helper, PATH: bin });
    assert.equal(result.code, 1);
    assert.match(result.err.join("\n"), new RegExp(`error: ${missing} is not a directory`));
  });

  it("fails and leaves no temporary file when a copy fails", () => {
    const { target } = fixture();
    assert.throws(() => installNodeBinaries(target, [{ name: "fsb-helper", source: freshDir("a-directory") }]), /cannot install .* as .*fsb-helper/);
    assert.deepEqual(readdirSync(target), []);
  });

  it("refuses anything but one directory argument (exit code 2)", () => {
    for (const args of [[], ["a", "b"], ["--help"], [""]]) {
      const result = run(args, { PATH: "" });
      assert.equal(result.code, 2, JSON.stringify(args));
      assert.match(result.err.join("\n"), /^usage: main\.js install-node-binaries DIR/);
    }
  });

  it("findOnPath skips empty entries, directories and files that are not executable", () => {
    const notExecutable = freshDir("not-executable");
    writeFileSync(join(notExecutable, "runsc"), "");
    const directory = freshDir("directory");
    mkdirSync(join(directory, "runsc"));
    const { bin, runsc } = fixture();
    assert.equal(findOnPath("runsc", `::${notExecutable}:${directory}:${bin}`), runsc);
    assert.equal(findOnPath("runsc", undefined), undefined);
  });

  it("is the agent entry point's install mode: main.ts install-node-binaries DIR", () => {
    const { helper, runsc, bin, target } = fixture();
    const envd = executable(freshDir("image"), "fsb-envd", "#!/bin/sh\n");
    const main = fileURLToPath(new URL("./main.ts", import.meta.url));
    const child = spawnSync(process.execPath, ["--conditions=development", "--import", "tsx", main, "install-node-binaries", target], {
      env: { PATH: `${bin}:${process.env.PATH ?? ""}`, FSB_HELPER_PATH: helper, FSB_RUNSC_SOURCE: runsc, FSB_ENVD_SOURCE: envd },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(child.status, 0, child.stderr);
    assert.match(child.stdout, /-> .*fsb-helper\n.*-> .*runsc\n.*-> .*fsb-envd\n$/);
    assert.deepEqual(readdirSync(target).sort(), ["fsb-envd", "fsb-helper", "runsc"]);
  });
});
