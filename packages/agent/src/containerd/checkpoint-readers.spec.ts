import assert from "node:assert/strict";
import fs, { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, utimesSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it, mock } from "node:test";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api/core";
import { CHECKPOINT_READERS_DIR, CHECKPOINT_TOMBSTONE, CheckpointReaders } from "./checkpoint-readers.js";

// Two instances over one real directory stand for two agents of a node: the protocol is the files alone.
const root = mkdtempSync(join(tmpdir(), "fsb-checkpoint-readers-"));
after(() => rmSync(root, { recursive: true, force: true }));
let made = 0;
function checkpointDir(): string {
  const directory = join(root, `checkpoint-${(made += 1)}`);
  mkdirSync(join(directory, "image"), { recursive: true });
  return directory;
}

/** A promise and its resolve, to hold a reader's work open. */
function held(): { promise: Promise<void>; release(): void } {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
}

describe("CheckpointReaders", () => {
  const agentA = new CheckpointReaders({ owner: "agent-a", pollMs: 5 });
  const agentB = new CheckpointReaders({ owner: "agent-b", pollMs: 5 });

  it("keeps a marker while a reader works and takes it away after, whether the work succeeds or fails", async () => {
    const directory = checkpointDir();
    const work = held();
    const reading = agentA.read(directory, "c1", () => work.promise.then(() => "restored"));
    assert.equal(agentB.liveReaders(directory).length, 1);
    assert.match(agentB.liveReaders(directory)[0] ?? "", /^agent-a\.\d+\.[0-9a-f]{12}$/);
    work.release();
    assert.equal(await reading, "restored");
    assert.deepEqual(readdirSync(join(directory, CHECKPOINT_READERS_DIR)), []);
    await assert.rejects(
      agentA.read(directory, "c1", () => Promise.reject(new Error("runsc restore failed"))),
      /runsc restore failed/,
    );
    assert.deepEqual(agentB.liveReaders(directory), []);
  });

  it("a delete in one agent waits for a restore in another, which keeps the files it reads until it is done", async () => {
    const directory = checkpointDir();
    const work = held();
    let sawImage = false;
    const reading = agentA.read(directory, "c2", async () => {
      await work.promise;
      sawImage = existsSync(join(directory, "image"));
    });
    let begun = false;
    const deleting = agentB.beginDelete(directory, "c2", 30_000).then((present) => {
      begun = true;
      return present;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(begun, false, "the delete waits while the restore reads");
    assert.equal(agentA.deleting(directory), true, "the tombstone is in place from the start");
    work.release();
    await reading;
    assert.equal(await deleting, true);
    assert.equal(sawImage, true, "the image was there for the whole restore");
  });

  it("a restore that starts once a delete has begun does not run: the checkpoint is gone for it", async () => {
    const directory = checkpointDir();
    assert.equal(await agentB.beginDelete(directory, "c3", 1_000), true);
    let ran = false;
    await assert.rejects(
      agentA.read(directory, "c3", async () => {
        ran = true;
      }),
      (error: Error) => error instanceof NotFoundError && /checkpoint c3 is being deleted/.test(error.message),
    );
    assert.equal(ran, false);
    assert.deepEqual(agentA.liveReaders(directory), [], "the withdrawn reader left no marker");
  });

  it("a checkpoint directory that is gone: a reader gets NotFound and does not make it again; a delete finds nothing", async () => {
    const directory = join(root, "never-made");
    await assert.rejects(
      agentA.read(directory, "c4", () => Promise.resolve()),
      (error: Error) => error instanceof NotFoundError && /does not exist on this node/.test(error.message),
    );
    assert.equal(existsSync(directory), false);
    assert.equal(await agentB.beginDelete(directory, "c4", 1_000), false);
  });

  it("a restore whose marker lands after a delete's last look, as the delete moves the directory away, gets NotFound and does not run", async () => {
    const directory = checkpointDir();
    // The delete's tombstone is placed and its last look finds no reader…
    assert.equal(await agentB.beginDelete(directory, "c9", 1_000), true);
    // …the reader's marker lands, and the delete moves the directory out of its name before the reader looks for the tombstone.
    const doomed = `${directory}.partial-deleted-0a1b2c3d`;
    const write = fs.writeFileSync;
    const writes = mock.method(fs, "writeFileSync", (...args: Parameters<typeof fs.writeFileSync>) => {
      write(...args);
      if (String(args[0]).startsWith(join(directory, CHECKPOINT_READERS_DIR))) renameSync(directory, doomed);
    });
    syncBuiltinESMExports();
    let ran = false;
    try {
      await assert.rejects(
        agentA.read(directory, "c9", async () => {
          ran = true;
        }),
        (error: Error) => error instanceof NotFoundError && /checkpoint c9 does not exist on this node/.test(error.message),
      );
    } finally {
      writes.mock.restore();
      syncBuiltinESMExports();
    }
    assert.equal(writes.mock.callCount(), 1, "the marker was written into the directory before it moved");
    assert.equal(ran, false);
    assert.equal(existsSync(directory), false, "and did not make the directory again");
  });

  it("a marker no one touched for staleMs (its agent crashed) does not hold a delete", async () => {
    const directory = checkpointDir();
    const crashed = new CheckpointReaders({ owner: "crashed", staleMs: 10_000 });
    const work = held();
    const reading = crashed.read(directory, "c5", () => work.promise);
    const [marker] = readdirSync(join(directory, CHECKPOINT_READERS_DIR));
    const longAgo = new Date(Date.now() - 60_000);
    utimesSync(join(directory, CHECKPOINT_READERS_DIR, marker ?? ""), longAgo, longAgo);
    assert.deepEqual(agentB.liveReaders(directory), []);
    assert.equal(await agentB.beginDelete(directory, "c5", 1_000), true);
    work.release();
    await reading;
  });

  it("a reader keeps its marker live by touching it", async () => {
    const directory = checkpointDir();
    const reader = new CheckpointReaders({ owner: "slow", refreshMs: 20, staleMs: 10_000 });
    const work = held();
    const reading = reader.read(directory, "c6", () => work.promise);
    const [marker] = readdirSync(join(directory, CHECKPOINT_READERS_DIR));
    const path = join(directory, CHECKPOINT_READERS_DIR, marker ?? "");
    const longAgo = new Date(Date.now() - 60_000);
    utimesSync(path, longAgo, longAgo);
    assert.deepEqual(agentB.liveReaders(directory), [], "stale once its touch is old");
    const deadline = Date.now() + 30_000;
    while (agentB.liveReaders(directory).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(agentB.liveReaders(directory).length, 1, "live again after the reader's next touch");
    work.release();
    await reading;
  });

  it("a delete that still finds live readers after its wait leaves the checkpoint as it was and says who reads", async () => {
    const directory = checkpointDir();
    const work = held();
    const reading = agentA.read(directory, "c7", () => work.promise);
    await assert.rejects(
      agentB.beginDelete(directory, "c7", 30),
      (error: Error) => error instanceof FailedPreconditionError && /checkpoint c7 is still being restored from \(agent-a\)/.test(error.message),
    );
    assert.equal(existsSync(join(directory, CHECKPOINT_TOMBSTONE)), false, "the tombstone is taken away");
    assert.equal(agentA.deleting(directory), false);
    work.release();
    await reading;
    await agentA.read(directory, "c7", () => Promise.resolve());
  });

  it("tells a tombstone older than a bound (a delete cut short) from a fresh one", async () => {
    const directory = checkpointDir();
    assert.equal(agentA.tombstoneOlderThan(directory, 1_000), false, "no tombstone");
    await agentA.beginDelete(directory, "c8", 1_000);
    assert.equal(agentA.tombstoneOlderThan(directory, 60_000), false);
    const longAgo = new Date(Date.now() - 120_000);
    utimesSync(join(directory, CHECKPOINT_TOMBSTONE), longAgo, longAgo);
    assert.equal(agentA.tombstoneOlderThan(directory, 60_000), true);
  });
});
