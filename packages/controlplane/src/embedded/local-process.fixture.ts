/** What the specs of the local agent and janitor processes share: reading a process's group and session, and waiting. Test code only. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { setTimeout as realSleep } from "node:timers/promises";

/** Fields 5 and 6 of /proc/<pid>/stat: the process group and the session. */
export function groupAndSession(pid: number): { group: number; session: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { group: Number(fields[2]), session: Number(fields[3]) };
}

/** Waits (real time) until `condition` holds, else fails saying `what`. */
export async function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  for (const start = Date.now(); !condition() && Date.now() - start < timeoutMs;) await realSleep(20);
  assert.ok(condition(), what);
}
