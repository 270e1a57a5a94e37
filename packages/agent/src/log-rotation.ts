/**
 * Keeps every sandbox's log file (state-layout.ts) near a size limit, so that a chatty sandbox
 * cannot fill the agent's disk. containerd's shim opens a `file://` log for appending (O_APPEND),
 * and keeps it open for the task's life; so a log over the limit is rotated by copy and truncate:
 *
 *   1. its last `maxBytes` (from a line's start when one begins near there) are copied to
 *      `<log>.1.tmp`: the tail it held when the rotation began, less ROTATION_CATCH_UP_BYTES kept
 *      for what the sandbox appends during the copy, and then that, up to `maxBytes` in all;
 *   2. renamed over `<log>.1` (the part before it goes);
 *   3. truncated to zero: the shim's next write lands at its start.
 *
 * So `<log>.1` never holds more than `maxBytes`, however large the log grew (the agent down, a
 * sandbox writing faster than the checks), and a rotation needs at most `maxBytes` of free space and
 * copies at most that much. Output before the tail copied, written past its bound during the copy,
 * or between the copy's last read and step 3 is lost. When `<log>.1` cannot be written (the disk is
 * full: ENOSPC, or any other failure) the log is truncated all the same, keeping no part, and a
 * warning says so: a full disk must not stop the one thing that frees it.
 *
 * The log directory is listed and every log stat'ed every `intervalMs` (2 s). A log seen growing
 * faster than a quarter of the limit per interval is "hot": only these are stat'ed again every
 * `hotIntervalMs` (100 ms), until they stay slow for two intervals. Quiet sandboxes cost one stat
 * per interval, as before hot logs existed (measured on Node 20: about 100 ms of CPU to list and stat
 * 5000 logs, i.e. 5% of one core at 2 s; a hot log adds 10 stats a second, about 20 µs each); a
 * sandbox writing fast overshoots the limit by what it writes in 100 ms. A new sandbox's log is
 * hot from its create (markHot, by the agent), so one writing fast from its start does not run
 * until the next full check. Rotations run apart from the checks, ROTATION_CONCURRENCY at a time
 * and one per log: a log being rotated holds up no other log's.
 *
 * Readers (log-follower.ts) read `<log>.1` first, then the log. The rotations of LogRotation and the
 * agent's readers share a record per log (LogGenerations): its generation counts rotations, and the
 * last rotation's says where in the log it truncated the part `<log>.1` holds starts and how long it
 * is. A rotation updates it under the log's lock, held across its rename and truncation (not its
 * copy: readers read on meanwhile); a reader takes the lock for each read of the log and to open
 * `<log>.1`, so it always knows which log (generation) and offset it read, and where to go on after
 * a rotation: in `<log>.1` at its offset less where the kept part starts, or, when it fell behind
 * (before the kept part, or two rotations on), at the oldest byte kept, after a marker line.
 */
import { open, readdir, rename, rm, stat, truncate, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Logger } from "pino";
import { rotatedLogPath, rotatingLogPath, sandboxLogFiles } from "./state-layout.js";

/** The default limit of a sandbox's log (kubelet's containerLogMaxSize is 10 MiB too). */
export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** The default pause between two checks of the whole log directory. */
export const DEFAULT_LOG_CHECK_INTERVAL_MS = 2000;
/** The default pause between two checks of the logs seen growing fast. */
export const DEFAULT_LOG_HOT_CHECK_INTERVAL_MS = 100;
/**
 * Of the `maxBytes` a rotation keeps, how much at most is left for what the sandbox appends during
 * the copy (an eighth of `maxBytes` when that is less): the tail copied first is that much shorter.
 */
export const ROTATION_CATCH_UP_BYTES = 1024 * 1024;
/** How far past the tail's start a rotation looks for a line's end to start the kept part at. */
const LINE_SEARCH_BYTES = 64 * 1024;
/** How many logs are rotated at once. */
export const ROTATION_CONCURRENCY = 4;

type RotationLogger = Pick<Logger, "warn" | "debug">;

export interface LogRotationOptions {
  /** The directory of the sandboxes' logs (`sandboxLogDir`). */
  dir: string;
  /** A log larger than this is rotated. @default DEFAULT_LOG_MAX_BYTES */
  maxBytes?: number;
  /** @default DEFAULT_LOG_CHECK_INTERVAL_MS */
  intervalMs?: number;
  /** @default DEFAULT_LOG_HOT_CHECK_INTERVAL_MS */
  hotIntervalMs?: number;
  logger?: RotationLogger;
  /** Rotates one log (tests replace it). @default rotateLog */
  rotate?: typeof rotateLog;
}

export interface RotateLogOptions {
  /** How much of the log `<log>.1` keeps at most. @default DEFAULT_LOG_MAX_BYTES */
  maxBytes?: number;
  /** Told when the log is truncated without keeping a part. */
  logger?: RotationLogger;
  /** The record the log's readers go by (LogRotation's): the rename and truncation happen under its lock, and are noted in it. */
  generations?: LogGenerations;
}

/** What a log's readers know of its rotations (see the file's comment). */
export interface LogGeneration {
  /** How many rotations of the log this record has seen. */
  generation: number;
  /** Of the log the last of them truncated: the offset the part it kept (`<log>.1`) starts at. */
  keptFrom: number;
  /** How many bytes that part holds (that log's `keptFrom` to `keptFrom + kept`); 0: none was kept. */
  kept: number;
}

/** A hold on a log's record: its lock, and its state. */
export interface LogHold {
  /** Runs `fn` holding the log's lock, with its record (a rotation updates it; a reader only reads it). Hold it for file operations only, never while waiting on a client. */
  locked<T>(fn: (state: LogGeneration) => Promise<T>): Promise<T>;
  /** Lets go of the record. */
  release(): void;
}

interface LogRecord extends LogGeneration {
  holders: number;
  busy: boolean;
  waiting: (() => void)[];
}

/**
 * The records of the logs of one directory, shared by their rotations and readers in this process
 * (see the file's comment). A log's record exists while a rotation or a reader holds it: its
 * generation counts the rotations since, which is all a reader compares.
 */
export class LogGenerations {
  private readonly dir: string;
  private readonly records = new Map<string, LogRecord>();

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  /** Whether the rotations of `path` go by this record: a log (`*.log`) of the directory. */
  manages(path: string): boolean {
    return dirname(resolve(path)) === this.dir && basename(path).endsWith(".log");
  }

  /** Holds the record of `path` (made when there is none) until the hold's release. */
  hold(path: string): LogHold {
    const key = resolve(path);
    let record = this.records.get(key);
    if (!record) {
      record = { generation: 0, keptFrom: 0, kept: 0, holders: 0, busy: false, waiting: [] };
      this.records.set(key, record);
    }
    record.holders += 1;
    const held = record;
    let released = false;
    return {
      locked: async (fn) => {
        if (held.busy) await new Promise<void>((resolve) => held.waiting.push(resolve));
        else held.busy = true;
        try {
          return await fn(held);
        } finally {
          // Handed to the next in line, still busy; free when none waits.
          const next = held.waiting.shift();
          if (next) next();
          else held.busy = false;
        }
      },
      release: () => {
        if (released) return;
        released = true;
        held.holders -= 1;
        if (held.holders === 0 && this.records.get(key) === held) this.records.delete(key);
      },
    };
  }

  /** How many logs have a record (for tests). */
  get size(): number {
    return this.records.size;
  }
}

/**
 * Rotates the log at `path` as described above; returns the bytes moved to `<path>.1` (at most
 * `maxBytes`), or 0 when the log is gone (its sandbox deleted meanwhile) or was truncated without
 * keeping a part (`<path>.1` could not be written; warned of).
 */
export async function rotateLog(path: string, options: RotateLogOptions = {}): Promise<number> {
  const hold = options.generations?.hold(path);
  try {
    return await rotateHeld(path, options, hold);
  } finally {
    hold?.release();
  }
}

async function rotateHeld(path: string, options: RotateLogOptions, hold: LogHold | undefined): Promise<number> {
  const maxBytes = options.maxBytes ?? DEFAULT_LOG_MAX_BYTES;
  const copy = rotatingLogPath(path);
  // The rename and truncation, and the record of them, with the log's readers held off.
  const locked = <T>(fn: (state: LogGeneration | undefined) => Promise<T>): Promise<T> => (hold ? hold.locked(fn) : fn(undefined));
  let source: FileHandle;
  try {
    source = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  let tail: { from: number; written: number };
  let size = 0;
  let failure: { error: unknown } | undefined;
  try {
    size = (await source.stat()).size;
    tail = await copyTail(source, size, copy, maxBytes);
  } catch (error) {
    failure = { error };
    tail = { from: size, written: 0 };
  }
  await source.close().catch(() => undefined);
  return locked(async (state) => {
    if (!failure) {
      try {
        await rename(copy, rotatedLogPath(path));
      } catch (error) {
        failure = { error };
      }
    }
    if (failure) {
      await rm(copy, { force: true }).catch(() => undefined);
      // The directory gone (its sandbox deleted): nothing to keep or free.
      if ((failure.error as NodeJS.ErrnoException).code === "ENOENT") return 0;
      // Where the output dropped ends, for the readers (what is appended until the truncation is lost too).
      const end = await stat(path).then(
        (found) => found.size,
        () => size,
      );
      try {
        await truncate(path, 0);
      } catch (truncation) {
        if ((truncation as NodeJS.ErrnoException).code === "ENOENT") return 0;
        throw truncation;
      }
      if (state) Object.assign(state, { generation: state.generation + 1, keptFrom: end, kept: 0 });
      options.logger?.warn(
        { err: failure.error, log: path, bytes: size },
        "could not keep a rotated part of a sandbox's log; truncated it all the same, dropping its output, to free the disk",
      );
      return 0;
    }
    try {
      await truncate(path, 0);
    } catch (error) {
      // Gone (its sandbox deleted with it): the part just moved aside must not outlive it. Not
      // truncated otherwise: the log still holds that part, which a reader must not read twice.
      await rm(rotatedLogPath(path), { force: true }).catch(() => undefined);
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      return 0;
    }
    if (state) Object.assign(state, { generation: state.generation + 1, keptFrom: tail.from, kept: tail.written });
    return tail.written;
  });
}

/**
 * Writes to `copy` the last `maxBytes` of `source` (`size` bytes when the rotation began), less the
 * catch-up's share, from the start of a line when one starts within LINE_SEARCH_BYTES; then what
 * was appended meanwhile, until a read finds nothing new or the copy holds `maxBytes`. Returns
 * where in `source` the copy starts, and its size.
 */
async function copyTail(source: FileHandle, size: number, copy: string, maxBytes: number): Promise<{ from: number; written: number }> {
  const catchUp = Math.min(ROTATION_CATCH_UP_BYTES, Math.floor(maxBytes / 8));
  let position = Math.max(0, size - (maxBytes - catchUp));
  const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(LINE_SEARCH_BYTES, maxBytes)));
  if (position > 0) {
    const { bytesRead } = await source.read(buffer, 0, Math.min(LINE_SEARCH_BYTES, size - position), position);
    const newline = buffer.subarray(0, bytesRead).indexOf(10);
    // Not at the very end: what follows the last line's end is kept whole rather than nothing.
    if (newline >= 0 && position + newline + 1 < size) position += newline + 1;
  }
  const from = position;
  const limit = position + maxBytes;
  const target = await open(copy, "w");
  try {
    let written = 0;
    while (position < limit) {
      const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, limit - position), position);
      if (bytesRead === 0) break;
      await target.write(buffer, 0, bytesRead);
      position += bytesRead;
      written += bytesRead;
    }
    return { from, written };
  } finally {
    await target.close();
  }
}

/** What a check last saw of a log. */
interface Seen {
  size: number;
  at: number;
  /** Until when it is checked every hotIntervalMs (0: not hot). */
  hotUntil: number;
}

/**
 * Checks the log directory every interval, the logs growing fast more often, and rotates each
 * sandbox's log over the limit (see the file's comment).
 */
export class LogRotation {
  private readonly dir: string;
  readonly maxBytes: number;
  private readonly intervalMs: number;
  private readonly hotIntervalMs: number;
  private readonly logger: LogRotationOptions["logger"];
  private readonly rotate: typeof rotateLog;
  /** The records of the logs' rotations, which the agent's readers of these logs go by (log-follower.ts). */
  readonly generations: LogGenerations;
  private timer: NodeJS.Timeout | undefined;
  private hotTimer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | undefined;
  private hotPass: Promise<void> | undefined;
  private readonly seen = new Map<string, Seen>();
  private readonly rotating = new Map<string, Promise<void>>();
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(options: LogRotationOptions) {
    this.dir = options.dir;
    this.maxBytes = options.maxBytes ?? DEFAULT_LOG_MAX_BYTES;
    this.intervalMs = options.intervalMs ?? DEFAULT_LOG_CHECK_INTERVAL_MS;
    this.hotIntervalMs = options.hotIntervalMs ?? DEFAULT_LOG_HOT_CHECK_INTERVAL_MS;
    this.logger = options.logger;
    this.rotate = options.rotate ?? rotateLog;
    this.generations = new LogGenerations(this.dir);
    if (!Number.isInteger(this.maxBytes) || this.maxBytes <= 0) throw new RangeError(`maxBytes must be a positive whole number, got ${this.maxBytes}`);
  }

  /** Checks every intervalMs (the hot logs every hotIntervalMs) from now on (the timers keep no process alive). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.checkDir(), this.intervalMs);
    this.timer.unref();
    this.hotTimer = setInterval(() => void this.checkHot(), this.hotIntervalMs);
    this.hotTimer.unref();
  }

  /** Stops the checks, and returns once the checks and rotations under way ended. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.hotTimer);
    this.timer = undefined;
    this.hotTimer = undefined;
    await Promise.allSettled([this.pass, this.hotPass]);
    await this.settled();
  }

  /**
   * Checks the log at `path` every hotIntervalMs from now on, until it has been slow for two
   * intervals: a sandbox just created or started may write fast from its first line, before any
   * check has seen its log grow.
   */
  markHot(path: string): void {
    if (!this.generations.manages(path)) return;
    path = join(this.dir, basename(path));
    const now = performance.now();
    const hotUntil = now + 2 * this.intervalMs;
    const seen = this.seen.get(path);
    if (seen) seen.hotUntil = Math.max(seen.hotUntil, hotUntil);
    else this.seen.set(path, { size: 0, at: now, hotUntil });
  }

  /** One check of the directory, and returns once the rotations it began (and any under way) ended. Never rejects. */
  async checkAll(): Promise<void> {
    await this.checkDir();
    await this.settled();
  }

  private async settled(): Promise<void> {
    while (this.rotating.size > 0) await Promise.allSettled([...this.rotating.values()]);
  }

  /** One pass over the directory; a pass still running when the next is due is not doubled. Never rejects. */
  private checkDir(): Promise<void> {
    this.pass ??= this.listAndCheck().finally(() => (this.pass = undefined));
    return this.pass;
  }

  private checkHot(): Promise<void> {
    this.hotPass ??= (async () => {
      const now = performance.now();
      for (const [path, seen] of this.seen) {
        if (seen.hotUntil <= now) continue;
        await this.check(path);
      }
    })().finally(() => (this.hotPass = undefined));
    return this.hotPass;
  }

  private async listAndCheck(): Promise<void> {
    const listed = performance.now();
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT")
        this.logger?.warn({ err: error, dir: this.dir }, "could not list the sandboxes' logs to rotate them");
      return;
    }
    const logs = new Set(names.filter((name) => name.endsWith(".log")).map((name) => join(this.dir, name)));
    // A log marked hot while the directory was read may be missing from the list: not forgotten.
    for (const [path, seen] of this.seen) if (!logs.has(path) && seen.at < listed) this.seen.delete(path);
    for (const path of logs) await this.check(path);
  }

  /** Stats one log: notes whether it grows fast, and begins its rotation when it is over the limit. */
  private async check(path: string): Promise<void> {
    let size: number;
    try {
      ({ size } = await stat(path));
    } catch (error) {
      this.seen.delete(path);
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") this.logger?.warn({ err: error, log: path }, "could not check the size of a sandbox's log");
      return;
    }
    const now = performance.now();
    const before = this.seen.get(path);
    const seen: Seen = { size, at: now, hotUntil: before?.hotUntil ?? 0 };
    // Fast: more than a quarter of the limit per full interval (a log shrunk was rotated: from 0); or
    // over the limit (how fast it got there is not known: it is watched closely for a while).
    const fast = before && (size - (size < before.size ? 0 : before.size)) * 4 * this.intervalMs > this.maxBytes * Math.max(now - before.at, 1);
    if (fast || size > this.maxBytes) seen.hotUntil = now + 2 * this.intervalMs;
    this.seen.set(path, seen);
    if (size > this.maxBytes && !this.rotating.has(path)) {
      const rotation = this.rotateOne(path).finally(() => this.rotating.delete(path));
      this.rotating.set(path, rotation);
    }
  }

  private async rotateOne(path: string): Promise<void> {
    // A slot: a free one, or the one a rotation ending hands over.
    if (this.active < ROTATION_CONCURRENCY) this.active += 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      const moved = await this.rotate(path, { maxBytes: this.maxBytes, logger: this.logger, generations: this.generations });
      const seen = this.seen.get(path);
      if (seen) seen.size = 0;
      if (moved > 0) this.logger?.debug({ log: path, bytes: moved }, "rotated a sandbox's log");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT")
        this.logger?.warn({ err: error, log: path }, "could not rotate a sandbox's log; trying again at the next check");
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    }
  }
}

/** Removes a sandbox's log with its rotated part and any rotation's copy. */
export async function removeLog(path: string): Promise<void> {
  await Promise.all(sandboxLogFiles(path).map((file) => rm(file, { force: true })));
}
