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
  let finished = false;
  void options.finished?.then(
    () => (finished = true),
    () => (finished = true),
  );
  const buffer = Buffer.alloc(64 * 1024);
  let position = 0;
  let quietPolls = 0;
  try {
    for (;;) {
      if (options.signal?.aborted) return;
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
        if (quietPolls >= 1) return;
        quietPolls += 1;
      }
      await sleep(options.pollIntervalMs ?? 100, undefined, { signal: options.signal }).catch(() => undefined);
    }
  } finally {
    await handle.close();
  }
}
