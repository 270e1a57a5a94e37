/**
 * Prepared instances: sandboxes made before anyone asks for them, so that a create costs what
 * handing one over costs. A prepared instance is a complete sandbox of the pool's template — image
 * resolved, snapshot prepared, container created, task started, cgroup limits set and (Isolated)
 * network namespace attached with its egress policy in force — whose process 1, the helper in
 * `--prepared` mode, waits for a claim and runs nothing else.
 *
 * A create whose template (image, runtime, resources, network) matches claims one: the agent moves
 * the instance's host files under the sandbox id, relabels the container as the sandbox and records
 * the command's process in its stored spec, and writes the claim (working directory, argv, the
 * whole environment) into the FIFO `run/claim`. The helper reads it, starts the command exactly as
 * for a cold create and reports its start; the create answers once the command runs.
 *
 * What a claim cannot change late, and is therefore part of the template: the image, runtime,
 * resources and network (a create that differs takes the cold path); the hostname, which is the
 * instance's (`fsb-prepared-…`: changing it needs CAP_SYS_ADMIN, which sandboxes never hold); and
 * the user, which is the image's for every sandbox anyway. Nothing of one instance is shared with
 * another (each has its own snapshot, cgroup, namespaces and run directory), and an instance is
 * claimed at most once: the stock hands each out once, and its FIFO accepts one claim.
 */
import { closeSync, constants, writeSync } from "node:fs";
import { Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { FsbError, normalizeImageName } from "@fast-sandbox/api/core";
import type { RuntimeSandboxSpec } from "../runtime/runtime.js";
import { openRunEntry } from "./run-file.js";

/** Value of LABEL_ROLE on a prepared instance until it is claimed. */
export const ROLE_PREPARED_INSTANCE = "prepared-instance";

/** The FIFO in the instance's run directory the claim is written into. */
export const CLAIM_FIFO = "claim";

/** What every sandbox made from a template shares: what a claim cannot change. */
export type PreparedTemplate = Pick<RuntimeSandboxSpec, "namespace" | "pool" | "image" | "runtimeType" | "resources" | "network">;

export interface PreparedInstancesSettings {
  /** Instances kept ready. 0: none. */
  count: number;
  template: PreparedTemplate;
  /**
   * gVisor pools: the name of the checkpoint (in the template's namespace) the instances are
   * restored from, ahead of need; a restore of that checkpoint claims one. Unset: instances (runc
   * or gVisor) whose helper waits for a create's command.
   */
  fromCheckpoint?: string;
}

/** The part of a create that must match a template for the create to claim its instance. */
export function templateKey(spec: PreparedTemplate): string {
  const resources = spec.resources ?? {};
  return JSON.stringify([
    spec.namespace,
    spec.pool,
    normalizeImageName(spec.image),
    spec.runtimeType,
    [resources.cpuMillis ?? 0, resources.memoryBytes ?? 0, resources.pids ?? 0, resources.ephemeralStorageBytes ?? 0],
    networkKey(spec.network),
  ]);
}

/**
 * What of a sandbox's network an instance made ahead must match to be claimed: the mode and, for
 * an isolated namespace, its egress policy and whether sandboxes may reach each other (a claim
 * applies no policy of its own: the instance's firewall is the one it was made with).
 */
export function networkKey(network: PreparedTemplate["network"]): string {
  if (network?.mode !== "isolated") return JSON.stringify(["shared"]);
  const egress = network.egress ?? { kind: "allowAll" };
  return JSON.stringify(["isolated", egress.kind, egress.allow ?? [], network.allowSandboxToSandbox ?? false]);
}

/** A fresh instance id: a valid containerd id and sandbox-id-shaped host file name, never a sandbox's own. */
export function newInstanceId(): string {
  return `fsb-prepared-${randomBytes(8).toString("hex")}`;
}

/** The claim the helper reads (fsb-helper.c): NUL-terminated strings, see there. */
export function encodeClaim(claim: { workingDir: string; args: readonly string[]; env: readonly string[] }): Buffer {
  if (claim.args.length === 0) throw new FsbError("internal", "a claim needs a command");
  const strings = ["fsb-claim-v1", claim.workingDir, String(claim.args.length), ...claim.args, String(claim.env.length), ...claim.env];
  for (const value of strings) {
    if (value.includes("\0")) throw new FsbError("invalid_argument", "the command, its environment and working directory must not contain NUL bytes");
  }
  return Buffer.from(strings.map((value) => `${value}\0`).join(""), "utf8");
}

/** The largest claim the helper accepts (its buffer). */
export const CLAIM_MAX_BYTES = 4 << 20;

/**
 * Writes the claim into the instance's FIFO. Opening without blocking fails at once (ENXIO) when no
 * helper waits on the other end — the instance died or was claimed already — which the caller
 * treats as "no instance". What fits the pipe (64 KiB: every ordinary claim) is written at once, in
 * one system call (the thread pool's queue would cost more); the rest of a bigger one follows as
 * the helper drains the pipe, through the event loop, which goes on serving meanwhile — for
 * `timeoutMs` at most, after which it is no instance either. The helper tells the claim's end by
 * its counts (it holds the FIFO open for writing too, so it sees no end of file). A helper that dies
 * while it is written (EPIPE) leaves no instance either.
 */
export async function writeClaim(fifoPath: string, claim: Buffer, timeoutMs = 5_000): Promise<boolean> {
  let fd: number | undefined;
  try {
    // The run directory is the sandbox's: a link there (ELOOP) or anything but a FIFO is no instance,
    // never a file of the agent's written through it, nor a device opened.
    fd = openRunEntry(fifoPath, "fifo", constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENXIO" || code === "ENOENT" || code === "ELOOP") return false;
    throw error;
  }
  if (fd === undefined) return false;
  let written = 0;
  try {
    written = writeSync(fd, claim);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "EAGAIN") {
      closeSync(fd);
      // The helper died between the open and the write: no instance, as when none waited.
      if (code === "EPIPE") return false;
      throw error;
    }
  }
  if (written === claim.length) {
    closeSync(fd);
    return true;
  }
  // The socket owns the descriptor from here on, and closes it (once everything is written, or on an error).
  const rest = new Socket({ fd, readable: false, writable: true });
  return new Promise<boolean>((resolve, reject) => {
    // A helper that stops reading (its cgroup frozen, say) leaves a claim that is cut short: the
    // helper waits for the rest of it, and the caller takes it for no instance (and removes it).
    const stuck = setTimeout(() => {
      rest.destroy();
      resolve(false);
    }, timeoutMs);
    rest.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(stuck);
      // The helper died while the claim was on its way: no instance either.
      if (error.code === "EPIPE") resolve(false);
      else reject(error);
    });
    rest.once("close", (hadError) => {
      clearTimeout(stuck);
      if (!hadError) resolve(true);
    });
    rest.end(claim.subarray(written));
  });
}
