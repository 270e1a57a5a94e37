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
}

export class ExecFifos {
  private constructor(private readonly pipes: [Pipe, Pipe]) {}

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
   * Resolves when both streams ended, or after `timeoutMs` (a background process that inherited
   * the pipe can keep it open forever; its later output is dropped).
   */
  async drained(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    await Promise.race([Promise.all(this.pipes.map((pipe) => pipe.ended)), timeout]);
    clearTimeout(timer);
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
  socket.on("data", (chunk: Buffer) => {
    const pending = onChunk(chunk);
    // The consumer is behind: stop reading, so the process's writes block instead of our memory growing.
    if (pending instanceof Promise) {
      socket.pause();
      void pending.finally(() => socket.resume());
    }
  });
  const ended = new Promise<void>((resolve) => {
    socket.once("end", resolve);
    socket.once("close", () => resolve());
    // A read error ends the stream for us; the exit code still comes from Tasks.Wait.
    socket.once("error", () => resolve());
  });
  return { path, socket, writeFd, ended };
}

function closePipe(pipe: Pipe): void {
  if (pipe.writeFd !== undefined) {
    closeSync(pipe.writeFd);
    pipe.writeFd = undefined;
  }
  pipe.socket.destroy();
}
