import type { Condition } from "@fast-sandbox/api";
import { age, printTable } from "../output.js";

const CONDITION_HEADERS = ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"];

/** An object's conditions as `fsb get` prints them under its row (a sandbox's OOMKilled, a pool's InstancesPrepared…). */
export function conditionRows(object: { status?: { conditions?: Condition[] } }, now = Date.now()): string[][] {
  return (object.status?.conditions ?? []).map((c) => [
    c.type,
    c.status,
    c.reason ?? "",
    c.lastTransitionTime ? age(c.lastTransitionTime, now) : "-",
    c.message ?? "",
  ]);
}

/** Prints the object's conditions under its row, after a blank line and a CONDITIONS heading; nothing when it has none. */
export function printConditions(object: { status?: { conditions?: Condition[] } }): void {
  const rows = conditionRows(object);
  if (rows.length === 0) return;
  process.stdout.write("\nCONDITIONS\n");
  printTable(CONDITION_HEADERS, rows);
}
