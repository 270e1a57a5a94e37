/**
 * Who reads a checkpoint's files, across the processes of a node. The agents of a pool on one node
 * share its checkpoint directory (checkpoints.ts), so a restore in one agent — runsc reads the image
 * until the sandbox runs — must not lose its files to a delete in another.
 *
 * - A reader (a restore) places a marker `<checkpoint>/readers/<unique name>` before it reads
 *   anything, then looks for the tombstone `<checkpoint>/deleting`: when there is one, it takes its
 *   marker away and the checkpoint counts as gone.
 * - A delete places the tombstone first, then waits until no live marker is left, then moves the
 *   directory out of its name: a reader whose marker came after that last look finds its marker
 *   gone from its path once it has looked for the tombstone, and counts the checkpoint as gone.
 *
 * Each side places its own file before it looks for the other's, so a reader and a delete that meet
 * cannot both miss each other: either the delete waits for the reader, or the reader withdraws.
 * A marker is live while its reader touches it (every `refreshMs`); one left untouched for `staleMs`
 * is a crashed process's and counts for nothing, so a crash delays a delete by `staleMs` at most.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api/core";

/** The tombstone a delete places in the checkpoint's directory before it waits for the readers. */
export const CHECKPOINT_TOMBSTONE = "deleting";
/** The directory of the readers' markers, in the checkpoint's directory. */
export const CHECKPOINT_READERS_DIR = "readers";

export interface CheckpointReadersOptions {
  /** Names this process in its markers (the agent's name), for the messages of a delete that waits. */
  owner: string;
  /** How often a reader touches its marker. @default 2000 */
  refreshMs?: number;
  /** A marker untouched for this long is a crashed process's. @default 10000 */
  staleMs?: number;
  /** How often a waiting delete looks at the markers again. @default 50 */
  pollMs?: number;
}

export class CheckpointReaders {
  private readonly owner: string;
  private readonly refreshMs: number;
  private readonly staleMs: number;
  private readonly pollMs: number;

  constructor(options: CheckpointReadersOptions) {
    // A marker's name is a file name: the owner's characters that could not be one are replaced.
    this.owner = options.owner.replace(/[^A-Za-z0-9._-]/g, "_");
    this.refreshMs = options.refreshMs ?? 2000;
    this.staleMs = options.staleMs ?? 10_000;
    this.pollMs = options.pollMs ?? 50;
  }

  /**
   * Runs `work` as a reader of the checkpoint at `directory`: its files stay until `work` settles.
   * Throws NotFoundError, without running `work`, when the checkpoint is gone or being deleted.
   */
  async read<T>(directory: string, checkpointId: string, work: () => Promise<T>): Promise<T> {
    const readers = join(directory, CHECKPOINT_READERS_DIR);
    const marker = join(readers, `${this.owner}.${process.pid}.${randomBytes(6).toString("hex")}`);
    try {
      // Not recursive: a checkpoint directory deleted meanwhile must not come back as an empty one.
      mkdirSync(readers, { mode: 0o700 });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw gone(checkpointId);
      if (code !== "EEXIST") throw error;
    }
    try {
      writeFileSync(marker, "", { flag: "wx", mode: 0o600 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") throw gone(checkpointId);
      throw error;
    }
    const refresh = setInterval(() => touch(marker), this.refreshMs);
    refresh.unref();
    try {
      if (this.deleting(directory)) throw new NotFoundError(`checkpoint ${checkpointId} is being deleted`);
      // A delete that scanned before the marker was written moves the directory away next: the
      // tombstone is then not at its path either. The marker is looked for after the tombstone, so
      // a move at any moment after the write is seen by one of the two.
      if (!existsSync(marker)) throw gone(checkpointId);
      return await work();
    } finally {
      clearInterval(refresh);
      rmSync(marker, { force: true });
    }
  }

  /** Whether a delete has begun (its tombstone is in place). */
  deleting(directory: string): boolean {
    return existsSync(join(directory, CHECKPOINT_TOMBSTONE));
  }

  /** The live readers' markers (names), oldest touch first. */
  liveReaders(directory: string): string[] {
    const readers = join(directory, CHECKPOINT_READERS_DIR);
    let names: string[];
    try {
      names = readdirSync(readers);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    const now = Date.now();
    return names.filter((name) => {
      const touched = mtimeMs(join(readers, name));
      return touched !== undefined && now - touched < this.staleMs;
    });
  }

  /**
   * Begins the delete of the checkpoint at `directory` (places its tombstone; from then on no new
   * reader starts) and resolves once no live reader is left: false when the directory is not there.
   * After `timeoutMs` with readers still live it takes the tombstone away again and throws
   * FailedPreconditionError: the checkpoint stays as it was.
   */
  async beginDelete(directory: string, checkpointId: string, timeoutMs: number): Promise<boolean> {
    try {
      writeFileSync(join(directory, CHECKPOINT_TOMBSTONE), `${this.owner}\n`, { mode: 0o600 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ENOTDIR") return false;
      throw error;
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = this.liveReaders(directory);
      if (live.length === 0) return true;
      if (Date.now() >= deadline) {
        rmSync(join(directory, CHECKPOINT_TOMBSTONE), { force: true });
        throw new FailedPreconditionError(
          `checkpoint ${checkpointId} is still being restored from (${live.map(ownerOf).join(", ")}) after ${timeoutMs / 1000} s; ` +
            "delete it again once those restores are done",
        );
      }
      await delay(this.pollMs);
    }
  }

  /** Whether the tombstone at `directory` was placed longer than `ms` ago (a delete cut short). */
  tombstoneOlderThan(directory: string, ms: number): boolean {
    const placed = mtimeMs(join(directory, CHECKPOINT_TOMBSTONE));
    return placed !== undefined && Date.now() - placed > ms;
  }
}

/** The owner named in a marker `<owner>.<pid>.<random>` (an owner may hold dots: a Pod's name). */
function ownerOf(marker: string): string {
  return marker.split(".").slice(0, -2).join(".");
}

function gone(checkpointId: string): NotFoundError {
  return new NotFoundError(`checkpoint ${checkpointId} does not exist on this node`);
}

function touch(path: string): void {
  const now = new Date();
  try {
    utimesSync(path, now, now);
  } catch {
    // taken away meanwhile (the reader is finishing): nothing to keep live
  }
}

function mtimeMs(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}
