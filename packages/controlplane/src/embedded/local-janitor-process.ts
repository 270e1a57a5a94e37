/**
 * The embedded mode's janitor: the janitor package's process (`@fast-sandbox/janitor/main`, the same
 * program the Kubernetes mode runs per node) as a supervised child of the control plane. It asks
 * this control plane's API for the inventory; it is restarted with back-off whenever it exits.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";

export interface LocalJanitorOptions {
  /** Time between passes. @default 10_000 */
  intervalMs?: number;
  /** Orphans younger than this (and agents missing for less) are left alone. @default 120_000 */
  protectionMs?: number;
  /** Serve Prometheus metrics at `host:port` (loopback only; port 0 picks one). @default no endpoint */
  metricsListen?: string;
}

export interface LocalJanitorSettings extends LocalJanitorOptions {
  /** The control plane's fast-path API and its token: the janitor's inventory. */
  url: string;
  token: string;
  containerdSocket: string;
  containerdNamespace: string;
  /** `<dataDir>/agents`: the agents' state directories. */
  agentsDir: string;
  cgroupRoot: string;
  /** The janitor's own log (its stderr: one JSON line per object it removes). */
  logPath: string;
  logger: Logger;
}

/** The janitor entry point, as a path; `.ts` under the development condition (tests), `.js` when built. */
function janitorEntryPoint(): string {
  return fileURLToPath(import.meta.resolve("@fast-sandbox/janitor/main"));
}

/** A run shorter than this counts as a crash for the back-off. */
const STABLE_RUN_MS = 30_000;

export class LocalJanitorProcess {
  private readonly settings: LocalJanitorSettings;
  private child: ChildProcess | undefined;
  private logStream: WriteStream | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private restarts = 0;
  private stopping = false;
  /** pid of the running janitor process. */
  pid: number | undefined;
  /** Where the running janitor serves `/metrics`, when asked to. */
  metricsUrl: string | undefined;

  constructor(settings: LocalJanitorSettings) {
    this.settings = settings;
  }

  start(): void {
    const s = this.settings;
    this.logStream ??= createWriteStream(s.logPath, { flags: "a" });
    const entry = janitorEntryPoint();
    const execArgv = entry.endsWith(".ts") ? ["--conditions=development", "--import", "tsx"] : [];
    const startedAt = Date.now();
    const child = spawn(process.execPath, [...execArgv, entry], {
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        FSB_URL: s.url,
        FSB_TOKEN: s.token,
        FSB_CONTAINERD_SOCKET: s.containerdSocket,
        FSB_CONTAINERD_NAMESPACE: s.containerdNamespace,
        FSB_JANITOR_AGENTS_DIR: s.agentsDir,
        FSB_CGROUP_ROOT: s.cgroupRoot,
        FSB_JANITOR_INTERVAL: `${s.intervalMs ?? 10_000}ms`,
        FSB_JANITOR_PROTECTION: `${s.protectionMs ?? 120_000}ms`,
        FSB_JANITOR_METRICS: s.metricsListen ?? "",
        FSB_JANITOR_EXIT_ON_STDIN_CLOSE: "1",
      },
    });
    this.child = child;
    this.pid = child.pid;
    child.stderr?.pipe(this.logStream, { end: false });
    createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        const event = JSON.parse(line) as { event?: string; metrics?: string };
        if (event.event === "started") this.metricsUrl = event.metrics;
      } catch {
        this.logStream?.write(`${line}\n`);
      }
    });
    child.once("exit", (code, signal) => {
      this.child = undefined;
      this.pid = undefined;
      this.metricsUrl = undefined;
      if (this.stopping) return;
      if (Date.now() - startedAt > STABLE_RUN_MS) this.restarts = 0;
      const delayMs = Math.min(30_000, 500 * 2 ** Math.min(this.restarts, 6));
      this.restarts += 1;
      s.logger.warn({ reason: signal ?? `code ${String(code)}`, restartInMs: delayMs, log: s.logPath }, "janitor exited; restarting it");
      this.restartTimer = setTimeout(() => {
        if (!this.stopping) this.start();
      }, delayMs);
    });
  }

  /** Kills the process; the supervisor restarts it (tests use it to prove the supervision). */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.child?.kill(signal);
  }

  /** Stops the janitor for good (after the pass in progress, or SIGKILL after 5 s). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (child) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.stdin?.end();
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await new Promise<void>((resolve) => (this.logStream ? this.logStream.end(() => resolve()) : resolve()));
    this.logStream = undefined;
  }
}
