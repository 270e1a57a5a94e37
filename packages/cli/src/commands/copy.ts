/**
 * `fsb cp LOCAL NAME:PATH` and `fsb cp NAME:PATH LOCAL`: a file into or out of a sandbox through its
 * in-sandbox daemon, streamed both ways (files larger than memory work). `-` is stdin or stdout.
 * A destination that is a directory (or ends with `/`) gets the source's file name.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
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
  let source: Readable;
  let target = remote;
  if (local === "-") {
    source = process.stdin;
  } else {
    source = createReadStream(local);
    if (remote.endsWith("/") || (await isDirectory(sandbox, remote))) target = `${remote.replace(/\/+$/, "")}/${baseName(local)}`;
  }
  await sandbox.files.write(target, source);
}

/** A local file to upload: there, and not a directory. */
async function checkLocalSource(local: string): Promise<void> {
  if (local === "-") return;
  const info = await stat(local).catch(() => undefined);
  if (!info) throw new ValidationError("SRC", `${local} does not exist`);
  if (info.isDirectory()) throw new ValidationError("SRC", `${local} is a directory; fsb cp copies one file at a time`);
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
  const contents = await sandbox.files.read(remote, { format: "stream" });
  if (local === "-") {
    await pipeline(Readable.fromWeb(contents), process.stdout, { end: false });
    return;
  }
  const info = await stat(local).catch(() => undefined);
  const target = info?.isDirectory() || local.endsWith("/") ? join(local, baseName(remote)) : local;
  // Written beside the target and renamed at the end: a failed copy leaves no half file behind.
  const directory = dirname(target);
  if (!(await stat(directory).catch(() => undefined))?.isDirectory()) {
    await contents.cancel();
    throw new ValidationError("DEST", `${directory} is not a directory on this machine; make it first`);
  }
  const partial = partialPathOf(target);
  // Ctrl-C and SIGTERM stop the copy too, and take the half file with them (exit 130 or 143, as a shell's interrupted command).
  const stopped = new AbortController();
  let stopSignal: StopSignal | undefined;
  const stopListening = onStopSignal((signal) => {
    stopSignal = signal;
    stopped.abort();
  });
  try {
    await pipeline(Readable.fromWeb(contents), createPartialFile(partial), { signal: stopped.signal });
    await rename(partial, target);
  } catch (error) {
    await rm(partial, { force: true });
    if (!stopSignal) throw error;
    process.exitCode = STOP_SIGNAL_EXIT_CODES[stopSignal];
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
 * symlink planted at its path points to), with the mode any new file gets (0666 less the umask), as
 * `cp` gives it: the rename keeps it for the downloaded file.
 */
export function createPartialFile(path: string): WriteStream {
  return createWriteStream(path, { flags: "wx" });
}

/** How many symlinks `isDirectory` follows in a row, as Linux does (a loop ends there). */
const MAX_SYMLINK_HOPS = 40;

/**
 * Whether `path` in the sandbox is a directory, or a symlink to one: the daemon describes a symlink
 * itself (lstat), so its target is looked at — relative to the link's directory, when relative.
 */
async function isDirectory(sandbox: FastSandbox, path: string): Promise<boolean> {
  let current = path;
  for (let hop = 0; hop <= MAX_SYMLINK_HOPS; hop++) {
    let info: EntryInfo;
    try {
      info = await sandbox.files.getInfo(current);
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
    if (info.type !== "symlink") return info.type === "dir";
    if (!info.symlinkTarget) return false;
    const target = info.symlinkTarget;
    current = posix.isAbsolute(target) ? target : posix.join(posix.dirname(info.path || current), target);
  }
  return false;
}
