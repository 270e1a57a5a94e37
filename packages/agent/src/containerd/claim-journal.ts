/**
 * The agent's write-ahead record of claims: a claimed instance (prepared, or restored ahead) runs
 * the user's sandbox from the moment of the claim, but containerd learns that (the container's new
 * labels and spec) in the background — its metadata commit is the slowest step of a claim, and
 * containerd may be restarting. An agent killed in between (by its supervisor while containerd is
 * down, by kill -9) would find the container still labelled as an instance when it starts again,
 * remove it as a leftover of its previous stock, and so lose an acknowledged sandbox.
 *
 * So the claim is written here before it is answered — one small file per sandbox under
 * `<stateDir>/claims`, whole by rename — and removed once containerd has it. An agent that starts
 * replays what is left before it does anything else with its containers.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { OciSpec } from "./oci-spec.js";

/** What containerd must learn about a claimed instance's container. */
export interface ClaimRecord {
  sandboxId: string;
  containerId: string;
  labels: Record<string, string>;
  /** The container's spec as it is now (the user's process); undefined: unchanged. */
  ociSpec?: OciSpec;
  /** A copy restored ahead moved its run directory from `from` to `to`: its stored spec's mounts follow. */
  runDirMove?: RunDirMove;
}

/** A claimed instance's run directory, moved under the sandbox's id. */
export interface RunDirMove {
  from: string;
  to: string;
}

const SUFFIX = ".json";

export class ClaimJournal {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "claims");
  }

  /** Records a claim before anything of it is answered or seen (synchronous: on disk before the create can answer, or the event loop run). */
  write(record: ClaimRecord): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const path = this.pathOf(record.sandboxId);
    const temporary = `${path}.${process.pid}.tmp`;
    // The user's environment is in it: readable by root alone, as containerd's copy is.
    writeFileSync(temporary, JSON.stringify(record), { mode: 0o600 });
    renameSync(temporary, path);
  }

  /** Forgets a claim containerd now knows (or whose container is gone). */
  remove(sandboxId: string): void {
    rmSync(this.pathOf(sandboxId), { force: true });
  }

  /** The claims a previous agent process left unrecorded; unreadable files (a crash mid-write leaves only `.tmp` ones) are dropped. */
  pending(): ClaimRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const records: ClaimRecord[] = [];
    for (const name of names) {
      const path = join(this.dir, name);
      if (!name.endsWith(SUFFIX)) {
        rmSync(path, { force: true });
        continue;
      }
      try {
        const record = JSON.parse(readFileSync(path, "utf8")) as ClaimRecord;
        if (typeof record.sandboxId === "string" && typeof record.containerId === "string" && record.labels) records.push(record);
        else rmSync(path, { force: true });
      } catch {
        rmSync(path, { force: true });
      }
    }
    return records;
  }

  private pathOf(sandboxId: string): string {
    return join(this.dir, `${sandboxId}${SUFFIX}`);
  }
}
