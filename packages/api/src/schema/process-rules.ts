/**
 * The rules of what a process is started with — a create's (SandboxSpec: command, args, envs,
 * workingDir) and an exec's alike — as plain checks without the schemas, so that the agent, which
 * never loads TypeBox, checks an exec by the very rules and words the control plane does.
 */
import { ValidationError } from "../errors.js";

/** A string a process can take as an argument, environment value or path: no NUL byte (C strings end there). */
export const NO_NUL_PATTERN = "^[^\\x00]*$";
/** An environment variable's name: not empty, no '=' (the first '=' of NAME=value ends the name) and no NUL byte. */
export const ENV_NAME_PATTERN = "^[^=\\x00]+$";
/** A working directory: an absolute path without NUL bytes. */
export const WORKING_DIR_PATTERN = "^/[^\\x00]*$";

/**
 * The limits of what a process is started with, a create's (SandboxSpec: command, args, envs) and an
 * exec's (command, envs) alike. Each string reaches execve(2), which refuses one of 128 KiB or more
 * with its NUL (MAX_ARG_STRLEN; a variable counts as NAME=value), and all of them together more
 * than a quarter of the stack limit (2 MiB by default), the image's own environment included. A
 * MiB in all leaves room for that environment, keeps a create's record well within what etcd
 * stores (1.5 MiB) and containerd's requests (16 MiB) take, and a number of entries bounds the
 * API server's cost of comparing the lists on each update.
 */
export const PROCESS_LIST_MAX_ITEMS = 256;
/** The longest argument, or environment variable as NAME=value, in bytes with its NUL (MAX_ARG_STRLEN). */
export const PROCESS_STRING_MAX_BYTES = 128 * 1024;
/** The longest argument or environment value in characters (what a schema can state): PROCESS_STRING_MAX_BYTES less the NUL. */
export const PROCESS_STRING_MAX_LENGTH = PROCESS_STRING_MAX_BYTES - 1;
/** The most bytes a process's command, arguments and environment take together, each string with its NUL. */
export const PROCESS_MAX_BYTES = 1024 * 1024;

/** The longest working directory, in characters: the kernel refuses a path of PATH_MAX (4096) bytes or more with its NUL. */
export const PATH_MAX_LENGTH = 4095;
/**
 * The longest image reference: the reference grammar's parts (a name of at most 255 characters, a
 * tag of at most 128, a digest of at most 135) fit about twice over.
 */
export const IMAGE_MAX_LENGTH = 1024;
/** The most ports a sandbox exposes: each is an endpoint of its own, and on a Shared network one its agent's address keeps for it. */
export const EXPOSED_PORTS_MAX_ITEMS = 64;
/** The longest resetRevision (and a create's request id): a DNS subdomain's length, room for any version, hash or UUID. */
export const REVISION_MAX_LENGTH = 253;

export const ENV_NAME_DESCRIPTION = "Variable name; must not be empty or contain '=' or NUL bytes.";
export const ENV_VALUE_DESCRIPTION = "Variable value (may be empty); must not contain NUL bytes.";
export const ARGUMENT_DESCRIPTION = "must not contain NUL bytes";
export const WORKING_DIR_DESCRIPTION = "Absolute path, without NUL bytes.";

const WORKING_DIR = new RegExp(WORKING_DIR_PATTERN);

/** What a process is started with: the fields a create (SandboxSpec) and an exec share. */
export interface ProcessFields {
  command?: readonly string[];
  args?: readonly string[];
  envs?: readonly { name: string; value: string }[];
  workingDir?: string;
}

/**
 * Checks an exec's process (its command, envs and working directory; an empty working directory is
 * unset) by the rules SandboxSpec sets for a create's, and says what is wrong in the words the
 * create's validation uses. `prefix` goes before each field named (`spec.` for a create's fields).
 */
export function checkProcess(process: ProcessFields, prefix = ""): void {
  for (const list of ["command", "args"] as const) {
    const values = process[list];
    if (!values) continue;
    checkListLength(values, `${prefix}${list}`);
    values.forEach((value, index) => checkProcessString(value, `${prefix}${list}[${index}]`, false, ARGUMENT_DESCRIPTION));
  }
  if (process.envs) {
    checkListLength(process.envs, `${prefix}envs`);
    process.envs.forEach(({ name, value }, index) => {
      checkProcessString(name, `${prefix}envs[${index}].name`, true, ENV_NAME_DESCRIPTION);
      checkProcessString(value, `${prefix}envs[${index}].value`, false, ENV_VALUE_DESCRIPTION);
    });
  }
  const { workingDir } = process;
  if (workingDir) {
    checkLength(workingDir, `${prefix}workingDir`, PATH_MAX_LENGTH);
    if (!WORKING_DIR.test(workingDir)) {
      throw new ValidationError(`${prefix}workingDir`, `${JSON.stringify(workingDir)} is not valid (${WORKING_DIR_DESCRIPTION})`);
    }
  }
  checkProcessSize(process, prefix);
}

function checkListLength(values: readonly unknown[], field: string): void {
  if (values.length > PROCESS_LIST_MAX_ITEMS) throw new ValidationError(field, `has ${values.length} entries; at most ${PROCESS_LIST_MAX_ITEMS} are allowed`);
}

function checkLength(value: string, field: string, maxLength: number): void {
  if (value.length > maxLength) throw new ValidationError(field, `has ${value.length} characters; at most ${maxLength} are allowed`);
}

function checkProcessString(value: string, field: string, name: boolean, description: string): void {
  if (name && value === "") throw new ValidationError(field, "must not be empty");
  checkLength(value, field, PROCESS_STRING_MAX_LENGTH);
  if (value.includes("\0") || (name && value.includes("="))) throw new ValidationError(field, `${JSON.stringify(value)} is not valid (${description})`);
}

/**
 * Throws a ValidationError when a string of the process (an argument, or a variable as NAME=value)
 * takes more than PROCESS_STRING_MAX_BYTES with its NUL, or all of them together more than
 * PROCESS_MAX_BYTES: the limits the kernel sets in bytes, which a schema's lengths in characters
 * do not hold for characters of more than one byte or for a variable's name and value together.
 * The total names the list that takes the most.
 */
export function checkProcessSize(process: Pick<ProcessFields, "command" | "args" | "envs">, prefix = ""): void {
  const totals: [string, number][] = [];
  for (const list of ["command", "args"] as const) {
    let total = 0;
    process[list]?.forEach((value, index) => {
      const bytes = Buffer.byteLength(value) + 1;
      if (bytes > PROCESS_STRING_MAX_BYTES) throw stringTooLong(`${prefix}${list}[${index}]`, bytes, "argument");
      total += bytes;
    });
    totals.push([`${prefix}${list}`, total]);
  }
  let envTotal = 0;
  process.envs?.forEach(({ name, value }, index) => {
    const bytes = Buffer.byteLength(name) + Buffer.byteLength(value) + 2;
    if (bytes > PROCESS_STRING_MAX_BYTES) throw stringTooLong(`${prefix}envs[${index}]`, bytes, "variable, as NAME=value");
    envTotal += bytes;
  });
  totals.push([`${prefix}envs`, envTotal]);
  const total = totals.reduce((sum, [, bytes]) => sum + bytes, 0);
  if (total <= PROCESS_MAX_BYTES) return;
  const [field, bytes] = totals.reduce((most, entry) => (entry[1] > most[1] ? entry : most));
  throw new ValidationError(
    field,
    `takes ${bytes} bytes, and the command, its arguments and environment ${total} together (each string with its NUL, each variable as NAME=value); at most ${PROCESS_MAX_BYTES} (1 MiB) together are allowed`,
  );
}

function stringTooLong(field: string, bytes: number, what: string): ValidationError {
  return new ValidationError(
    field,
    `takes ${bytes} bytes with its NUL; at most ${PROCESS_STRING_MAX_BYTES} (128 KiB, the kernel's limit for one ${what}) are allowed`,
  );
}
