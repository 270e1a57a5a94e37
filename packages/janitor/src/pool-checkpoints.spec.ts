import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { UnavailableError } from "@fast-sandbox/api/core";
import type { Clock } from "./clock.js";
import type { Inventory, InventorySnapshot } from "./inventory.js";
import { Janitor } from "./janitor.js";
import { LocalPoolCheckpointDirs } from "./pool-checkpoint-dirs.js";
import { judgePoolCheckpointDir, poolKey, type PoolCheckpointDirFacts } from "./pool-checkpoints.js";

const GRACE = 10 * 60_000;
const logger = pino({ level: "silent" });

describe("judgePoolCheckpointDir", () => {
  const nowMs = 100 * GRACE;
  const dir: PoolCheckpointDirFacts = { namespace: "team-a", pool: "web", path: "/c/team-a/web", changedAtMs: nowMs - 2 * GRACE };
  const inventory = (pools: string[], named: string[] = []) => ({ pools: new Set(pools), poolsNamedBySandboxes: new Set(named) });
  const longGone = { absentSinceMs: nowMs - GRACE, nowMs, graceMs: GRACE };

  it("removes the directory of a pool absent for the whole grace period, unchanged for as long", () => {
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: inventory(["team-a/api", "team-b/web"]), ...longGone }), {
      action: "remove",
      reason: "pool_gone",
    });
  });

  it("keeps it while a pool of that namespace and name exists, whatever else holds", () => {
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: inventory(["team-a/web"]), ...longGone }), { action: "keep", why: "pool_exists" });
  });

  it("keeps it while a Sandbox record names the pool (a paused sandbox's checkpoint is in it)", () => {
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: inventory([], ["team-a/web"]), ...longGone }), { action: "keep", why: "named_by_sandbox" });
    // Another namespace's record of a pool of the same name is no reason.
    assert.equal(judgePoolCheckpointDir(dir, { inventory: inventory([], ["team-b/web"]), ...longGone }).action, "remove");
  });

  it("keeps it while the pool has been absent for less than the grace period, or the directory changed within it", () => {
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: inventory([]), ...longGone, absentSinceMs: nowMs - GRACE + 1 }), {
      action: "keep",
      why: "protected",
    });
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: inventory([]), ...longGone, absentSinceMs: undefined }), { action: "keep", why: "protected" });
    assert.deepEqual(judgePoolCheckpointDir({ ...dir, changedAtMs: nowMs - GRACE + 1 }, { inventory: inventory([]), ...longGone }), {
      action: "keep",
      why: "protected",
    });
  });

  it("keeps it when the inventory does not list pools (the embedded mode's)", () => {
    assert.deepEqual(judgePoolCheckpointDir(dir, { inventory: {}, ...longGone }), { action: "keep", why: "pools_unknown" });
  });
});

class FakeClock implements Clock {
  constructor(public ms: number) {}
  nowMs(): number {
    return this.ms;
  }
}

/** The Kubernetes inventory's answer, changed by the test between passes; `unavailable` makes the read fail (an API error). */
class FakeInventory implements Inventory {
  pools = new Set<string>();
  poolsNamedBySandboxes = new Set<string>();
  listsPools = true;
  unavailable = false;
  read(): Promise<InventorySnapshot> {
    if (this.unavailable) return Promise.reject(new UnavailableError("no answer from the API server"));
    const base = { agents: new Set<string>(), sandboxIds: new Set<string>() };
    return Promise.resolve(this.listsPools ? { ...base, pools: new Set(this.pools), poolsNamedBySandboxes: new Set(this.poolsNamedBySandboxes) } : base);
  }
}

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe("the janitor and gone pools' checkpoint directories", () => {
  /** A node's checkpoint directory holding one checkpoint of each pool, written now; the clock starts now. */
  function setup(pools: string[]) {
    const root = mkdtempSync(join(tmpdir(), "fsb-janitor-pool-checkpoints-"));
    roots.push(root);
    for (const pool of pools) {
      mkdirSync(join(root, pool, "cp-1", "image"), { recursive: true });
      writeFileSync(join(root, pool, "cp-1", "image", "pages.img"), "memory");
      writeFileSync(join(root, pool, "cp-1", "checkpoint.json"), "{}");
    }
    const inventory = new FakeInventory();
    const clock = new FakeClock(Date.now());
    const janitor = new Janitor({ inventory, nodes: [], checkpoints: new LocalPoolCheckpointDirs(root), checkpointGraceMs: GRACE, clock, logger });
    const has = (path: string) => existsSync(join(root, path));
    return { root, inventory, clock, janitor, has };
  }

  it("removes a deleted pool's directory once it has been gone for the grace period, then its empty namespace directory", async () => {
    const { root, inventory, clock, janitor, has } = setup(["team-a/web", "team-a/api", "team-b/web"]);
    inventory.pools = new Set(["team-a/web", "team-a/api", "team-b/web"]);
    // Existing pools' directories stay, however old.
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += 2 * GRACE;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(has("team-a/web/cp-1/image/pages.img") && has("team-a/api") && has("team-b/web"));

    // Deleted: its absence starts with the pass that first misses it.
    inventory.pools.delete("team-a/web");
    inventory.pools.delete("team-b/web");
    const first = await janitor.runPass();
    assert.deepEqual(first.removed, []);
    assert.equal(first.protectedOrphans, 2);
    clock.ms += GRACE - 1;
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += 1;
    const result = await janitor.runPass();
    assert.equal(result.outcome, "completed");
    assert.deepEqual(result.removed.map((object) => `${object.kind} ${object.reason} ${object.pool ?? "-"} ${object.id.slice(root.length + 1)}`).sort(), [
      "checkpoint_dir pool_gone - team-b",
      "checkpoint_dir pool_gone team-a/web team-a/web",
      "checkpoint_dir pool_gone team-b/web team-b/web",
    ]);
    // team-a still has a pool: its directory stays, with that pool's.
    assert.deepEqual(readdirSync(root), ["team-a"]);
    assert.deepEqual(readdirSync(join(root, "team-a")), ["api"]);
    assert.match(await janitor.metrics.text(), /^fsb_janitor_objects_removed_total\{kind="checkpoint_dir",reason="pool_gone"\} 3$/m);
    assert.deepEqual((await janitor.runPass()).removed, []);
  });

  it("removes nothing while the inventory cannot be read, and the pool's absence starts over after", async () => {
    const { inventory, clock, janitor, has } = setup(["team-a/web"]);
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += GRACE;
    inventory.unavailable = true;
    const failed = await janitor.runPass();
    assert.equal(failed.outcome, "inventory_unavailable");
    assert.deepEqual(failed.removed, []);
    clock.ms += GRACE;
    // The first read that works again only starts the count.
    inventory.unavailable = false;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(has("team-a/web/cp-1/checkpoint.json"));
    clock.ms += GRACE;
    assert.deepEqual(
      (await janitor.runPass()).removed.map((object) => object.pool),
      ["team-a/web", undefined],
    );
    assert.ok(!has("team-a"));
  });

  it("keeps the directory of a pool deleted and created again under the same name within the grace period", async () => {
    const { inventory, clock, janitor, has } = setup(["team-a/web"]);
    assert.deepEqual((await janitor.runPass()).removed, [], "deleted: its absence starts");
    clock.ms += GRACE - 1;
    assert.deepEqual((await janitor.runPass()).removed, []);
    // Created again: its directory is the new pool's, and stays as long as it exists.
    inventory.pools.add("team-a/web");
    clock.ms += 1;
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += 2 * GRACE;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(has("team-a/web/cp-1/checkpoint.json"));
    // Deleted again: a new absence, a whole grace period again.
    inventory.pools.clear();
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += GRACE;
    assert.equal((await janitor.runPass()).removed.length, 2);
    assert.ok(!has("team-a/web"));
  });

  it("keeps the directory of a gone pool while a Sandbox record names it", async () => {
    const { inventory, clock, janitor, has } = setup(["team-a/web"]);
    inventory.poolsNamedBySandboxes.add("team-a/web");
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += 2 * GRACE;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(has("team-a/web/cp-1/checkpoint.json"));
    // The record is gone: the pool has been missing from every pass all along.
    inventory.poolsNamedBySandboxes.clear();
    assert.equal((await janitor.runPass()).removed.length, 2);
    assert.ok(!has("team-a"));
  });

  it("keeps a directory changed within the grace period, however long its pool has been gone (an agent still writing)", async () => {
    const { root, inventory, clock, janitor, has } = setup(["team-a/web"]);
    // The pool has been missing since two grace periods before now, when a checkpoint is being written.
    clock.ms -= 2 * GRACE;
    assert.deepEqual((await janitor.runPass()).removed, []);
    mkdirSync(join(root, "team-a/web/cp-1.partial-0a1b/image"), { recursive: true });
    writeFileSync(join(root, "team-a/web/cp-1.partial-0a1b/image/pages.img"), "memory");
    assert.deepEqual(inventory.pools, new Set());
    clock.ms = Date.now();
    const young = await janitor.runPass();
    assert.deepEqual(young.removed, []);
    assert.equal(young.protectedOrphans, 1);
    assert.ok(has("team-a/web/cp-1.partial-0a1b/image/pages.img"));
    // A second past the grace period: the file's times have sub-millisecond parts, the clock was set from Date.now()'s whole milliseconds.
    clock.ms += GRACE + 1_000;
    assert.equal((await janitor.runPass()).removed.length, 2);
    assert.ok(!has("team-a"));
  });

  it("goes on with the rest of the pass when the checkpoint directory cannot be read", async () => {
    const inventory = new FakeInventory();
    const broken = {
      list: () => Promise.reject(new Error("EACCES: permission denied")),
      remove: () => Promise.reject(new Error("not called")),
      tidyNamespaceDirs: () => Promise.reject(new Error("not called")),
    };
    const janitor = new Janitor({ inventory, nodes: [], checkpoints: broken, checkpointGraceMs: GRACE, clock: new FakeClock(Date.now()), logger });
    const pass = await janitor.runPass();
    assert.equal(pass.outcome, "completed");
    assert.deepEqual(pass.removed, []);
  });

  it("removes nothing with an inventory that does not list pools (the embedded mode's)", async () => {
    const { inventory, clock, janitor, has } = setup(["team-a/web"]);
    inventory.listsPools = false;
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += 2 * GRACE;
    const pass = await janitor.runPass();
    assert.deepEqual(pass.removed, []);
    assert.equal(pass.protectedOrphans, 0);
    assert.ok(has("team-a/web/cp-1/checkpoint.json"));
    assert.equal(poolKey("team-a", "web"), "team-a/web");
  });
});
