/**
 * Builds the OCI runtime spec of a sandbox: a pure function of the sandbox spec, the image's
 * config and a few agent settings, so every rule here is unit-tested without containerd.
 */
import { FailedPreconditionError, isNumericExecUser, parseExecUser } from "@fast-sandbox/api/core";
import type { RuntimeSandboxSpec } from "../runtime/runtime.js";
import type { SharedNetwork } from "../shared-network.js";
import type { ImageConfig } from "./image-resolver.js";
import { defaultSeccompProfile, type SeccompProfile } from "./seccomp-profile.js";

/** The most processes (and threads) a sandbox may have when its pool sets no `pids`. */
export const DEFAULT_SANDBOX_PIDS_LIMIT = 4096;

/**
 * What gVisor itself takes of a sandbox's host pids limit: runsc's sandbox and gofer processes are
 * Go programs whose threads (~80 idle here, more under load) are in the sandbox's cgroup with its
 * processes' — and a thread the Go runtime cannot create crashes the whole sandbox, where runc's
 * processes would only see a fork fail. A gVisor sandbox's limit is its pool's `pids` plus this, so
 * its processes get about what the pool asks for and a small limit does not kill it at its start.
 */
export const GVISOR_PIDS_HEADROOM = 256;

/** The annotation that makes the runc v2 shim serve every container of one group from one process. */
export const SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** CFS period for CPU limits: quota = cpuMillis * period / 1000. */
export const CPU_PERIOD_US = 100_000;

/** The CFS quota of a CPU limit in thousandths of a core, over CPU_PERIOD_US. */
export function cpuQuotaUs(cpuMillis: number): number {
  return Math.round((cpuMillis * CPU_PERIOD_US) / 1000);
}

/**
 * Capabilities a sandbox keeps (bounding, effective, permitted); everything else is dropped. Not
 * CAP_MKNOD (Docker's default has it): a sandbox can use no device node it makes (the devices cgroup
 * denies them), while one made in a directory the host reads (its run directory, a bind mount) is
 * a device of the host's to whoever opens it there. FIFOs need no capability.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

export const MASKED_PATHS: readonly string[] = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

export const READONLY_PATHS: readonly string[] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/**
 * The sandbox's view of its own cgroup at /sys/fs/cgroup, read-only, as Docker gives a container:
 * runtimes that size themselves from their cgroup's limits (Node's `process.constrainedMemory()`,
 * the JVM's container support, Go's GOMEMLIMIT and GOMAXPROCS tools) find the sandbox's limits there
 * instead of assuming the host's. Nothing in it is version-specific: runc mounts the host's v1
 * controllers (a tmpfs with a read-only mount per hierarchy) or its v2 hierarchy, each rooted at the
 * sandbox's cgroup by its cgroup namespace. A current runsc serves its own kernel's cgroupfs there
 * instead: a v1 layout with the spec's memory limit, whose files only gVisor's kernel reads and
 * writes (the host's cgroup is out of the sandbox's reach; gVisor names its cgroups after the
 * container, and ignores the namespace in this layout). Debian 12's runsc (20221219) leaves the
 * mount out (it would mount one, without the spec's limits, only when run with `--cgroupfs`).
 */
export const CGROUP_MOUNT: Readonly<OciMount> = {
  destination: "/sys/fs/cgroup",
  type: "cgroup",
  source: "cgroup",
  options: ["ro", "nosuid", "noexec", "nodev"],
};

export interface OciUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface OciProcess {
  terminal: boolean;
  user: OciUser;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: {
    bounding: string[];
    effective: string[];
    permitted: string[];
    inheritable: string[];
    ambient: string[];
  };
  rlimits: { type: string; hard: number; soft: number }[];
  noNewPrivileges: boolean;
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: {
    cgroupsPath?: string;
    resources: {
      devices: {
        allow: boolean;
        access: string;
        type?: string;
        major?: number;
        minor?: number;
      }[];
      cpu?: { quota: number; period: number };
      memory?: { limit: number; swap?: number };
      pids?: { limit: number };
    };
    namespaces: { type: string; path?: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: SeccompProfile;
  };
}

export interface OciSpecOptions {
  /** Value of the shim group annotation: sandboxes with the same group share one shim process. */
  shimGroup?: string;
  /** Full cgroups path of the sandbox (`<cgroupParent>/<container id>`); absent lets the runtime choose. */
  cgroupsPath?: string;
  /** Host files bind-mounted read-only when the sandbox shares the host network (DNS and hosts). */
  hostNetworkFiles?: readonly string[];
  /**
   * The agent's own network namespace, for a sandbox that shares the agent's network (shared-network.ts):
   * it joins it, with the agent's resolver files instead of `hostNetworkFiles`. Absent: the agent's
   * network is the host's, which the runtime's own namespace is.
   */
  sharedNetwork?: SharedNetwork;
  /**
   * The host accounts swap per cgroup (v1 `memory.memsw.*`, v2 `memory.swap.max`): a memory limit
   * then covers swap too (swap = limit: none of its own), as it must to hold on a host with swap.
   */
  swapAccounting?: boolean;
  /** The in-sandbox helper: becomes process 1 and wraps the user's command (see helper/fsb-helper.c). */
  helper?: HelperInjection;
  /** An isolated sandbox's network (network/sandbox-networks.ts); absent: it shares the agent's. */
  isolatedNetwork?: IsolatedNetworkInjection;
  /** The CPU bound of the cgroup the sandbox's is made in: a CPU limit above it is written as it. */
  cpuBoundMillis?: number;
}

export interface IsolatedNetworkInjection {
  /** The prepared network namespace the sandbox joins (`/run/netns/<name>`). */
  netnsPath: string;
  /** Host files bind-mounted read-only at their destination (the sandbox's /etc/hosts and /etc/resolv.conf). */
  files: readonly { destination: string; source: string }[];
}

/** Where the helper lives inside every sandbox; not part of the Sandbox API. */
export const HELPER_DIR = "/.fast-sandbox";
export const HELPER_BINARY = `${HELPER_DIR}/helper`;
export const HELPER_RUN_DIR = `${HELPER_DIR}/run`;
/** The in-sandbox daemon (packages/envd: E2B's envd interface on port 49983), beside the helper. */
export const ENVD_BINARY = `${HELPER_DIR}/envd`;
/** The port the in-sandbox daemon serves on in every sandbox that runs it (E2B's envd port). */
export const ENVD_PORT = 49983;

/**
 * The helper's own arguments before the user's command: it enters the working directory itself
 * (creating it when missing, as runc does) so that a bad one is reported like a bad command.
 */
export function helperArgs(workingDir: string, userArgs: readonly string[], envd = false, user?: string): string[] {
  return [HELPER_BINARY, "--workdir", workingDir, ...(user ? ["--user", user] : []), ...(envd ? ["--envd", ENVD_BINARY] : []), "--", ...userArgs];
}

/** Process 1 of a prepared instance: the helper waiting for its claim (prepared-instances.ts). */
export function preparedHelperArgs(envd = false, user?: string): string[] {
  return [HELPER_BINARY, "--prepared", ...(user ? ["--user", user] : []), ...(envd ? ["--envd", ENVD_BINARY] : [])];
}

/** The sandbox's working directory, also the default of its execs: the helper's `--workdir`, else the process's cwd. */
export function sandboxWorkingDir(spec: Pick<OciSpec, "process">): string {
  const [binary, flag, workingDir] = spec.process.args;
  if (binary === HELPER_BINARY && flag === "--workdir" && workingDir) return workingDir;
  return spec.process.cwd || "/";
}

/**
 * The image's named user the helper runs the command as (its `--user`), if any: an exec runs as
 * that user too, through the helper (`execAsArgs`).
 */
export function sandboxNamedUser(spec: Pick<OciSpec, "process">): string | undefined {
  const args = spec.process.args;
  if (args[0] !== HELPER_BINARY) return undefined;
  const end = args.indexOf("--");
  const options = end < 0 ? args : args.slice(0, end);
  const at = options.indexOf("--user");
  return at > 0 ? options[at + 1] : undefined;
}

/** An exec's argv run as the image's named user: the helper becomes the user, then executes `command`. */
export function execAsArgs(user: string, command: readonly string[]): string[] {
  return [HELPER_BINARY, "--exec-as", user, "--", ...command];
}

/**
 * The process of an exec: the sandbox's own process settings (capabilities, limits, no new
 * privileges) with the request's command, env (over the sandbox's) and working directory, run as:
 * - the request's `user` (USER[:GROUP], exec-user.ts): through the helper, which starts as root and
 *   becomes that user by the sandbox's own /etc/passwd and /etc/group (`docker exec -u`); a sandbox
 *   whose helper cannot (`helperExecAs` false: made by an earlier agent) takes a numeric user
 *   directly and refuses a name;
 * - else the image's named USER, through the helper, as the sandbox's command runs (when it can);
 * - else the sandbox's own uid and gid.
 */
export function execProcessOf(
  spec: Pick<OciSpec, "process">,
  request: { command: readonly string[]; env?: readonly { name: string; value: string }[]; workingDir?: string; user?: string },
  helperExecAs: boolean,
): OciProcess {
  const base: OciProcess = {
    ...spec.process,
    terminal: false,
    args: [...request.command],
    env: mergeEnv(spec.process.env, request.env ?? []),
    cwd: request.workingDir || sandboxWorkingDir(spec),
  };
  if (request.user) {
    const parsed = parseExecUser("user", request.user);
    if (helperExecAs) return { ...base, user: { uid: 0, gid: 0 }, args: execAsArgs(request.user, request.command) };
    if (!isNumericExecUser(parsed)) {
      throw new FailedPreconditionError(
        `this sandbox was made by an agent whose helper cannot look up ${JSON.stringify(request.user)} in it: give the user by number (uid[:gid]), or recreate the sandbox`,
      );
    }
    return { ...base, user: { uid: Number(parsed.user), gid: Number(parsed.group ?? 0) } };
  }
  const namedUser = helperExecAs ? sandboxNamedUser(spec) : undefined;
  return namedUser ? { ...base, args: execAsArgs(namedUser, request.command) } : base;
}

export interface HelperInjection {
  /** Host path of the static helper binary, bind-mounted read-only. */
  binaryPath: string;
  /** Host directory of this sandbox, bind-mounted writable: the helper records the command's start and exit code there. */
  runDir: string;
  /**
   * Host path of the static in-sandbox daemon, bind-mounted read-only at ENVD_BINARY; the helper
   * starts and supervises it. Only for a sandbox with a network of its own (`isolatedNetwork`):
   * in the agent's shared network its port would collide with other sandboxes'. @default none
   */
  envdPath?: string;
  /** A prepared instance: the helper waits for its claim instead of running the spec's command. @default false */
  prepared?: boolean;
}

/**
 * The OCI `linux.cgroupsPath` of a sandbox: `<cgroupParent>/<containerId>`, absolute, for cgroupfs
 * on v1 and v2. Named after the container id (container-id.ts), which the janitor checks it against.
 */
export function sandboxCgroupsPath(cgroupParent: string, containerId: string): string {
  const parent = cgroupParent
    .split("/")
    .filter((part) => part !== "")
    .join("/");
  return parent === "" ? `/${containerId}` : `/${parent}/${containerId}`;
}

/** The sandbox's hostname: its name, cut to the 63 characters a hostname may have. */
export function sandboxHostname(spec: Pick<RuntimeSandboxSpec, "name">): string {
  return spec.name.slice(0, 63);
}

/** `args` of the sandbox's process: Kubernetes semantics for command/args against Entrypoint/Cmd. */
export function processArgs(spec: Pick<RuntimeSandboxSpec, "command" | "args">, image: ImageConfig): string[] {
  if (spec.command.length > 0) return [...spec.command, ...spec.args];
  const args = spec.args.length > 0 ? spec.args : image.cmd;
  return [...image.entrypoint, ...args];
}

/** Image env overridden by the spec's env (the spec wins); keeps the image's order, appends new names. */
export function mergeEnv(base: readonly string[], overrides: readonly { name: string; value: string }[]): string[] {
  const merged = new Map<string, string>();
  for (const entry of base) {
    const separator = entry.indexOf("=");
    if (separator <= 0) continue;
    merged.set(entry.slice(0, separator), entry.slice(separator + 1));
  }
  for (const { name, value } of overrides) merged.set(name, value);
  if (!merged.has("PATH")) merged.set("PATH", DEFAULT_PATH);
  return [...merged].map(([name, value]) => `${name}=${value}`);
}

/**
 * The image's `User` when it names an account or a group (`node`, `1000:staff`): the helper resolves
 * it inside the sandbox, from the image's own /etc/passwd and /etc/group, and drops to it before the
 * command (`--user`), while process 1 stays root. Undefined for a numeric or empty one.
 */
export function namedImageUser(user: string): string | undefined {
  const [uidPart = "", gidPart = ""] = user.split(":");
  const named = (part: string) => part !== "" && !/^\d+$/.test(part);
  return named(uidPart) || named(gidPart) ? user : undefined;
}

/**
 * The image's `User` as numeric ids for the runtime: numeric `uid` or `uid:gid` as it is; anything
 * with a name gives root, whose process 1 (the helper) then becomes that user for the command
 * (`namedImageUser`).
 */
export function imageUser(user: string): OciUser {
  const [uidPart = "", gidPart = ""] = user.split(":");
  const uid = /^\d+$/.test(uidPart) ? Number(uidPart) : 0;
  const gid = /^\d+$/.test(gidPart) ? Number(gidPart) : 0;
  return { uid, gid };
}

export function buildOciSpec(spec: RuntimeSandboxSpec, image: ImageConfig, options: OciSpecOptions): OciSpec {
  // An isolated sandbox (runc or runsc) joins its prepared network namespace. Otherwise a runc
  // sandbox shares the agent's network (its IP and ports) — the host's, or the agent Pod's, which it
  // joins by path (sharedNetwork) — and gVisor, which refuses the host's network namespace, gets an
  // empty one (gvisor-binary.ts).
  const isolated = options.isolatedNetwork;
  const ownNetwork = isolated !== undefined || spec.runtimeType === "gvisor";
  // In the agent's network, raw sockets would let a sandbox read the traffic of the agent's own
  // interfaces (its loopback carries the agent's and the control plane's bearer tokens): no NET_RAW there.
  const capabilities = ownNetwork ? [...DEFAULT_CAPABILITIES] : DEFAULT_CAPABILITIES.filter((capability) => capability !== "CAP_NET_RAW");
  // A cgroup namespace of its own (Docker's default on cgroup v2): under runc the sandbox's cgroup is
  // its root, so /proc/self/cgroup shows `/` rather than the host's path (the agent's cgroup root, the
  // container id). CGROUP_MOUNT says what runsc makes of it.
  const namespaces: { type: string; path?: string }[] = [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }];
  const shared = ownNetwork ? undefined : options.sharedNetwork;
  if (isolated) namespaces.push({ type: "network", path: isolated.netnsPath });
  else if (ownNetwork) namespaces.push({ type: "network" });
  else if (shared) namespaces.push({ type: "network", path: shared.netnsPath });

  const mounts: OciMount[] = [
    {
      destination: "/proc",
      type: "proc",
      source: "proc",
      options: ["nosuid", "noexec", "nodev"],
    },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
      destination: "/dev/mqueue",
      type: "mqueue",
      source: "mqueue",
      options: ["nosuid", "noexec", "nodev"],
    },
    {
      destination: "/sys",
      type: "sysfs",
      source: "sysfs",
      options: ["nosuid", "noexec", "nodev", "ro"],
    },
    // The sandbox's own cgroup, read-only (CGROUP_MOUNT).
    { ...CGROUP_MOUNT, options: [...CGROUP_MOUNT.options] },
  ];
  if (!ownNetwork) {
    const files = shared?.files ?? (options.hostNetworkFiles ?? []).map((file) => ({ source: file, destination: file }));
    for (const file of files) {
      mounts.push({
        destination: file.destination,
        type: "bind",
        source: file.source,
        options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
      });
    }
  }
  for (const file of isolated?.files ?? []) {
    mounts.push({ destination: file.destination, type: "bind", source: file.source, options: ["rbind", "ro", "nosuid", "nodev", "noexec"] });
  }

  if (options.helper) {
    mounts.push(
      // A mount point of its own, so the sandbox cannot rename the directory away (EBUSY) and plant
      // another program at HELPER_BINARY or ENVD_BINARY, which the agent's execs (hostname on restore,
      // the daemon's control client) run by those paths with capabilities the sandbox lacks.
      { destination: HELPER_DIR, type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec", "mode=755", "size=64k"] },
      { destination: HELPER_BINARY, type: "bind", source: options.helper.binaryPath, options: ["rbind", "ro", "nosuid", "nodev"] },
      { destination: HELPER_RUN_DIR, type: "bind", source: options.helper.runDir, options: ["rbind", "rw", "nosuid", "nodev", "noexec"] },
    );
  }
  const envd = Boolean(options.helper?.envdPath && isolated);
  if (envd && options.helper?.envdPath) {
    mounts.push({ destination: ENVD_BINARY, type: "bind", source: options.helper.envdPath, options: ["rbind", "ro", "nosuid", "nodev"] });
  }
  const userArgs = processArgs(spec, image);
  const workingDir = spec.workingDir || image.workingDir || "/";
  const namedUser = options.helper ? namedImageUser(image.user) : undefined;

  const resources: OciSpec["linux"]["resources"] = {
    devices: [{ allow: false, access: "rwm" }],
  };
  const limits = spec.resources;
  if (limits?.cpuMillis !== undefined && limits.cpuMillis > 0) {
    // cgroup v1 refuses a quota above its parent's (v2 would cap it the same): at most the agent's.
    const cpuMillis = Math.min(limits.cpuMillis, options.cpuBoundMillis ?? Infinity);
    resources.cpu = {
      quota: cpuQuotaUs(cpuMillis),
      period: CPU_PERIOD_US,
    };
  }
  if (limits?.memoryBytes !== undefined && limits.memoryBytes > 0) {
    resources.memory = { limit: limits.memoryBytes, ...(options.swapAccounting ? { swap: limits.memoryBytes } : {}) };
  }
  // Always a bound: a sandbox's cgroup lies outside the kubelet's (and systemd's) task limits, so a
  // fork bomb without one would take the host's pid space.
  const pids = limits?.pids !== undefined && limits.pids > 0 ? limits.pids : DEFAULT_SANDBOX_PIDS_LIMIT;
  resources.pids = { limit: spec.runtimeType === "gvisor" ? pids + GVISOR_PIDS_HEADROOM : pids };

  const linux: OciSpec["linux"] = {
    resources,
    namespaces,
    maskedPaths: [...MASKED_PATHS],
    readonlyPaths: [...READONLY_PATHS],
    seccomp: defaultSeccompProfile({ gvisor: spec.runtimeType === "gvisor" }),
  };
  if (options.cgroupsPath !== undefined) linux.cgroupsPath = options.cgroupsPath;

  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: namedUser ? { uid: 0, gid: 0 } : imageUser(image.user),
      args: options.helper?.prepared ? preparedHelperArgs(envd, namedUser) : options.helper ? helperArgs(workingDir, userArgs, envd, namedUser) : userArgs,
      env: mergeEnv(image.env, spec.env),
      // With the helper, runc and runsc start it in "/" (they would fail a bad cwd with an opaque
      // error before anything runs); the helper enters the working directory and reports on it.
      cwd: options.helper ? "/" : workingDir,
      capabilities: {
        bounding: capabilities,
        effective: [...capabilities],
        permitted: [...capabilities],
        inheritable: [],
        ambient: [],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    // containerd's shim mounts the snapshot at <bundle>/rootfs.
    root: { path: "rootfs", readonly: false },
    hostname: sandboxHostname(spec),
    mounts,
    annotations: options.shimGroup ? { [SHIM_GROUP_ANNOTATION]: options.shimGroup } : {},
    linux,
  };
}

/**
 * The spec of an agent's shim anchor: the helper in `--pause` mode in an empty root file system.
 * It holds the agent's runc shim group open, so the shim never exits (and never races a create)
 * when the agent's last sandbox is deleted.
 */
export function buildAnchorSpec(helperPath: string, shimGroup: string, cgroupsPath: string): OciSpec {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [HELPER_BINARY, "--pause"],
      env: [],
      cwd: "/",
      capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 64, soft: 64 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: false },
    hostname: "fsb-anchor",
    mounts: [
      // runc itself needs /proc in the container to start the process.
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: HELPER_BINARY, type: "bind", source: helperPath, options: ["rbind", "ro", "nosuid", "nodev"] },
    ],
    annotations: { [SHIM_GROUP_ANNOTATION]: shimGroup },
    linux: {
      cgroupsPath,
      resources: { devices: [{ allow: false, access: "rwm" }], pids: { limit: 4 } },
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }],
      maskedPaths: [],
      readonlyPaths: [],
      seccomp: defaultSeccompProfile(),
    },
  };
}
