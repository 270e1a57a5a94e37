/** Test support shared by the e2e cases and benchmarks: containerd namespaces, base image, cgroups. */
import { execFileSync } from "node:child_process";
import { readdirSync, rmdirSync, statSync, type Dirent } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BASE_IMAGE = "fast-sandbox.io/base:latest";
/** The code-interpreter image (scripts/build-code-interpreter-image.sh): E2B's code-interpreter API (Python, bash, JavaScript, TypeScript). */
export const CODE_INTERPRETER_IMAGE = "fast-sandbox.io/code-interpreter:latest";

/** A `ctr` command never waits more than this: a hung shim must fail the caller, not stall the run. */
const CTR_TIMEOUT_MS = 60_000;

export function ctr(namespace: string, ...args: string[]): string {
  return execFileSync("ctr", ["-n", namespace, ...args], { encoding: "utf8", timeout: CTR_TIMEOUT_MS });
}

/** Imports the base image into `namespace` (idempotent, cached build). */
export function importBaseImage(namespace: string): void {
  execFileSync("bash", [resolve(REPO_ROOT, "scripts/build-base-image.sh"), BASE_IMAGE, namespace], {
    stdio: ["ignore", "inherit", "inherit"],
  });
}

/** The base image with its USER naming an account (`nobody`, in its /etc/passwd) or one it lacks (`ghost`). */
export const NAMED_USER_IMAGES = { nobody: "fast-sandbox.io/base-user-nobody:latest", ghost: "fast-sandbox.io/base-user-ghost:latest" } as const;

/** Imports the base image, with USER `user`, as `image` into `namespace` (idempotent, cached build). */
export function importBaseImageAs(namespace: string, image: string, user: string): void {
  execFileSync("bash", [resolve(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, FSB_BASE_IMAGE_USER: user },
  });
}

/** Imports the code-interpreter image into `namespace` (idempotent, cached build). */
export function importCodeInterpreterImage(namespace: string): void {
  execFileSync("bash", [resolve(REPO_ROOT, "scripts/build-code-interpreter-image.sh"), CODE_INTERPRETER_IMAGE, namespace], {
    stdio: ["ignore", "inherit", "inherit"],
  });
}

/** Removes everything from a test namespace and then the namespace itself. */
export function removeNamespace(namespace: string): void {
  const lines = (text: string) =>
    text
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "");
  for (const task of lines(ctr(namespace, "tasks", "ls", "-q"))) {
    try {
      execFileSync("ctr", ["-n", namespace, "tasks", "kill", "-a", "-s", "SIGKILL", task], { stdio: "ignore", timeout: CTR_TIMEOUT_MS });
    } catch {
      // Its process has exited already (a stopped task): `rm -f` below removes it all the same.
    }
    // Its error (on stderr) says why containerd could not remove it.
    execFileSync("ctr", ["-n", namespace, "tasks", "rm", "-f", task], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8", timeout: CTR_TIMEOUT_MS });
  }
  const containers = lines(ctr(namespace, "containers", "ls", "-q"));
  if (containers.length > 0) ctr(namespace, "containers", "rm", ...containers);
  const images = lines(ctr(namespace, "images", "ls", "-q"));
  if (images.length > 0) ctr(namespace, "images", "rm", "--sync", ...images);
  for (const line of lines(ctr(namespace, "snapshots", "ls")).slice(1)) {
    const key = line.split(/\s+/)[0];
    if (key) execFileSync("ctr", ["-n", namespace, "snapshots", "rm", key], { stdio: "ignore", timeout: CTR_TIMEOUT_MS });
  }
  execFileSync("ctr", ["namespaces", "rm", namespace], { stdio: "ignore", timeout: CTR_TIMEOUT_MS });
}

/** Removes a (now empty) parent cgroup the sandboxes were created under: every v1 controller, or the v2 tree. */
export function removeCgroupParent(cgroupParent: string): void {
  const candidates = [`/sys/fs/cgroup${cgroupParent}`];
  for (const controller of readdirSync("/sys/fs/cgroup")) {
    candidates.push(`/sys/fs/cgroup/${controller}${cgroupParent}`);
  }
  for (const path of candidates) {
    try {
      rmdirSync(path);
    } catch {
      // not there (other hierarchy) or not a directory
    }
  }
}

/** The roots a cgroup path is found under: the v2 root and each v1 hierarchy's (v1 and hybrid); never the v2 root's files. */
export function cgroupRoots(): string[] {
  const hierarchies = readdirSync("/sys/fs/cgroup")
    .map((c) => `/sys/fs/cgroup/${c}`)
    .filter((path) => statSync(path, { throwIfNoEntry: false })?.isDirectory());
  return ["/sys/fs/cgroup", ...hierarchies];
}

/** Removes a cgroup subtree bottom-up in every hierarchy (cgroup directories hold only virtual files). */
export function removeCgroupTree(cgroupPath: string): void {
  const roots = cgroupRoots();
  const removeTree = (path: string): void => {
    let entries: Dirent[];
    try {
      entries = readdirSync(path, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) if (entry.isDirectory()) removeTree(`${path}/${entry.name}`);
    try {
      rmdirSync(path);
    } catch {
      // busy (a process still lives there) or already gone
    }
  };
  for (const root of roots) removeTree(`${root}${cgroupPath}`);
}
