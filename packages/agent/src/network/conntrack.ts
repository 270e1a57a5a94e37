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
}

/** What `conntrack -D` prints (and exits 1 with) when nothing matched: not a failure here. */
const NOTHING_DELETED = /\b0 flow entries have been deleted/;

export class Conntrack {
  private readonly binary: string;
  private readonly timeoutMs: number;

  constructor(options: ConntrackOptions = {}) {
    this.binary = options.binary ?? "conntrack";
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Deletes every tracked connection from or to `address` (as first seen: its replies go with it). */
  async forget(address: string): Promise<void> {
    await Promise.all([this.delete(["--orig-src", address]), this.delete(["--orig-dst", address])]);
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
