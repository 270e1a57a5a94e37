/**
 * What the specs of the data directory's lock and of `fsb down` share: a temporary directory for
 * data directories, child processes killed after each test, and a process's identity. Test code only.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach } from "node:test";
import { processStartTime, type ProcessIdentity } from "./data-dir.js";

export interface SpecProcesses {
  /** Removed after the spec file's tests. */
  directory: string;
  /** A child to SIGKILL after the current test, if it still runs. */
  track(child: ChildProcess): void;
  /** A new, empty data directory under `directory`. */
  newDataDir(): string;
}

/** Registers the hooks (call at a spec file's top level). */
export function specProcesses(prefix: string): SpecProcesses {
  const directory = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(directory, { recursive: true, force: true }));
  let children: ChildProcess[] = [];
  afterEach(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    children = [];
  });
  let dirs = 0;
  return {
    directory,
    track: (child) => void children.push(child),
    newDataDir: () => {
      const dir = join(directory, `data-${++dirs}`);
      mkdirSync(dir);
      return dir;
    },
  };
}

/** The identity of a running process. */
export function identity(pid: number): ProcessIdentity {
  return { pid, startTime: processStartTime(pid) ?? assert.fail(`pid ${pid} runs`) };
}
