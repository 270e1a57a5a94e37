/**
 * The logger of every Fast Sandbox process (agent, control plane, controller, proxy, janitor, the
 * CLI's one-shot commands): pino JSON lines on stderr, written synchronously.
 *
 * Not pino's default `destination(2)`: that stream writes asynchronously and flushes what is left
 * with `flushSync()` when the process exits, and sonic-boom's `flushSync()` retries every error
 * every 100 ms, forever — EPIPE included. A supervised process (the embedded janitor and agents log
 * into a pipe their control plane reads) whose supervisor died with a line in flight therefore never
 * ended: blocked in its exit, deaf to SIGTERM, until SIGKILL. Written synchronously, a line either
 * reaches the pipe or fails with EPIPE at once; pino then drops every later line (its broken-pipe
 * rule), and nothing is left to flush at exit.
 */
import { destination, pino, type Logger, type LoggerOptions } from "pino";

/** A pino logger writing synchronously to stderr (file descriptor 2). */
export function stderrLogger(options: LoggerOptions): Logger {
  return pino(options, destination({ dest: 2, sync: true }));
}
