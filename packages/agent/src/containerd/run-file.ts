/**
 * Reading the files a sandbox's helper writes to its run directory (exit-code, command-start, the
 * daemon's resume files). The directory is the sandbox's to write: whatever code runs in it may
 * put a FIFO, a device or a symbolic link where the agent expects a small file. A read of a FIFO
 * would block (the event loop, or a libuv thread for good), a link would read a file of the host:
 * such a name reads as absent, like a file bigger than any record the helper writes.
 */

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

/** Larger than any file the helper records; a bigger one is not its record. */
const RUN_FILE_MAX_BYTES = 64 * 1024;
/** One buffer for every read (they are synchronous, so never two at once). */
const buffer = Buffer.alloc(RUN_FILE_MAX_BYTES + 1);

/**
 * The text of the regular file at `path`, or undefined when there is none (absent, not a regular
 * file, a symbolic link, or over 64 KiB). Never blocks on what the sandbox put there.
 */
export function readRunFile(path: string): string | undefined {
  let fd: number;
  try {
    // O_NONBLOCK: an open of a FIFO returns at once (and fstat tells it); O_NOFOLLOW: a link fails (ELOOP).
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile() || stats.size > RUN_FILE_MAX_BYTES) return undefined;
    let length = 0;
    for (;;) {
      const got = readSync(fd, buffer, length, buffer.length - length, null);
      if (got === 0) break;
      length += got;
      if (length > RUN_FILE_MAX_BYTES) return undefined;
    }
    return buffer.toString("utf8", 0, length);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
