/**
 * `tail` of a sandbox's logs (`fsb logs --tail N`, the fast-path and agent APIs' `tail_lines`, as
 * `kubectl logs --tail`): how many of the log's last lines to return. The wire carries an int32.
 */
import { ValidationError } from "../errors.js";

/** The most lines a tail may ask for (the wire's int32). */
export const MAX_TAIL_LINES = 2 ** 31 - 1;

/**
 * Returns `value` (a number, or the decimal digits of one, as a command line gives it) when it is a
 * whole number of lines from 0 to MAX_TAIL_LINES; a ValidationError naming `field` otherwise.
 */
export function checkTailLines(value: number | string, field: string): number {
  const lines = typeof value === "number" ? value : /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(lines) || lines < 0 || lines > MAX_TAIL_LINES) {
    const got = typeof value === "string" ? JSON.stringify(value) : String(value);
    throw new ValidationError(field, `must be a whole number of lines ≥ 0 (at most ${MAX_TAIL_LINES}), got ${got}`);
  }
  return lines;
}
