/**
 * Every way the control plane starts passes CONTROL_PLANE_NODE_FLAGS, which a file outside
 * TypeScript (a shebang line, a shell script, a Dockerfile, package.json) can only repeat: these
 * checks catch the copy that drifts. The detached `fsb up` spreads the constant itself; the e2e
 * quick start reads its child's command line.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CONTROL_PLANE_NODE_FLAGS } from "./control-plane-node-flags.js";

const root = join(import.meta.dirname, "../../..");
const read = (path: string) => readFileSync(join(root, path), "utf8");
const flags = CONTROL_PLANE_NODE_FLAGS.join(" ");

describe("CONTROL_PLANE_NODE_FLAGS", () => {
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

  it("are on the fsb launcher's #! line (a foreground `fsb up` is the control plane), which runs with them", () => {
    const shebang = read("packages/cli/bin/fsb.js").split("\n")[0];
    assert.equal(shebang, `#!/usr/bin/env -S node ${flags}`);
    // The kernel hands the line to env, which splits it (-S): the program runs with the flags.
    const dir = mkdtempSync(join(tmpdir(), "fsb-node-flags-"));
    try {
      const script = join(dir, "probe.mjs");
      writeFileSync(script, `${shebang}\nprocess.stdout.write(JSON.stringify(process.execArgv));\n`);
      chmodSync(script, 0o755);
      const run = spawnSync(script, { encoding: "utf8", env: { ...process.env, PATH: `${join(process.execPath, "..")}:${process.env.PATH ?? ""}` } });
      assert.equal(run.status, 0, run.stderr);
      assert.deepEqual(JSON.parse(run.stdout), [...CONTROL_PLANE_NODE_FLAGS]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("are in `npm run up`, which runs the foreground `fsb up` through node itself", () => {
    assert.match(read("scripts/up.sh"), new RegExp(`^exec node ${escape(flags)} packages/cli/bin/fsb\\.js up "\\$@"$`, "m"));
  });

  it("are the first arguments of the controller image's ENTRYPOINT", () => {
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(read("build/controller.Dockerfile"))?.[1];
    assert.ok(entrypoint, "build/controller.Dockerfile has an ENTRYPOINT in JSON form");
    const argv = JSON.parse(entrypoint) as string[];
    assert.deepEqual(argv.slice(0, 1 + CONTROL_PLANE_NODE_FLAGS.length), ["node", ...CONTROL_PLANE_NODE_FLAGS]);
  });

  it("are given to the benchmarks' process, where `bench create` and `bench burst` run the control plane", () => {
    const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
    assert.match(scripts.bench ?? "", new RegExp(`^node ${escape(flags)} `));
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
