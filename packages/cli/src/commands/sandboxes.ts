import {
  NAME_MAX_LENGTH,
  NAME_PATTERN,
  PermissionDeniedError,
  UnavailableError,
  ValidationError,
  checkTailLines,
  parseCidr,
  parseDurationMs,
  parseExecUser,
  type EgressPolicy,
  type EgressRule,
  type Sandbox,
} from "@fast-sandbox/api";
import { forgetAccessToken } from "../access-tokens.js";
import { connect, type GlobalOptions } from "../connection.js";
import { printCreated } from "../created-sandbox.js";
import { forEachName } from "../failures.js";
import { UNTIL_DONE, untilCreated } from "../slow-operations.js";
import { age, printObjects, printTable, type OutputFormat } from "../output.js";
import { printConditions } from "./conditions.js";

export interface RunOptions extends GlobalOptions {
  name?: string;
  namespace?: string;
  pool: string;
  image?: string;
  port: string[];
  env: string[];
  workdir?: string;
  expire?: string;
  failurePolicy?: string;
  recoveryTimeout?: string;
  egress: string[];
  /** Print the sandbox's name alone (created-sandbox.ts). */
  quiet?: boolean;
}

function parseFailurePolicy(value: string | undefined): "Manual" | "AutoRecreate" | undefined {
  if (value === undefined || value === "Manual" || value === "AutoRecreate") return value;
  throw new ValidationError("--failure-policy", `${JSON.stringify(value)} is not a failure policy; allowed: Manual, AutoRecreate`);
}

export function parsePorts(values: string[]): number[] {
  const ports = values.map((value) => {
    const port = Number(value);
    if (!/^\d+$/.test(value) || port < 1 || port > 65535) throw new ValidationError("--port", `${JSON.stringify(value)} is not a port; allowed: 1..65535`);
    return port;
  });
  const twice = ports.find((port, index) => ports.indexOf(port) !== index);
  if (twice !== undefined) throw new ValidationError("--port", `${twice} is given twice; give each port once`);
  return ports;
}

/** The longest `--expire`: a sandbox's end is an RFC 3339 time, whose year has four digits; 100 years is far from that. */
export const MAX_EXPIRE = "36500d";
const MAX_EXPIRE_MS = 36_500 * 86_400_000;

/**
 * The shortest `--expire`: the end sent is a time (now + the duration), which a shorter one could
 * have passed by the time the control plane reads it — refused then, or not, by chance.
 */
const MIN_EXPIRE_MS = 1000;

/** `--expire` (run, run --from-checkpoint, resume): a duration from 1s to MAX_EXPIRE, in milliseconds. */
export function parseExpireMs(value: string, flag = "--expire"): number {
  const ms = parseDurationMs(value, flag);
  if (!(ms <= MAX_EXPIRE_MS)) throw new ValidationError(flag, `${JSON.stringify(value)} is too long; allowed: 1s to ${MAX_EXPIRE} (100 years)`);
  if (ms < MIN_EXPIRE_MS) {
    throw new ValidationError(flag, `${JSON.stringify(value)} is too short: the sandbox would end before it could be used; allowed: 1s to ${MAX_EXPIRE}`);
  }
  return ms;
}

/** The longest `--recovery-timeout`, as the API's recoveryTimeoutSeconds allows it. */
const MAX_RECOVERY_TIMEOUT_SECONDS = 86_400;

/** `--recovery-timeout`: whole seconds from 1s to 24h. */
export function parseRecoveryTimeoutSeconds(value: string, flag = "--recovery-timeout"): number {
  const seconds = wholeSeconds(value, flag);
  if (!(seconds <= MAX_RECOVERY_TIMEOUT_SECONDS)) {
    throw new ValidationError(flag, `${JSON.stringify(value)} is too long; allowed: 1s to 24h (${MAX_RECOVERY_TIMEOUT_SECONDS}s)`);
  }
  return seconds;
}

/** `-w`/`--workdir` of a command the control plane starts (run, exec): an absolute path in the sandbox. */
export function checkWorkdir(value: string | undefined): string | undefined {
  if (value !== undefined && !value.startsWith("/")) {
    throw new ValidationError("--workdir", `${JSON.stringify(value)} is not an absolute path; give one starting with /, e.g. /tmp`);
  }
  return value;
}

/** `CIDR[:PORT[,PORT…]][/tcp|/udp]`; the CIDR's own `/prefix` comes first, so IPv6 colons are no trouble. */
const EGRESS_RULE = /^(?<cidr>[^/]+\/[0-9]+)(?::(?<ports>[0-9]+(?:,[0-9]+)*))?(?:\/(?<protocol>tcp|udp))?$/;

/**
 * `--egress` values as an egress policy: `deny-all`, `allow-all`, or allow-list entries
 * `CIDR[:PORT[,PORT…]][/tcp|/udp]` (repeatable), e.g. `10.0.0.0/8:443/tcp`, `2001:db8::/32`. None: undefined (the pool's).
 * The control plane checks the CIDRs, ports and that the pool allows it.
 */
export function parseEgress(values: string[]): EgressPolicy | undefined {
  if (values.length === 0) return undefined;
  const standalone = values.find((value) => value === "deny-all" || value === "allow-all");
  if (standalone) {
    if (values.length > 1) throw new ValidationError("--egress", `${standalone} stands alone; give it once, or list CIDRs instead`);
    return { policy: standalone === "deny-all" ? "denyAll" : "allowAll" };
  }
  const allow = values.map((value): EgressRule => {
    const match = EGRESS_RULE.exec(value)?.groups;
    if (!match?.cidr) {
      throw new ValidationError("--egress", `${JSON.stringify(value)} is not deny-all, allow-all or CIDR[:PORT[,PORT…]][/tcp|/udp] (e.g. 10.0.0.0/8:443/tcp)`);
    }
    parseCidr(match.cidr, "--egress");
    const ports = match.ports?.split(",").map(Number);
    const outOfRange = ports?.find((port) => port < 1 || port > 65535);
    if (outOfRange !== undefined) throw new ValidationError("--egress", `port ${outOfRange} of ${JSON.stringify(value)} is out of range; allowed: 1..65535`);
    return {
      cidr: match.cidr,
      ...(ports ? { ports } : {}),
      ...(match.protocol ? { protocol: match.protocol as "tcp" | "udp" } : {}),
    };
  });
  return { policy: "allowList", allow };
}

/** `--name` of a new sandbox: one the control plane takes (a DNS-1123 label), else bad usage (exit 2) before anything is asked. */
export function checkSandboxName(name: string | undefined): void {
  if (!name) return; // none: generated (an empty one is refused with the other empty flags)
  if (name.length > NAME_MAX_LENGTH || !new RegExp(NAME_PATTERN).test(name)) {
    throw new ValidationError(
      "--name",
      `${JSON.stringify(name)} is not a sandbox name: at most ${NAME_MAX_LENGTH} lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  }
}

export function parseEnvs(values: string[]): { name: string; value: string }[] {
  return values.map((entry) => {
    const index = entry.indexOf("=");
    if (index <= 0) throw new ValidationError("--env", `${JSON.stringify(entry)} is not NAME=VALUE`);
    return { name: entry.slice(0, index), value: entry.slice(index + 1) };
  });
}

export async function run(command: string[], options: RunOptions): Promise<void> {
  // Every flag is read before anything is asked of the control plane (bad usage, exit 2).
  const egress = parseEgress(options.egress);
  const envs = parseEnvs(options.env);
  const exposedPorts = parsePorts(options.port);
  const ttlMs = options.expire !== undefined ? parseExpireMs(options.expire) : undefined;
  const failurePolicy = parseFailurePolicy(options.failurePolicy);
  const recoveryTimeoutSeconds = options.recoveryTimeout !== undefined ? parseRecoveryTimeoutSeconds(options.recoveryTimeout) : undefined;
  const workingDir = checkWorkdir(options.workdir);
  checkSandboxName(options.name);
  const { client, namespace, dataDir } = await connect(options);
  let image = options.image;
  if (!image) {
    // The pool's default image is read from the pool: a user who may create sandboxes but not read pools names the image.
    const pool = await client.pools.get(options.pool, { namespace }).catch((error: unknown) => {
      throw error instanceof PermissionDeniedError
        ? new PermissionDeniedError(`${error.message}; without --image, run reads the pool's default image: pass --image IMAGE`, { cause: error })
        : error;
    });
    image = pool.spec.image;
    if (!image) throw new ValidationError("--image", `pool ${namespace}/${options.pool} has no default image; pass --image`);
  }
  const sandbox = await untilCreated(namespace, options.name, (call) =>
    client.sandboxes.create({
      ...call,
      namespace,
      pool: options.pool,
      image,
      ...(options.name ? { name: options.name } : {}),
      ...(command.length > 0 ? { command } : {}),
      envs,
      exposedPorts,
      ...(workingDir ? { workingDir } : {}),
      ...(ttlMs !== undefined ? { ttlMs } : {}),
      ...(failurePolicy ? { failurePolicy } : {}),
      ...(recoveryTimeoutSeconds !== undefined ? { recoveryTimeoutSeconds } : {}),
      ...(egress ? { egress } : {}),
    }),
  );
  if (sandbox) printCreated(sandbox, { namespace, dataDir, quiet: options.quiet === true });
}

function sandboxRow(s: Sandbox): string[] {
  return [
    s.metadata.name,
    s.status?.phase ?? "Pending",
    s.spec.poolRef,
    s.status?.assignedPod ?? "",
    s.spec.image,
    (s.status?.endpoints ?? []).join(",") || "-",
    age(s.metadata.creationTimestamp),
  ];
}

const SANDBOX_HEADERS = ["NAME", "PHASE", "POOL", "AGENT", "IMAGE", "ENDPOINTS", "AGE"];

export async function list(options: GlobalOptions & { namespace?: string; allNamespaces?: boolean; pool?: string; output: OutputFormat }): Promise<void> {
  const { client, namespace } = await connect(options);
  const sandboxes = await client.sandboxes.list({
    namespace: options.allNamespaces ? "*" : namespace,
    ...(options.pool ? { pool: options.pool } : {}),
  });
  printObjects(options.output, { apiVersion: "v1", kind: "List", items: sandboxes }, () => {
    if (sandboxes.length === 0) {
      const elsewhere = !options.allNamespaces && namespace !== "default" ? namespace : undefined;
      process.stdout.write(
        elsewhere
          ? `No sandboxes in namespace ${elsewhere}. Create one with: npx fsb run -n ${elsewhere} -- sh -c 'echo hello'\n`
          : "No sandboxes. Create one with: npx fsb run -- sh -c 'echo hello'\n",
      );
      return;
    }
    const withNamespace = options.allNamespaces === true;
    printTable(
      withNamespace ? ["NAMESPACE", ...SANDBOX_HEADERS] : SANDBOX_HEADERS,
      sandboxes.map((s) => (withNamespace ? [s.metadata.namespace ?? "", ...sandboxRow(s)] : sandboxRow(s))),
    );
  });
}

/** A duration the API takes in whole seconds (e.g. recoveryTimeoutSeconds): `400ms` or `1.5s` is refused, not rounded. */
function wholeSeconds(value: string, flag: string): number {
  const ms = parseDurationMs(value, flag);
  if (ms % 1000 !== 0) throw new ValidationError(flag, `${JSON.stringify(value)} is not a whole number of seconds; e.g. 30s, 2m`);
  return ms / 1000;
}

export async function get(name: string, options: GlobalOptions & { namespace?: string; output: OutputFormat }): Promise<void> {
  const { client, namespace } = await connect(options);
  const sandbox = await client.sandboxes.get(name, { namespace });
  printObjects(options.output, sandbox, () => {
    printTable(SANDBOX_HEADERS, [sandboxRow(sandbox)]);
    printConditions(sandbox);
  });
}

export async function logs(name: string, options: GlobalOptions & { namespace?: string; follow?: boolean; tail?: string }): Promise<void> {
  // Refused before anything is asked (exit 2).
  const tail = options.tail === undefined ? undefined : checkTailLines(options.tail, "--tail");
  const { client, namespace } = await connect(options);
  const controller = new AbortController();
  const interrupted = () => controller.abort();
  process.once("SIGINT", interrupted);
  try {
    for await (const chunk of client.sandboxes.logs(name, {
      namespace,
      follow: options.follow ?? false,
      ...(tail !== undefined ? { tail } : {}),
      signal: controller.signal,
    })) {
      process.stdout.write(chunk);
    }
  } catch (error) {
    // Ctrl-C ends a follow: not a failure, exit 130 as a shell's interrupted command.
    if (!controller.signal.aborted) throw error;
    process.exitCode = 130;
  } finally {
    process.removeListener("SIGINT", interrupted);
  }
}

/** Runs the command in the sandbox and returns its exit code (the CLI exits with it). */
export async function exec(
  name: string,
  command: string[],
  options: GlobalOptions & { namespace?: string; env: string[]; workdir?: string; user?: string },
): Promise<number> {
  if (command.length === 0) throw new ValidationError("COMMAND", "name the command after '--', e.g. fsb exec NAME -- sh -c 'ls /'");
  if (options.user !== undefined) parseExecUser("--user", options.user);
  const envs = parseEnvs(options.env);
  const workingDir = checkWorkdir(options.workdir);
  const { client, namespace } = await connect(options);
  try {
    const result = await client.sandboxes.exec(name, command, {
      namespace,
      envs,
      ...(workingDir ? { workingDir } : {}),
      ...(options.user ? { user: options.user } : {}),
      onStdout: (chunk) => process.stdout.write(chunk),
      onStderr: (chunk) => process.stderr.write(chunk),
    });
    return result.exitCode;
  } catch (error) {
    const failed = commandNotStarted(error);
    if (!failed) throw error;
    process.stderr.write(`error: ${failed.message}\n`);
    return failed.exitCode;
  }
}

/** The OCI runtime's (runc's) refusal to start an exec'd command: `… OCI runtime exec failed: … exec: "CMD": REASON: unknown`. */
const OCI_EXEC_FAILED = /OCI runtime exec failed: .*?\bexec: ("(?:[^"\\]|\\.)*"): (.+?)(?:: unknown)?$/s;
/** runc's refusal to enter the exec's working directory: `… chdir to cwd ("DIR") set in config.json failed: REASON: unknown`. */
const OCI_CHDIR_FAILED = /OCI runtime exec failed: .*?\bchdir to cwd \(("(?:[^"\\]|\\.)*")\) set in config\.json failed: (.+?)(?:: unknown)?$/s;

/**
 * An exec whose command could not be started, as `docker exec` reports it: exit 127 for a command
 * that is not there (not in $PATH, no such file), 126 for one that cannot be run (permission
 * denied: a directory, a file without x), with the runtime's reason alone; 126 too, naming the
 * directory, for a working directory (`-w`) the runtime could not enter (not there, not a
 * directory, not enterable). Undefined for any other failure. The agent passes the runtime's error
 * through as it is (containerd's Tasks/Start); the helper that runs `exec -u` commands exits
 * 127/126 itself.
 */
export function commandNotStarted(error: unknown): { message: string; exitCode: 126 | 127 } | undefined {
  const text = error instanceof Error ? error.message : undefined;
  if (text === undefined) return undefined;
  const chdir = OCI_CHDIR_FAILED.exec(text);
  if (chdir) {
    const [, directory = "", reason = ""] = chdir;
    return { message: `exec: working directory ${directory}: ${reason}`, exitCode: 126 };
  }
  const match = OCI_EXEC_FAILED.exec(text);
  if (!match) return undefined;
  const [, command = "", reason = ""] = match;
  const message = `exec: ${command}: ${reason}`;
  if (/permission denied/i.test(reason)) return { message, exitCode: 126 };
  if (/executable file not found|no such file or directory/i.test(reason)) return { message, exitCode: 127 };
  return undefined;
}

/** Deletes every sandbox named; one that fails is reported and the others are deleted all the same (exit 1 at the end). */
export async function remove(names: string[], options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace, dataDir } = await connect(options);
  await forEachName(names, async (name) => {
    await client.sandboxes.delete(name, { namespace, ...UNTIL_DONE });
    if (dataDir) forgetAccessToken(dataDir, namespace, name);
    process.stdout.write(`sandbox ${name} deleted\n`);
  });
}

/** Sets a new resetRevision (the current time) and waits until the new instance runs. */
export async function reset(name: string, options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace } = await connect(options);
  const current = await client.sandboxes.get(name, { namespace });
  const revision = new Date().toISOString();
  await client.sandboxes.update(name, { ...current.spec, resetRevision: revision }, { namespace });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const sandbox = await client.sandboxes.get(name, { namespace });
    if (sandbox.status?.acceptedResetRevision === revision && sandbox.status.phase === "Running") {
      process.stdout.write(`sandbox ${name} reset: new instance ${sandbox.status.sandboxID ?? "?"} on agent ${sandbox.status.assignedPod ?? "?"}\n`);
      return;
    }
    if (Date.now() > deadline) {
      const ready = sandbox.status?.conditions?.find((c) => c.type === "Ready");
      throw new UnavailableError(
        `sandbox ${name} was not reset within 60s (phase ${sandbox.status?.phase ?? "Pending"}${ready?.message ? `: ${ready.message}` : ""})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
