import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, join } from "node:path";
import { formatProcessIdentity, isRunning, parseProcessIdentity, processStartTime, type ProcessIdentity } from "@fast-sandbox/agent/process-identity";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";

/**
 * Where `fsb up` keeps its state and how other commands find it:
 * `--data-dir` > `FSB_DATA_DIR` > `/var/lib/fast-sandbox` (root) or `~/.local/share/fast-sandbox`.
 */
export function resolveDataDir(flag?: string): string {
  if (flag) return flag;
  if (process.env.FSB_DATA_DIR) return process.env.FSB_DATA_DIR;
  if (process.getuid?.() === 0) return "/var/lib/fast-sandbox";
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), ".local", "share"), "fast-sandbox");
}

export const files = {
  token: (dir: string) => join(dir, "token"),
  url: (dir: string) => join(dir, "url"),
  /** The `fsb up` that owns the data directory, for its whole life (see `acquireLock`). */
  lock: (dir: string) => join(dir, "lock"),
  /** `fsb up`'s pid, written with `url` once it serves. */
  pid: (dir: string) => join(dir, "controlplane.pid"),
  log: (dir: string) => join(dir, "controlplane.log"),
  settings: (dir: string) => join(dir, "settings.json"),
};

/** What `fsb up` runs with; `fsb janitor` and `fsb down --delete-sandboxes` act on the same containerd state. */
export interface EmbeddedSettings {
  containerdNamespace: string;
  containerdSocket: string;
  cgroupRoot: string;
}

/** What containerd takes as a namespace name (its identifiers.Validate: at most 76 characters). */
const CONTAINERD_NAMESPACE_NAME = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** Throws ValidationError unless containerd would take `namespace` (such a name is a safe file name). */
export function checkContainerdNamespace(namespace: string): void {
  if (!CONTAINERD_NAMESPACE_NAME.test(namespace) || namespace.length > 76) {
    throw new ValidationError(
      "--containerd-namespace",
      `${JSON.stringify(namespace)} is not a containerd namespace name (letters and digits, with single '.', '_' or '-' between them; at most 76)`,
    );
  }
}

/**
 * The files cgroup v1 has in every cgroup, the hierarchy's root included, whose names have no '.';
 * all others, of v1 and v2, are named `<cgroup or controller>.<name>` (cgroup.procs, memory.max).
 */
const CGROUP_FILES_WITHOUT_DOT = new Set(["tasks", "notify_on_release", "release_agent"]);

/**
 * The cgroup root of an `fsb up` in `containerdNamespace` that is told none: the namespace's name,
 * so `fast-sandbox` for the default namespace, as before. Different data directories run in
 * different namespaces (namespace-claim.ts), and so under different cgroup roots: under one, their
 * agents of the same name (`default-0`) would share a cgroup, and one instance's janitor would kill
 * the other's anchors with it. Undefined for a name that is not safe as a directory beside the
 * hierarchy's own files: one with a '.' may be one of them, or a systemd unit (`system.slice`).
 */
export function defaultCgroupRoot(containerdNamespace: string): string | undefined {
  return containerdNamespace.includes(".") || CGROUP_FILES_WITHOUT_DOT.has(containerdNamespace) ? undefined : containerdNamespace;
}

/**
 * The cgroup root `fsb up` runs under: `given` (--cgroup-root, else FSB_CGROUP_ROOT) as it is, ""
 * for none; else the one of its containerd namespace (defaultCgroupRoot). Throws ValidationError for
 * a namespace containerd would not take, and for one that makes no cgroup root.
 */
export function cgroupRootFor(containerdNamespace: string, given: string | undefined): string {
  checkContainerdNamespace(containerdNamespace);
  if (given !== undefined) return given;
  const derived = defaultCgroupRoot(containerdNamespace);
  if (derived === undefined) {
    throw new ValidationError(
      "--cgroup-root",
      `the cgroup root is named after the containerd namespace, but ${JSON.stringify(containerdNamespace)} could name a cgroup's own file or a systemd unit: ` +
        "give one with --cgroup-root NAME (or FSB_CGROUP_ROOT)",
    );
  }
  return derived;
}

export const DEFAULT_CONTAINERD_NAMESPACE = "fast-sandbox";
export const DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock";

/**
 * Where an `fsb up` of dataDir runs: the options given (flags, else their environment variables),
 * else where the data directory's last `fsb up` ran (its settings) — so a plain `fsb up` after
 * `fsb down` adopts the sandboxes it left running instead of starting over in the default
 * namespace, where they are not — else the defaults. A namespace given that is not the last one's
 * is taken, with a note on stderr (the sandboxes there are not adopted).
 */
export function embeddedSettingsFor(
  options: { containerdNamespace?: string | undefined; containerdSocket?: string | undefined; cgroupRoot?: string | undefined },
  dataDir: string,
  warn: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): EmbeddedSettings {
  const saved = readSettings(dataDir);
  // An empty one (FSB_CONTAINERD_NAMESPACE="") is none given; an empty cgroup root is "none".
  const containerdNamespace = options.containerdNamespace || saved?.containerdNamespace || DEFAULT_CONTAINERD_NAMESPACE;
  const sameNamespace = saved?.containerdNamespace === containerdNamespace;
  if (saved && !sameNamespace) {
    warn(
      `note: ${dataDir} last ran in containerd namespace ${saved.containerdNamespace}, now in ${containerdNamespace}: ` +
        `sandboxes left running in ${saved.containerdNamespace} are not adopted (run 'fsb up' there to adopt them)`,
    );
  }
  return {
    containerdNamespace,
    containerdSocket: options.containerdSocket || saved?.containerdSocket || DEFAULT_CONTAINERD_SOCKET,
    cgroupRoot: cgroupRootFor(containerdNamespace, options.cgroupRoot ?? (sameNamespace ? saved?.cgroupRoot : undefined)),
  };
}

export function writeSettings(dir: string, settings: EmbeddedSettings): void {
  writeFileSync(files.settings(dir), `${JSON.stringify(settings, null, 2)}\n`);
}

/** The settings of the last `fsb up` of this data directory, if any. */
export function readSettings(dir: string): EmbeddedSettings | undefined {
  const text = readIfExists(files.settings(dir));
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as Partial<EmbeddedSettings>;
    if (typeof parsed.containerdNamespace !== "string" || typeof parsed.containerdSocket !== "string") return undefined;
    return { containerdNamespace: parsed.containerdNamespace, containerdSocket: parsed.containerdSocket, cgroupRoot: parsed.cgroupRoot ?? "" };
  } catch {
    return undefined;
  }
}

/** The API token, created on first use with mode 0600. */
export function ensureToken(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = files.token(dir);
  if (!existsSync(path)) writeFileSync(path, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return readFileSync(path, "utf8").trim();
}

export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

export { isRunning, processStartTime, type ProcessIdentity } from "@fast-sandbox/agent/process-identity";

/**
 * Whether process `pid` looks like `fsb up`: node (or the `fsb` script itself) running a script of
 * the CLI (`fsb`, `fsb.js`, `kubectl-fs`, or `main.ts`/`main.js` from the sources) with an `up`
 * argument after it.
 */
export function looksLikeFsbUp(pid: number): boolean {
  let args: string[];
  try {
    args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return false;
  }
  const program = basename(args[0] ?? "");
  if (!/node|fsb/.test(program)) return false;
  const script = args.findIndex((arg, i) => i > 0 && /^(fsb|fsb\.[cm]?js|kubectl-fs|main\.[cm]?[jt]s)$/.test(basename(arg)));
  const after = script >= 0 ? args.slice(script + 1) : /fsb/.test(program) ? args.slice(1) : [];
  return after.includes("up");
}

/** Whether the data directory's `fsb up` runs: the process its lock names is alive and still that `fsb up`. */
export function fsbUpRuns(dir: string): boolean {
  const holder = readLock(dir)?.holder;
  return holder !== undefined && isRunning(holder) && looksLikeFsbUp(holder.pid);
}

/**
 * The `fsb up` that starts the data directory's instance again where it last ran: its containerd
 * namespace (and socket and cgroup root, when not what an `fsb up` in that namespace chooses by
 * default) from its settings, or a new one in a namespace `fsb up` chose may not hold its sandboxes.
 */
export function upCommandFor(dir: string): string {
  const settings = readSettings(dir);
  const flags = settings
    ? [
        `--containerd-namespace ${settings.containerdNamespace}`,
        ...(settings.containerdSocket !== DEFAULT_CONTAINERD_SOCKET ? [`--containerd-socket ${settings.containerdSocket}`] : []),
        ...(settings.cgroupRoot !== defaultCgroupRoot(settings.containerdNamespace) ? [`--cgroup-root ${settings.cgroupRoot || "''"}`] : []),
      ]
    : [];
  return ["fsb up --detach", `--data-dir ${dir}`, ...flags].join(" ");
}

/** This process's identity; `fsb up` needs /proc (Linux) to record it. */
function ownIdentity(): ProcessIdentity {
  const startTime = processStartTime(process.pid);
  if (startTime === undefined) {
    throw new FsbError("failed_precondition", "fsb up needs /proc (Linux) to lock its data directory: /proc/self/stat is unreadable");
  }
  return { pid: process.pid, startTime };
}

/**
 * Makes `dir` the data directory of this user alone, mode 0700: created so, or tightened when it
 * exists. Its files are not all private themselves (`state.db` holds the sandboxes' environment
 * values; `settings.json` and the logs are written with the default mode): the directory keeps other
 * users out, and a mode given to mkdirSync applies only to a directory it creates — one made by
 * hand, by an older version or by another `mkdir -p` (the claims directory's parent) keeps its own.
 * Throws FailedPrecondition for a directory of another user, whose mode is that user's to set and
 * who could read what `fsb up` keeps there, and for a shared one (sticky, like /tmp), which making
 * 0700 would take from everyone else.
 */
export function makePrivateDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { uid, mode } = statSync(dir);
  const self = process.getuid?.();
  if (self !== undefined && uid !== self) {
    throw new FsbError(
      "failed_precondition",
      `data directory ${dir} belongs to uid ${uid}, not to this user (uid ${self}): 'fsb up' keeps its API token and the sandboxes' state there, ` +
        "readable by the directory's owner; give it a directory of this user's (--data-dir or FSB_DATA_DIR), or chown it",
    );
  }
  if (mode & 0o1000) {
    throw new FsbError(
      "failed_precondition",
      `data directory ${dir} is a shared directory (mode ${(mode & 0o7777).toString(8)}, like /tmp): give 'fsb up' a directory of its own (--data-dir or FSB_DATA_DIR)`,
    );
  }
  if ((mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** The data directory's lock as read just now: its text, and the process it names (none when unreadable). */
export interface LockFile {
  text: string;
  holder: ProcessIdentity | undefined;
}

export function readLock(dir: string): LockFile | undefined {
  const text = readIfExists(files.lock(dir));
  return text === undefined ? undefined : { text, holder: parseProcessIdentity(text) };
}

/** The data directory's lock, held by this process. */
export interface InstanceLock {
  readonly holder: ProcessIdentity;
  /** Removes the lock file, if it still names this process. */
  release(): void;
}

/**
 * Takes the data directory's lock for this process (`fsb up`, for its whole life): `<dir>/lock`
 * names its pid and start time. It is created complete or not at all (a hard link of a file
 * written beforehand: O_EXCL, without a moment in which the file is empty). A lock whose process no
 * longer runs with that start time (killed, crashed, the host rebooted) is stale and taken over;
 * a lock of a running process is not: its identity is returned instead. The directory is made
 * this user's alone first (makePrivateDataDir), also one that exists.
 */
export function acquireLock(dir: string): { lock: InstanceLock } | { heldBy: ProcessIdentity } {
  makePrivateDataDir(dir);
  const self = ownIdentity();
  const path = files.lock(dir);
  const prepared = join(dir, `lock.${process.pid}.new`);
  writeFileSync(prepared, `${formatProcessIdentity(self)}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(prepared, path);
        return { lock: heldLock(dir, self) };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const text = readIfExists(path);
      if (text === undefined) continue;
      const holder = parseProcessIdentity(text);
      if (holder && isRunning(holder)) return { heldBy: holder };
      removeStaleLock(dir, text);
    }
  } finally {
    rmSync(prepared, { force: true });
  }
  throw new FsbError("unavailable", `could not take ${path}: other processes took and left it while this one tried; try again`);
}

function heldLock(dir: string, holder: ProcessIdentity): InstanceLock {
  return {
    holder,
    release: () => {
      // Nobody else removes the lock of a running process, so it is ours until we remove it.
      if (readIfExists(files.lock(dir)) === formatProcessIdentity(holder)) rmSync(files.lock(dir), { force: true });
    },
  };
}

/**
 * Removes the lock `text` of a process that no longer runs, and nothing else: a contender may have
 * removed it and taken the lock since `text` was read, so it is moved aside first (one rename wins)
 * and put back unless it is the stale one.
 */
function removeStaleLock(dir: string, text: string): void {
  const aside = join(dir, `lock.${process.pid}.stale`);
  try {
    renameSync(files.lock(dir), aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  try {
    if (readIfExists(aside) === text) return;
    try {
      linkSync(aside, files.lock(dir));
    } catch (error) {
      // EEXIST: a third process took the lock in that instant, and the process of the lock moved
      // aside runs on without it (it takes a stale lock and three `fsb up` within microseconds).
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  } finally {
    rmSync(aside, { force: true });
  }
}

/**
 * Removes what an `fsb up` that no longer runs left behind: `lock` (as read before; nothing when
 * another process has taken the lock since), then the run files, unless the lock is held again.
 */
export function clearStaleInstance(dir: string, lock: LockFile | undefined): void {
  if (lock) removeStaleLock(dir, lock.text);
  if (!existsSync(files.lock(dir))) clearRunFiles(dir);
}

export function clearRunFiles(dir: string): void {
  rmSync(files.pid(dir), { force: true });
  rmSync(files.url(dir), { force: true });
}
