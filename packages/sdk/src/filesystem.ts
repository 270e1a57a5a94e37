/**
 * `sandbox.files`: the sandbox's filesystem through its daemon. Contents travel over the daemon's
 * plain-HTTP `/files` (downloads and uploads stream, in both directions); everything else is its
 * `filesystem.Filesystem` service. Relative paths are relative to the user's home.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { FsbError, TimeoutError, ValidationError } from "@fast-sandbox/api/core";
import { fetchError, httpError } from "./errors.js";
import { FileType, type EntryInfo as EntryInfoMessage, type WatchDirResponse } from "./gen/envd/filesystem/filesystem_pb.js";
import { KEEPALIVE_HEADER, KEEPALIVE_SECONDS, MAX_TIMER_MS, StreamStart, deadline, duration, untilSilent, type RequestOptions } from "./request-options.js";
import { userHeader, type SandboxDaemon, type UserOptions } from "./sandbox-daemon.js";
import { WatchHandle, type FilesystemEvent } from "./watch-handle.js";

export type FileKind = "file" | "dir" | "symlink";

/** A file, directory or symlink in the sandbox. */
export interface EntryInfo {
  name: string;
  type: FileKind;
  /** Absolute path. */
  path: string;
  sizeBytes: number;
  /**
   * The permission bits, as the daemon gives them (`st_mode & 0o7777`: setuid, setgid and sticky
   * included, not the entry's type — that is `type`), e.g. 0o644 (420) for `-rw-r--r--`; a
   * symlink's own, 0o777 (511). E2B's envd gives the same for files and directories.
   */
  mode: number;
  /** e.g. `-rw-r--r--`. */
  permissions: string;
  owner: string;
  group: string;
  modifiedTime?: Date;
  /** Where a symlink points. */
  symlinkTarget?: string;
}

/** What `files.write` wrote. */
export interface WriteInfo {
  name: string;
  type: FileKind;
  path: string;
}

/**
 * What `files.write` takes: text (written as UTF-8), bytes (a `Uint8Array` or `Buffer`, any other
 * typed array or `DataView` — the bytes it spans —, an `ArrayBuffer`, a `Blob`), or a stream of bytes
 * (e.g. a Node `Readable`).
 */
export type WriteData = string | ArrayBufferView | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

export interface FilesystemOptions extends RequestOptions, UserOptions {}

export interface WriteOptions extends FilesystemOptions {
  /**
   * The file's permission bits once written, 0 to 0o777 (e.g. 0o755 for a script): a new file gets
   * exactly these, whatever the sandbox's umask; an existing one gets them before its content is
   * replaced (only its owner, or root, may change them). Not given: a new file is 0o644, an
   * existing one keeps its mode. A Fast Sandbox extension: E2B's daemon has none.
   */
  mode?: number;
}

export interface ReadOptions extends FilesystemOptions {
  /** `text` (UTF-8), `bytes`, or `stream`: a `ReadableStream` as the file arrives (the request deadline covers only its start). @default "text" */
  format?: "text" | "bytes" | "stream";
}

export interface WatchOptions extends FilesystemOptions {
  /** Also watch the subdirectories. @default false */
  recursive?: boolean;
  /** Events carry the entry as it is after them. @default false */
  includeEntry?: boolean;
  /** How long to watch, in milliseconds; 0 until `stop()`. @default 0 */
  timeoutMs?: number;
  /** Called once when the watch ends: without an error after `stop()` or its `timeoutMs`, else with why. */
  onExit?: (error?: Error) => void | Promise<void>;
}

export class Filesystem {
  constructor(private readonly daemon: SandboxDaemon) {}

  /** The file's contents; a directory is a ValidationError, a missing file a NotFoundError. */
  read(path: string, options?: ReadOptions & { format?: "text" }): Promise<string>;
  read(path: string, options: ReadOptions & { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, options: ReadOptions & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  async read(path: string, options: ReadOptions = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    checkPath(path, "path");
    const what = `reading ${path}`;
    const { response, start } = await this.request(what, "GET", path, options);
    if (options.format === "stream") {
      start.started();
      return this.download(response.body, what, options, start);
    }
    // The deadline bounded the answer's start; from here it bounds each wait for more of the file, so a
    // large download goes on as long as its data comes.
    start.started();
    const silenceMs = this.daemon.requestTimeoutMs(options);
    let silent = false;
    try {
      const bytes = await readAll(response.body, silenceMs, () => {
        silent = true;
        start.stop();
      });
      return options.format === "bytes" ? bytes : new TextDecoder().decode(bytes);
    } catch (error) {
      if (silent) {
        throw new TimeoutError(
          `${what} in sandbox ${this.daemon.label}: no data came for ${silenceMs} ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit`,
          { cause: error },
        );
      }
      throw this.fetchError(error, what, options, start);
    } finally {
      start.stop();
    }
  }

  /**
   * Writes a file (made with its parent directories when missing, replaced when it exists). A
   * stream is sent as it is read; the request deadline then does not apply, only the signal. A
   * stream that fails (a file that is not there, a source that throws) fails the write with its own
   * error; one that gives something other than bytes or strings, with a ValidationError on `data`.
   */
  async write(path: string, data: WriteData, options: WriteOptions = {}): Promise<WriteInfo> {
    checkPath(path, "path");
    checkMode(options.mode);
    const upload = uploadBody(data);
    const what = `writing ${path}`;
    let sent: { response: Response; start: StreamStart };
    try {
      sent = await this.request(what, "POST", path, upload.streamed ? { ...options, requestTimeoutMs: 0 } : options, upload.body);
    } catch (error) {
      // The fetch failed because its source did: a local failure, and not one a retry mends — not the
      // network's (an UnavailableError).
      if (upload.failure) throw upload.failure.error;
      throw error;
    }
    const { response, start } = sent;
    try {
      const written = (await response.json()) as { name?: string; type?: string; path?: string }[];
      const first = Array.isArray(written) ? written[0] : undefined;
      if (!first?.path) throw new FsbError("internal", `${what} in sandbox ${this.daemon.label}: the daemon did not say what it wrote`);
      return { name: first.name ?? "", type: first.type === "dir" ? "dir" : "file", path: first.path };
    } catch (error) {
      throw error instanceof FsbError ? error : this.fetchError(error, what, options, start);
    } finally {
      start.stop();
    }
  }

  /** The entries of a directory; `depth` 2 and more include subdirectories' entries. */
  async list(path: string, options: FilesystemOptions & { depth?: number } = {}): Promise<EntryInfo[]> {
    checkPath(path, "path");
    const depth = options.depth ?? 1;
    if (!Number.isInteger(depth) || depth < 1)
      throw new ValidationError("depth", `${String(depth)} is not a depth; give 1 (the directory's own entries) or more`);
    const client = await this.daemon.filesystem(options);
    const response = await this.daemon.call(`listing ${path}`, options, (call) => client.listDir({ path, depth }, call));
    return response.entries.map(entryInfo).filter((entry): entry is EntryInfo => entry !== undefined);
  }

  /** Whether something exists at `path`. */
  async exists(path: string, options: FilesystemOptions = {}): Promise<boolean> {
    checkPath(path, "path");
    const client = await this.daemon.filesystem(options);
    return this.daemon.call(`looking up ${path}`, options, async (call) => {
      try {
        await client.stat({ path }, call);
        return true;
      } catch (error) {
        if (ConnectError.from(error).code === Code.NotFound) return false;
        throw error;
      }
    });
  }

  /** Makes a directory and its missing parents; resolves false when it existed already. */
  async makeDir(path: string, options: FilesystemOptions = {}): Promise<boolean> {
    checkPath(path, "path");
    const client = await this.daemon.filesystem(options);
    return this.daemon.call(`making directory ${path}`, options, async (call) => {
      try {
        await client.makeDir({ path }, call);
        return true;
      } catch (error) {
        if (ConnectError.from(error).code === Code.AlreadyExists) return false;
        throw error;
      }
    });
  }

  /** Removes a file, or a directory with everything in it; removing what is not there succeeds. */
  async remove(path: string, options: FilesystemOptions = {}): Promise<void> {
    checkPath(path, "path");
    const client = await this.daemon.filesystem(options);
    await this.daemon.call(`removing ${path}`, options, (call) => client.remove({ path }, call));
  }

  /** Moves or renames a file or directory; resolves with it at its new place. */
  async rename(oldPath: string, newPath: string, options: FilesystemOptions = {}): Promise<EntryInfo> {
    checkPath(oldPath, "oldPath");
    checkPath(newPath, "newPath");
    const client = await this.daemon.filesystem(options);
    const response = await this.daemon.call(`moving ${oldPath} to ${newPath}`, options, (call) => client.move({ source: oldPath, destination: newPath }, call));
    return this.entryOrFail(response.entry, `moving ${oldPath}`);
  }

  /** What is at `path` (a symlink itself, not its target). */
  async getInfo(path: string, options: FilesystemOptions = {}): Promise<EntryInfo> {
    checkPath(path, "path");
    const client = await this.daemon.filesystem(options);
    const response = await this.daemon.call(`looking up ${path}`, options, (call) => client.stat({ path }, call));
    return this.entryOrFail(response.entry, `looking up ${path}`);
  }

  /** Watches a directory: `onEvent` gets what happens in it (created, written, removed, renamed, chmod) until `stop()`. */
  async watchDir(path: string, onEvent: (event: FilesystemEvent) => void | Promise<void>, options: WatchOptions = {}): Promise<WatchHandle> {
    checkPath(path, "path");
    const timeoutMs = duration(options.timeoutMs ?? 0, "timeoutMs");
    const requestTimeoutMs = this.daemon.requestTimeoutMs(options);
    const start = new StreamStart(options.signal, requestTimeoutMs);
    const what = `watching ${path}`;
    const streamDeadline = deadline(timeoutMs);
    try {
      const client = await this.daemon.filesystem({ ...options, signal: start.signal });
      const events = watchEvents(
        untilSilent(
          client.watchDir(
            { path, recursive: options.recursive ?? false, includeEntry: options.includeEntry ?? false },
            {
              signal: start.signal,
              ...(streamDeadline !== undefined ? { timeoutMs: streamDeadline } : {}),
              headers: { ...userHeader(options.user), [KEEPALIVE_HEADER]: String(KEEPALIVE_SECONDS) },
            },
          ),
          () => start.stop(),
        ),
      );
      const first = await events.next();
      if (first.done || first.value.case !== "start") {
        throw new ConnectError(
          `the daemon's watch did not begin with its start event (got ${first.done ? "the end of the stream" : first.value.case})`,
          Code.Internal,
        );
      }
      start.started();
      const filesystemEvents = (async function* () {
        try {
          for (;;) {
            const next = await events.next();
            if (next.done) return;
            if (next.value.case === "filesystem") yield next.value.value;
          }
        } catch (error) {
          // The watch's own timeoutMs ends it as stop() would.
          if (streamDeadline !== undefined && ConnectError.from(error).code === Code.DeadlineExceeded && !options.signal?.aborted) return;
          throw error;
        } finally {
          // Ended, however: the caller's signal is let go of (StreamStart).
          start.stop();
        }
      })();
      return new WatchHandle({
        events: filesystemEvents,
        onEvent,
        onExit: options.onExit,
        stop: () => start.stop(),
        translate: (error) => this.daemon.error(error, what, options.signal, streamDeadline, "timeoutMs"),
        entryOf: (message) => this.entryOrFail(message, what),
      });
    } catch (error) {
      start.stop();
      if (start.startTimedOut && !options.signal?.aborted) {
        throw new TimeoutError(`${what} in sandbox ${this.daemon.label} did not start within ${requestTimeoutMs} ms (requestTimeoutMs)`, { cause: error });
      }
      throw await this.daemon.explained(this.daemon.error(error, what, options.signal, streamDeadline, "timeoutMs"), what, options.signal);
    }
  }

  /**
   * A download's body for the caller to read: once it ends, is cancelled or fails, the request is
   * stopped (its listener on the caller's signal, which may serve every call of a long-lived
   * program, removed), and a failure is told as the SDK's error (`fetchError`), not undici's.
   */
  private download(body: ReadableStream<Uint8Array> | null, what: string, options: RequestOptions, start: StreamStart): ReadableStream<Uint8Array> {
    if (!body) {
      start.stop();
      return new ReadableStream<Uint8Array>({ start: (controller) => controller.close() });
    }
    const reader = body.getReader();
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          let result: Awaited<ReturnType<typeof reader.read>>;
          try {
            result = await reader.read();
          } catch (error) {
            start.stop();
            controller.error(this.fetchError(error, what, options, start));
            return;
          }
          if (result.done) {
            start.stop();
            controller.close();
          } else {
            controller.enqueue(result.value);
          }
        },
        cancel: async (reason) => {
          try {
            await reader.cancel(reason);
          } finally {
            start.stop();
          }
        },
      },
      // Read as the caller reads, not ahead of it.
      { highWaterMark: 0 },
    );
  }

  /** Sends a request to the daemon's `/files`, failing with the daemon's (or the proxy's) error unless it succeeded. */
  private async request(
    what: string,
    method: "GET" | "POST",
    path: string,
    options: FilesystemOptions & { mode?: number },
    body?: NonNullable<RequestInit["body"]>,
  ): Promise<{ response: Response; start: StreamStart }> {
    const start = new StreamStart(options.signal, this.daemon.requestTimeoutMs(options));
    let response: Response;
    try {
      const channel = await this.daemon.channel({ ...options, signal: start.signal });
      const query = new URLSearchParams({ path, ...(options.user ? { username: options.user } : {}) });
      if (options.mode !== undefined) query.set("mode", options.mode.toString(8));
      response = await channel.fetch(`/files?${query.toString()}`, {
        method,
        signal: start.signal,
        // Contents as they are: the daemon gzips a download for a client that accepts it (fetch's
        // default), and undici decompresses its many small parts slowly — tens of seconds for 50 MB
        // that do not compress, against a fraction of a second unencoded.
        headers: { "accept-encoding": "identity", ...(body !== undefined ? { "content-type": "application/octet-stream" } : {}) },
        ...(body !== undefined ? { body, ...(body instanceof ReadableStream ? { duplex: "half" } : {}) } : {}),
      });
    } catch (error) {
      start.stop();
      throw this.fetchError(error, what, options, start);
    }
    if (!response.ok) {
      // The body (the daemon's message) is read before the request's signal is let go of.
      const error = await httpError(response, { what: `${what} in sandbox ${this.daemon.label}`, sandbox: this.daemon.label });
      start.stop();
      throw await this.daemon.explained(error, what, options.signal);
    }
    return { response, start };
  }

  /** A failed `fetch` (no HTTP answer): the caller's abort, the deadline, or the network. */
  private fetchError(error: unknown, what: string, options: RequestOptions, start: StreamStart): Error {
    return fetchError(error, {
      what: `${what} in sandbox ${this.daemon.label}`,
      signal: options.signal,
      timedOut: start.startTimedOut,
      timeoutMs: this.daemon.requestTimeoutMs(options),
    });
  }

  private entryOrFail(message: EntryInfoMessage | undefined, what: string): EntryInfo {
    const entry = message ? entryInfo(message) : undefined;
    if (!entry) throw new FsbError("internal", `${what} in sandbox ${this.daemon.label}: the daemon answered without the entry`);
    return entry;
  }
}

/** A body read to its end, each read waited for at most `silenceMs` (0: for ever); `onSilent` is called when one is not answered (it must abort the body). */
async function readAll(body: ReadableStream<Uint8Array> | null, silenceMs: number, onSilent: () => void): Promise<Uint8Array> {
  if (!body) return new Uint8Array();
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const timer = silenceMs > 0 && silenceMs <= MAX_TIMER_MS ? setTimeout(onSilent, silenceMs) : undefined;
    let result: Awaited<ReturnType<typeof reader.read>>;
    try {
      result = await reader.read();
    } finally {
      clearTimeout(timer);
    }
    if (result.done) break;
    parts.push(result.value);
    length += result.value.length;
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** A write's mode: permission bits, 0 to 0o777. */
function checkMode(mode: number | undefined): void {
  if (mode === undefined) return;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    const shown = typeof mode === "number" && Number.isInteger(mode) && mode >= 0 ? `0o${mode.toString(8)}` : String(mode);
    throw new ValidationError("mode", `${shown} is not a file mode; give permission bits from 0 to 0o777 (e.g. 0o755)`);
  }
}

function checkPath(path: string, field: string): void {
  if (typeof path !== "string" || path === "") throw new ValidationError(field, "is empty; give a path in the sandbox, e.g. /tmp/data.txt");
  if (path.includes("\0")) throw new ValidationError(field, "contains a NUL character");
}

/** The SDK's EntryInfo of the daemon's; undefined for a type the SDK does not know. */
export function entryInfo(message: EntryInfoMessage): EntryInfo | undefined {
  const type = fileKind(message.type);
  if (!type) return undefined;
  return {
    name: message.name,
    type,
    path: message.path,
    sizeBytes: Number(message.size),
    mode: message.mode,
    permissions: message.permissions,
    owner: message.owner,
    group: message.group,
    ...(message.modifiedTime ? { modifiedTime: timestampDate(message.modifiedTime) } : {}),
    ...(message.symlinkTarget !== undefined ? { symlinkTarget: message.symlinkTarget } : {}),
  };
}

function fileKind(type: FileType): FileKind | undefined {
  switch (type) {
    case FileType.FILE:
      return "file";
    case FileType.DIRECTORY:
      return "dir";
    case FileType.SYMLINK:
      return "symlink";
    default:
      return undefined;
  }
}

/** The request body of an upload, whether it streams, and what its source threw (once it did). */
interface UploadBody {
  body: NonNullable<RequestInit["body"]>;
  streamed: boolean;
  failure?: { error: unknown };
}

function uploadBody(data: WriteData): UploadBody {
  if (typeof data === "string") return { body: new TextEncoder().encode(data), streamed: false };
  // Any view (a Buffer, an Int16Array, a DataView, a Uint8Array of another realm, which instanceof
  // does not know) as the bytes it spans.
  if (ArrayBuffer.isView(data)) return { body: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), streamed: false };
  if (data instanceof ArrayBuffer || data instanceof Blob) return { body: data, streamed: false };
  if (data !== null && typeof data === "object" && (data instanceof ReadableStream || Symbol.asyncIterator in data)) {
    // Read through a stream of our own, which keeps what the source threw: fetch reports it as a
    // failed request ("fetch failed"), like a network failure.
    const upload: UploadBody = { body: new Uint8Array(), streamed: true };
    upload.body = ReadableStream.from<Uint8Array>(
      bytesOf(data as AsyncIterable<unknown>, (error) => {
        upload.failure = { error };
      }),
    );
    return upload;
  }
  throw new ValidationError(
    "data",
    "give a string, bytes (Uint8Array, Buffer, another typed array, DataView, ArrayBuffer, Blob) or a stream of bytes (ReadableStream, Node Readable)",
  );
}

/**
 * A stream's chunks as bytes (a Node `Readable` yields strings when it has an encoding); a chunk
 * that is neither (an object-mode stream's) is a ValidationError. What it throws goes to `onFailure`.
 */
async function* bytesOf(source: AsyncIterable<unknown>, onFailure: (error: unknown) => void): AsyncGenerator<Uint8Array> {
  try {
    for await (const chunk of source) {
      if (typeof chunk === "string") yield new TextEncoder().encode(chunk);
      else if (ArrayBuffer.isView(chunk)) yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      else {
        throw new ValidationError(
          "data",
          `the stream gave ${chunk === null ? "null" : typeof chunk}, not bytes; give a stream of Uint8Array or strings (not a Node Readable in object mode)`,
        );
      }
    }
  } catch (error) {
    onFailure(error);
    throw error;
  }
}

/** The events of a WatchDir stream, without keepalives. */
async function* watchEvents(responses: AsyncIterable<WatchDirResponse>): AsyncGenerator<WatchDirResponse["event"]> {
  for await (const response of responses) {
    if (response.event.case !== undefined && response.event.case !== "keepalive") yield response.event;
  }
}
