import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { LocalPoolCheckpointDirs } from "./pool-checkpoint-dirs.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

/** A node's checkpoint directory with `files` (paths under it) written now: times cannot be set back (status changes are now). */
function checkpointRoot(files: string[], directories: string[] = []): string {
  const root = mkdtempSync(join(tmpdir(), "fsb-janitor-checkpoints-"));
  roots.push(root);
  for (const directory of directories) mkdirSync(join(root, directory), { recursive: true });
  for (const file of files) {
    mkdirSync(join(root, file, ".."), { recursive: true });
    writeFileSync(join(root, file), "x");
  }
  return root;
}

/** A checkpoint as the agent leaves it (containerd/checkpoints.ts): `<id>/image/…`, `<id>/run/…`, `<id>/checkpoint.json`. */
const checkpoint = (pool: string, id: string) => [`${pool}/${id}/image/pages.img`, `${pool}/${id}/run/hostname`, `${pool}/${id}/checkpoint.json`];

describe("LocalPoolCheckpointDirs.list", () => {
  it("finds every <namespace>/<pool> directory with the newest change in it, and nothing else", async () => {
    const before = Date.now();
    const root = checkpointRoot([...checkpoint("team-a/web", "cp-1"), "team-a/stray-file", "loose-file"], ["team-a/empty", "team-b/api", ".hidden/pool"]);
    // A link is never followed: what it points to is not the janitor's.
    symlinkSync(join(root, "team-b"), join(root, "team-a", "linked"));
    const listed = await new LocalPoolCheckpointDirs(root).list();
    assert.deepEqual(listed.map((dir) => `${dir.namespace}/${dir.pool} ${dir.path}`).sort(), [
      `team-a/empty ${join(root, "team-a/empty")}`,
      `team-a/web ${join(root, "team-a/web")}`,
      `team-b/api ${join(root, "team-b/api")}`,
    ]);
    for (const dir of listed) assert.ok(dir.changedAtMs >= before - 1_000 && dir.changedAtMs <= Date.now() + 1_000, `${dir.path}: ${dir.changedAtMs}`);
  });

  it("lists nothing when the directory does not exist", async () => {
    assert.deepEqual(await new LocalPoolCheckpointDirs(join(tmpdir(), "fsb-janitor-no-such-dir-" + process.pid)).list(), []);
  });
});

describe("LocalPoolCheckpointDirs.remove", () => {
  it("removes the whole pool directory once nothing in it changed since the cutoff, and leaves its neighbours", async () => {
    const root = checkpointRoot([...checkpoint("team-a/web", "cp-1"), ...checkpoint("team-a/web", "cp-2"), ...checkpoint("team-a/api", "cp-3")]);
    const dirs = new LocalPoolCheckpointDirs(root);
    // Something changed after the cutoff (now, for any cutoff in the past): it stays.
    assert.equal(await dirs.remove("team-a", "web", Date.now() - 60_000), false);
    assert.ok(existsSync(join(root, "team-a/web/cp-1/checkpoint.json")));
    assert.equal(await dirs.remove("team-a", "web", Date.now() + 60_000), true);
    assert.deepEqual(readdirSync(join(root, "team-a")), ["api"]);
    assert.ok(existsSync(join(root, "team-a/api/cp-3/image/pages.img")));
    // Idempotent; and names that are not a namespace's or a pool's reach nothing.
    assert.equal(await dirs.remove("team-a", "web", Date.now() + 60_000), false);
    assert.equal(await dirs.remove("team-a", "..", Date.now() + 60_000), false);
    assert.equal(await dirs.remove("..", "team-a", Date.now() + 60_000), false);
    assert.ok(existsSync(join(root, "team-a/api")));
  });
});

describe("LocalPoolCheckpointDirs.tidyNamespaceDirs", () => {
  it("removes empty namespace directories except those kept, and finishes removals cut short", async () => {
    const root = checkpointRoot(
      ["team-c/.web.removing-0a1b2c3d/cp-1/image/pages.img", "team-d/api/cp-1/checkpoint.json", "team-d/.notes"],
      ["team-a", "team-b"],
    );
    const removed = await new LocalPoolCheckpointDirs(root).tidyNamespaceDirs(new Set(["team-b"]));
    assert.deepEqual(removed.map((dir) => `${dir.kind} ${dir.path.slice(root.length + 1)}`).sort(), [
      "checkpoint_dir team-a",
      "checkpoint_dir team-c",
      "checkpoint_dir team-c/.web.removing-0a1b2c3d",
    ]);
    // team-b has a pool (its agent may be about to write); team-d is not empty.
    assert.deepEqual(readdirSync(root).sort(), ["team-b", "team-d"]);
    assert.deepEqual(readdirSync(join(root, "team-d")).sort(), [".notes", "api"]);
    assert.deepEqual(await new LocalPoolCheckpointDirs(root).tidyNamespaceDirs(new Set(["team-b"])), []);
  });
});
