/**
 * The lock of an agent's state directory (`<stateDir>/agent.lock`): one agent process of a name at
 * a time. Its start-up removes what it finds of its name (prepared instances, exec FIFOs, network
 * records) and a stopping agent removes its own, so two at once undo each other's work. That
 * happens when `fsb up` dies (SIGKILL): its agents drain for up to 12 s after their stdin closes,
 * while the next `fsb up` starts agents of the same names at once.
 *
 * The file names the holder by pid and start time (field 22 of `/proc/<pid>/stat`), as the CLI's
 * data-directory lock does: a pid is reused once its process is gone, the pair is not. A starting
 * agent waits for a running predecessor to exit, up to a bound longer than its drain, then ends it
 * with SIGKILL; a lock whose process is gone is taken over at once.
 */
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { FsbError } from "@fast-sandbox/api/core";
import type { Logger } from "pino";
import { formatProcessIdentity, isRunning, parseProcessIdentity, processStartTime, type ProcessIdentity } from "./process-identity.js";

export type { ProcessIdentity } from "./process-identity.js";

export interface AgentInstanceLockOptions {
  /** How long a running predecessor may take to exit before it gets SIGKILL; longer than its drain (10 s, 12 s at most). @default 20_000 */
  predecessorTimeoutMs?: number;
  /** How long a predecessor may take to be gone after SIGKILL before taking the lock fails. @default 5000 */
  killTimeoutMs?: number;
  /** Pause between two looks at the predecessor. @default 100 */
  pollIntervalMs?: number;
  /** The time, in ms; with `sleep`, what tests replace to move time. @default Date.now */
  now?: () => number;
  /** Waits `ms`. @default node:timers' setTimeout */
  sleep?: (ms: number) => Promise<void>;
  logger?: Pick<Logger, "info" | "warn">;
}

/** The lock, held by this process. */
export interface AgentInstanceLock {
  readonly holder: ProcessIdentity;
  /** Removes the lock file if it still names this process; synchronous, so that it can run at 'exit'. */
  release(): void;
}

/** The lock file of the agent whose state directory is `stateDir`. */
export function agentLockPath(stateDir: string): string {
  return join(stateDir, "agent.lock");
}

/**
 * Takes the agent's lock for this process, for its whole life: at once when it is free or its
 * holder is gone; after the holder exits when it runs; after SIGKILL to the holder when it still
 * runs `predecessorTimeoutMs` later. Throws when /proc is unreadable, or when the holder outlives
 * SIGKILL by `killTimeoutMs` (stuck in the kernel): the agent must not run beside it.
 */
export async function acquireAgentInstanceLock(stateDir: string, options: AgentInstanceLockOptions = {}): Promise<AgentInstanceLock> {
  const now = options.now ?? Date.now;
  const wait = options.sleep ?? ((ms: number) => sleep(ms));
  const pollIntervalMs = options.pollIntervalMs ?? 100;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const self = ownIdentity();
  const path = agentLockPath(stateDir);
  const text = formatLock(self);
  const prepared = `${path}.${process.pid}.new`;
  writeFileSync(prepared, text);
  try {
    let waitingFor: ProcessIdentity | undefined;
    let deadlineMs = 0;
    for (let contended = 0; contended < 5;) {
      try {
        // Created complete or not at all: a hard link fails with EEXIST where the lock exists.
        linkSync(prepared, path);
        return heldLock(path, self);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const found = readIfExists(path);
      const holder = parseProcessIdentity(found);
      if (found === undefined || !holder || !isRunning(holder)) {
        if (found !== undefined) removeStaleLock(path, found);
        contended += 1;
        continue;
      }
      if (holder.pid === self.pid) return heldLock(path, self);
      if (waitingFor?.pid !== holder.pid || waitingFor.startTime !== holder.startTime) {
        waitingFor = holder;
        deadlineMs = now() + (options.predecessorTimeoutMs ?? 20_000);
        options.logger?.info({ predecessor: holder.pid, lock: path }, "another agent of this name still runs; waiting for it to exit");
      }
      if (now() < deadlineMs) {
        await wait(pollIntervalMs);
        continue;
      }
      await killPredecessor(holder, { now, wait, pollIntervalMs, killTimeoutMs: options.killTimeoutMs ?? 5000, logger: options.logger });
    }
  } finally {
    rmSync(prepared, { force: true });
  }
  throw new FsbError("unavailable", `could not take ${path}: other processes took and left it while this one tried`);
}

/** Sends SIGKILL to `holder` and waits until it is gone. */
async function killPredecessor(
  holder: ProcessIdentity,
  options: {
    now: () => number;
    wait: (ms: number) => Promise<void>;
    pollIntervalMs: number;
    killTimeoutMs: number;
    logger: AgentInstanceLockOptions["logger"];
  },
): Promise<void> {
  options.logger?.warn({ predecessor: holder.pid }, "the other agent of this name did not exit in time; ending it with SIGKILL");
  try {
    process.kill(holder.pid, "SIGKILL");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
  const deadlineMs = options.now() + options.killTimeoutMs;
  while (isRunning(holder)) {
    if (options.now() >= deadlineMs) {
      throw new FsbError("unavailable", `the other agent of this name (pid ${holder.pid}) still runs ${options.killTimeoutMs} ms after SIGKILL`);
    }
    await options.wait(options.pollIntervalMs);
  }
}

function ownIdentity(): ProcessIdentity {
  const startTime = processStartTime(process.pid);
  if (startTime === undefined) {
    throw new FsbError("failed_precondition", "the agent needs /proc (Linux) to lock its state directory: /proc/self/stat is unreadable");
  }
  return { pid: process.pid, startTime };
}

function heldLock(path: string, holder: ProcessIdentity): AgentInstanceLock {
  return {
    holder,
    release: () => {
      // Nobody else removes the lock of a running process, so it is ours until we remove it.
      if (readIfExists(path) === formatLock(holder)) rmSync(path, { force: true });
    },
  };
}

function formatLock(holder: ProcessIdentity): string {
  return `${formatProcessIdentity(holder)}\n`;
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * Removes the lock `text` of a process that no longer runs, and nothing else: a contender may have
 * taken the lock since `text` was read, so it is moved aside first (one rename wins) and put back
 * unless it is the stale one.
 */
function removeStaleLock(path: string, text: string): void {
  const aside = `${path}.${process.pid}.stale`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  try {
    if (readIfExists(aside) === text) return;
    try {
      linkSync(aside, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  } finally {
    rmSync(aside, { force: true });
  }
}
