/**
 * The kernel's connection tracking table, through the `conntrack` command line (conntrack-tools),
 * as a port: forgetting the tracked connections of an address. A sandbox's address goes back to its
 * network's pool with its namespace, and the next namespace given it must not inherit the old
 * sandbox's connections: the host's firewall accepts packets of tracked connections (established,
 * related) before any egress policy, so a stale entry (a TCP one lives five days) would let the new
 * sandbox use a connection its own policy forbids, and would hand it the replies meant for the old one.
 * Its failures are translated here into FsbError, once.
 */
import { execFile } from "node:child_process";
import { FsbError } from "@fast-sandbox/api/core";

export interface ConntrackOptions {
  /** @default "conntrack" (found on PATH) */
  binary?: string;
  /** @default 10_000 */
  timeoutMs?: number;
  /**
   * Told once when the binary is missing; `forget` then does nothing (as kube-proxy and CNI's
   * portmap go on without it). @default none: forget fails with FailedPrecondition
   */
  onMissing?: (message: string) => void;
}

/** What `conntrack -D` prints (and exits 1 with) when nothing matched: not a failure here. */
const NOTHING_DELETED = /\b0 flow entries have been deleted/;

export class Conntrack {
  private readonly binary: string;
  private readonly timeoutMs: number;
  private readonly onMissing: ((message: string) => void) | undefined;
  private missing = false;

  constructor(options: ConntrackOptions = {}) {
    this.binary = options.binary ?? "conntrack";
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.onMissing = options.onMissing;
  }

  /** Deletes every tracked connection from or to `address` (as first seen: its replies go with it). */
  async forget(address: string): Promise<void> {
    if (this.missing) return;
    try {
      await Promise.all([this.delete(["--orig-src", address]), this.delete(["--orig-dst", address])]);
    } catch (error) {
      if (!(this.onMissing && error instanceof FsbError && error.code === "failed_precondition")) throw error;
      if (this.missing) return; // two forgets at once found it missing: told once
      this.missing = true;
      this.onMissing(`${error.message}, then restart the agent; until then an address is handed out again with its last holder's tracked connections`);
    }
  }

  private delete(filter: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile(this.binary, ["-D", ...filter], { timeout: this.timeoutMs, killSignal: "SIGKILL", encoding: "utf8" }, (error, _stdout, stderr) => {
        if (!error || NOTHING_DELETED.test(stderr)) return resolve();
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") {
          reject(
            new FsbError(
              "failed_precondition",
              `${this.binary} is missing: sandbox networks need conntrack-tools to forget a released address's connections (Debian: apt-get install conntrack)`,
              { cause: error },
            ),
          );
          return;
        }
        reject(new FsbError("internal", `conntrack -D ${filter.join(" ")} failed: ${stderr.trim() || error.message}`, { cause: error }));
      });
    });
  }
}
