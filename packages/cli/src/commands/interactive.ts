/**
 * `fsb exec -i/-t` and `fsb shell`: commands in a sandbox through its in-sandbox daemon (via the
 * sandbox proxy, with the sandbox's access token), with stdin and a terminal. `fsb exec` without
 * them runs through the control plane as before (sandboxes.ts).
 */
import { ValidationError, parseExecUser } from "@fast-sandbox/api";
import { FastSandbox } from "@fast-sandbox/sdk";
import { accessTokenOfExisting } from "../access-tokens.js";
import { connect, type GlobalOptions } from "../connection.js";
import { runInTerminal, runWithStdin, type TerminalIo } from "../terminal-session.js";
import { exec as execThroughControlPlane, parseEnvs } from "./sandboxes.js";

export interface ExecOptions extends GlobalOptions {
  namespace?: string;
  env: string[];
  workdir?: string;
  /** `-u`: USER[:GROUP] (a group only without -i and -t). */
  user?: string;
  /** `-i`: forward stdin. */
  interactive?: boolean;
  /** `-t`: run in a terminal. */
  tty?: boolean;
  /** The sandbox's access token (`-i`, `-t`). */
  token?: string;
}

const processIo = (): TerminalIo => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });

/** A handle on the sandbox for daemon traffic, with the access token the CLI knows for it. */
async function sandboxHandle(name: string, options: GlobalOptions & { namespace?: string; token?: string | undefined }): Promise<FastSandbox> {
  const { client, sdk, namespace, dataDir } = await connect(options);
  const accessToken = await accessTokenOfExisting(client.sandboxes, namespace, name, { token: options.token, dataDir });
  return FastSandbox.connect(name, { connection: sdk, namespace, accessToken });
}

/** Runs the command in the sandbox and returns its exit code (the CLI exits with it). */
export async function exec(name: string, command: string[], options: ExecOptions): Promise<number> {
  if (!options.interactive && !options.tty) return execThroughControlPlane(name, command, options);
  if (command.length === 0) {
    throw new ValidationError("COMMAND", `name the command after '--', e.g. fsb exec -it ${name} -- sh (or 'fsb shell ${name}' for a login shell)`);
  }
  const user = daemonUser(options.user, "-i and -t");
  const envs = envRecord(options.env);
  const sandbox = await sandboxHandle(name, options);
  if (options.tty) return runInTerminal(sandbox, { command, envs, cwd: options.workdir, user, interactive: options.interactive === true }, processIo());
  return runWithStdin(sandbox, { command, envs, cwd: options.workdir, user }, processIo());
}

/** `-u` for the daemon's commands: a user by name or uid; the daemon takes no group (its user's own is used). */
function daemonUser(user: string | undefined, what: string): string | undefined {
  if (user === undefined) return undefined;
  const parsed = parseExecUser("--user", user);
  if (parsed.group !== undefined) {
    throw new ValidationError(
      "--user",
      `${what} run through the sandbox's daemon, which takes a user without a group (its own groups are used): -u ${parsed.user}`,
    );
  }
  return parsed.user;
}

/** `fsb shell NAME`: an interactive login shell in the sandbox (bash, else sh). */
export async function shell(
  name: string,
  options: GlobalOptions & { namespace?: string; env: string[]; workdir?: string; user?: string; token?: string },
): Promise<number> {
  const user = daemonUser(options.user, "shells");
  const envs = envRecord(options.env);
  const sandbox = await sandboxHandle(name, options);
  return runInTerminal(sandbox, { command: undefined, envs, cwd: options.workdir, user, interactive: true }, processIo());
}

function envRecord(values: string[]): Record<string, string> {
  return Object.fromEntries(parseEnvs(values).map(({ name, value }) => [name, value]));
}
