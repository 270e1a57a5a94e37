/**
 * A CNI plugin's failure as an FsbError: the one place where the CNI spec's error result
 * (`{"cniVersion", "code", "msg", "details"}` on stdout with a non-zero exit) and a plugin that
 * could not run at all are translated into the repo's error hierarchy.
 */
import { FsbError, type ErrorCode } from "@fast-sandbox/api/core";

export type CniCommand = "ADD" | "DEL" | "CHECK" | "VERSION";

/** The error codes the CNI spec reserves (1-99); plugins use 100 and up for their own. */
export const CNI_WELL_KNOWN_ERRORS: Readonly<Record<number, string>> = {
  1: "incompatible CNI version",
  2: "unsupported field in network configuration",
  3: "container unknown or does not exist",
  4: "invalid necessary environment variables",
  5: "I/O failure",
  6: "failed to decode content",
  7: "invalid network config",
  11: "try again later",
};

export interface CniErrorInit {
  /** The plugin's type (its binary's name). */
  plugin: string;
  command: CniCommand;
  message: string;
  /** The CNI error code the plugin reported; undefined when it reported none (crash, timeout, not found). */
  cniCode?: number;
  /** The plugin's `details`, or its stderr. */
  details?: string;
  /** @default from `cniCode` (see `errorCodeOfCni`) */
  code?: ErrorCode;
}

export class CniError extends FsbError {
  readonly plugin: string;
  readonly command: CniCommand;
  readonly cniCode: number | undefined;
  readonly details: string;

  constructor(init: CniErrorInit, options?: { cause?: unknown }) {
    super(init.code ?? errorCodeOfCni(init.cniCode, init.message), init.message, options);
    this.plugin = init.plugin;
    this.command = init.command;
    this.cniCode = init.cniCode;
    this.details = init.details ?? "";
  }
}

/**
 * The FsbError code of a CNI error code. Configuration problems are the node operator's to fix
 * (failed_precondition), a missing container is not_found, "try again later" and I/O failures are
 * unavailable, an exhausted address range is no_capacity, anything else internal.
 */
export function errorCodeOfCni(cniCode: number | undefined, message = ""): ErrorCode {
  if (/no IP addresses available|no more addresses/i.test(message)) return "no_capacity";
  switch (cniCode) {
    case 1:
    case 2:
    case 7:
      return "failed_precondition";
    case 3:
      return "not_found";
    case 5:
    case 11:
      return "unavailable";
    default:
      return "internal";
  }
}

/** What a finished plugin process left: its exit and output. */
export interface PluginExit {
  plugin: string;
  command: CniCommand;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The CniError of a plugin that exited unsuccessfully, from its error result when it printed one. */
export function cniErrorFromExit(exit: PluginExit): CniError {
  const { plugin, command } = exit;
  const stderr = exit.stderr.trim();
  let parsed: { code?: unknown; msg?: unknown; details?: unknown } | undefined;
  try {
    const value: unknown = JSON.parse(exit.stdout);
    if (value && typeof value === "object") parsed = value;
  } catch {
    parsed = undefined;
  }
  if (parsed && typeof parsed.code === "number") {
    const cniCode = parsed.code;
    const msg = typeof parsed.msg === "string" ? parsed.msg : "";
    const details = typeof parsed.details === "string" && parsed.details !== "" ? parsed.details : stderr;
    const known = CNI_WELL_KNOWN_ERRORS[cniCode];
    const text = [msg, details].filter(Boolean).join(": ");
    return new CniError({
      plugin,
      command,
      cniCode,
      details,
      message: `CNI plugin "${plugin}" failed ${command} (code ${cniCode}${known ? `, ${known}` : ""}): ${text || "no message"}`,
    });
  }
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with ${String(exit.exitCode)}`;
  return new CniError({
    plugin,
    command,
    details: stderr,
    code: "internal",
    message: `CNI plugin "${plugin}" ${how} on ${command} without an error result${stderr ? `: ${stderr}` : ""}`,
  });
}
