/**
 * The embedded mode's janitor: the janitor package's process (`@fast-sandbox/janitor/main`, the same
 * program the Kubernetes mode runs per node) as a supervised child of the control plane. It asks
 * this control plane's API for the inventory; it is restarted with back-off whenever it exits.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { Clock } from "../controller/clock.js";
import { JANITOR_HOST_ENV, childEnv } from "./child-env.js";
import { ProcessLog } from "./process-log.js";
import { SupervisedProcess } from "./supervised-process.js";

export interface LocalJanitorOptions {
  /** Time between passes. @default 10_000 */
  intervalMs?: number;
  /** Orphans younger than this (and agents missing for less) are left alone. @default 120_000 */
  protectionMs?: number;
  /** Serve Prometheus metrics at `host:port` (loopback only; port 0 picks one). @default no endpoint */
  metricsListen?: string;
  /** How long a deleted pool's checkpoint directory must be unnamed and unchanged before it goes. @default 3_600_000 */
  checkpointGraceMs?: number;
}

export interface LocalJanitorSettings extends LocalJanitorOptions {
  /** The control plane's fast-path API and its token: the janitor's inventory. */
  url: string;
  token: string;
  containerdSocket: string;
  containerdNamespace: string;
  /** `<dataDir>/agents`: the agents' state directories. */
  agentsDir: string;
  /** `<dataDir>/checkpoints`: the agents' checkpoint directory, where deleted pools' directories are removed. */
  checkpointDir: string;
  cgroupRoot: string;
  /** The janitor's own log (its stderr: one JSON line per object it removes). */
  logPath: string;
  logger: Logger;
  /** Times the restarts. @default systemClock */
  clock?: Clock;
}

/** The janitor entry point, as a path; `.ts` under the development condition (tests), `.js` when built. */
function janitorEntryPoint(): string {
  return fileURLToPath(import.meta.resolve("@fast-sandbox/janitor/main"));
}

export class LocalJanitorProcess {
  private readonly settings: LocalJanitorSettings;
  private readonly supervisor: SupervisedProcess;
  private log: ProcessLog | undefined;
  /** Where the running janitor serves `/metrics`, when asked to. */
  metricsUrl: string | undefined;

  constructor(settings: LocalJanitorSettings) {
    this.settings = settings;
    this.supervisor = new SupervisedProcess({
      spawn: () => this.spawnJanitor(),
      onExit: (exit) => {
        this.metricsUrl = undefined;
        if (exit.restartInMs === undefined) return;
        settings.logger.warn({ reason: exit.reason, restartInMs: exit.restartInMs, log: settings.logPath }, "janitor exited; restarting it");
      },
      // 0.5 s, doubling up to 30 s; a run of 30 s or more counts as stable and starts over.
      restartDelayMs: 500,
      maxRestartDelayMs: 30_000,
      stableRunMs: 30_000,
      // The janitor finishes the pass in progress first.
      stopGraceMs: 5000,
      clock: settings.clock,
    });
  }

  /** pid of the running janitor process; undefined between a death and its restart. */
  get pid(): number | undefined {
    return this.supervisor.pid;
  }

  start(): void {
    this.supervisor.start();
  }

  private spawnJanitor(): ChildProcess {
    const s = this.settings;
    const log = (this.log ??= new ProcessLog({ path: s.logPath, logger: s.logger, ...(s.clock ? { clock: s.clock } : {}) }));
    const entry = janitorEntryPoint();
    const execArgv = entry.endsWith(".ts") ? ["--conditions=development", "--import", "tsx"] : [];
    const child = spawn(process.execPath, [...execArgv, entry], {
      // A session of its own: Ctrl-C and a terminal's hangup go to `fsb up`, which stops the janitor;
      // they must not reach it directly (it would stop, and the supervisor restart it). It still ends
      // with its parent: it exits when its stdin, this pipe, closes.
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      // Of `fsb up`'s own environment only this host's settings: the janitor's inventory is this control plane, whatever the shell says.
      env: childEnv(JANITOR_HOST_ENV, {
        FSB_URL: s.url,
        FSB_TOKEN: s.token,
        FSB_CONTAINERD_SOCKET: s.containerdSocket,
        FSB_CONTAINERD_NAMESPACE: s.containerdNamespace,
        FSB_JANITOR_AGENTS_DIR: s.agentsDir,
        FSB_JANITOR_CHECKPOINT_DIR: s.checkpointDir,
        FSB_CGROUP_ROOT: s.cgroupRoot,
        FSB_JANITOR_INTERVAL: `${s.intervalMs ?? 10_000}ms`,
        FSB_JANITOR_PROTECTION: `${s.protectionMs ?? 120_000}ms`,
        FSB_JANITOR_CHECKPOINT_GRACE: `${s.checkpointGraceMs ?? 3_600_000}ms`,
        FSB_JANITOR_METRICS: s.metricsListen ?? "",
        FSB_JANITOR_EXIT_ON_STDIN_CLOSE: "1",
      }),
    });
    if (child.stderr) log.follow(child.stderr);
    createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        const event = JSON.parse(line) as { event?: string; metrics?: string };
        if (event.event === "started") this.metricsUrl = event.metrics;
      } catch {
        log.write(`${line}\n`);
      }
    });
    return child;
  }

  /** Kills the process; the supervisor restarts it (tests use it to prove the supervision). */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.supervisor.kill(signal);
  }

  /** Stops the janitor for good (after the pass in progress, or SIGKILL after 5 s). */
  async stop(): Promise<void> {
    await this.supervisor.stop();
    await this.log?.close();
    this.log = undefined;
  }
}
