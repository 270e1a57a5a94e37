/**
 * `npm run up` (scripts/up.sh): which containerd namespace and image it imports the base image as,
 * from the arguments it passes on to `fsb up`. The commands it runs (bash, npm, node) are stubs on
 * PATH that record their arguments: nothing is installed, built, imported or started.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CONTROL_PLANE_NODE_FLAGS } from "@fast-sandbox/controlplane";

const UP_SCRIPT = join(import.meta.dirname, "..", "..", "..", "..", "scripts", "up.sh");
/** The real bash, found before the stub shadows it. */
const BASH = execFileSync("sh", ["-c", "command -v bash"], { encoding: "utf8" }).trim();

const stubs = mkdtempSync(join(tmpdir(), "fsb-up-script-spec-"));
after(() => rmSync(stubs, { recursive: true, force: true }));
const log = join(stubs, "calls.log");
for (const name of ["bash", "npm", "node"]) {
  const stub = join(stubs, name);
  writeFileSync(stub, `#!/bin/sh\n{ printf '%s' "\${0##*/}"; for arg in "$@"; do printf '\\t%s' "$arg"; done; printf '\\n'; } >>"$FSB_STUB_LOG"\n`);
  chmodSync(stub, 0o755);
}
// Where fsb up would run is asked of fsb itself (its sources): the stub runs the real node for it.
writeFileSync(
  join(stubs, "node"),
  `#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = --print-containerd-namespace ]; then shift; exec "${process.execPath}" --conditions=development --import tsx packages/cli/src/main.ts "$@"; fi
done
{ printf '%s' node; for arg in "$@"; do printf '\\t%s' "$arg"; done; printf '\\n'; } >>"$FSB_STUB_LOG"
`,
);

/** A data directory no `fsb up` ran in (the real one's settings would decide the namespace). */
const emptyDataDir = join(stubs, "data");

/** The commands `npm run up -- ARGS` runs, each as its name and arguments. */
function upRuns(args: string[], env: NodeJS.ProcessEnv = {}): string[][] {
  rmSync(log, { force: true });
  const base = { ...process.env };
  delete base.FSB_CONTAINERD_NAMESPACE;
  delete base.FSB_BASE_IMAGE;
  execFileSync(BASH, [UP_SCRIPT, ...args], {
    env: { ...base, FSB_DATA_DIR: emptyDataDir, ...env, PATH: `${stubs}:${process.env.PATH}`, FSB_STUB_LOG: log },
    stdio: "ignore",
  });
  return readFileSync(log, "utf8")
    .trimEnd()
    .split("\n")
    .map((line) => line.split("\t"));
}

/** The arguments up.sh runs build-base-image.sh with. */
function baseImageArgs(args: string[], env?: NodeJS.ProcessEnv): string[] {
  const build = upRuns(args, env).find(([name, script]) => name === "bash" && script === "scripts/build-base-image.sh");
  return build?.slice(2) ?? assert.fail("up.sh runs build-base-image.sh");
}

describe("npm run up", () => {
  it("imports the base image into the containerd namespace of 'fsb up', given as --x y or --x=y, and passes every argument on to it", () => {
    assert.deepEqual(baseImageArgs([]), ["fast-sandbox.io/base:latest", "fast-sandbox"]);
    const runs = upRuns(["--containerd-namespace", "team-a", "--port", "7171"]);
    assert.deepEqual(
      runs.find(([name, script]) => name === "bash" && script === "scripts/build-base-image.sh"),
      ["bash", "scripts/build-base-image.sh", "fast-sandbox.io/base:latest", "team-a"],
    );
    // With the control plane's flags, so that fsb up need not run itself again with them.
    assert.deepEqual(runs.at(-1), ["node", ...CONTROL_PLANE_NODE_FLAGS, "packages/cli/bin/fsb.js", "up", "--containerd-namespace", "team-a", "--port", "7171"]);
    assert.deepEqual(baseImageArgs(["--containerd-namespace=team-b"]), ["fast-sandbox.io/base:latest", "team-b"]);
    assert.deepEqual(
      baseImageArgs(["--containerd-namespace", "a", "--containerd-namespace=b"]),
      ["fast-sandbox.io/base:latest", "b"],
      "the last one, as fsb up takes",
    );
  });

  it("names the base image as --image when that is another tag of it; another image is not busybox, so the base image keeps its name", () => {
    assert.deepEqual(baseImageArgs(["--image", "fast-sandbox.io/base:v2", "--containerd-namespace=ns"]), ["fast-sandbox.io/base:v2", "ns"]);
    assert.deepEqual(baseImageArgs(["--image=fast-sandbox.io/base:v3"]), ["fast-sandbox.io/base:v3", "fast-sandbox"]);
    assert.deepEqual(baseImageArgs(["--image", "docker.io/library/python:3.12"]), ["fast-sandbox.io/base:latest", "fast-sandbox"]);
    assert.deepEqual(baseImageArgs(["--image=fast-sandbox.io/code-interpreter:latest"]), ["fast-sandbox.io/base:latest", "fast-sandbox"]);
  });

  it("imports it where the data directory's last 'fsb up' ran when no namespace is given (where a plain fsb up runs again)", () => {
    const dataDir = mkdtempSync(join(stubs, "ran-"));
    writeFileSync(
      join(dataDir, "settings.json"),
      JSON.stringify({ containerdNamespace: "ran-here", containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "ran-here" }),
    );
    assert.deepEqual(baseImageArgs([], { FSB_DATA_DIR: dataDir }), ["fast-sandbox.io/base:latest", "ran-here"]);
    assert.deepEqual(baseImageArgs(["--data-dir", dataDir]), ["fast-sandbox.io/base:latest", "ran-here"]);
    assert.deepEqual(baseImageArgs(["--containerd-namespace", "moved"], { FSB_DATA_DIR: dataDir }), ["fast-sandbox.io/base:latest", "moved"]);
  });

  it("reads FSB_CONTAINERD_NAMESPACE and FSB_BASE_IMAGE as 'fsb up' does, its options over them", () => {
    const env = { FSB_CONTAINERD_NAMESPACE: "from-env", FSB_BASE_IMAGE: "localhost:5000/base:1" };
    assert.deepEqual(baseImageArgs([], env), ["localhost:5000/base:1", "from-env"]);
    assert.deepEqual(baseImageArgs(["--containerd-namespace", "flag", "--image", "localhost:5000/base:2"], env), ["localhost:5000/base:2", "flag"]);
  });
});
