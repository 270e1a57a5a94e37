/**
 * The last lines of a sandbox's log (`fsb logs --tail N`, as `kubectl logs --tail`). What the log
 * keeps is its rotated part `<log>.1` (log-rotation.ts) followed by `<log>`, read as one stream of
 * bytes; its last N lines are found by reading backwards from the end of `<log>`, and of `<log>.1`
 * when `<log>` holds fewer, one chunk at a time: never the whole log in memory. A line ends with
 * "\n"; a last line without one is a line too (the command's output so far), and the newline that
 * ends the last line does not start another. Lines are split on the byte "\n" only, which is never
 * part of a multi-byte UTF-8 character, so the bytes handed out are the log's own: a character
 * split across the two parts, or across two reads, stays whole.
 *
 * The parts are read as they were at one moment: their sizes are taken holding the log's lock
 * (LogGenerations, as readLog does), at a generation of the log that a rotation moves on; each read
 * of `<log>` holds the lock too, and a rotation found meanwhile starts the search again (nothing has
 * been handed out yet) or, once the tail is being handed out, stops it there. readLog
 * (log-follower.ts) then goes on at exactly the next byte, at that generation: what the sandbox
 * wrote since, and any rotation since, are neither lost nor doubled. With `follow` it follows;
 * without, it reads what was appended since, and ends.
 */
import { open, type FileHandle } from "node:fs/promises";
import { UnavailableError } from "@fast-sandbox/api/core";
import { readLog, type FollowOptions, type LogPosition } from "./log-follower.js";
import type { LogGeneration, LogHold } from "./log-rotation.js";
import { rotatedLogPath } from "./state-layout.js";

/** How much of the log one read takes, backwards and forwards. */
export const TAIL_CHUNK_BYTES = 64 * 1024;
/** How many searches rotations may cut short before the reader gives up (one takes milliseconds; rotations of a log are 100 ms apart at least). */
export const TAIL_ATTEMPTS = 5;
const NEWLINE = 0x0a;

export interface TailOptions extends Omit<FollowOptions, "start"> {
  /** The size of a read (tests make it tiny). @default TAIL_CHUNK_BYTES */
  chunkBytes?: number;
}

/**
 * The last `lines` lines of the log at `path` (its rotated part included), then, by readLog from
 * there, what comes after them (`options.follow`: until the writer is done). Nothing when there is
 * no log.
 */
export async function* readLogTail(path: string, lines: number, options: TailOptions): AsyncGenerator<Uint8Array> {
  // Held until readLog is done: the generation it starts at is counted in the same record.
  const hold = options.generations?.manages(path) ? options.generations.hold(path) : undefined;
  try {
    const { chunkBytes, ...follow } = options;
    const end = yield* readTail(path, lines, { chunkBytes, hold, signal: options.signal });
    if (!end || options.signal?.aborted) return;
    yield* readLog(path, { ...follow, start: end });
  } finally {
    hold?.release();
  }
}

/** One part of a snapshot: an open file, and how much of it the snapshot holds. */
interface Part {
  handle: FileHandle;
  size: number;
}

interface Snapshot {
  /** The log's generation when the sizes were taken. */
  generation: number;
  /** `<log>.1` when there is one, then `<log>`. */
  parts: Part[];
}

type Locked = <T>(fn: (state: LogGeneration | undefined) => Promise<T>) => Promise<T>;

/**
 * Yields the last `lines` lines of the log (and its rotated part), and returns where the log goes on
 * after them (readLog's `start`); undefined when there is no log. `hold`: of the log's record
 * (LogGenerations), held by the caller until it is done with the position returned.
 */
export async function* readTail(
  path: string,
  lines: number,
  options: { chunkBytes?: number; hold?: LogHold; signal?: AbortSignal } = {},
): AsyncGenerator<Uint8Array, LogPosition | undefined> {
  if (!Number.isInteger(lines) || lines < 0) throw new RangeError(`lines must be a whole number ≥ 0, got ${lines}`);
  const { hold, signal } = options;
  const buffer = Buffer.allocUnsafe(options.chunkBytes ?? TAIL_CHUNK_BYTES);
  const locked: Locked = (fn) => (hold ? hold.locked(fn) : fn(undefined));
  for (let attempt = 1; attempt <= TAIL_ATTEMPTS; attempt++) {
    const snapshot = await openSnapshot(path, locked);
    if (!snapshot) return undefined;
    try {
      const start = await findStart(snapshot, lines, buffer, locked);
      if (!start) continue; // rotated under the search
      const last = snapshot.parts.length - 1;
      if (start.part < last) yield* readPart(snapshot.parts[0]!, start.offset, buffer, signal);
      const position = yield* readLogPart(snapshot, start.part === last ? start.offset : 0, buffer, locked, signal);
      return { generation: snapshot.generation, position };
    } finally {
      await Promise.allSettled(snapshot.parts.map((part) => part.handle.close()));
    }
  }
  throw new UnavailableError(`the sandbox's log rotated ${TAIL_ATTEMPTS} times while its last ${lines} lines were looked for (it writes very fast); retry`);
}

/**
 * Opens `<log>.1` (when there is one) and `<log>`, and takes their sizes and the log's generation,
 * holding the log's lock: no rotation renames or truncates in between. Undefined when there is no log.
 */
async function openSnapshot(path: string, locked: Locked): Promise<Snapshot | undefined> {
  return locked(async (state) => {
    const log = await openIfThere(path);
    if (!log) return undefined;
    let older: FileHandle | undefined;
    try {
      older = await openIfThere(rotatedLogPath(path));
      const parts: Part[] = older ? [{ handle: older, size: (await older.stat()).size }] : [];
      parts.push({ handle: log, size: (await log.stat()).size });
      return { generation: state?.generation ?? 0, parts };
    } catch (error) {
      await Promise.allSettled([log.close(), older?.close()]);
      throw error;
    }
  });
}

async function openIfThere(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Where the last `lines` lines of the snapshot's parts (one stream) begin: the part and the offset
 * in it, found reading backwards one buffer at a time. Undefined when the log rotated meanwhile.
 */
async function findStart(snapshot: Snapshot, lines: number, buffer: Buffer, locked: Locked): Promise<{ part: number; offset: number } | undefined> {
  const { parts } = snapshot;
  const last = parts.length - 1;
  if (lines === 0) return { part: last, offset: parts[last]!.size };
  let remaining = lines;
  // The stream's very last byte: a newline there ends the last line, it begins none.
  let atEnd = true;
  for (let index = last; index >= 0; index--) {
    const part = parts[index]!;
    for (let end = part.size; end > 0;) {
      const length = Math.min(buffer.length, end);
      const from = end - length;
      const read = index === last ? await readLogAt(snapshot, part, buffer, length, from, locked) : await readFully(part.handle, buffer, length, from);
      if (!read) return undefined;
      let at = length - 1;
      if (atEnd) {
        atEnd = false;
        if (buffer[at] === NEWLINE) at -= 1;
      }
      while (at >= 0) {
        const newline = buffer.lastIndexOf(NEWLINE, at);
        if (newline < 0) break;
        if (--remaining === 0) return { part: index, offset: from + newline + 1 };
        at = newline - 1;
      }
      end = from;
    }
  }
  // Fewer lines than asked for: all there is.
  return { part: 0, offset: 0 };
}

/** Reads `length` bytes at `position` into the buffer's start; false when the file ends before (truncated). */
async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<boolean> {
  for (let done = 0; done < length;) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) return false;
    done += bytesRead;
  }
  return true;
}

/** readFully on `<log>`, holding its lock; false when it rotated since the snapshot (or was truncated). */
async function readLogAt(snapshot: Snapshot, part: Part, buffer: Buffer, length: number, position: number, locked: Locked): Promise<boolean> {
  return locked(async (state) => (state?.generation ?? 0) === snapshot.generation && (await readFully(part.handle, buffer, length, position)));
}

/** `<log>.1` from `offset` to its end, through its handle (a rotation renames another over it; the one open stays as it was). */
async function* readPart(part: Part, offset: number, buffer: Buffer, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
  for (let position = offset; position < part.size && !signal?.aborted;) {
    const { bytesRead } = await part.handle.read(buffer, 0, Math.min(buffer.length, part.size - position), position);
    if (bytesRead === 0) return;
    position += bytesRead;
    yield Uint8Array.prototype.slice.call(buffer, 0, bytesRead);
  }
}

/**
 * `<log>` from `offset` to its size in the snapshot, each read holding its lock; returns where it
 * stopped: there, or before when the log rotated meanwhile (readLog goes on from there as it would
 * have, in the new `<log>.1`). The lock is not held while a chunk waits for the consumer.
 */
async function* readLogPart(
  snapshot: Snapshot,
  offset: number,
  buffer: Buffer,
  locked: Locked,
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array, number> {
  const log = snapshot.parts.at(-1)!;
  let position = offset;
  while (position < log.size && !signal?.aborted) {
    const chunk = await locked(async (state) => {
      if ((state?.generation ?? 0) !== snapshot.generation) return undefined;
      const { bytesRead } = await log.handle.read(buffer, 0, Math.min(buffer.length, log.size - position), position);
      return bytesRead > 0 ? Uint8Array.prototype.slice.call(buffer, 0, bytesRead) : undefined;
    });
    if (!chunk) break;
    position += chunk.length;
    yield chunk;
  }
  return position;
}
