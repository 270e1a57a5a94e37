/**
 * Named network namespaces (`/run/netns/<name>`, iproute2's convention, which runc, runsc and the
 * CNI plugins all take as a path). A named namespace lives until it is deleted, whatever runs in
 * it, so a sandbox's network outlives a crash of its agent and can be adopted or reclaimed.
 * Made and removed with `ip netns add|delete` — only the namespace itself: its interfaces and
 * addresses are the CNI plugins' business.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { FsbError } from "@fast-sandbox/api/core";

const run = promisify(execFile);

/** Where iproute2 mounts named namespaces. */
export const NETNS_DIR = "/run/netns";

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface NetworkNamespaces {
  /** The namespace's path (whether it exists or not). */
  path(name: string): string;
  exists(name: string): boolean;
  /** Creates the namespace; fails if it exists. */
  create(name: string): Promise<string>;
  /** Deletes the namespace if it exists (its network goes once nothing runs in it any more). */
  delete(name: string): Promise<void>;
}

export class IpNetworkNamespaces implements NetworkNamespaces {
  constructor(private readonly directory = NETNS_DIR) {}

  path(name: string): string {
    checkName(name);
    return join(this.directory, name);
  }

  exists(name: string): boolean {
    return existsSync(this.path(name));
  }

  async create(name: string): Promise<string> {
    await ip(["netns", "add", name], name);
    return this.path(name);
  }

  async delete(name: string): Promise<void> {
    if (!this.exists(name)) return;
    try {
      await ip(["netns", "delete", name], name);
    } catch (error) {
      // Deleted meanwhile by someone else (the janitor, a second teardown): done all the same.
      if (this.exists(name)) throw error;
    }
  }
}

function checkName(name: string): void {
  if (!NETNS_NAME.test(name)) throw new FsbError("invalid_argument", `${JSON.stringify(name)} is not a network namespace name`);
}

async function ip(args: string[], name: string): Promise<void> {
  checkName(name);
  try {
    await run("ip", args, { timeout: 10_000 });
  } catch (error) {
    const { code, stderr } = error as NodeJS.ErrnoException & { stderr?: string };
    if (code === "ENOENT")
      throw new FsbError("failed_precondition", "ip (iproute2) is missing: sandbox networks need it (Debian: apt-get install iproute2)", { cause: error });
    throw new FsbError("internal", `ip ${args.join(" ")} failed: ${(stderr ?? "").trim() || String(error)}`, { cause: error });
  }
}
