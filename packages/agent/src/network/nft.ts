/**
 * The `nft` command line as a port: apply a batch of JSON commands (one kernel transaction, all or
 * nothing), list a table as JSON. Its failures are translated here into FsbError, once.
 */
import { spawn } from "node:child_process";
import { FsbError } from "@fast-sandbox/api/core";
import type { NftCommand, NftFamily, NftListing } from "./firewall-rules.js";

export interface NftOptions {
  /** @default "nft" (found on PATH) */
  binary?: string;
  /** @default 10_000 */
  timeoutMs?: number;
}

export class Nft {
  private readonly binary: string;
  private readonly timeoutMs: number;

  constructor(options: NftOptions = {}) {
    this.binary = options.binary ?? "nft";
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Applies the commands as one transaction. `check`: only validates them (`nft -c`), nothing changes. */
  async apply(commands: readonly NftCommand[], options: { check?: boolean } = {}): Promise<void> {
    if (commands.length === 0) return;
    // The batch goes as an argument: nft opens `-f -` as /dev/stdin, which a socket (Node's child
    // stdio) cannot be opened as. Batches are far below the kernel's 128 KiB argument limit.
    await this.run([...(options.check ? ["-c"] : []), "-j", JSON.stringify({ nftables: commands })], options.check ? "check of a batch" : "batch");
  }

  /** The table's objects (chains, rules, sets with their elements…), or undefined when it does not exist. */
  async list(family: NftFamily, table: string): Promise<NftListing | undefined> {
    let text: string;
    try {
      text = await this.run(["-j", "list", "table", family, table], `list table ${family} ${table}`);
    } catch (error) {
      if (error instanceof FsbError && /No such file or directory/.test(error.message)) return undefined;
      throw error;
    }
    const parsed = JSON.parse(text) as { nftables?: Record<string, Record<string, unknown>>[] };
    return (parsed.nftables ?? []).filter((object) => !("metainfo" in object));
  }

  private run(args: string[], what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.binary, args, { stdio: ["ignore", "pipe", "pipe"], timeout: this.timeoutMs, killSignal: "SIGKILL" });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      child.once("error", (error: NodeJS.ErrnoException) => {
        const missing = error.code === "ENOENT";
        reject(
          new FsbError(
            missing ? "failed_precondition" : "internal",
            missing
              ? `${this.binary} is missing: sandbox networks need nftables (Debian: apt-get install nftables)`
              : `${this.binary} could not run: ${error.message}`,
            { cause: error },
          ),
        );
      });
      child.once("close", (code, signal) => {
        if (code === 0) return resolve(Buffer.concat(stdout).toString("utf8"));
        const message = Buffer.concat(stderr).toString("utf8").trim() || (signal ? `killed by ${signal}` : `exit ${String(code)}`);
        reject(new FsbError("internal", `nft ${what} failed: ${message}`));
      });
    });
  }
}
