/**
 * One agent of the embedded mode: a child process on this host, supervised (supervised-process.ts).
 * It is restarted with back-off when it dies or stops answering its heartbeat; the restarted process
 * has the same name and so adopts the sandboxes its predecessor left running in containerd.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { StringDecoder } from "node:string_decoder";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { systemClock, type Clock } from "../controller/clock.js";
import { AgentHeartbeat } from "../fleet/agent-heartbeat.js";
import type { AgentClient, AgentStatus } from "../agent-client/agent-client.js";
import { createAgentClient } from "../agent-client/rpc-agent-client.js";
import { AGENT_HOST_ENV, childEnv } from "./child-env.js";
import { ProcessLog } from "./process-log.js";
import { SupervisedProcess } from "./supervised-process.js";

export interface LocalAgentSettings {
  name: string;
  namespace: string;
  pool: string;
  /** Directory of this agent: its log, state (sandbox logs, FIFOs). */
  stateDir: string;
  agentToken: string;
  containerdSocket: string;
  containerdNamespace: string;
  /** cgroup of the agent, e.g. `/fast-sandbox/default-default-0`; empty: none. */
  cgroupParent: string;
  heartbeatIntervalMs: number;
  /** First restart delay after the agent is lost; doubles per restart up to 32×. @default 200 */
  restartDelayMs?: number;
  /**
   * How long the agent must stay up after it first answered for the restart delay to start over
   * at `restartDelayMs`: an agent that answers and crashes soon after is restarted ever more slowly.
   * @default 30_000
   */
  stableRunMs?: number;
  /** Extra environment of the agent process (of `fsb up`'s own, it gets only this host's settings: AGENT_HOST_ENV). */
  env?: Record<string, string>;
  /** Registry credentials (Docker's config.json) the agent reads at every pull (FSB_REGISTRY_CONFIG). @default none */
  registryConfigPath?: string;
  /** Counts each heartbeat's result (`fsb_agent_heartbeats_total`). @default not counted */
  metrics?: { heartbeat(agent: string, ok: boolean): void };
  logger: Logger;
  /** Times the heartbeats and the restarts. @default systemClock */
  clock?: Clock;
}

/** Where the embedded mode keeps registry credentials: `fsb login` writes the file, agents read it at every pull. */
export function registryConfigPath(dataDir: string): string {
  return join(dataDir, "registry", "config.json");
}

/** What the events say of the agent process (a LocalAgentProcess, or another `AgentProcess` of the fleet). */
export interface AgentProcessView {
  readonly name: string;
  /** Where its agent API listens (`host:port`), once it does. */
  readonly endpoint: string;
  readonly pid: number | undefined;
}

export interface LocalAgentEvents {
  /** The agent answered (after start or restart): its endpoint and status. */
  onReady(agent: AgentProcessView, status: AgentStatus): void;
  /** Heartbeat with a fresh status. */
  onHeartbeat(agent: AgentProcessView, status: AgentStatus): void;
  /** The agent died or stopped answering; a restart follows unless stopped. */
  onLost(agent: AgentProcessView, reason: string): void;
}

/** The agent entry point, as a path; `.ts` under the development condition (tests), `.js` when built. */
function agentEntryPoint(): string {
  return fileURLToPath(import.meta.resolve("@fast-sandbox/agent/main"));
}

/** How long `stop()` lets the agent finish its creates in flight (it waits up to 10 s) before SIGKILL. */
const STOP_GRACE_MS = 12_000;

/** The longest error line of the agent a warning of the control plane quotes. */
const MAX_ERROR_LINE_CHARS = 300;
/** A line of the agent's stderr longer than this (a huge stack) is not kept whole to find its error. */
const MAX_PENDING_LINE_CHARS = 64 * 1024;

/**
 * What a line of the agent's stderr says went wrong, bounded: `msg: err.message` of a JSON line of
 * level error or fatal (pino's 50, 60), or a line that is not JSON (Node's own report of a crash);
 * undefined for the other lines.
 */
export function agentErrorOf(line: string): string | undefined {
  const text = line.trim();
  if (!text) return undefined;
  let message: string;
  try {
    const entry = JSON.parse(text) as { level?: number; msg?: string; err?: { message?: string } };
    if (typeof entry.level !== "number" || entry.level < 50) return undefined;
    message = [entry.msg, entry.err?.message].filter(Boolean).join(": ");
  } catch {
    // A stack's frames say where, not what: its first line says what.
    if (/^at /.test(text)) return undefined;
    message = text;
  }
  return message.length > MAX_ERROR_LINE_CHARS ? `${message.slice(0, MAX_ERROR_LINE_CHARS - 1)}…` : message;
}

export class LocalAgentProcess {
  readonly settings: LocalAgentSettings;
  private readonly events: LocalAgentEvents;
  private readonly clock: Clock;
  private readonly supervisor: SupervisedProcess;
  private log: ProcessLog | undefined;
  private readonly heartbeat: AgentHeartbeat;
  client: AgentClient | undefined;
  endpoint = "";
  /** The last error the running process (or the one that died last) wrote on its stderr, for the warning when it is lost. */
  private lastError: string | undefined;

  constructor(settings: LocalAgentSettings, events: LocalAgentEvents) {
    this.settings = settings;
    this.events = events;
    this.clock = settings.clock ?? systemClock;
    const restartDelayMs = settings.restartDelayMs ?? 200;
    this.heartbeat = new AgentHeartbeat({
      clock: this.clock,
      intervalMs: settings.heartbeatIntervalMs,
      client: () => this.client,
      onAnswer: (status) => {
        this.settings.metrics?.heartbeat(this.name, true);
        this.events.onHeartbeat(this, status);
      },
      onBusy: (error) => {
        // The agent answered: it is alive, its containerd is slow. Replacing it would not help.
        this.settings.metrics?.heartbeat(this.name, false);
        this.settings.logger.warn({ err: error, agent: this.name }, "agent heartbeat: containerd is slow");
      },
      onMissed: (failures, error) => {
        this.settings.metrics?.heartbeat(this.name, false);
        this.settings.logger.warn({ err: error, agent: this.name, failures }, "agent heartbeat failed");
        // Three missed heartbeats: the agent hangs; replace it.
        if (failures >= 3) this.supervisor.kill("SIGKILL");
      },
    });
    this.supervisor = new SupervisedProcess({
      spawn: () => this.spawnAgent(),
      onExit: (exit) => {
        this.heartbeat.stop();
        if (exit.restartInMs !== undefined) this.lost(`agent process exited (${exit.reason})`, exit.restartInMs);
        else if (this.restartsHeld && !this.stopped) {
          this.settings.logger.warn(
            { agent: this.name, reason: exit.reason, ...this.logFacts() },
            "agent exited while the control plane stops; not restarting it",
          );
        }
      },
      restartDelayMs,
      // Doubling up to 32× the first delay, and no further than 5 s unless the first delay is longer.
      maxRestartDelayMs: Math.min(Math.max(5000, restartDelayMs), restartDelayMs * 32),
      // The back-off starts over once the agent has stayed up this long after it answered (connect),
      // not when it answers: one that answers and crashes a second later must not restart every 200 ms.
      stableRunMs: settings.stableRunMs ?? 30_000,
      stableRunFrom: "healthy",
      stopGraceMs: STOP_GRACE_MS,
      clock: this.clock,
    });
  }

  get name(): string {
    return this.settings.name;
  }

  /** The running agent process's id; undefined between a death and its restart. */
  get pid(): number | undefined {
    return this.supervisor.pid;
  }

  private restartsHeld = false;
  private stopped = false;

  start(): void {
    this.restartsHeld = false;
    this.stopped = false;
    this.supervisor.start();
  }

  /** The agent is no longer restarted when it exits (the control plane is stopping); `stop()` still ends it. */
  holdRestarts(): void {
    this.restartsHeld = true;
    this.supervisor.holdRestarts();
  }

  /** The agent's log file, and the last error it wrote there (the why of a start that keeps failing, e.g. no containerd). */
  private logFacts(): { log: string; lastError?: string } {
    return { log: join(this.settings.stateDir, "agent.log"), ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  /** Remembers the last error line of `stderr` (lines split across chunks joined, an overlong one dropped). */
  private watchErrors(stderr: NodeJS.ReadableStream): void {
    let pending = "";
    // A character split across two chunks stays whole.
    const decoder = new StringDecoder("utf8");
    stderr.on("data", (chunk: Buffer) => {
      const lines = (pending + decoder.write(chunk)).split("\n");
      pending = lines.pop() ?? "";
      if (pending.length > MAX_PENDING_LINE_CHARS) pending = "";
      for (const line of lines) this.lastError = agentErrorOf(line) ?? this.lastError;
    });
    stderr.on("end", () => {
      this.lastError = agentErrorOf(pending) ?? this.lastError;
    });
  }

  private spawnAgent(): ChildProcess {
    const s = this.settings;
    mkdirSync(s.stateDir, { recursive: true });
    const log = (this.log ??= new ProcessLog({ path: join(s.stateDir, "agent.log"), logger: s.logger, ...(s.clock ? { clock: s.clock } : {}) }));
    const entry = agentEntryPoint();
    const execArgv = entry.endsWith(".ts") ? ["--conditions=development", "--import", "tsx"] : [];
    const child = spawn(process.execPath, [...execArgv, entry], {
      // A session of its own: Ctrl-C and a terminal's hangup go to `fsb up`, which stops the agent;
      // they must not reach the agent directly (it would stop, and the supervisor restart it). The
      // agent still ends with its parent: it exits when its stdin, this pipe, closes.
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: childEnv(AGENT_HOST_ENV, {
        FSB_AGENT_NAME: s.name,
        FSB_AGENT_NAMESPACE: s.namespace,
        FSB_AGENT_POOL: s.pool,
        FSB_AGENT_LISTEN: "127.0.0.1:0",
        FSB_AGENT_TOKEN: s.agentToken,
        FSB_AGENT_STATE_DIR: s.stateDir,
        FSB_CONTAINERD_SOCKET: s.containerdSocket,
        FSB_CONTAINERD_NAMESPACE: s.containerdNamespace,
        FSB_CGROUP_PARENT: s.cgroupParent,
        FSB_AGENT_EXIT_ON_STDIN_CLOSE: "1",
        ...(s.registryConfigPath ? { FSB_REGISTRY_CONFIG: s.registryConfigPath } : {}),
        ...s.env,
      }),
    });
    this.lastError = undefined;
    if (child.stderr) {
      log.follow(child.stderr);
      this.watchErrors(child.stderr);
    }
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      try {
        const event = JSON.parse(line) as { event?: string; endpoint?: string };
        if (event.event === "listening" && event.endpoint) void this.connect(event.endpoint);
      } catch {
        log.write(`${line}\n`);
      }
    });
    return child;
  }

  private async connect(endpoint: string): Promise<void> {
    this.endpoint = endpoint;
    this.client = createAgentClient(endpoint, this.settings.agentToken);
    try {
      const status = await this.client.status();
      this.supervisor.markHealthy();
      this.events.onReady(this, status);
      this.heartbeat.start();
    } catch (error) {
      this.settings.logger.warn({ err: error, agent: this.name }, "agent does not answer after start");
      this.supervisor.kill("SIGKILL");
    }
  }

  private lost(reason: string, restartInMs: number): void {
    this.client?.close();
    this.client = undefined;
    this.events.onLost(this, reason);
    // Where to look, and what it said last: an agent that cannot start (no containerd) says why only there.
    this.settings.logger.warn({ agent: this.name, reason, restartInMs, ...this.logFacts() }, "agent lost; restarting it");
  }

  /** Kills the process; the supervisor restarts it (tests use it to simulate a crash). */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.supervisor.kill(signal);
  }

  /** Stops the agent (its sandboxes keep running in containerd): SIGTERM, SIGKILL after 12 s. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.heartbeat.stop();
    this.client?.close();
    await this.supervisor.stop();
    await this.log?.close();
    this.log = undefined;
  }
}
