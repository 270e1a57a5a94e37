/**
 * The files an exec keeps directly in the agent's state directory while it runs: the FIFOs of its
 * output (`<sandboxId>.exec-<hex>.stdout|.stderr`, state-layout.ts and exec-fifos.ts) and the
 * output file of a control exec in a gVisor sandbox (`<containerId>.fsb-control-<hex>.out`,
 * checkpoints.ts). The process that made them removes them when the exec ends. Those of an agent
 * process that ended mid-exec have lost their reader: the next process removes them all when it
 * starts (and kills their execs, ContainerdRuntime.prepare), and a sandbox's deletion removes its
 * own — never those of an exec in flight in this process.
 */
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { isExecFifoName } from "../state-layout.js";

/** The output file of control exec `execId` in container `containerId`. */
export function controlOutputName(containerId: string, execId: string): string {
  return `${containerId}.${execId}.out`;
}

/** True for the name of a control exec's output file (of `containerId` when given). */
export function isControlOutputName(fileName: string, containerId?: string): boolean {
  if (!/\.fsb-control-[0-9a-f]+\.out$/.test(fileName)) return false;
  return containerId === undefined || fileName.startsWith(`${containerId}.fsb-control-`);
}

/** Whose leftovers to remove: a sandbox's exec FIFOs and its container's control outputs. */
export interface ExecFilesOwner {
  sandboxId: string;
  containerId: string;
}

export class ExecFiles {
  /** Base names (`<sandboxId or containerId>.<execId>`) of the execs in flight in this process. */
  private readonly inFlight = new Set<string>();

  constructor(readonly stateDir: string) {}

  /** Keeps the files of the exec named `base` (`<id>.<execId>`, before its extension) from removal until the returned function is called. */
  hold(base: string): () => void {
    this.inFlight.add(base);
    return () => this.inFlight.delete(base);
  }

  /** Whether an exec in flight in this process holds the files named `base`. */
  holds(base: string): boolean {
    return this.inFlight.has(base);
  }

  /**
   * Removes the exec FIFOs and control outputs in the state directory (only `owner`'s when given)
   * that no exec in flight in this process holds; returns the names removed.
   */
  async removeLeftovers(owner?: ExecFilesOwner): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.stateDir);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const name of names) {
      const fifo = isExecFifoName(name, owner?.sandboxId);
      const output = !fifo && isControlOutputName(name, owner?.containerId);
      if ((!fifo && !output) || this.inFlight.has(name.slice(0, name.lastIndexOf(".")))) continue;
      const path = join(this.stateDir, name);
      try {
        const stats = await lstat(path);
        // Only what an exec makes under such a name: a FIFO, or the shim's regular output file.
        if (fifo ? !stats.isFIFO() : !stats.isFile()) continue;
        await rm(path, { force: true });
        removed.push(name);
      } catch {
        // gone meanwhile
      }
    }
    return removed;
  }
}
