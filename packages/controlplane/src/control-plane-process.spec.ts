/**
 * Every way the control plane starts runs with CONTROL_PLANE_NODE_FLAGS and CONTROL_PLANE_ENV, which
 * a file outside TypeScript (a shell script, a Dockerfile, package.json) can only repeat: these
 * checks catch the copy that drifts. `fsb up` spreads the constants itself (control-plane-rerun.ts,
 * up.ts), which the CLI's specs and the e2e quick start check.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_FLAGS, controlPlaneEnv, hasControlPlaneNodeFlags } from "./control-plane-process.js";

const root = join(import.meta.dirname, "../../..");
const read = (path: string) => readFileSync(join(root, path), "utf8");
const flags = CONTROL_PLANE_NODE_FLAGS.join(" ");
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("the control plane's process settings", () => {
  it("are flags node accepts, and cap the young generation", () => {
    // Fill the young generation with short-lived objects: capped, its space never grows past 2 × 4 MiB.
    const grown = (extra: readonly string[]) => {
      const run = spawnSync(
        process.execPath,
        [
          ...extra,
          "-e",
          'let keep = []; for (let i = 0; i < 2e6; i++) { keep.push({ i, s: "x" + i }); if (keep.length > 100000) keep = []; }' +
            'process.stdout.write(String(require("node:v8").getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size))',
        ],
        { encoding: "utf8" },
      );
      assert.equal(run.status, 0, run.stderr);
      return Number(run.stdout);
    };
    assert.ok(grown(CONTROL_PLANE_NODE_FLAGS) <= 8 * 1024 * 1024, "the young generation is capped at 2 × 4 MiB");
    assert.ok(grown([]) > 8 * 1024 * 1024, "without the flags the same run grows it further (else this check proves nothing)");
  });

  it("are recognised on the command line and in NODE_OPTIONS, all of them", () => {
    assert.equal(hasControlPlaneNodeFlags([...CONTROL_PLANE_NODE_FLAGS, "--enable-source-maps"], undefined), true);
    assert.equal(hasControlPlaneNodeFlags(["--enable-source-maps"], `--trace-warnings ${flags}`), true);
    assert.equal(hasControlPlaneNodeFlags(["--conditions=development", "--import", "tsx"], undefined), false);
    assert.equal(hasControlPlaneNodeFlags([], "--max-semi-space-size=16"), false, "another value is not the control plane's");
  });

  it("put their environment under the operator's: a variable already set wins", () => {
    assert.deepEqual(controlPlaneEnv({ PATH: "/bin" }), { ...CONTROL_PLANE_ENV, PATH: "/bin" });
    assert.equal(controlPlaneEnv({ MALLOC_ARENA_MAX: "8" }).MALLOC_ARENA_MAX, "8");
  });

  it("are in `npm run up`, which runs the foreground `fsb up` with them (so it need not run itself again)", () => {
    const assignments = Object.entries(CONTROL_PLANE_ENV).map(([name, value]) => `${name}="\${${name}:-${value}}"`);
    assert.match(
      read("scripts/up.sh"),
      new RegExp(`^exec env ${escape(assignments.join(" "))} node ${escape(flags)} packages/cli/bin/fsb\\.js up "\\$@"$`, "m"),
    );
  });

  it("are the controller image's ENV and the first arguments of its ENTRYPOINT", () => {
    const dockerfile = read("build/controller.Dockerfile");
    for (const [name, value] of Object.entries(CONTROL_PLANE_ENV)) assert.match(dockerfile, new RegExp(`^ENV ${name}=${escape(value)}$`, "m"));
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1];
    assert.ok(entrypoint, "build/controller.Dockerfile has an ENTRYPOINT in JSON form");
    const argv = JSON.parse(entrypoint) as string[];
    assert.deepEqual(argv.slice(0, 1 + CONTROL_PLANE_NODE_FLAGS.length), ["node", ...CONTROL_PLANE_NODE_FLAGS]);
  });

  it("are given to the benchmarks' process, where `bench create` and `bench burst` run the control plane", () => {
    const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
    const assignments = Object.entries(CONTROL_PLANE_ENV).map(([name, value]) => `${name}=${value}`);
    assert.match(scripts.bench ?? "", new RegExp(`^env ${escape(assignments.join(" "))} node ${escape(flags)} `));
  });

  it("are not on the fsb launcher's #! line: any V8 flag costs every other command Node's code cache", () => {
    assert.equal(read("packages/cli/bin/fsb.js").split("\n")[0], "#!/usr/bin/env node");
  });
});
