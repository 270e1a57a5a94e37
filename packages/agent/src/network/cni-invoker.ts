/**
 * Runs CNI plugins as the CNI spec (1.0) says a runtime does, for a network configuration list:
 *
 * - ADD runs each plugin in order; each after the first gets the previous one's result as
 *   `prevResult`; the last result is the attachment's. A failing ADD is undone with a DEL of the
 *   whole list before its error is thrown (the spec asks the runtime to clean up).
 * - DEL runs the plugins in reverse order, each with the ADD's result as `prevResult` when it is
 *   known. Every plugin runs even when one fails (DEL is idempotent by contract, and the most
 *   is released that way); the first failure is thrown after.
 * - CHECK runs each plugin in order with the ADD's result.
 *
 * Parameters go in `CNI_*` environment variables, the plugin's configuration (the list's `name` and
 * `cniVersion` added) on stdin; the result or error comes back on stdout (cni-error.ts).
 */
import { spawn } from "node:child_process";
import { accessSync, constants, statfsSync } from "node:fs";
import { join } from "node:path";
import { CniError, cniErrorFromExit, type CniCommand } from "./cni-error.js";

/** One plugin of a list: its `type` names the binary; every other field is the plugin's own. */
export interface CniPluginConfig {
  type: string;
  [field: string]: unknown;
}

/** A network configuration list (`.conflist`). */
export interface CniNetworkList {
  cniVersion: string;
  name: string;
  plugins: CniPluginConfig[];
}

export interface CniInterface {
  name: string;
  mac?: string;
  /** The network namespace path for interfaces inside the container; absent for host-side ones. */
  sandbox?: string;
}

export interface CniIpConfig {
  /** Index into `interfaces`. */
  interface?: number;
  /** CIDR notation, e.g. `10.213.0.5/16`. */
  address: string;
  gateway?: string;
}

/** A plugin's success result (spec 1.0). */
export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIpConfig[];
  routes?: { dst: string; gw?: string }[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

/** What identifies one attachment of a container to a network. */
export interface CniAttachment {
  /** `CNI_CONTAINERID`: with the interface name, the key plugins (e.g. host-local) store state under. */
  containerId: string;
  /** `CNI_NETNS`: path of the network namespace. */
  netnsPath: string;
  /** `CNI_IFNAME`: the interface inside the namespace. */
  ifName: string;
  /** `CNI_ARGS` as key-value pairs. @default none */
  args?: Readonly<Record<string, string>>;
}

export interface CniInvokerOptions {
  /** Directories searched for plugin binaries, in order (`CNI_PATH`). */
  pluginDirs: readonly string[];
  /** How long one plugin may run before it is killed. @default 30_000 */
  pluginTimeoutMs?: number;
  /** `PATH` of the plugins (they run iptables, ip…). @default process.env.PATH, or the usual system directories */
  searchPath?: string;
}

const PLUGIN_TYPE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export class CniInvoker {
  readonly pluginDirs: readonly string[];
  private readonly pluginTimeoutMs: number;
  private readonly searchPath: string;

  constructor(options: CniInvokerOptions) {
    this.pluginDirs = [...options.pluginDirs];
    this.pluginTimeoutMs = options.pluginTimeoutMs ?? 30_000;
    this.searchPath = options.searchPath ?? process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  }

  /**
   * ADD of the whole list; on failure the list is deleted again and the ADD's error thrown.
   * `onResult` sees each plugin's result as it comes: a caller that records it can still delete
   * everything after a crash half-way (some plugins need the result to find what they made).
   */
  async add(list: CniNetworkList, attachment: CniAttachment, onResult?: (result: CniResult) => void): Promise<CniResult> {
    let prevResult: CniResult | undefined;
    for (const plugin of list.plugins) {
      try {
        prevResult = parseResult(plugin.type, await this.run("ADD", list, plugin, attachment, prevResult));
        onResult?.(prevResult);
      } catch (error) {
        await this.del(list, attachment, prevResult).catch(() => undefined);
        throw error;
      }
    }
    if (!prevResult) throw new CniError({ plugin: "-", command: "ADD", code: "failed_precondition", message: `CNI network "${list.name}" has no plugins` });
    return prevResult;
  }

  /** DEL of the whole list, last plugin first; idempotent as the plugins are. */
  async del(list: CniNetworkList, attachment: CniAttachment, prevResult?: CniResult): Promise<void> {
    let firstError: CniError | undefined;
    for (const plugin of [...list.plugins].reverse()) {
      try {
        await this.run("DEL", list, plugin, attachment, prevResult);
      } catch (error) {
        firstError ??= error instanceof CniError ? error : new CniError({ plugin: plugin.type, command: "DEL", message: String(error) }, { cause: error });
      }
    }
    if (firstError) throw firstError;
  }

  /** CHECK of the whole list against the ADD's result: throws what the first plugin finds wrong. */
  async check(list: CniNetworkList, attachment: CniAttachment, prevResult: CniResult): Promise<void> {
    for (const plugin of list.plugins) await this.run("CHECK", list, plugin, attachment, prevResult);
  }

  /** The full path of a plugin binary, or a CniError that says how to install it. */
  findPlugin(type: string, command: CniCommand): string {
    if (!PLUGIN_TYPE.test(type)) {
      throw new CniError({ plugin: type, command, code: "failed_precondition", message: `CNI plugin type ${JSON.stringify(type)} is not a plugin name` });
    }
    for (const directory of this.pluginDirs) {
      const path = join(directory, type);
      try {
        accessSync(path, constants.X_OK);
        return path;
      } catch {
        // not in this directory
      }
    }
    throw new CniError({
      plugin: type,
      command,
      code: "failed_precondition",
      message:
        `CNI plugin "${type}" is not in ${this.pluginDirs.join(":") || "(no directory)"}: install the CNI plugins ` +
        "(Debian: apt-get install containernetworking-plugins) or point FSB_CNI_PATH at them",
    });
  }

  private run(command: CniCommand, list: CniNetworkList, plugin: CniPluginConfig, attachment: CniAttachment, prevResult?: CniResult): Promise<string> {
    const binary = this.findPlugin(plugin.type, command);
    const config = { ...plugin, cniVersion: list.cniVersion, name: list.name, ...(prevResult ? { prevResult } : {}) };
    const env: NodeJS.ProcessEnv = {
      PATH: this.searchPath,
      CNI_COMMAND: command,
      CNI_CONTAINERID: attachment.containerId,
      // A DEL for a namespace that is gone (its bind mount vanished, e.g. with a dead agent's mount
      // namespace) goes without one: the CNI spec lets plugins release what they hold without it.
      CNI_NETNS: command === "DEL" && !isNetworkNamespace(attachment.netnsPath) ? "" : attachment.netnsPath,
      CNI_IFNAME: attachment.ifName,
      CNI_PATH: this.pluginDirs.join(":"),
      ...(attachment.args && Object.keys(attachment.args).length > 0
        ? {
            CNI_ARGS: Object.entries(attachment.args)
              .map(([key, value]) => `${key}=${value}`)
              .join(";"),
          }
        : {}),
    };
    return new Promise<string>((resolve, reject) => {
      const child = spawn(binary, [], { env, stdio: ["pipe", "pipe", "pipe"], timeout: this.pluginTimeoutMs, killSignal: "SIGKILL" });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      // A plugin that exits before reading its configuration closes the pipe; its exit says why.
      child.stdin.on("error", () => undefined);
      child.once("error", (error) =>
        reject(
          new CniError(
            { plugin: plugin.type, command, code: "internal", message: `CNI plugin "${plugin.type}" could not run: ${error.message}` },
            { cause: error },
          ),
        ),
      );
      child.once("close", (exitCode, signal) => {
        const out = Buffer.concat(stdout).toString("utf8");
        if (exitCode === 0) resolve(out);
        else reject(cniErrorFromExit({ plugin: plugin.type, command, exitCode, signal, stdout: out, stderr: Buffer.concat(stderr).toString("utf8") }));
      });
      child.stdin.end(JSON.stringify(config));
    });
  }
}

function parseResult(plugin: string, stdout: string): CniResult {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch (error) {
    throw new CniError(
      { plugin, command: "ADD", code: "internal", message: `CNI plugin "${plugin}" printed no JSON result on ADD: ${stdout.slice(0, 200)}` },
      { cause: error },
    );
  }
  if (!value || typeof value !== "object" || typeof (value as { cniVersion?: unknown }).cniVersion !== "string") {
    throw new CniError({ plugin, command: "ADD", code: "internal", message: `CNI plugin "${plugin}" printed a result without cniVersion on ADD` });
  }
  return value as CniResult;
}

/** nsfs's magic number (statfs f_type of a mounted namespace file). */
const NSFS_MAGIC = 0x6e736673;

/** Whether the path is a mounted network namespace (not a plain file left where one was). */
function isNetworkNamespace(path: string): boolean {
  try {
    return statfsSync(path).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}
