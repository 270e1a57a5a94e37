/**
 * Which `fsb up` data directory a containerd namespace, and a cgroup root, belong to on this host.
 * Two instances in one namespace would take each other's sandboxes for orphans (their janitors find
 * no record of them, their agents of the same names adopt or remove them). Two under one cgroup root
 * would share the cgroups of their agents of the same names (`default-0`), and with them those of
 * their anchors and sandboxes: one's janitor (or `fsb down --delete-sandboxes`) kills the other's
 * processes through them, and on cgroup v2 an anchor may not start in a cgroup that has some. So
 * `fsb up` claims both for its data directory and refuses one that another data directory still
 * uses — sandboxes keep running after `fsb up` stops, so a claim outlives the process: it lasts while
 * the owner's data directory exists and names it in its settings, until `fsb down --delete-sandboxes`
 * releases it.
 *
 *   <claims dir>/<namespace>           the owner's data directory (FSB_NAMESPACE_CLAIMS_DIR, default
 *                                      /var/lib/fast-sandbox/containerd-namespaces)
 *   <claims dir>/cgroup-root:<path>    likewise for a cgroup root, its path URI-encoded (no namespace
 *                                      name has a ':', so the two kinds never meet)
 */
import { linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { FsbError } from "@fast-sandbox/sdk";
import { checkContainerdNamespace, fsbUpRuns, readIfExists, readSettings, upCommandFor, type EmbeddedSettings } from "./data-dir.js";

export function namespaceClaimsDir(): string {
  return process.env.FSB_NAMESPACE_CLAIMS_DIR || "/var/lib/fast-sandbox/containerd-namespaces";
}

/** What a data directory claims: how its claims are named and told apart, and what a refusal says. */
interface ClaimKind {
  /** The claim of `name`, as messages name it. */
  describe(name: string): string;
  /** The claim file's name for `name`, the same for every spelling of it; throws ValidationError for a name that cannot be claimed. */
  fileName(name: string): string;
  /** The one of this kind a data directory's `fsb up` last ran with; undefined for none. */
  usedBy(settings: EmbeddedSettings): string | undefined;
  /** Why two data directories cannot share one. */
  conflict: string;
  /** How to give an instance another one. */
  choose: string;
}

const CONTAINERD_NAMESPACE: ClaimKind = {
  describe: (namespace) => `containerd namespace ${namespace}`,
  fileName: (namespace) => {
    checkContainerdNamespace(namespace);
    return namespace;
  },
  usedBy: (settings) => settings.containerdNamespace,
  conflict: "two in one namespace would take each other's sandboxes for orphans",
  choose: "--containerd-namespace NAME or FSB_CONTAINERD_NAMESPACE",
};

/** A cgroup root as the path under each hierarchy's root it is: "fsb", "/fsb/" and "fsb//" are one. */
function cgroupPath(root: string): string {
  return root
    .split("/")
    .filter((segment) => segment !== "")
    .join("/");
}

const CGROUP_ROOT: ClaimKind = {
  describe: (root) => `cgroup root /${cgroupPath(root)}`,
  // URI encoding leaves no '/' (nor NUL): any path makes one file name.
  fileName: (root) => `cgroup-root:${encodeURIComponent(cgroupPath(root))}`,
  usedBy: (settings) => (settings.cgroupRoot === "" ? undefined : settings.cgroupRoot),
  conflict: "two under one cgroup root would share the cgroups of their agents of the same names, and one's janitor would kill the other's sandboxes",
  choose: "--cgroup-root NAME or FSB_CGROUP_ROOT",
};

/** Whether `owner` is a data directory that still runs its instance with `name` of `kind`. */
function stillUses(kind: ClaimKind, owner: string, name: string): boolean {
  const settings = readSettings(owner);
  const used = settings && kind.usedBy(settings);
  if (used === undefined) return false;
  try {
    return kind.fileName(used) === kind.fileName(name);
  } catch {
    // Settings written by hand, naming what could not be claimed: not this claim.
    return false;
  }
}

/**
 * Claims `name` of `kind` for `dataDir`, or throws FailedPrecondition naming the data directory that
 * holds it. A claim whose owner no longer uses it (its data directory removed, or its `fsb up` now
 * runs with another one) is taken over. True when this call took it (it was not `dataDir`'s already).
 */
function claim(kind: ClaimKind, name: string, dataDir: string, claimsDir: string): boolean {
  const path = join(claimsDir, kind.fileName(name));
  const self = resolve(dataDir);
  // Its missing parents 0700: by default the parent is root's default data directory, which this
  // would otherwise create world-readable before its `fsb up` does (acquireLock then tightens it,
  // but only when that runs). The claims name only data directories, nothing secret: 0755.
  mkdirSync(dirname(claimsDir), { recursive: true, mode: 0o700 });
  mkdirSync(claimsDir, { recursive: true, mode: 0o755 });
  const prepared = `${path}.${process.pid}.new`;
  writeFileSync(prepared, `${self}\n`);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        // Created whole or not at all: two `fsb up` of different directories cannot both take it.
        linkSync(prepared, path);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const owner = readIfExists(path);
      if (owner === undefined) continue;
      if (owner === self) return false;
      if (owner !== "" && stillUses(kind, owner, name)) {
        // `fsb down --delete-sandboxes` deletes the sandboxes through the owner's control plane: it must run for that.
        const removal = fsbUpRuns(owner)
          ? `'fsb down --delete-sandboxes --data-dir ${owner}'`
          : `its 'fsb up' does not run: start it with '${upCommandFor(owner)}', then 'fsb down --delete-sandboxes --data-dir ${owner}'`;
        throw new FsbError(
          "failed_precondition",
          `${kind.describe(name)} belongs to the Fast Sandbox of data directory ${owner}: ${kind.conflict}. ` +
            `Give this one its own (${kind.choose}), or remove that one and its sandboxes first (${removal})`,
        );
      }
      // Its owner has gone: replaced in one rename (a contender's fresh claim would be, too; the next look settles it).
      renameSync(prepared, path);
      writeFileSync(prepared, `${self}\n`);
      if (readIfExists(path) === self) return true;
    }
  } finally {
    rmSync(prepared, { force: true });
  }
  throw new FsbError("unavailable", `could not claim ${kind.describe(name)} at ${path}: other instances claimed it meanwhile; try again`);
}

/** Gives `name` of `kind` up, if `dataDir` holds it. */
function release(kind: ClaimKind, name: string, dataDir: string, claimsDir: string): void {
  const path = join(claimsDir, kind.fileName(name));
  if (readIfExists(path) === resolve(dataDir)) rmSync(path, { force: true });
}

/** Claims containerd namespace `namespace` for `dataDir` (see `claim`); true when this call took it. */
export function claimContainerdNamespace(namespace: string, dataDir: string, claimsDir = namespaceClaimsDir()): boolean {
  return claim(CONTAINERD_NAMESPACE, namespace, dataDir, claimsDir);
}

/** Gives containerd namespace `namespace` up, if `dataDir` holds it (an `fsb up` refused before it ran in it). */
export function releaseContainerdNamespaceClaim(namespace: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  release(CONTAINERD_NAMESPACE, namespace, dataDir, claimsDir);
}

/** Claims cgroup root `root` for `dataDir` (see `claim`); "" is none, which anyone may run with. */
export function claimCgroupRoot(root: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  if (root !== "") claim(CGROUP_ROOT, root, dataDir, claimsDir);
}

/** Gives cgroup root `root` up, if `dataDir` holds it. */
export function releaseCgroupRoot(root: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  if (root !== "") release(CGROUP_ROOT, root, dataDir, claimsDir);
}

/**
 * Gives up what `dataDir`'s instance claimed, once `fsb down --delete-sandboxes` emptied its
 * namespace (which its sweep leaves without anchors, so its cgroup root without processes): the
 * namespace `namespace`, and the cgroup root its settings name, each if `dataDir` holds it.
 */
export function releaseContainerdNamespace(namespace: string, dataDir: string, claimsDir = namespaceClaimsDir()): void {
  release(CONTAINERD_NAMESPACE, namespace, dataDir, claimsDir);
  releaseCgroupRoot(readSettings(dataDir)?.cgroupRoot ?? "", dataDir, claimsDir);
}
