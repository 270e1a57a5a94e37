/**
 * The words of a command to run in a sandbox (`fsb exec NAME CMD…`, `fsb run CMD…`), without `--`:
 * the first word that is not one of fsb's own flags (or their values) or operands begins the
 * command, and every word from there on is the command's, its flags too — as `docker exec` and
 * `docker run` take them. Without this, `fsb exec web echo -e A=1 hi` ran `echo hi` with the
 * variable A=1 (fsb took `-e A=1` for its own `--env`), and `fsb exec web ls -l` was refused.
 */
import type { CommandUnknownOpts, Option } from "@commander-js/extra-typings";

/** Subcommands whose last operands are a command, and how many operands of their own come first. */
const COMMAND_RUNNERS: Readonly<Record<string, number>> = { exec: 1, run: 0 };

/** `argv` (node, script, words) with `--` put before the command's first word when it was not given. */
export function separateCommandWords(root: CommandUnknownOpts, argv: readonly string[]): string[] {
  let i = 2;
  for (; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--") return [...argv];
    if (!arg.startsWith("-") || arg === "-") break;
    i += valueWords(root.options, arg);
  }
  const subcommand = root.commands.find((command) => command.name() === argv[i]);
  const ownOperands = subcommand ? COMMAND_RUNNERS[subcommand.name()] : undefined;
  if (!subcommand || ownOperands === undefined) return [...argv];
  const options = [...subcommand.options, ...root.options];
  let operands = ownOperands;
  for (let j = i + 1; j < argv.length; j++) {
    const arg = argv[j] ?? "";
    if (arg === "--") return [...argv];
    if (arg.startsWith("-") && arg !== "-") {
      j += valueWords(options, arg);
    } else if (operands > 0) {
      operands--;
    } else {
      return [...argv.slice(0, j), "--", ...argv.slice(j)];
    }
  }
  return [...argv];
}

/** How many of the words after the flag `arg` are its value: 1 for a flag that takes one not given within `arg`. */
function valueWords(options: readonly Option[], arg: string): number {
  const takesValue = (option: Option | undefined) => option !== undefined && (option.required || option.optional);
  if (arg.startsWith("--")) return !arg.includes("=") && takesValue(options.find((option) => option.long === arg)) ? 1 : 0;
  // A cluster of short flags (`-it`): a flag that takes a value takes the rest of the cluster, else the next word.
  for (let k = 1; k < arg.length; k++) {
    const option = options.find((candidate) => candidate.short === `-${arg[k]}`);
    if (option === undefined) return 0;
    if (takesValue(option)) return k === arg.length - 1 ? 1 : 0;
  }
  return 0;
}
