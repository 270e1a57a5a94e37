/**
 * Keeps every sandbox's log file (state-layout.ts) near a size limit, so that a chatty sandbox
 * cannot fill the agent's disk. containerd's shim opens a `file://` log for appending (O_APPEND),
 * and keeps it open for the task's life; so a log over the limit is rotated by copy and truncate:
 *
 *   1. copied to `<log>.1.tmp`, and then what the sandbox appended meanwhile, until nothing more came
 *      or the copy holds ROTATION_CATCH_UP_BYTES more than the log's size when the rotation began;
 *   2. renamed over `<log>.1` (the part before it goes);
 *   3. truncated to zero: the shim's next write lands at its start.
 *
 * A sandbox keeps at most two parts, each about `maxBytes` (plus what it writes within one check
 * interval). Output written between step 1's last read and step 3 (a rename's time, microseconds)
 * is lost; so is, from a sandbox writing as fast as the copy (`yes`), what it writes past the
 * catch-up's bound: without the bound the copy would chase such a writer for ever, the copy and the
 * log growing until the disk is full, no other log rotated and `stop()` never returning. Readers
 * (log-follower.ts) read `<log>.1` first; a follower notices the rename and reads the rest of the
 * old part from it before going on at the start of the truncated log.
 */
import { constants } from "node:fs";
import { copyFile, open, readdir, rename, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { rotatedLogPath, rotatingLogPath, sandboxLogFiles } from "./state-layout.js";

/** The default limit of a sandbox's log (kubelet's containerLogMaxSize is 10 MiB too). */
export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** The default pause between two checks of the log directory. */
export const DEFAULT_LOG_CHECK_INTERVAL_MS = 2000;
/**
 * How much more than the log held when its rotation began the rotation copies (what the sandbox
 * appends during the copy): enough for any sandbox writing at a sane rate, and a bound on the copy
 * of one that writes as fast as the copy goes.
 */
export const ROTATION_CATCH_UP_BYTES = 1024 * 1024;

export interface LogRotationOptions {
  /** The directory of the sandboxes' logs (`sandboxLogDir`). */
  dir: string;
  /** A log larger than this is rotated. @default DEFAULT_LOG_MAX_BYTES */
  maxBytes?: number;
  /** @default DEFAULT_LOG_CHECK_INTERVAL_MS */
  intervalMs?: number;
  logger?: Pick<Logger, "warn" | "debug">;
}

/**
 * Rotates the log at `path` as described above; returns the bytes moved to `<path>.1` (at most
 * `sizeSeen` + ROTATION_CATCH_UP_BYTES), or 0 when the log is gone (its sandbox deleted meanwhile).
 * `sizeSeen` is the log's size when the caller decided to rotate it (@default its size now).
 */
export async function rotateLog(path: string, sizeSeen?: number): Promise<number> {
  const copy = rotatingLogPath(path);
  try {
    sizeSeen ??= (await stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  try {
    // The kernel copies (copy_file_range, or a clone where the file system shares extents).
    await copyFile(path, copy, constants.COPYFILE_FICLONE);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      await rm(copy, { force: true });
      return 0;
    }
    throw error;
  }
  let moved = 0;
  try {
    moved = await catchUp(path, copy, sizeSeen + ROTATION_CATCH_UP_BYTES);
    await rename(copy, rotatedLogPath(path));
  } catch (error) {
    await rm(copy, { force: true });
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  try {
    await truncate(path, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    // Deleted since (its sandbox with it): the part just moved aside must not outlive it.
    await rm(rotatedLogPath(path), { force: true });
    return 0;
  }
  return moved;
}

/**
 * Appends to `copy` what `path` holds beyond it, until a read finds nothing new or the copy holds
 * `limit` bytes (cut back to `limit` should copyFile have gone past it); returns the copy's size.
 */
async function catchUp(path: string, copy: string, limit: number): Promise<number> {
  const source = await open(path, "r");
  const target = await open(copy, "a");
  try {
    let position = (await target.stat()).size;
    if (position > limit) {
      await target.truncate(limit);
      return limit;
    }
    const buffer = Buffer.allocUnsafe(64 * 1024);
    while (position < limit) {
      const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, limit - position), position);
      if (bytesRead === 0) break;
      await target.write(buffer, 0, bytesRead);
      position += bytesRead;
    }
    return position;
  } finally {
    await Promise.allSettled([source.close(), target.close()]);
  }
}

/** Checks the log directory every interval and rotates each sandbox's log over the limit. */
export class LogRotation {
  private readonly dir: string;
  readonly maxBytes: number;
  private readonly intervalMs: number;
  private readonly logger: LogRotationOptions["logger"];
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | undefined;

  constructor(options: LogRotationOptions) {
    this.dir = options.dir;
    this.maxBytes = options.maxBytes ?? DEFAULT_LOG_MAX_BYTES;
    this.intervalMs = options.intervalMs ?? DEFAULT_LOG_CHECK_INTERVAL_MS;
    this.logger = options.logger;
    if (!Number.isInteger(this.maxBytes) || this.maxBytes <= 0) throw new RangeError(`maxBytes must be a positive whole number, got ${this.maxBytes}`);
  }

  /** Checks every intervalMs from now on (the timer keeps no process alive). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.checkAll(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.pass;
  }

  /** One pass over the directory; a pass still running when the next is due is not doubled. Never rejects. */
  async checkAll(): Promise<void> {
    if (this.pass) return this.pass;
    this.pass = this.rotateOversized().finally(() => (this.pass = undefined));
    return this.pass;
  }

  private async rotateOversized(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT")
        this.logger?.warn({ err: error, dir: this.dir }, "could not list the sandboxes' logs to rotate them");
      return;
    }
    for (const name of names) {
      if (!name.endsWith(".log")) continue;
      const path = join(this.dir, name);
      try {
        const { size } = await stat(path);
        if (size <= this.maxBytes) continue;
        const moved = await rotateLog(path, size);
        if (moved > 0) this.logger?.debug({ log: path, bytes: moved }, "rotated a sandbox's log");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
        this.logger?.warn({ err: error, log: path }, "could not rotate a sandbox's log; trying again at the next check");
      }
    }
  }
}

/** Removes a sandbox's log with its rotated part and any rotation's copy. */
export async function removeLog(path: string): Promise<void> {
  await Promise.all(sandboxLogFiles(path).map((file) => rm(file, { force: true })));
}
