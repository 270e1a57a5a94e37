import { open, stat, type FileHandle } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
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
}

/** A rotation truncates the log right after its rename; a follower waits this long for that at most. */
const TRUNCATION_WAIT_MS = 500;

/** Which `<log>.1` is there (its inode and change time), and its size; undefined when there is none. */
async function rotatedPart(path: string): Promise<{ id: string; size: number } | undefined> {
  try {
    const found = await stat(path, { bigint: true });
    return { id: `${found.ino}:${found.ctimeNs}`, size: Number(found.size) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** The bytes of the file at `path` from `position` to its end as it is read; nothing when it is gone. */
async function* readFrom(path: string, position: number, buffer: Buffer): AsyncGenerator<Uint8Array> {
  const handle = await open(path, "r").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (!handle) return;
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield Uint8Array.prototype.slice.call(buffer, 0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Reads a sandbox's log from the start: its rotated part (`<log>.1`, log-rotation.ts) when there is
 * one, then the log; when following, tails the log until the writer is done and the file is
 * drained. A rotation while it reads is seen by the rename of `<log>.1`: the rest of the old part is
 * read from there, and the log again from its start once truncated. Polling files keeps this
 * independent of the runtime that writes them.
 */
export async function* readLog(path: string, options: FollowOptions): AsyncGenerator<Uint8Array> {
  const handle = await open(path, "r").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (!handle) return;
  let finished = false;
  let failure: { error: unknown } | undefined;
  void options.finished?.then(
    () => (finished = true),
    (error: unknown) => {
      failure = { error };
      finished = true;
    },
  );
  const buffer = Buffer.alloc(64 * 1024);
  const rotated = rotatedLogPath(path);
  let position = 0;
  let quietPolls = 0;
  try {
    let part = await rotatedPart(rotated);
    if (part && !options.signal?.aborted) yield* readFrom(rotated, 0, buffer);
    for (;;) {
      if (options.signal?.aborted) return;
      const now = await rotatedPart(rotated);
      if (now && now.id !== part?.id) {
        part = now;
        if (await truncatedSince(handle, position, now.size)) {
          yield* readFrom(rotated, position, buffer);
          position = 0;
        }
      } else if ((await handle.stat()).size < position) {
        // Truncated without a rotation (by hand): what follows is new output.
        position = 0;
      }
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead > 0) {
        quietPolls = 0;
        position += bytesRead;
        yield Uint8Array.prototype.slice.call(buffer, 0, bytesRead);
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
    await handle.close();
  }
}

/**
 * After `<log>.1` was replaced by a copy of `copied` bytes, whether the log was truncated (it only
 * grows otherwise): waits for that up to TRUNCATION_WAIT_MS. False when it was not (a rotation cut
 * short): the log still holds what was read, and reading goes on where it was.
 */
async function truncatedSince(handle: FileHandle, position: number, copied: number): Promise<boolean> {
  const deadline = performance.now() + TRUNCATION_WAIT_MS;
  for (;;) {
    const { size } = await handle.stat();
    if (size < position || size < copied) return true;
    if (performance.now() >= deadline) return false;
    await sleep(2);
  }
}
