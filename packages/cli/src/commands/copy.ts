/**
 * `fsb cp LOCAL NAME:PATH` and `fsb cp NAME:PATH LOCAL`: a file or a directory tree into or out of a
 * sandbox through its in-sandbox daemon, streamed both ways (files larger than memory work). `-` is
 * stdin or stdout. A destination that is a directory (or ends with `/`) gets the source's name.
 * Files keep their permission bits (a script stays executable): exactly, into the sandbox; less the
 * umask, out of it, as `cp` makes a new file. Setuid, setgid and sticky bits are not copied.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { lstat, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join, posix, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { NotFoundError, ValidationError } from "@fast-sandbox/api";
import { FastSandbox, type EntryInfo } from "@fast-sandbox/sdk";
import { accessTokenOfExisting } from "../access-tokens.js";
import { connect, type GlobalOptions } from "../connection.js";
import { baseName, parseCopyArguments } from "../copy-paths.js";
import { STOP_SIGNAL_EXIT_CODES, onStopSignal, type StopSignal } from "../stop-signals.js";

export interface CopyOptions extends GlobalOptions {
  namespace?: string;
  token?: string;
}

/** How deep `fsb cp` lists a directory it copies out of a sandbox: the daemon's largest depth. */
const MAX_TREE_DEPTH = 64;

/** The permission bits a copy keeps: rwx for owner, group and others. */
const PERMISSION_BITS = 0o777;

export async function copy(source: string, destination: string, options: CopyOptions): Promise<void> {
  const direction = parseCopyArguments(source, destination);
  // The local side is checked before anything is asked of the control plane (bad usage, exit 2).
  if (direction.upload) await checkLocalSource(direction.local);
  else await checkLocalDestination(direction.local);
  const { client, sdk, namespace, dataDir } = await connect(options);
  const accessToken = await accessTokenOfExisting(client.sandboxes, namespace, direction.remote.sandbox, { token: options.token, dataDir });
  const sandbox = await FastSandbox.connect(direction.remote.sandbox, { connection: sdk, namespace, accessToken });
  if (direction.upload) await upload(sandbox, direction.local, direction.remote.path);
  else await download(sandbox, direction.remote.path, direction.local);
}

async function upload(sandbox: FastSandbox, local: string, remote: string): Promise<void> {
  if (local === "-") {
    await sandbox.files.write(remote, process.stdin);
    return;
  }
  const into = remote.endsWith("/") || (await isDirectory(sandbox, remote));
  const target = into ? `${remote.replace(/\/+$/, "")}/${baseName(resolve(local))}` : remote;
  const info = await stat(local);
  if (!info.isDirectory()) {
    await sandbox.files.write(target, createReadStream(local), { mode: info.mode & PERMISSION_BITS });
    return;
  }
  await uploadTree(sandbox, local, target);
}

/**
 * A local directory's tree into `target` (made, with its parents, when missing): its directories,
 * and its files with their permission bits. A symlink is copied as the file it points to; one to a
 * directory (which could loop) and anything neither a file nor a directory (a socket, a FIFO, a
 * device) is left out, with a line on stderr each.
 */
async function uploadTree(sandbox: FastSandbox, local: string, target: string): Promise<void> {
  await sandbox.files.makeDir(target);
  for (const entry of await readdir(local, { withFileTypes: true })) {
    const from = join(local, entry.name);
    const to = posix.join(target, entry.name);
    if (entry.isDirectory()) {
      await uploadTree(sandbox, from, to);
      continue;
    }
    const info = entry.isSymbolicLink() ? await stat(from).catch(() => undefined) : await lstat(from);
    if (!info?.isFile()) {
      process.stderr.write(`fsb cp: skipped ${from}: ${skippedBecause(entry.isSymbolicLink(), info)}\n`);
      continue;
    }
    await sandbox.files.write(to, createReadStream(from), { mode: info.mode & PERMISSION_BITS });
  }
}

function skippedBecause(symlink: boolean, info: { isDirectory(): boolean } | undefined): string {
  if (symlink) return info ? "a symlink to a directory (not followed)" : "a symlink to nothing";
  return "not a file or a directory";
}

/** A local file or directory to upload: there. */
async function checkLocalSource(local: string): Promise<void> {
  if (local === "-") return;
  const info = await stat(local).catch(() => undefined);
  if (!info) throw new ValidationError("SRC", `${local} does not exist`);
  if (!info.isFile() && !info.isDirectory()) throw new ValidationError("SRC", `${local} is not a file or a directory`);
}

/** Where a download goes: an existing directory, or a file name in one. */
async function checkLocalDestination(local: string): Promise<void> {
  if (local === "-") return;
  const info = await stat(local).catch(() => undefined);
  const directory = info?.isDirectory() || local.endsWith("/") ? local : dirname(local);
  if (!(await stat(directory).catch(() => undefined))?.isDirectory()) {
    throw new ValidationError("DEST", `${directory} is not a directory on this machine; make it first`);
  }
}

async function download(sandbox: FastSandbox, remote: string, local: string): Promise<void> {
  const entry = await resolveEntry(sandbox, remote);
  if (entry?.type === "dir") {
    if (local === "-") throw new ValidationError("DEST", `${remote} in sandbox ${sandbox.name} is a directory; give a local directory to copy it into`);
    await downloadTree(sandbox, entry.path || remote, baseName(remote), local);
    return;
  }
  const contents = await sandbox.files.read(remote, { format: "stream" });
  if (local === "-") {
    await pipeline(Readable.fromWeb(contents), process.stdout, { end: false });
    return;
  }
  const info = await stat(local).catch(() => undefined);
  const target = info?.isDirectory() || local.endsWith("/") ? join(local, baseName(remote)) : local;
  const directory = dirname(target);
  if (!(await stat(directory).catch(() => undefined))?.isDirectory()) {
    await contents.cancel();
    throw new ValidationError("DEST", `${directory} is not a directory on this machine; make it first`);
  }
  await downloadFile(contents, target, (entry?.mode ?? 0o666) & PERMISSION_BITS);
}

/**
 * A directory of the sandbox (`remote`, symlinks resolved) into `local`: into a directory there (or a
 * path ending with `/`) under `name`, the name it was asked by, else as `local` itself (made; its parent must be there). Its directories and files
 * (with their permission bits, less the umask) are copied; its symlinks (the sandbox's links could
 * point anywhere on this machine), FIFOs, sockets and devices are left out, with a line on stderr each. Every path the sandbox
 * lists must lie within the directory asked for; one that does not ends the copy. An interrupted
 * copy keeps the files it finished and removes the one it was writing.
 */
async function downloadTree(sandbox: FastSandbox, remote: string, name: string, local: string): Promise<void> {
  const info = await stat(local).catch(() => undefined);
  const root = info?.isDirectory() || local.endsWith("/") ? join(local, name) : local;
  const existing = await stat(root).catch(() => undefined);
  if (existing && !existing.isDirectory()) throw new ValidationError("DEST", `${root} exists and is not a directory`);
  const entries = await sandbox.files.list(remote, { depth: MAX_TREE_DEPTH });
  const planned = planTreeDownload(remote, entries);
  await ensureDirectory(root, 0o755);
  for (const { relative, entry } of planned) {
    const to = join(root, ...relative.split("/"));
    if (entry.type === "dir") {
      // Owner rwx kept, so that its files can be written into it.
      await ensureDirectory(to, (entry.mode & PERMISSION_BITS) | 0o700);
    } else if (entry.type === "symlink") {
      process.stderr.write(`fsb cp: skipped ${posix.join(remote, relative)}: a symlink (to ${entry.symlinkTarget ?? "?"}) is not copied\n`);
    } else if (!entry.permissions.startsWith("-")) {
      // The daemon calls a FIFO, a socket or a device a file; its permissions say which.
      process.stderr.write(`fsb cp: skipped ${posix.join(remote, relative)}: not a regular file (${entry.permissions})\n`);
    } else {
      const contents = await sandbox.files.read(entry.path, { format: "stream" });
      if (await downloadFile(contents, to, entry.mode & PERMISSION_BITS)) return;
    }
  }
}

/** Makes a directory (its mode less the umask), or keeps the one there: a copy into a tree merges with it. */
async function ensureDirectory(path: string, mode: number): Promise<void> {
  try {
    await mkdir(path, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST" || !(await stat(path)).isDirectory()) throw error;
  }
}

/** One entry of a directory being copied out, by its path relative to the directory. */
export interface PlannedEntry {
  relative: string;
  entry: EntryInfo;
}

/**
 * The entries of a listing of `root`, parents before their children, each with its path relative to
 * `root`. The listing comes from inside the sandbox, which is not to be trusted: an entry outside
 * `root`, or whose path has `.` or `..` parts or is listed twice, fails the whole copy before
 * anything is written.
 */
export function planTreeDownload(root: string, entries: readonly EntryInfo[]): PlannedEntry[] {
  const base = posix.normalize(root).replace(/\/+$/, "") || "/";
  const prefix = base === "/" ? "/" : `${base}/`;
  const seen = new Set<string>();
  const planned: PlannedEntry[] = [];
  for (const entry of entries) {
    const relative = entry.path.startsWith(prefix) ? entry.path.slice(prefix.length) : undefined;
    const parts = relative?.split("/");
    if (!relative || !parts || parts.some((part) => part === "" || part === "." || part === "..") || seen.has(relative)) {
      throw new ValidationError("SRC", `the sandbox listed ${JSON.stringify(entry.path)} in ${base}, which is not a path within it; nothing was copied`);
    }
    seen.add(relative);
    planned.push({ relative, entry });
  }
  return planned.sort((a, b) => (a.relative < b.relative ? -1 : a.relative > b.relative ? 1 : 0));
}

/**
 * Writes a download to `target` through a partial file beside it, renamed once whole: a failed copy
 * leaves no half file behind. Ctrl-C and SIGTERM stop it too, and take the half file with them (exit
 * 130 or 143, as a shell's interrupted command): true then.
 */
async function downloadFile(contents: ReadableStream<Uint8Array>, target: string, mode: number): Promise<boolean> {
  const partial = partialPathOf(target);
  const stopped = new AbortController();
  let stopSignal: StopSignal | undefined;
  const stopListening = onStopSignal((signal) => {
    stopSignal = signal;
    stopped.abort();
  });
  try {
    await pipeline(Readable.fromWeb(contents), createPartialFile(partial, mode), { signal: stopped.signal });
    await rename(partial, target);
    return false;
  } catch (error) {
    await rm(partial, { force: true });
    if (!stopSignal) throw error;
    process.exitCode = STOP_SIGNAL_EXIT_CODES[stopSignal];
    return true;
  } finally {
    stopListening();
  }
}

/**
 * Where a download is written until it is whole (then renamed to `target`): beside it, under a name
 * nobody can guess beforehand — a name made of the pid was, in a directory others may write to (/tmp).
 */
export function partialPathOf(target: string): string {
  return `${target}.fsb-partial-${randomBytes(8).toString("hex")}`;
}

/**
 * Opens the partial file of a download: a new file only (O_EXCL: never one that exists, nor one a
 * symlink planted at its path points to), with the source's permission bits less the umask, as
 * `cp` makes a new file: the rename keeps them for the downloaded file.
 */
export function createPartialFile(path: string, mode = 0o666): WriteStream {
  return createWriteStream(path, { flags: "wx", mode });
}

/** How many symlinks `isDirectory` follows in a row, as Linux does (a loop ends there). */
const MAX_SYMLINK_HOPS = 40;

/**
 * What `path` in the sandbox is, symlinks followed: the daemon describes a symlink itself (lstat), so
 * its target is looked at — relative to the link's directory, when relative. Undefined when nothing
 * is there (or a symlink loop or a dangling link).
 */
async function resolveEntry(sandbox: FastSandbox, path: string): Promise<EntryInfo | undefined> {
  let current = path;
  for (let hop = 0; hop <= MAX_SYMLINK_HOPS; hop++) {
    let info: EntryInfo;
    try {
      info = await sandbox.files.getInfo(current);
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
    if (info.type !== "symlink") return info;
    if (!info.symlinkTarget) return undefined;
    const target = info.symlinkTarget;
    current = posix.isAbsolute(target) ? target : posix.join(posix.dirname(info.path || current), target);
  }
  return undefined;
}

/** Whether `path` in the sandbox is a directory, or a symlink to one. */
async function isDirectory(sandbox: FastSandbox, path: string): Promise<boolean> {
  return (await resolveEntry(sandbox, path))?.type === "dir";
}
