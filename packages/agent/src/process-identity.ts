/**
 * A process as the kernel knows it, for the locks that name their holder (the agent's instance lock,
 * `fsb up`'s data directory lock): a pid is reused once its process is gone; the pair of pid and
 * start time is not. Linux only (/proc).
 */
import { readFileSync } from "node:fs";

/** A process as the kernel knows it: its pid and its start time (field 22 of `/proc/<pid>/stat`, clock ticks after boot). */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

/** When process `pid` started (clock ticks after boot); undefined when it does not run (a zombie has ended). */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // `pid (comm) state …`: comm may hold spaces and parentheses, so fields count from its last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return undefined;
  const startTime = Number(fields[22 - 3]);
  return Number.isSafeInteger(startTime) ? startTime : undefined;
}

/** Whether the process still runs: its pid runs, and started when it did. */
export function isRunning(process: ProcessIdentity): boolean {
  return processStartTime(process.pid) === process.startTime;
}

/** How a lock file names its holder: one line of JSON (without its newline). */
export function formatProcessIdentity(holder: ProcessIdentity): string {
  return JSON.stringify({ pid: holder.pid, startTime: holder.startTime });
}

/** The holder a lock file's text names; undefined when it names none (empty, torn, not ours). */
export function parseProcessIdentity(text: string | undefined): ProcessIdentity | undefined {
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as Partial<ProcessIdentity>;
    if (!Number.isSafeInteger(parsed.pid) || !Number.isSafeInteger(parsed.startTime)) return undefined;
    return { pid: parsed.pid as number, startTime: parsed.startTime as number };
  } catch {
    return undefined;
  }
}
