/**
 * The user an exec runs as (`fsb exec -u`, the fast-path and agent APIs' `user`): `USER[:GROUP]`, as
 * `docker exec -u` takes it. Each part is a name of the sandbox's /etc/passwd or /etc/group (the
 * portable POSIX set of characters, at most 32, a trailing `$` allowed as for machine accounts) or a
 * number below 2^32 − 1. A number no account has runs with group 0 unless GROUP says otherwise.
 * Empty: the image's USER, as the sandbox's command runs.
 */
import { ValidationError } from "../errors.js";

const NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,30}\$?$/;
const NUMBER = /^\d{1,10}$/;
/** (uid_t)-1 means "unchanged" to setuid and chown: not a user. */
const MAX_ID = 0xfffffffe;

/** `{user, group}` of a valid value; throws ValidationError on `field` naming what is allowed. */
export function parseExecUser(field: string, value: string): { user: string; group?: string } {
  const allowed =
    "USER or USER:GROUP, each a name of the sandbox's accounts (letters, digits, '.', '_', '-'; at most 32) or a number, e.g. root, 1000:1000, app:staff";
  const [user = "", group, ...rest] = value.split(":");
  if (rest.length > 0 || !validPart(user) || (group !== undefined && !validPart(group))) {
    throw new ValidationError(field, `${JSON.stringify(value)} is not a user: expected ${allowed}`);
  }
  return group === undefined ? { user } : { user, group };
}

function validPart(part: string): boolean {
  if (NUMBER.test(part)) return Number(part) <= MAX_ID;
  return NAME.test(part) && !/^\d+\$?$/.test(part) && part !== "." && part !== "..";
}

/** Whether the user is given by number alone (no name to look up in the sandbox). */
export function isNumericExecUser(parsed: { user: string; group?: string }): boolean {
  return NUMBER.test(parsed.user) && (parsed.group === undefined || NUMBER.test(parsed.group));
}
