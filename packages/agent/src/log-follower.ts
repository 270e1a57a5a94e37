import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

export interface FollowOptions {
  /** Keep reading new output until `finished` resolves (the process exited) or the signal aborts. */
  follow: boolean;
  finished?: Promise<unknown>;
  signal?: AbortSignal;
  /** How often to look for new output while following. */
  pollIntervalMs?: number;
}

/**
 * Reads a log file from the start; when following, tails it until the writer is done and the
 * file is drained. Polling a file keeps this independent of the runtime that writes it.
 */
export async function* readLog(path: string, options: FollowOptions): AsyncGenerator<Uint8Array> {
  const handle = await open(path, "r").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (!handle) return;
  let finished = !options.follow;
  void options.finished?.then(
    () => (finished = true),
    () => (finished = true),
  );
  const buffer = Buffer.alloc(64 * 1024);
  let position = 0;
  try {
    for (;;) {
      if (options.signal?.aborted) return;
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead > 0) {
        position += bytesRead;
        yield Uint8Array.prototype.slice.call(buffer, 0, bytesRead);
        continue;
      }
      if (finished) {
        // One last read after the writer finished catches output written just before it exited.
        const last = await handle.read(buffer, 0, buffer.length, position);
        if (last.bytesRead > 0) {
          position += last.bytesRead;
          yield Uint8Array.prototype.slice.call(buffer, 0, last.bytesRead);
          continue;
        }
        return;
      }
      await sleep(options.pollIntervalMs ?? 100, undefined, { signal: options.signal }).catch(() => undefined);
    }
  } finally {
    await handle.close();
  }
}
