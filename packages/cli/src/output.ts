import { createRequire } from "node:module";
import type * as Yaml from "yaml";

// yaml is loaded by -o yaml alone: most commands print tables, and loading it costs `fsb ls` time.
const requireModule = createRequire(import.meta.url);

export type OutputFormat = "table" | "json" | "yaml";

export const OUTPUT_FORMATS: OutputFormat[] = ["table", "json", "yaml"];

/** What must be done before the process exits on a failed write: e.g. kill the command `fsb exec -i` runs in the sandbox. */
export type ExitCleanup = () => Promise<void>;

const exitCleanups = new Set<ExitCleanup>();

/** The longest the exit on a failed write waits for the clean-ups (a daemon that does not answer must not keep the CLI). */
export const EXIT_CLEANUP_TIMEOUT_MS = 5_000;

/**
 * Registers `cleanup` to run before the process exits on a failed write of its output (see
 * `exitWhenReaderGoes`), which skips the `finally` blocks of the command in progress; the function
 * returned unregisters it (when the command ended by itself).
 */
export function onExitOnWriteFailure(cleanup: ExitCleanup): () => void {
  exitCleanups.add(cleanup);
  return () => exitCleanups.delete(cleanup);
}

/** Runs the registered clean-ups, each once and at most EXIT_CLEANUP_TIMEOUT_MS in all, whatever they throw. */
export async function runExitCleanups(): Promise<void> {
  const cleanups = [...exitCleanups];
  exitCleanups.clear();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(cleanups.map(async (cleanup) => cleanup())),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, EXIT_CLEANUP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
}

/**
 * Ends the process quietly, exit 0, when the reader of its output went away (EPIPE: `fsb ls | head`,
 * `fsb logs -f NAME | grep -m1 ready`) as other CLIs do, instead of crashing with a stack trace on
 * the unhandled stream error; `logs -f` ends with it at its next output. Another write error is
 * reported, exit 1. Either way the clean-ups registered with `onExitOnWriteFailure` run first.
 */
export function exitWhenReaderGoes(): void {
  let exiting = false;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error: NodeJS.ErrnoException) => {
      if (exiting) return;
      exiting = true;
      const code = error.code === "EPIPE" ? 0 : 1;
      if (code !== 0 && stream === process.stdout) process.stderr.write(`error: cannot write the output: ${error.message}\n`);
      void runExitCleanups().finally(() => process.exit(code));
    });
  }
}

export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("   ")
      .trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join("\n")}\n`);
}

export function printObjects(format: OutputFormat, value: unknown, table: () => void): void {
  switch (format) {
    case "json":
      process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      return;
    case "yaml":
      process.stdout.write((requireModule("yaml") as typeof Yaml).stringify(value));
      return;
    default:
      table();
  }
}

/** `5s`, `3m`, `2h`, `4d` since an RFC 3339 time, like kubectl's AGE column. */
export function age(timestamp: string | undefined, now = Date.now()): string {
  const time = timestamp ? Date.parse(timestamp) : Number.NaN;
  if (Number.isNaN(time)) return "<unknown>";
  const seconds = Math.max(0, Math.floor((now - time) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}
