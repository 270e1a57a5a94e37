import assert from "node:assert/strict";
import { linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, openSync, ftruncateSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { directoryDiskBytes, openDeletedFileBytes, removeTree } from "./disk-usage.js";

const MIB = 2 ** 20;

describe("directoryDiskBytes", () => {
  const root = mkdtempSync(join(tmpdir(), "fsb-disk-usage-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  it("counts the blocks of every file under the tree, once per file, without following links out of it", async () => {
    const tree = join(root, "tree");
    mkdirSync(join(tree, "a", "b"), { recursive: true });
    writeFileSync(join(tree, "a", "b", "one"), Buffer.alloc(MIB, 1));
    writeFileSync(join(tree, "two"), Buffer.alloc(2 * MIB, 2));
    const alone = await directoryDiskBytes(tree);
    assert.ok(alone >= 3 * MIB && alone < 3 * MIB + 64 * 1024, `${alone} bytes`);

    // A second link to a file is the same blocks; a symbolic link to a big file elsewhere is a link's.
    linkSync(join(tree, "two"), join(tree, "two-again"));
    const outside = join(root, "outside");
    writeFileSync(outside, Buffer.alloc(8 * MIB, 3));
    symlinkSync(outside, join(tree, "to-outside"));
    symlinkSync(root, join(tree, "to-root"));
    const linked = await directoryDiskBytes(tree);
    assert.ok(linked - alone < 16 * 1024, `links added ${linked - alone} bytes`);
  });

  it("counts what a sparse file holds, not its length", async () => {
    const sparse = join(root, "sparse");
    mkdirSync(sparse);
    const fd = openSync(join(sparse, "holes"), "w");
    ftruncateSync(fd, 1024 * MIB);
    closeSync(fd);
    assert.ok((await directoryDiskBytes(sparse)) < MIB);
  });

  it("walks, and removes, a tree deeper than PATH_MAX (where a walk by paths fails with ENAMETOOLONG)", async () => {
    const deep = join(root, "deep");
    mkdirSync(deep);
    // 25 directories of 200 characters: 5000 characters below `deep`, past Linux's 4096 (made by
    // relative paths: a shell's cd tracks the whole path and gives up).
    const script = [
      "import os, sys",
      "os.chdir(sys.argv[1])",
      "for _ in range(25): os.mkdir('d' * 200); os.chdir('d' * 200)",
      "open('bottom', 'wb').write(os.urandom(2 * 1048576))",
    ].join("\n");
    execFileSync("python3", ["-c", script, deep]);
    const bytes = await directoryDiskBytes(deep);
    assert.ok(bytes >= 2 * MIB + 25 * 4096, `${bytes} bytes: the file at the bottom and the 25 directories`);
    await removeTree(deep);
    assert.equal(existsSync(deep), false);
    await removeTree(deep); // nothing there: nothing to do
  });

  it("is 0 for a tree that does not exist, and a file's own blocks for a file", async () => {
    assert.equal(await directoryDiskBytes(join(root, "missing")), 0);
    const file = join(root, "file");
    writeFileSync(file, Buffer.alloc(MIB, 4));
    assert.ok((await directoryDiskBytes(file)) >= MIB);
  });
});

describe("openDeletedFileBytes", () => {
  const root = mkdtempSync(join(tmpdir(), "fsb-open-deleted-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A process that opens `paths` (in that order), writes `mib` MiB to each, removes what `remove` lists, then waits. */
  async function holder(paths: string[], remove: string[], mib: number) {
    const script = `
      const fs = require("node:fs");
      const paths = ${JSON.stringify(paths)};
      const fds = paths.map((path) => fs.openSync(path, "w"));
      for (const fd of fds) fs.writeSync(fd, Buffer.alloc(${mib} * 1048576, 7)), fs.fsyncSync(fd);
      for (const path of ${JSON.stringify(remove)}) fs.unlinkSync(path);
      process.stdout.write("ready\\n");
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await once(child.stdout, "data");
    return child;
  }

  it("counts a file removed while a process holds it open, once, and not one still linked or in memory", async () => {
    const deleted = join(root, "deleted");
    const kept = join(root, "kept");
    const linked = join(root, "linked");
    const shm = existsSync("/dev/shm") ? join("/dev/shm", `fsb-open-deleted-${process.pid}`) : undefined;
    const child = await holder([deleted, kept, linked, ...(shm ? [shm] : [])], [deleted, ...(shm ? [shm] : [])], 4);
    // A second name of `linked`, then its first removed: removed but still linked, so a walk sees it.
    linkSync(linked, join(root, "linked-again"));
    rmSync(linked);
    try {
      const bytes = await openDeletedFileBytes([child.pid!, child.pid!]);
      assert.ok(bytes >= 4 * MIB && bytes < 5 * MIB, `${bytes} bytes: the removed 4 MiB file alone, once`);
      assert.equal(await openDeletedFileBytes([]), 0);
    } finally {
      child.kill("SIGKILL");
      await once(child, "exit");
    }
    assert.equal(await openDeletedFileBytes([child.pid!]), 0, "a process gone holds nothing");
  });

  it("counts a file mapped, closed and removed: held by the map alone", async () => {
    const mapped = join(root, "mapped");
    const script = [
      "import mmap, os, sys",
      "path = sys.argv[1]",
      "fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)",
      "os.write(fd, os.urandom(3 * 1048576)); os.fsync(fd)",
      "held = mmap.mmap(fd, 0)",
      "os.close(fd); os.unlink(path)",
      "print('ready', flush=True)",
      "sys.stdin.read()",
    ].join("\n");
    const child = spawn("python3", ["-c", script, mapped], { stdio: ["pipe", "pipe", "inherit"] });
    await once(child.stdout, "data");
    try {
      const bytes = await openDeletedFileBytes([child.pid!]);
      assert.ok(bytes >= 3 * MIB && bytes < 4 * MIB, `${bytes} bytes`);
    } finally {
      child.kill("SIGKILL");
      await once(child, "exit");
    }
  });
});
