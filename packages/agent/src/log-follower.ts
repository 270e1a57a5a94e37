import { open, type FileHandle } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { LogGeneration, LogGenerations } from "./log-rotation.js";
import { rotatedLogPath } from "./state-layout.js";

export interface FollowOptions {
  /**
   * Keep reading new output until `finished` settles or the signal aborts. `finished` resolves when
   * the process exited; a rejection (its wait failed: the process may run on) ends the reading,
   * once what the log holds was read, with that error.
   */
  follow: boolean;
  finished?: Promise<unknown>;
  signal?: AbortSignal;
  /** How often to look for new output while following. */
  pollIntervalMs?: number;
  /**
   * The records of the rotations of the logs (LogRotation's `generations`): with them, a read across
   * a rotation knows exactly where it is (log-rotation.ts). Without them, or for a log they do not
   * manage (no rotation expected), a log found shorter than what was read of it goes on at its
   * start after TRUNCATED_MARKER.
   */
  generations?: LogGenerations;
  /**
   * Where to begin, instead of `<log>.1`'s start: an offset in the log, of the generation that
   * `generations` counted when it was seen under the log's lock (a hold kept until this reader has
   * begun keeps that count meaningful). `<log>.1` is not read, unless a rotation since moved that
   * offset there.
   */
  start?: LogPosition;
}

/** An offset in one generation of a log (LogGeneration's count). */
export interface LogPosition {
  generation: number;
  position: number;
}

/** The line a reader gets where it missed output that the log's rotation dropped before it was read. */
export const SKIPPED_MARKER = "[fsb: output skipped: the reader fell behind the log's rotation]";
/** The line a reader gets where the log was truncated under it by something other than the agent's rotation. */
export const TRUNCATED_MARKER = "[fsb: output may be missing: the log was truncated while it was read]";

const NEWLINE = 10;

async function openIfExists(path: string): Promise<FileHandle | undefined> {
  return open(path, "r").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
}

/** What one look at the log found. */
type Step =
  | { kind: "data"; data: Uint8Array }
  | { kind: "rotated"; part: FileHandle | undefined; partPosition: number; skipped: boolean }
  | { kind: "truncated" }
  | { kind: "nothing" };

/**
 * Reads a sandbox's log from the start: its rotated part (`<log>.1`, log-rotation.ts) when there is
 * one, then the log; when following, tails the log until the writer is done and the file is
 * drained. Polling files keeps this independent of the runtime that writes them.
 *
 * Each read of the log, and the opening of `<log>.1`, holds the log's lock (`generations`), which
 * a rotation holds across its rename and truncation: a read is of one generation of the log, at an
 * offset in it. A rotation since the last read (one: the generation moved by one) means the rest of
 * that generation is in the new `<log>.1` from (offset − where its kept part starts), and then the
 * log from 0. A reader that fell behind (its offset before the kept part, or two rotations since)
 * gets SKIPPED_MARKER on a line of its own and goes on at the oldest byte kept. A `<log>.1` opened
 * is read to its end through its handle: a later rename over it does not change what it reads. The
 * lock is never held while a chunk waits for the consumer.
 */
export async function* readLog(path: string, options: FollowOptions): AsyncGenerator<Uint8Array> {
  const log = await openIfExists(path);
  if (!log) return;
  let finished = false;
  let failure: { error: unknown } | undefined;
  void options.finished?.then(
    () => (finished = true),
    (error: unknown) => {
      failure = { error };
      finished = true;
    },
  );
  const hold = options.generations?.manages(path) ? options.generations.hold(path) : undefined;
  const locked = <T>(fn: (state: LogGeneration | undefined) => Promise<T>): Promise<T> => (hold ? hold.locked(fn) : fn(undefined));
  const rotated = rotatedLogPath(path);
  const buffer = Buffer.alloc(64 * 1024);
  /** The generation of the log read (as the record counts them), and the offset in it read up to. */
  let generation = 0;
  let position = 0;
  /** A rotated part to read first, and where. */
  let part: FileHandle | undefined;
  let partPosition = 0;
  /** The last byte delivered: a marker starts on a line of its own. */
  let last = NEWLINE;
  const marker = (text: string): Uint8Array => {
    const line = Buffer.from(`${last === NEWLINE ? "" : "\n"}${text}\n`);
    last = NEWLINE;
    return line;
  };
  let quietPolls = 0;
  try {
    const start = options.start;
    if (start) {
      generation = start.generation;
      position = start.position;
    } else {
      part = await locked(async (state) => {
        generation = state?.generation ?? 0;
        return openIfExists(rotated);
      });
    }
    for (;;) {
      if (options.signal?.aborted) return;
      if (part) {
        const { bytesRead } = await part.read(buffer, 0, buffer.length, partPosition);
        if (bytesRead > 0) {
          partPosition += bytesRead;
          last = buffer[bytesRead - 1]!;
          yield Uint8Array.prototype.slice.call(buffer, 0, bytesRead);
          continue;
        }
        await part.close();
        part = undefined;
      }
      const step = await locked(async (state): Promise<Step> => {
        if (state && state.generation !== generation) return await rotatedSince(state);
        const { bytesRead } = await log.read(buffer, 0, buffer.length, position);
        if (bytesRead > 0) {
          position += bytesRead;
          return { kind: "data", data: Uint8Array.prototype.slice.call(buffer, 0, bytesRead) };
        }
        return (await log.stat()).size < position ? { kind: "truncated" } : { kind: "nothing" };
      });
      if (step.kind === "data") {
        quietPolls = 0;
        last = step.data[step.data.length - 1]!;
        yield step.data;
        continue;
      }
      if (step.kind === "rotated") {
        part = step.part;
        partPosition = step.partPosition;
        if (step.skipped) yield marker(SKIPPED_MARKER);
        continue;
      }
      if (step.kind === "truncated") {
        // Not by the agent's rotation (by hand, or by one that keeps no record of it): what follows is new output.
        position = 0;
        yield marker(TRUNCATED_MARKER);
        continue;
      }
      if (!options.follow) return;
      if (finished) {
        // The shim copies output to the file asynchronously: after the writer finished, keep reading
        // until the file stops growing for one poll interval, so the last lines are not lost.
        if (quietPolls >= 1) {
          // Not seen to end: a reader must not take the quiet end of its stream for the command's exit.
          if (failure && !options.signal?.aborted) throw failure.error;
          return;
        }
        quietPolls += 1;
      }
      await sleep(options.pollIntervalMs ?? 100, undefined, { signal: options.signal }).catch(() => undefined);
    }
  } finally {
    hold?.release();
    await Promise.allSettled([part?.close(), log.close()]);
  }

  /**
   * Under the lock, the log rotated since the last read (`state.generation` moved): where reading
   * goes on, and whether output was skipped. The reader is then at the start of the current log.
   */
  async function rotatedSince(state: LogGeneration): Promise<Step> {
    const once = state.generation === generation + 1;
    const keptEnd = state.keptFrom + state.kept;
    // Once: the last rotation truncated the log this reader was reading; its offset there tells.
    const skipped = once ? position < state.keptFrom : true;
    let from = once ? Math.max(0, position - state.keptFrom) : 0;
    generation = state.generation;
    const partLeft = state.kept > 0 && (once ? Math.max(position, state.keptFrom) < keptEnd : true);
    position = 0;
    if (!partLeft) return { kind: "rotated", part: undefined, partPosition: 0, skipped };
    const opened = await openIfExists(rotated);
    if (!opened) from = 0;
    return { kind: "rotated", part: opened, partPosition: from, skipped };
  }
}
