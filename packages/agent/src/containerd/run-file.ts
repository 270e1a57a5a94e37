/**
 * Reading the files a sandbox's helper writes to its run directory (exit-code, command-start, the
 * daemon's resume files). The directory is the sandbox's to write: whatever code runs in it may
 * put a FIFO, a device or a symbolic link where the agent expects a small file. A read of a FIFO
 * would block (the event loop, or a libuv thread for good), a link would read a file of the host,
 * the open of a device would run its driver's open (as host root): such a name reads as absent,
 * without being opened, like a file bigger than any record the helper writes.
 */

import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

/** Linux's O_PATH (not in Node's constants): a descriptor that names a file without opening it. */
const O_PATH = 0o10000000;

/**
 * Opens `path` with `flags` only when what is there is of `kind`, never following a link (an error
 * then, ELOOP). What is there is looked at through an O_PATH descriptor first, which opens nothing:
 * a device node a sandbox planted is never opened (its driver's open could act: a watchdog's starts
 * it), nor a FIFO's other end woken. The file is then opened through that same descriptor
 * (/proc/self/fd), so a name swapped meanwhile cannot put something else there. Undefined when it
 * is of another kind; throws what open(2) throws (ENOENT, ENXIO for a FIFO nobody reads…).
 */
export function openRunEntry(path: string, kind: "file" | "fifo", flags: number): number | undefined {
  const located = openSync(path, O_PATH | constants.O_NOFOLLOW);
  try {
    const stats = fstatSync(located);
    if (kind === "file" ? !stats.isFile() : !stats.isFIFO()) return undefined;
    return openSync(`/proc/self/fd/${located}`, flags);
  } finally {
    closeSync(located);
  }
}

/** Larger than any file the helper records; a bigger one is not its record. */
const RUN_FILE_MAX_BYTES = 64 * 1024;
/** One buffer for every read (they are synchronous, so never two at once). */
const buffer = Buffer.alloc(RUN_FILE_MAX_BYTES + 1);

/**
 * The text of the regular file at `path`, or undefined when there is none (absent, not a regular
 * file, a symbolic link, or over 64 KiB). Never blocks on what the sandbox put there.
 */
export function readRunFile(path: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openRunEntry(path, "file", constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  if (fd === undefined) return undefined;
  try {
    const stats = fstatSync(fd);
    if (stats.size > RUN_FILE_MAX_BYTES) return undefined;
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
