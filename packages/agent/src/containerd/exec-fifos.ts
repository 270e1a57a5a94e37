/**
 * The named pipes through which the runc shim hands an exec'd process's stdout and stderr to
 * the agent, read without blocking libuv's thread pool.
 *
 * Creating a FIFO: Node has no mkfifo(3) binding and no mknod. The options are a native addon
 * (a build dependency for one syscall), a FIFO pool created ahead of time (state to clean up
 * after crashes), or the coreutils `mkfifo` binary. We run `mkfifo` once per exec for both pipes,
 * asynchronously (execFile, never execFileSync, so the event loop keeps running); it costs one
 * short-lived process (~2 ms here, see the report of measure-create.ts), small next to the
 * Tasks.Exec + Start round trips (runc exec itself forks several processes).
 *
 * Reading: each FIFO is opened O_RDONLY|O_NONBLOCK (returns at once, no writer needed) and the fd
 * is wrapped in a net.Socket, so reads are event-driven on the libuv loop. We also hold a write
 * fd (O_WRONLY|O_NONBLOCK succeeds once a reader exists) until the process has exited: without
 * it the socket would see EOF before the shim opens its write side. After the exit, we close
 * ours; EOF then arrives once the shim has copied the last bytes and closed its side.
 *
 * Draining after the exit (`drained`): a background child that inherited the pipe keeps it open,
 * so EOF may never come, and reading stops after a grace. That grace bounds idleness only: it
 * restarts with every chunk read, and does not run while a stream is paused because its consumer
 * is behind (a slow client): what the pipes held at the exit is all read, however slowly it is
 * taken. A child that keeps writing after the exit is read for a bounded time and amount more.
 */
import { execFile } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { rm } from "node:fs/promises";
import { Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

interface Pipe {
  path: string;
  socket: Socket;
  writeFd: number | undefined;
  ended: Promise<void>;
  /** Paused for backpressure: a chunk's delivery to the consumer is pending. */
  paused: boolean;
  /** Bytes read so far. */
  bytes: number;
  onActivity: () => void;
}

/** Bounds on reading after the exit, beyond the grace (`drained`). */
export interface DrainOptions {
  /** Stops the draining at once (the caller went away). */
  signal?: AbortSignal | undefined;
  /**
   * The most time the streams are read, not paused, after the exit (counting from `drained`): a
   * child writing on (a line a second, say) never lets the grace run out. @default 10_000
   */
  maxActiveMs?: number;
  /**
   * The most bytes read after the exit: a child writing on fast to a slow consumer. Far above what
   * the pipes can hold at the exit (the process's pipe, 1 MiB at most, the shim's copy buffer, the
   * FIFO and the socket's buffer). @default 4 MiB
   */
  maxBytes?: number;
}

/**
 * How draining ended: `ended`, both streams ended (all output read); `idle`, nothing came for the
 * grace while the consumer was not behind (a background child holds a pipe open; what it writes
 * later is dropped); `writing`, output still came past `maxActiveMs` or `maxBytes` (a background
 * child writes on; what follows is dropped); `aborted`, the signal fired.
 */
export type DrainOutcome = "ended" | "idle" | "writing" | "aborted";

const DEFAULT_MAX_ACTIVE_MS = 10_000;
const DEFAULT_MAX_BYTES = 4 * 1024 * 1024;

export class ExecFifos {
  /** Told when a chunk was read or a stream paused or resumed (while draining). */
  private onActivity: (() => void) | undefined;

  private constructor(private readonly pipes: [Pipe, Pipe]) {
    for (const pipe of pipes) pipe.onActivity = () => this.onActivity?.();
  }

  get stdoutPath(): string {
    return this.pipes[0].path;
  }

  get stderrPath(): string {
    return this.pipes[1].path;
  }

  static async create(
    directory: string,
    name: string,
    onStdout: (chunk: Uint8Array) => void | Promise<void>,
    onStderr: (chunk: Uint8Array) => void | Promise<void>,
  ): Promise<ExecFifos> {
    const stdoutPath = join(directory, `${name}.stdout`);
    const stderrPath = join(directory, `${name}.stderr`);
    try {
      await execFileAsync("mkfifo", ["-m", "0600", stdoutPath, stderrPath]);
    } catch (error) {
      // mkfifo makes its operands one by one: the first may exist when the second failed. The names
      // are this exec's own (unique in the agent's FIFO directory), so whatever is there goes.
      await Promise.all([rm(stdoutPath, { force: true }), rm(stderrPath, { force: true })]);
      throw error;
    }
    const opened: Pipe[] = [];
    try {
      opened.push(openPipe(stdoutPath, onStdout));
      opened.push(openPipe(stderrPath, onStderr));
    } catch (error) {
      for (const pipe of opened) closePipe(pipe);
      await Promise.all([rm(stdoutPath, { force: true }), rm(stderrPath, { force: true })]);
      throw error;
    }
    return new ExecFifos(opened as [Pipe, Pipe]);
  }

  /** Call once the process has exited: lets the streams end after the shim's last write. */
  releaseWriters(): void {
    for (const pipe of this.pipes) {
      if (pipe.writeFd !== undefined) {
        closeSync(pipe.writeFd);
        pipe.writeFd = undefined;
      }
    }
  }

  /**
   * Call after `releaseWriters`: resolves when both streams ended, or when nothing was read for
   * `graceMs` while neither stream was paused for its consumer (each chunk starts the grace anew),
   * or past the bounds of `options` (see DrainOutcome).
   */
  drained(graceMs: number, options: DrainOptions = {}): Promise<DrainOutcome> {
    const maxActiveMs = options.maxActiveMs ?? DEFAULT_MAX_ACTIVE_MS;
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    const readBytes = () => this.pipes[0].bytes + this.pipes[1].bytes;
    const startBytes = readBytes();
    return new Promise<DrainOutcome>((resolve) => {
      let done = false;
      let activeMs = 0;
      let activeSince: number | undefined;
      let idle: NodeJS.Timeout | undefined;
      let budget: NodeJS.Timeout | undefined;
      const stopTimers = () => {
        clearTimeout(idle);
        clearTimeout(budget);
      };
      const finish = (outcome: DrainOutcome) => {
        if (done) return;
        done = true;
        stopTimers();
        this.onActivity = undefined;
        options.signal?.removeEventListener("abort", onAbort);
        resolve(outcome);
      };
      const onAbort = () => finish("aborted");
      // Each chunk, pause and resume: stop the clocks, then run them again unless a consumer is behind.
      const update = () => {
        if (done) return;
        const now = performance.now();
        if (activeSince !== undefined) activeMs += now - activeSince;
        activeSince = undefined;
        stopTimers();
        if (readBytes() - startBytes > maxBytes || activeMs >= maxActiveMs) return finish("writing");
        if (this.pipes.some((pipe) => pipe.paused)) return;
        activeSince = now;
        idle = setTimeout(() => finish("idle"), graceMs);
        budget = setTimeout(() => finish("writing"), maxActiveMs - activeMs);
        idle.unref();
        budget.unref();
      };
      if (options.signal?.aborted) return finish("aborted");
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.onActivity = update;
      void Promise.all(this.pipes.map((pipe) => pipe.ended)).then(() => finish("ended"));
      update();
    });
  }

  /** Closes everything and removes the FIFOs. */
  async dispose(): Promise<void> {
    for (const pipe of this.pipes) closePipe(pipe);
    await Promise.all(this.pipes.map((pipe) => rm(pipe.path, { force: true })));
  }
}

function openPipe(path: string, onChunk: (chunk: Uint8Array) => void | Promise<void>): Pipe {
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let writeFd: number;
  try {
    writeFd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (error) {
    closeSync(readFd);
    throw error;
  }
  const socket = new Socket({ fd: readFd, readable: true, writable: false });
  const pipe: Pipe = { path, socket, writeFd, ended: Promise.resolve(), paused: false, bytes: 0, onActivity: () => undefined };
  socket.on("data", (chunk: Buffer) => {
    pipe.bytes += chunk.byteLength;
    const pending = onChunk(chunk);
    // The consumer is behind: stop reading, so the process's writes block instead of our memory growing.
    if (pending instanceof Promise) {
      socket.pause();
      pipe.paused = true;
      void pending
        .catch(() => undefined)
        .finally(() => {
          pipe.paused = false;
          socket.resume();
          pipe.onActivity();
        });
    }
    pipe.onActivity();
  });
  pipe.ended = new Promise<void>((resolve) => {
    socket.once("end", resolve);
    socket.once("close", () => resolve());
    // A read error ends the stream for us; the exit code still comes from Tasks.Wait.
    socket.once("error", () => resolve());
  });
  return pipe;
}

function closePipe(pipe: Pipe): void {
  if (pipe.writeFd !== undefined) {
    closeSync(pipe.writeFd);
    pipe.writeFd = undefined;
  }
  pipe.socket.destroy();
}
