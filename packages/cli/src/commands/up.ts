import { spawn } from "node:child_process";
import { stat } from "node:fs/promises";
import { fstatSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { destination, pino, type Logger } from "pino";
import { DEFAULT_LOG_MAX_BYTES, rotateLog } from "@fast-sandbox/agent/log-rotation";
import {
  CONTROL_PLANE_NODE_FLAGS,
  DEFAULT_BASE_IMAGE,
  controlPlaneEnv,
  hasControlPlaneNodeFlags,
  startEmbeddedControlPlane,
  defaultPool,
  type EmbeddedControlPlane,
} from "@fast-sandbox/controlplane";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { parseDuration, parseLoopbackListen } from "@fast-sandbox/janitor";
import {
  acquireLock,
  clearRunFiles,
  ensureToken,
  files,
  isRunning,
  makePrivateDataDir,
  readIfExists,
  embeddedSettingsFor,
  readLock,
  resolveDataDir,
  writeSettings,
  type EmbeddedSettings,
  type ProcessIdentity,
} from "../data-dir.js";
import { claimCgroupRoot, claimContainerdNamespace, releaseContainerdNamespaceClaim } from "../namespace-claim.js";

export interface UpOptions {
  dataDir?: string;
  detach?: boolean;
  host: string;
  port: string;
  /**
   * The default pool's image (`--image`, FSB_BASE_IMAGE): set, it is also given to a default pool
   * that exists. @default DEFAULT_BASE_IMAGE for a new default pool; one that exists keeps its own
   */
  image?: string;
  /** @default the data directory's last `fsb up`'s (its settings), else DEFAULT_CONTAINERD_NAMESPACE */
  containerdNamespace?: string;
  /** @default the data directory's last `fsb up`'s, else DEFAULT_CONTAINERD_SOCKET */
  containerdSocket?: string;
  /**
   * The cgroup the agents and sandboxes live under; "" for none. @default the data directory's last
   * `fsb up`'s in the same namespace, else the containerd namespace's name (cgroupRootFor)
   */
  cgroupRoot?: string;
  proxyHost: string;
  proxyPort: string;
  /** The proxy's public base URL. @default http://localhost:<proxy port> */
  proxyUrl?: string;
  /** Port of the E2B-compatible API (on `host`). */
  e2bPort: string;
  /** Start the supervised janitor (`--no-janitor` turns it off). */
  janitor: boolean;
  janitorInterval: string;
  janitorProtection: string;
  janitorMetrics?: string;
}

/**
 * Runs the embedded Fast Sandbox in the foreground until SIGINT, SIGTERM or SIGHUP, also one that
 * comes while it starts (runUntilStopSignalled). It holds the
 * data directory's lock from before it touches the directory until it has stopped, so a second
 * `fsb up` of the directory fails at once; it writes `controlplane.pid` and `url` once it serves.
 */
export async function up(options: UpOptions): Promise<void> {
  const dataDir = resolveDataDir(options.dataDir);
  // Checked before anything starts, also for --detach: a typo must not surface in a background log.
  if (options.janitorMetrics) parseLoopbackListen(options.janitorMetrics, "--janitor-metrics");
  const janitor = options.janitor
    ? {
        intervalMs: parseDuration(options.janitorInterval, "--janitor-interval"),
        protectionMs: parseDuration(options.janitorProtection, "--janitor-protection", { allowZero: true }),
        ...(options.janitorMetrics ? { metricsListen: options.janitorMetrics } : {}),
      }
    : undefined;
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValidationError("--port", `${options.port} is not a port number (0..65535)`);
  const proxyPort = Number(options.proxyPort);
  if (!Number.isInteger(proxyPort) || proxyPort < 0 || proxyPort > 65535) {
    throw new ValidationError("--proxy-port", `${options.proxyPort} is not a port number (0..65535)`);
  }
  const e2bPort = Number(options.e2bPort);
  if (!Number.isInteger(e2bPort) || e2bPort < 0 || e2bPort > 65535) {
    throw new ValidationError("--e2b-port", `${options.e2bPort} is not a port number (0..65535)`);
  }
  // Settled before --detach, so that its child runs where chosen here, which the settings then record.
  const resolved = { ...options, ...embeddedSettingsFor(options, dataDir) };
  if (options.detach) return detach(resolved, dataDir);
  const taken = acquireLock(dataDir);
  if ("heldBy" in taken) throw alreadyRunning(dataDir, taken.heldBy);
  try {
    // Before anything of it starts: another data directory's instance may run in the namespace, or under the cgroup root.
    const namespaceTaken = claimContainerdNamespace(resolved.containerdNamespace, dataDir);
    try {
      claimCgroupRoot(resolved.cgroupRoot, dataDir);
    } catch (error) {
      // Refused before it ran there: the namespace is not this data directory's.
      if (namespaceTaken) releaseContainerdNamespaceClaim(resolved.containerdNamespace, dataDir);
      throw error;
    }
    // What an instance that did not stop cleanly (SIGKILL, a crash, a reboot) left: this one holds the lock.
    clearRunFiles(dataDir);
    await serve(resolved, dataDir, { port, proxyPort, e2bPort, janitor });
  } finally {
    clearRunFiles(dataDir);
    taken.lock.release();
  }
}

function alreadyRunning(dataDir: string, holder: ProcessIdentity): FsbError {
  const url = readIfExists(files.url(dataDir));
  return new FsbError(
    "failed_precondition",
    `Fast Sandbox already runs for ${dataDir} (pid ${holder.pid}${url ? ` at ${url}` : ", starting"}); stop it with 'fsb down' first`,
  );
}

/** The options of `up` with where it runs settled. */
type ResolvedUpOptions = UpOptions & EmbeddedSettings;

/** The options `up` checked and parsed before it took the lock. */
interface ParsedUpOptions {
  port: number;
  proxyPort: number;
  e2bPort: number;
  janitor: { intervalMs: number; protectionMs: number; metricsListen?: string } | undefined;
}

async function serve(options: ResolvedUpOptions, dataDir: string, parsed: ParsedUpOptions): Promise<void> {
  const token = ensureToken(dataDir);
  writeSettings(dataDir, { containerdNamespace: options.containerdNamespace, containerdSocket: options.containerdSocket, cgroupRoot: options.cgroupRoot });
  // A detached instance writes its stdout and stderr to controlplane.log, which `--detach` opened for appending.
  const ownLog = process.env[DETACHED_LOG_ENV] ? rotateOwnLog(process.env[DETACHED_LOG_ENV]) : undefined;
  try {
    await runUntilStopSignalled({
      start: () => startControlPlane(options, dataDir, token, parsed),
      started: (controlPlane) => announce(controlPlane, options, dataDir),
      stopping: (_signal, { starting }) => process.stdout.write(starting ? "stopping Fast Sandbox once it has started…\n" : "stopping Fast Sandbox…\n"),
    });
  } finally {
    clearInterval(ownLog);
  }
}

/** Whether this process runs with the control plane's Node.js flags (else a foreground `fsb up` runs again with them). */
export function runsAsControlPlane(): boolean {
  return hasControlPlaneNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
}

/** Names the log a detached `fsb up` writes to (set by `--detach` for its child). */
const DETACHED_LOG_ENV = "FSB_UP_LOG_FILE";

/**
 * Rotates the log at `path` past `maxBytes` (default 10 MiB), checked every `intervalMs` (10 s), as
 * the agents rotate sandbox logs: copied to `<path>.1` and truncated in place (log-rotation.ts), which
 * works because its writers (this process's stdout and stderr) append; a tick during a rotation
 * skips. Returns the timer (unref'd).
 */
export function rotateOwnLog(path: string, options: { maxBytes?: number; intervalMs?: number } = {}): NodeJS.Timeout {
  const maxBytes = options.maxBytes ?? DEFAULT_LOG_MAX_BYTES;
  // One rotation at a time: a tick during a slow one would copy the log it truncates (nothing, or
  // the writer's next lines) over the part it kept.
  let rotating = false;
  const timer = setInterval(() => {
    if (rotating) return;
    rotating = true;
    void stat(path)
      .then(({ size }) => (size > maxBytes ? rotateLog(path, { maxBytes }) : 0))
      .catch(() => undefined)
      .finally(() => {
        rotating = false;
      });
  }, options.intervalMs ?? 10_000);
  timer.unref();
  return timer;
}

function startControlPlane(options: ResolvedUpOptions, dataDir: string, token: string, parsed: ParsedUpOptions): Promise<EmbeddedControlPlane> {
  const { port, proxyPort, e2bPort, janitor } = parsed;
  return startEmbeddedControlPlane({
    dataDir,
    token,
    host: options.host,
    port,
    containerdNamespace: options.containerdNamespace,
    containerdSocket: options.containerdSocket,
    cgroupRoot: options.cgroupRoot,
    defaultPool: defaultPool(options.image ?? DEFAULT_BASE_IMAGE),
    defaultPoolImageGiven: options.image !== undefined,
    proxy: { host: options.proxyHost, port: proxyPort, ...(options.proxyUrl ? { baseUrl: options.proxyUrl } : {}) },
    e2b: { host: options.host, port: e2bPort },
    ...(janitor ? { janitor } : {}),
    logger: controlPlaneLogger(),
  });
}

/** A first command to try, on this instance: its data directory named unless it is the one fsb finds by itself. */
function tryCommand(dataDir: string): string {
  return `Try: npx fsb${dataDir === resolveDataDir() ? "" : ` --data-dir ${dataDir}`} run -- sh -c 'echo hello'`;
}

/** Writes the run files of a control plane that serves and says where it serves; throws when a file cannot be written. */
function announce(controlPlane: EmbeddedControlPlane, options: ResolvedUpOptions, dataDir: string): void {
  // The pid first: `--detach` waits for a url beside its child's pid.
  writeFileSync(files.pid(dataDir), `${process.pid}\n`);
  writeFileSync(files.url(dataDir), `${controlPlane.url}\n`);
  const agents = controlPlane.registry.listAgents();
  process.stdout.write(
    [
      `Fast Sandbox is listening on ${controlPlane.url}`,
      `  data directory: ${dataDir} (API token in ${files.token(dataDir)}, mode 0600)`,
      `  sandbox proxy: ${controlPlane.proxyUrl} (each sandbox's endpoints are in 'fsb ls'; send its access token as X-Access-Token)`,
      `  E2B-compatible API: ${controlPlane.e2bUrl} (for E2B's SDKs: eval "$(npx fsb e2b env)")`,
      `  containerd namespace: ${options.containerdNamespace}; cgroup root: ${options.cgroupRoot || "none"}; default image: ${controlPlane.defaultImage ?? options.image ?? DEFAULT_BASE_IMAGE}`,
      `  agents: ${agents.map((a) => `${a.name} (${a.endpoint}, pid ${a.pid ?? "?"})`).join(", ") || "starting"}`,
      `  janitor: ${controlPlane.janitor ? `pid ${controlPlane.janitor.pid ?? "?"}, log ${join(dataDir, "janitor.log")}` : "off (--no-janitor)"}`,
      `${tryCommand(dataDir)}   (Ctrl-C stops; sandboxes keep running and are adopted at the next 'fsb up')`,
      "",
    ].join("\n"),
  );
}

export interface RunUntilStopSignalledOptions<T extends { close(): Promise<void> }> {
  /** Starts the service; it cannot be interrupted. */
  start(): Promise<T>;
  /** The service started and no stop signal came meanwhile; a throw closes it. */
  started(service: T): void;
  /** A stop signal came; `starting`: during the start, so the service closes once it has started. @default nothing */
  stopping?(signal: NodeJS.Signals, state: { starting: boolean }): void;
}

/**
 * Starts a service and runs it until SIGINT, SIGTERM or SIGHUP (whenStopSignalled), then closes it.
 * The signals are listened for from before the start: the embedded control plane's start takes 30 s
 * and more (it waits for its agents), and a Ctrl-C or `fsb down` meanwhile must not end the process
 * with what it started still running and its lock and run files left behind. Such a signal closes
 * the service as soon as it has started, and `started` is not called. Resolves once the service is
 * closed; rejects with what `start` or `started` threw (a started service closed first).
 */
export async function runUntilStopSignalled<T extends { close(): Promise<void> }>(options: RunUntilStopSignalledOptions<T>): Promise<void> {
  const stopListening = new AbortController();
  let starting = true;
  let signalled = false;
  let startup: Promise<T> | undefined;
  const stopped = whenStopSignalled(async (signal) => {
    signalled = true;
    options.stopping?.(signal, { starting });
    // A start that fails is reported by the caller of start(), below.
    const service = await startup?.catch(() => undefined);
    await service?.close();
  }, stopListening.signal);
  let service: T;
  try {
    startup = options.start();
    service = await startup;
  } catch (error) {
    stopListening.abort();
    await stopped;
    throw error;
  }
  starting = false;
  if (signalled) return stopped;
  try {
    options.started(service);
  } catch (error) {
    stopListening.abort();
    await stopped;
    await service.close();
    throw error;
  }
  await stopped;
}

/**
 * Waits for the first SIGINT (Ctrl-C), SIGTERM (`fsb down`) or SIGHUP (the terminal closed), then
 * runs `stop`. While it runs, SIGTERM and SIGHUP are ignored (a hangup comes with more of them, and
 * `fsb down` ends a stop that takes too long with SIGKILL), a second SIGINT ends the process at once,
 * and after a hangup, writes to the terminal that is gone (EIO) are dropped instead of thrown.
 * `cancel` aborted before a signal came: it stops listening and resolves without running `stop`.
 */
export async function whenStopSignalled(stop: (signal: NodeJS.Signals) => Promise<void>, cancel?: AbortSignal): Promise<void> {
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  const signal = await new Promise<NodeJS.Signals | undefined>((resolve) => {
    const stopListening = (): void => {
      for (const each of signals) process.removeListener(each, received);
      cancel?.removeEventListener("abort", cancelled);
    };
    const received = (signal: NodeJS.Signals): void => {
      stopListening();
      resolve(signal);
    };
    const cancelled = (): void => {
      stopListening();
      resolve(undefined);
    };
    if (cancel?.aborted) return resolve(undefined);
    for (const each of signals) process.on(each, received);
    cancel?.addEventListener("abort", cancelled);
  });
  if (signal === undefined) return;
  process.on("SIGTERM", ignore).on("SIGHUP", ignore);
  if (signal === "SIGHUP") for (const stream of [process.stdout, process.stderr]) stream.on("error", ignore);
  try {
    await stop(signal);
  } finally {
    process.removeListener("SIGTERM", ignore).removeListener("SIGHUP", ignore);
  }
}

const ignore = (): void => undefined;

/**
 * The control plane's log: JSON lines written synchronously to stderr, as `stderrLogger` writes them,
 * except that a write that fails (EIO: the terminal hung up) drops the line instead of throwing out
 * of the stop that follows. pino itself drops every line after EPIPE.
 */
export function controlPlaneLogger(fd = 2): Logger {
  const stream = destination({ dest: fd, sync: true });
  stream.on("error", ignore);
  return pino({ name: "fsb-controlplane" }, stream);
}

/**
 * Starts `fsb up` in the background: the child takes the lock and clears what a stopped instance
 * left; this process waits until the url file appears beside the child's pid.
 */
async function detach(options: ResolvedUpOptions, dataDir: string): Promise<void> {
  const holder = readLock(dataDir)?.holder;
  if (holder && isRunning(holder)) throw alreadyRunning(dataDir, holder);
  // Before the log is opened in it, and so that a directory the child would refuse is refused here, not in that log.
  makePrivateDataDir(dataDir);
  const log = openSync(files.log(dataDir), "a");
  const logStart = fstatSync(log).size;
  const args = [
    // The child is the control plane: its flags and environment (CONTROL_PLANE_NODE_FLAGS, CONTROL_PLANE_ENV).
    ...CONTROL_PLANE_NODE_FLAGS,
    fileURLToPath(new URL("../../bin/fsb.js", import.meta.url)),
    "up",
    "--data-dir",
    dataDir,
    "--host",
    options.host,
    "--port",
    options.port,
    ...(options.image !== undefined ? ["--image", options.image] : []),
    "--containerd-namespace",
    options.containerdNamespace,
    "--containerd-socket",
    options.containerdSocket,
    "--cgroup-root",
    options.cgroupRoot,
    "--proxy-host",
    options.proxyHost,
    "--proxy-port",
    options.proxyPort,
    ...(options.proxyUrl ? ["--proxy-url", options.proxyUrl] : []),
    "--e2b-port",
    options.e2bPort,
    ...(options.janitor ? ["--janitor-interval", options.janitorInterval, "--janitor-protection", options.janitorProtection] : ["--no-janitor"]),
    ...(options.janitor && options.janitorMetrics ? ["--janitor-metrics", options.janitorMetrics] : []),
  ];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...controlPlaneEnv(process.env), [DETACHED_LOG_ENV]: files.log(dataDir) },
  });
  child.unref();
  for (let waited = 0; waited < 60_000; waited += 100) {
    const url = readIfExists(files.url(dataDir));
    if (url && child.pid !== undefined && readIfExists(files.pid(dataDir)) === String(child.pid)) {
      process.stdout.write(`Fast Sandbox is listening on ${url} (pid ${child.pid}; log ${files.log(dataDir)})\n${tryCommand(dataDir)}\n`);
      return;
    }
    if (child.exitCode !== null || child.signalCode !== null) break;
    await sleep(100);
  }
  const other = readLock(dataDir)?.holder;
  if (other && other.pid !== child.pid && isRunning(other)) throw alreadyRunning(dataDir, other);
  const exited = child.exitCode !== null ? ` (exit code ${child.exitCode})` : child.signalCode !== null ? ` (${child.signalCode})` : " within 60 s";
  const reason = startFailure(readLogSince(files.log(dataDir), logStart));
  throw new FsbError("unavailable", `Fast Sandbox did not start${exited}${reason ? `: ${reason}` : ""}; see ${files.log(dataDir)}`);
}

/** What the log holds from byte `start` on (what this start wrote; empty if it was rotated away meanwhile). */
function readLogSince(path: string, start: number): string {
  try {
    const text = readFileSync(path);
    return text.length >= start ? text.subarray(start).toString("utf8") : "";
  } catch {
    return "";
  }
}

/**
 * Why a detached `fsb up` stopped, from what it wrote to its log: its last `error: …` line (the CLI's
 * own refusals: a port in use, a data directory another instance holds), else the message of its
 * last error or fatal log record. Undefined when it wrote neither.
 */
export function startFailure(written: string): string | undefined {
  const lines = written
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  const cliError = lines.findLast((line) => line.startsWith("error: "));
  if (cliError) return cliError.slice("error: ".length);
  for (const line of lines.toReversed()) {
    if (!line.startsWith("{")) continue;
    try {
      const record = JSON.parse(line) as { level?: unknown; msg?: unknown; err?: { message?: unknown } };
      if (typeof record.level !== "number" || record.level < 50) continue;
      const detail = typeof record.err?.message === "string" ? record.err.message : undefined;
      const msg = typeof record.msg === "string" ? record.msg : undefined;
      return [msg, detail].filter(Boolean).join(": ") || undefined;
    } catch {
      continue;
    }
  }
  return undefined;
}
