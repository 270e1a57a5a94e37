/**
 * The agent's install mode, `node dist/main.js install-node-binaries DIR` (the init container of the
 * agent Pods, config/agent/agent-pod-template.yaml): containerd runs on the host, so the files it
 * is handed for a sandbox must be host files. Copies into DIR (a hostPath volume):
 *   - fsb-helper: the in-sandbox helper, the one this agent would use itself (FSB_HELPER_PATH, else
 *     the helper built beside this package, DEFAULT_HELPER_PATH); missing → error;
 *   - runsc: FSB_RUNSC_SOURCE (missing → error), else `runsc` on PATH; none → a warning and no
 *     runsc (the node can then run `container` pools but not `gvisor` ones);
 *   - fsb-envd: the in-sandbox daemon (Isolated sandboxes run it: the SDK's commands, files and
 *     PTYs, the E2B-compatible API) — FSB_ENVD_SOURCE (missing → error; set but empty: none),
 *     else the daemon built beside this package (DEFAULT_ENVD_PATH); none → a warning, and the
 *     node's sandboxes run without it.
 * Each goes to a temporary name in DIR first and is renamed over the old one, so a running sandbox
 * (or a create in flight) never sees a half-written file.
 */
import { accessSync, chmodSync, constants, copyFileSync, renameSync, rmSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { DEFAULT_ENVD_PATH, DEFAULT_HELPER_PATH } from "./agent-config.js";

export const INSTALL_NODE_BINARIES = "install-node-binaries";

export interface NodeBinary {
  /** The file name in the target dir. */
  name: string;
  source: string;
}

export interface InstalledBinary extends NodeBinary {
  /** Where it is now. */
  target: string;
}

class InstallError extends Error {}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The first executable `name` in the directories of `path` (PATH's syntax), or undefined. */
export function findOnPath(name: string, path: string | undefined): string | undefined {
  for (const dir of (path ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** What to install, from the environment; throws when the helper, or an explicit runsc or daemon, is missing. */
export function nodeBinariesFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  defaults: { envd: string } = { envd: DEFAULT_ENVD_PATH },
): { binaries: NodeBinary[]; warnings: string[] } {
  const helper = env.FSB_HELPER_PATH || DEFAULT_HELPER_PATH;
  if (!isExecutableFile(helper)) {
    throw new InstallError(
      `the in-sandbox helper is missing at ${helper} (or not an executable file): run 'npm run build' (scripts/build-helper.sh) or set FSB_HELPER_PATH`,
    );
  }
  const binaries: NodeBinary[] = [{ name: "fsb-helper", source: helper }];
  const warnings: string[] = [];
  if (env.FSB_RUNSC_SOURCE) {
    if (!isExecutableFile(env.FSB_RUNSC_SOURCE)) throw new InstallError(`FSB_RUNSC_SOURCE: ${env.FSB_RUNSC_SOURCE} is not an executable file`);
    binaries.push({ name: "runsc", source: env.FSB_RUNSC_SOURCE });
  } else {
    const runsc = findOnPath("runsc", env.PATH);
    if (runsc) binaries.push({ name: "runsc", source: runsc });
    else warnings.push("no runsc: FSB_RUNSC_SOURCE is not set and there is no runsc on PATH; runsc is not installed, gvisor pools cannot run on this node");
  }
  if (env.FSB_ENVD_SOURCE) {
    if (!isExecutableFile(env.FSB_ENVD_SOURCE)) throw new InstallError(`FSB_ENVD_SOURCE: ${env.FSB_ENVD_SOURCE} is not an executable file`);
    binaries.push({ name: "fsb-envd", source: env.FSB_ENVD_SOURCE });
  } else if (env.FSB_ENVD_SOURCE === undefined && isExecutableFile(defaults.envd)) {
    binaries.push({ name: "fsb-envd", source: defaults.envd });
  } else if (env.FSB_ENVD_SOURCE === undefined) {
    warnings.push(
      `no in-sandbox daemon: FSB_ENVD_SOURCE is not set and ${defaults.envd} is missing (scripts/build-envd.sh builds it); the node's sandboxes run without it (no SDK commands, files or PTYs, no E2B-compatible API)`,
    );
  }
  return { binaries, warnings };
}

/** Copies each binary into `targetDir` (which must exist) through a temporary name and a rename. */
export function installNodeBinaries(targetDir: string, binaries: NodeBinary[]): InstalledBinary[] {
  let isDirectory = false;
  try {
    isDirectory = statSync(targetDir).isDirectory();
  } catch {
    // reported below
  }
  if (!isDirectory) throw new InstallError(`${targetDir} is not a directory (the node-binaries volume is not mounted there?)`);
  const installed: InstalledBinary[] = [];
  for (const { name, source } of binaries) {
    const target = join(targetDir, name);
    // In the target dir, so the rename is atomic (same file system); hidden, so nothing takes it for the real one.
    const temporary = join(targetDir, `.${name}.${process.pid}.tmp`);
    try {
      copyFileSync(source, temporary);
      chmodSync(temporary, 0o755);
      renameSync(temporary, target);
    } catch (error) {
      rmSync(temporary, { force: true });
      throw new InstallError(`cannot install ${source} as ${target}: ${error instanceof Error ? error.message : String(error)}`);
    }
    installed.push({ name, source, target });
  }
  return installed;
}

/**
 * The install mode's command line (the arguments after `install-node-binaries`): one directory.
 * Writes what it did to `out` and warnings and errors to `err`; returns the exit code (0 done,
 * 1 failed, 2 bad usage).
 */
export function runInstallNodeBinaries(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
  err: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): number {
  const prefix = `${INSTALL_NODE_BINARIES}:`;
  if (args.length !== 1 || args[0] === "" || args[0]!.startsWith("-")) {
    err(`usage: main.js ${INSTALL_NODE_BINARIES} DIR   (copies the in-sandbox helper, runsc and the in-sandbox daemon into DIR)`);
    return 2;
  }
  const targetDir = args[0]!;
  try {
    const { binaries, warnings } = nodeBinariesFromEnv(env);
    for (const warning of warnings) err(`${prefix} warning: ${warning}`);
    for (const { source, target } of installNodeBinaries(targetDir, binaries)) out(`${prefix} ${source} -> ${target}`);
    return 0;
  } catch (error) {
    if (!(error instanceof InstallError)) throw error;
    err(`${prefix} error: ${error.message}`);
    return 1;
  }
}
