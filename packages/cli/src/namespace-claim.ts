/**
 * Which `fsb up` data directory a containerd namespace belongs to on this host. Two instances in one
 * namespace would take each other's sandboxes for orphans (their janitors find no record of them,
 * their agents of the same names adopt or remove them), so `fsb up` claims its namespace for its
 * data directory and refuses one that another data directory still uses — sandboxes keep running
 * after `fsb up` stops, so a claim outlives the process: it lasts while the owner's data directory
 * exists and names the namespace, until `fsb down --delete-sandboxes` releases it.
 *
 *   <claims dir>/<namespace>    the owner's data directory (FSB_NAMESPACE_CLAIMS_DIR, default
 *                               /var/lib/fast-sandbox/containerd-namespaces)
 */
import { linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { fsbUpRuns, readIfExists, readSettings, upCommandFor } from "./data-dir.js";

/** What containerd accepts as a namespace name, and so a safe file name. */
const NAMESPACE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function namespaceClaimsDir(): string {
  return process.env.FSB_NAMESPACE_CLAIMS_DIR || "/var/lib/fast-sandbox/containerd-namespaces";
}

function claimPath(namespace: string, claimsDir: string): string {
  if (!NAMESPACE_NAME.test(namespace) || namespace.length > 76) {
    throw new ValidationError(
      "--containerd-namespace",
      `${JSON.stringify(namespace)} is not a containerd namespace name (letters, digits, '.', '_', '-'; at most 76)`,
    );
  }
  return join(claimsDir, namespace);
}

/** Whether `owner` is a data directory that still runs its instance in `namespace`. */
function stillUses(owner: string, namespace: string): boolean {
  return readSettings(owner)?.containerdNamespace === namespace;
}

/**
 * Claims `namespace` for `dataDir`, or throws FailedPrecondition naming the data directory that
 * holds it. A claim whose owner no longer uses the namespace (its data directory removed, or its
 * `fsb up` now runs in another one) is taken over.
 */
export function claimContainerdNamespace(namespace: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  const path = claimPath(namespace, claimsDir);
  const self = resolve(dataDir);
  mkdirSync(claimsDir, { recursive: true, mode: 0o755 });
  const prepared = `${path}.${process.pid}.new`;
  writeFileSync(prepared, `${self}\n`);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        // Created whole or not at all: two `fsb up` of different directories cannot both take it.
        linkSync(prepared, path);
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const owner = readIfExists(path);
      if (owner === undefined) continue;
      if (owner === self) return;
      if (owner !== "" && stillUses(owner, namespace)) {
        // `fsb down --delete-sandboxes` deletes the sandboxes through the owner's control plane: it must run for that.
        const removal = fsbUpRuns(owner)
          ? `'fsb down --delete-sandboxes --data-dir ${owner}'`
          : `its 'fsb up' does not run: start it with '${upCommandFor(owner)}', then 'fsb down --delete-sandboxes --data-dir ${owner}'`;
        throw new FsbError(
          "failed_precondition",
          `containerd namespace ${namespace} belongs to the Fast Sandbox of data directory ${owner}: two in one namespace would take each other's sandboxes for orphans. ` +
            `Give this one its own (--containerd-namespace NAME or FSB_CONTAINERD_NAMESPACE), or remove that one and its sandboxes first (${removal})`,
        );
      }
      // Its owner has gone: replaced in one rename (a contender's fresh claim would be, too; the next look settles it).
      renameSync(prepared, path);
      writeFileSync(prepared, `${self}\n`);
      if (readIfExists(path) === self) return;
    }
  } finally {
    rmSync(prepared, { force: true });
  }
  throw new FsbError("unavailable", `could not claim containerd namespace ${namespace} at ${path}: other instances claimed it meanwhile; try again`);
}

/** Gives `namespace` up, if `dataDir` holds it (after `fsb down --delete-sandboxes` emptied it). */
export function releaseContainerdNamespace(namespace: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  const path = claimPath(namespace, claimsDir);
  if (readIfExists(path) === resolve(dataDir)) rmSync(path, { force: true });
}
