/**
 * `fsb cp LOCAL NAME:PATH` and `fsb cp NAME:PATH LOCAL`: a file or a directory tree into or out of a
 * sandbox through its in-sandbox daemon, streamed both ways (files larger than memory work). `-` is
 * stdin or stdout. A destination that is a directory (or ends with `/`) gets the source's name.
 * Files keep their permission bits (a script stays executable): exactly, into the sandbox; less the
 * umask, out of it, as `cp` makes a new file. Setuid, setgid and sticky bits are not copied.
 */
import { randomBytes } from "node:crypto";
import { constants, createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join, posix, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { FsbError, NotFoundError, PermissionDeniedError, ValidationError } from "@fast-sandbox/api";
import { FastSandbox, type EntryInfo } from "@fast-sandbox/sdk";
import { accessTokenOfExisting } from "../access-tokens.js";
import { connect, type GlobalOptions } from "../connection.js";
import { baseName, parseCopyArguments } from "../copy-paths.js";
import { STOP_SIGNAL_EXIT_CODES, onStopSignal, type StopSignal } from "../stop-signals.js";

export interface CopyOptions extends GlobalOptions {
  namespace?: string;
  token?: string;
}

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
 * and its regular files with their permission bits. Symlinks are left out — one could take a file
 * from anywhere on this machine (`config -> ~/.aws/credentials`) into the sandbox — and so are
 * sockets, FIFOs and devices, with a line on stderr each.
 */
async function uploadTree(sandbox: FastSandbox, local: string, target: string): Promise<void> {
  await sandbox.files.makeDir(target);
  for (const entry of await readdir(local, { withFileTypes: true })) {
    const from = join(local, entry.name);
    const to = posix.join(target, entry.name);
    if (entry.isDirectory()) {
      await uploadTree(sandbox, from, to);
    } else if (entry.isSymbolicLink()) {
      process.stderr.write(`fsb cp: skipped ${from}: a symlink is not copied\n`);
    } else if (!entry.isFile()) {
      process.stderr.write(`fsb cp: skipped ${from}: not a regular file or a directory\n`);
    } else {
      // Without following a symlink swapped in since the listing.
      const file = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        const info = await file.stat();
        await sandbox.files.write(to, file.createReadStream({ autoClose: false }), { mode: info.mode & PERMISSION_BITS });
      } finally {
        await file.close();
      }
    }
  }
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
 * path ending with `/`) under `name`, the name it was asked by, else as `local` itself (made; its
 * parent must be there); into a tree already there, merged. Its directories and regular files (with
 * their permission bits, less the umask) are copied, one directory listing at a time; its symlinks
 * (the sandbox's links could point anywhere on this machine), FIFOs, sockets and devices are left
 * out, with a line on stderr each. A directory or file it may not read is named on stderr and the
 * copy goes on, ending with exit code 1, as `cp -r` does. An interrupted copy keeps the files it
 * finished and removes the one it was writing.
 */
async function downloadTree(sandbox: FastSandbox, remote: string, name: string, local: string): Promise<void> {
  const info = await stat(local).catch(() => undefined);
  const root = info?.isDirectory() || local.endsWith("/") ? join(local, name) : local;
  const existing = await stat(root).catch(() => undefined);
  if (existing && !existing.isDirectory()) throw new ValidationError("DEST", `${root} exists and is not a directory`);
  const entries = await sandbox.files.list(remote);
  await ensureDirectory(root, 0o755);
  const failures = { count: 0 };
  await downloadDirectory(sandbox, remote, root, entries, failures);
  if (failures.count > 0) {
    process.stderr.write(`fsb cp: ${failures.count} ${failures.count === 1 ? "entry" : "entries"} of ${JSON.stringify(remote)} could not be copied\n`);
    process.exitCode ||= 1;
  }
}

/** One directory's entries (listed already) into `local`, then its subdirectories'; true when a stop signal ended the copy. */
async function downloadDirectory(
  sandbox: FastSandbox,
  remote: string,
  local: string,
  entries: readonly EntryInfo[],
  failures: { count: number },
): Promise<boolean> {
  for (const { name, entry } of planDirectoryDownload(remote, entries)) {
    const from = posix.join(remote, name);
    const to = join(local, name);
    if (entry.type === "symlink") {
      skip(from, `a symlink (to ${JSON.stringify(entry.symlinkTarget ?? "")}) is not copied`);
    } else if (entry.type === "file" && !entry.permissions.startsWith("-")) {
      // The daemon calls a FIFO, a socket or a device a file; its permissions say which.
      skip(from, `not a regular file (${entry.permissions})`);
    } else if (entry.type === "dir") {
      let children: EntryInfo[];
      try {
        children = await sandbox.files.list(from);
      } catch (error) {
        if (!unreadable(error)) throw error;
        skip(from, (error as Error).message);
        failures.count++;
        continue;
      }
      // Owner rwx kept, so that its files can be written into it.
      await ensureDirectory(to, (entry.mode & PERMISSION_BITS) | 0o700);
      if (await downloadDirectory(sandbox, from, to, children, failures)) return true;
    } else {
      let contents: ReadableStream<Uint8Array>;
      try {
        contents = await sandbox.files.read(from, { format: "stream" });
      } catch (error) {
        if (!unreadable(error)) throw error;
        skip(from, (error as Error).message);
        failures.count++;
        continue;
      }
      if (await downloadFile(contents, to, entry.mode & PERMISSION_BITS)) return true;
    }
  }
  return false;
}

/** A line on stderr for what a copy leaves out; the sandbox's names quoted (they may hold anything, terminal escapes too). */
function skip(remotePath: string, why: string): void {
  process.stderr.write(`fsb cp: skipped ${JSON.stringify(remotePath)}: ${why}\n`);
}

/** What a copy goes on after: an entry the user may not read, or one gone since its directory was listed. */
function unreadable(error: unknown): boolean {
  return error instanceof PermissionDeniedError || error instanceof NotFoundError;
}

/** Makes a directory (its mode less the umask), or keeps the one there: a copy into a tree merges with it. */
async function ensureDirectory(path: string, mode: number): Promise<void> {
  try {
    await mkdir(path, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST" || !(await stat(path)).isDirectory()) throw error;
  }
}

/** One entry of a sandbox directory being copied out, by its name in the directory. */
export interface PlannedEntry {
  name: string;
  entry: EntryInfo;
}

/**
 * The entries of a listing of the sandbox directory `directory`, by name, sorted. The listing comes
 * from inside the sandbox, which is not to be trusted: an entry that is not directly in the
 * directory (another path, `.` or `..`, a name with a `/` or a `\`), or is listed twice, stops the
 * copy before anything of this directory is written.
 */
export function planDirectoryDownload(directory: string, entries: readonly EntryInfo[]): PlannedEntry[] {
  const base = posix.normalize(directory).replace(/\/+$/, "") || "/";
  const prefix = base === "/" ? "/" : `${base}/`;
  const seen = new Set<string>();
  const planned: PlannedEntry[] = [];
  for (const entry of entries) {
    const name = entry.path.startsWith(prefix) ? entry.path.slice(prefix.length) : "";
    if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\\") || seen.has(name)) {
      throw new FsbError(
        "failed_precondition",
        `the sandbox listed ${JSON.stringify(entry.path)} in ${JSON.stringify(base)}, which is not an entry of it; the copy stopped there`,
      );
    }
    seen.add(name);
    planned.push({ name, entry });
  }
  return planned.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
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

/** How many symlinks `resolveEntry` follows in a row, as Linux does (a loop ends there). */
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
