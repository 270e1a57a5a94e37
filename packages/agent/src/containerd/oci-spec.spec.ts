import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError, ValidationError } from "@fast-sandbox/api/core";
import type { RuntimeSandboxSpec } from "../runtime/runtime.js";
import type { ImageConfig } from "./image-resolver.js";
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH,
  ENVD_BINARY,
  HELPER_BINARY,
  HELPER_DIR,
  HELPER_RUN_DIR,
  SHIM_GROUP_ANNOTATION,
  buildOciSpec,
  imageUser,
  namedImageUser,
  mergeEnv,
  processArgs,
  sandboxCgroupsPath,
  sandboxWorkingDir,
  sandboxNamedUser,
  execProcessOf,
  execAsArgs,
  DEFAULT_SANDBOX_PIDS_LIMIT,
  GVISOR_PIDS_HEADROOM,
  CGROUP_MOUNT,
  buildAnchorSpec,
} from "./oci-spec.js";
import { DENIED_SYSCALLS } from "./seccomp-profile.js";

const image: ImageConfig = {
  entrypoint: ["/docker-entrypoint.sh"],
  cmd: ["nginx", "-g", "daemon off;"],
  env: ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
  workingDir: "/srv",
  user: "101:102",
};

function sandbox(overrides: Partial<RuntimeSandboxSpec> = {}): RuntimeSandboxSpec {
  return {
    sandboxId: "sb-1",
    namespace: "team-a",
    name: "web",
    pool: "default",
    image: "nginx:latest",
    command: [],
    args: [],
    env: [],
    runtimeType: "container",
    logPath: "/var/log/sb-1.log",
    ...overrides,
  };
}

const options = {
  shimGroup: "agent-1",
  cgroupsPath: "/fast-sandbox/sb-1",
  hostNetworkFiles: ["/etc/resolv.conf"],
};

describe("processArgs", () => {
  it("runs the image's entrypoint with its cmd when neither command nor args is set", () => {
    assert.deepEqual(processArgs(sandbox(), image), ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]);
  });

  it("replaces only the image's cmd when args is set", () => {
    assert.deepEqual(processArgs(sandbox({ args: ["nginx", "-T"] }), image), ["/docker-entrypoint.sh", "nginx", "-T"]);
  });

  it("drops the image's cmd when command is set without args, like Kubernetes", () => {
    assert.deepEqual(processArgs(sandbox({ command: ["sleep"] }), image), ["sleep"]);
  });

  it("uses command and args together when both are set", () => {
    assert.deepEqual(processArgs(sandbox({ command: ["sh", "-c"], args: ["echo hi"] }), image), ["sh", "-c", "echo hi"]);
  });
});

describe("mergeEnv", () => {
  it("lets the sandbox's env override the image's and keeps the image's order", () => {
    assert.deepEqual(
      mergeEnv(image.env, [
        { name: "LANG", value: "en_US" },
        { name: "FOO", value: "a=b" },
      ]),
      ["PATH=/usr/bin:/bin", "LANG=en_US", "FOO=a=b"],
    );
  });

  it("adds a default PATH when the image has none", () => {
    assert.deepEqual(mergeEnv([], []), [`PATH=${DEFAULT_PATH}`]);
  });
});

describe("imageUser", () => {
  it("reads numeric uid and gid", () => {
    assert.deepEqual(imageUser("1000:1001"), { uid: 1000, gid: 1001 });
    assert.deepEqual(imageUser("1000"), { uid: 1000, gid: 0 });
  });

  it("falls back to root for names and an empty user", () => {
    assert.deepEqual(imageUser("nginx"), { uid: 0, gid: 0 });
    assert.deepEqual(imageUser(""), { uid: 0, gid: 0 });
  });
});

describe("namedImageUser", () => {
  it("is the image's USER when it names an account or a group, for the helper to resolve", () => {
    assert.equal(namedImageUser("node"), "node");
    assert.equal(namedImageUser("app:staff"), "app:staff");
    assert.equal(namedImageUser("1000:staff"), "1000:staff");
    assert.equal(namedImageUser("1000"), undefined);
    assert.equal(namedImageUser("1000:1001"), undefined);
    assert.equal(namedImageUser(""), undefined);
  });
});

describe("sandboxCgroupsPath", () => {
  it("puts the sandbox under the parent as an absolute path", () => {
    assert.equal(sandboxCgroupsPath("/kubepods/fast-sandbox", "sb-1"), "/kubepods/fast-sandbox/sb-1");
    assert.equal(sandboxCgroupsPath("fast-sandbox/", "sb-1"), "/fast-sandbox/sb-1");
    assert.equal(sandboxCgroupsPath("/", "sb-1"), "/sb-1");
  });
});

describe("buildOciSpec", () => {
  it("takes cwd, user, env and hostname from the sandbox and the image", () => {
    const spec = buildOciSpec(sandbox({ env: [{ name: "A", value: "1" }] }), image, options);
    assert.equal(spec.process.cwd, "/srv");
    assert.deepEqual(spec.process.user, { uid: 101, gid: 102 });
    assert.ok(spec.process.env.includes("A=1"));
    assert.equal(spec.hostname, "web");
    assert.equal(buildOciSpec(sandbox({ workingDir: "/work" }), image, options).process.cwd, "/work");
    assert.equal(buildOciSpec(sandbox(), { ...image, workingDir: "" }, options).process.cwd, "/");
  });

  it("drops privileges: no new privileges, a small capability set, nothing inheritable", () => {
    const { process } = buildOciSpec(sandbox({ runtimeType: "gvisor" }), image, options);
    assert.equal(process.noNewPrivileges, true);
    assert.deepEqual(process.capabilities.bounding, [...DEFAULT_CAPABILITIES]);
    assert.deepEqual(process.capabilities.effective, [...DEFAULT_CAPABILITIES]);
    assert.deepEqual(process.capabilities.permitted, [...DEFAULT_CAPABILITIES]);
    assert.deepEqual(process.capabilities.inheritable, []);
    assert.deepEqual(process.capabilities.ambient, []);
    assert.ok(!process.capabilities.bounding.includes("CAP_SYS_ADMIN"));
    assert.ok(!process.capabilities.bounding.includes("CAP_MKNOD"), "no device nodes: one in a directory the host reads is the host's");
    assert.deepEqual(process.rlimits, [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }]);
  });

  it("gives no raw sockets to a sandbox in the agent's network (Shared runc), only to one with a network of its own", () => {
    const shared = buildOciSpec(sandbox(), image, options).process.capabilities;
    for (const set of [shared.bounding, shared.effective, shared.permitted]) {
      assert.deepEqual(
        set,
        DEFAULT_CAPABILITIES.filter((capability) => capability !== "CAP_NET_RAW"),
      );
    }
    const isolated = buildOciSpec(sandbox(), image, { ...options, isolatedNetwork: { netnsPath: "/run/netns/fsb-1", files: [] } }).process.capabilities;
    assert.ok(isolated.bounding.includes("CAP_NET_RAW"));
  });

  it("shares the host network for runc sandboxes and bind-mounts the host's DNS files", () => {
    const spec = buildOciSpec(sandbox(), image, options);
    assert.deepEqual(spec.linux.namespaces.map((namespace) => namespace.type).sort(), ["cgroup", "ipc", "mount", "pid", "uts"]);
    assert.ok(spec.mounts.some((mount) => mount.destination === "/etc/resolv.conf" && mount.options.includes("ro")));
  });

  it("puts a Shared runc sandbox into its agent's own network namespace, with the agent's DNS files, when the agent has one (a Pod)", () => {
    const sharedNetwork = {
      netnsPath: "/run/netns/fsb-agent-pool-0",
      files: [{ source: "/state/shared-network/resolv.conf", destination: "/etc/resolv.conf" }],
    };
    const spec = buildOciSpec(sandbox(), image, { ...options, sharedNetwork });
    assert.deepEqual(
      spec.linux.namespaces.filter((namespace) => namespace.type === "network"),
      [{ type: "network", path: "/run/netns/fsb-agent-pool-0" }],
    );
    const resolv = spec.mounts.filter((mount) => mount.destination === "/etc/resolv.conf");
    assert.deepEqual(
      resolv.map((mount) => mount.source),
      ["/state/shared-network/resolv.conf"],
      "the agent's file, not the host's",
    );
    assert.ok(!spec.process.capabilities.bounding.includes("CAP_NET_RAW"), "still the agent's network: no raw sockets");
    // gVisor and isolated sandboxes keep a network of their own.
    const gvisor = buildOciSpec(sandbox({ runtimeType: "gvisor" }), image, { ...options, sharedNetwork });
    assert.deepEqual(
      gvisor.linux.namespaces.filter((namespace) => namespace.type === "network"),
      [{ type: "network" }],
    );
  });

  it("gives gVisor sandboxes their own network namespace and no host files", () => {
    const spec = buildOciSpec(sandbox({ runtimeType: "gvisor" }), image, options);
    assert.ok(spec.linux.namespaces.some((namespace) => namespace.type === "network"));
    assert.ok(!spec.mounts.some((mount) => mount.destination === "/etc/resolv.conf"));
  });

  it("puts an isolated sandbox, runc or gVisor, into its prepared network namespace with its own DNS and hosts files", () => {
    for (const runtimeType of ["container", "gvisor"] as const) {
      const spec = buildOciSpec(sandbox({ runtimeType }), image, {
        ...options,
        isolatedNetwork: {
          netnsPath: "/run/netns/fsb-fsb0-0123456789ab",
          files: [
            { destination: "/etc/hosts", source: "/state/run/sb-1/etc/hosts" },
            { destination: "/etc/resolv.conf", source: "/state/run/sb-1/etc/resolv.conf" },
          ],
        },
      });
      assert.deepEqual(
        spec.linux.namespaces.filter((namespace) => namespace.type === "network"),
        [{ type: "network", path: "/run/netns/fsb-fsb0-0123456789ab" }],
      );
      const networkFiles = spec.mounts.filter((mount) => mount.destination.startsWith("/etc/"));
      assert.deepEqual(
        networkFiles.map((mount) => `${mount.destination} ${mount.source} ${mount.options.includes("ro") ? "ro" : "rw"}`),
        ["/etc/hosts /state/run/sb-1/etc/hosts ro", "/etc/resolv.conf /state/run/sb-1/etc/resolv.conf ro"],
      );
    }
  });

  it("turns resources into cgroup limits under the given cgroups path", () => {
    const spec = buildOciSpec(
      sandbox({
        resources: { cpuMillis: 250, memoryBytes: 64 * 1024 * 1024, pids: 100 },
      }),
      image,
      options,
    );
    assert.deepEqual(spec.linux.resources.cpu, {
      quota: 25_000,
      period: 100_000,
    });
    assert.deepEqual(spec.linux.resources.memory, { limit: 64 * 1024 * 1024 });
    assert.deepEqual(spec.linux.resources.pids, { limit: 100 });
    const swapAccounted = buildOciSpec(sandbox({ resources: { memoryBytes: 64 * 1024 * 1024 } }), image, { ...options, swapAccounting: true });
    assert.deepEqual(swapAccounted.linux.resources.memory, { limit: 64 * 1024 * 1024, swap: 64 * 1024 * 1024 }, "no swap beyond the limit");
    assert.equal(spec.linux.cgroupsPath, "/fast-sandbox/sb-1");
    assert.deepEqual(spec.linux.resources.devices, [{ allow: false, access: "rwm" }]);
  });

  it("adds gVisor's own threads to a gVisor sandbox's process limit (they count in its host cgroup, and one refused crashes the sandbox)", () => {
    const pids = (resources: { pids?: number }, runtimeType?: "gvisor") =>
      buildOciSpec(sandbox({ resources, ...(runtimeType ? { runtimeType } : {}) }), image, options).linux.resources.pids;
    assert.deepEqual(pids({ pids: 64 }, "gvisor"), { limit: 64 + GVISOR_PIDS_HEADROOM });
    assert.deepEqual(pids({}, "gvisor"), { limit: DEFAULT_SANDBOX_PIDS_LIMIT + GVISOR_PIDS_HEADROOM });
    assert.deepEqual(pids({ pids: 64 }), { limit: 64 }, "runc: the pool's limit as it is");
  });

  it("writes a CPU limit above the agent's bound as the bound (cgroup v1 refuses a child's quota above its parent's)", () => {
    const cpu = (cpuMillis: number) => buildOciSpec(sandbox({ resources: { cpuMillis } }), image, { ...options, cpuBoundMillis: 4000 }).linux.resources.cpu;
    assert.deepEqual(cpu(8000), { quota: 400_000, period: 100_000 });
    assert.deepEqual(cpu(500), { quota: 50_000, period: 100_000 });
  });

  it("sets no CPU or memory limit when resources are absent, and always a process limit (a fork bomb must not reach the host)", () => {
    const { resources } = buildOciSpec(sandbox(), image, options).linux;
    assert.equal(resources.cpu, undefined);
    assert.equal(resources.memory, undefined);
    assert.deepEqual(resources.pids, { limit: DEFAULT_SANDBOX_PIDS_LIMIT });
    assert.deepEqual(buildOciSpec(sandbox({ resources: { pids: 0 } }), image, options).linux.resources.pids, { limit: DEFAULT_SANDBOX_PIDS_LIMIT });
  });

  it("masks kernel interfaces, makes /proc/sys read-only and mounts the standard filesystems", () => {
    const spec = buildOciSpec(sandbox(), image, options);
    for (const path of ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/proc/acpi"]) {
      assert.ok(spec.linux.maskedPaths.includes(path), path);
    }
    for (const path of ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]) {
      assert.ok(spec.linux.readonlyPaths.includes(path), path);
    }
    const destinations = spec.mounts.map((mount) => mount.destination);
    for (const destination of ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]) {
      assert.ok(destinations.includes(destination), destination);
    }
    assert.ok(spec.mounts.find((mount) => mount.destination === "/sys")?.options.includes("ro"));
  });

  it("gives every sandbox, runc or gVisor, a cgroup namespace and its own cgroup read-only at /sys/fs/cgroup", () => {
    for (const runtimeType of ["container", "gvisor"] as const) {
      for (const prepared of [false, true]) {
        const helper = { binaryPath: "/opt/fsb/helper", runDir: "/state/run/sb-1", prepared };
        const spec = buildOciSpec(sandbox({ runtimeType, resources: { memoryBytes: 512 * 2 ** 20 } }), image, { ...options, helper });
        const label = `${runtimeType}${prepared ? " prepared" : ""}`;
        assert.deepEqual(
          spec.linux.namespaces.filter((namespace) => namespace.type === "cgroup"),
          [{ type: "cgroup" }],
          `${label}: a new namespace, never the host's by path`,
        );
        const cgroup = spec.mounts.filter((mount) => mount.destination === "/sys/fs/cgroup");
        assert.deepEqual(cgroup, [{ destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["ro", "nosuid", "noexec", "nodev"] }], label);
        // Below /sys, so mounted after it; no option only one cgroup version knows (v1 hosts run it too).
        const destinations = spec.mounts.map((mount) => mount.destination);
        assert.ok(destinations.indexOf("/sys") < destinations.indexOf("/sys/fs/cgroup"), label);
      }
    }
    // Each spec has a mount of its own: a change to one reaches neither the next nor CGROUP_MOUNT.
    const first = buildOciSpec(sandbox(), image, options);
    first.mounts.find((mount) => mount.destination === "/sys/fs/cgroup")?.options.push("rw");
    assert.deepEqual(CGROUP_MOUNT.options, ["ro", "nosuid", "noexec", "nodev"]);
    assert.deepEqual(buildOciSpec(sandbox(), image, options).mounts.find((mount) => mount.destination === "/sys/fs/cgroup")?.options, [
      "ro",
      "nosuid",
      "noexec",
      "nodev",
    ]);
    // The shim anchor runs only the helper's pause: it needs no view of cgroups.
    const anchor = buildAnchorSpec("/opt/fsb/helper", "agent-1", "/fast-sandbox/anchor");
    assert.ok(!anchor.linux.namespaces.some((namespace) => namespace.type === "cgroup"));
    assert.ok(!anchor.mounts.some((mount) => mount.type === "cgroup"));
  });

  it("installs the default seccomp profile that denies dangerous syscalls", () => {
    const seccomp = buildOciSpec(sandbox(), image, options).linux.seccomp;
    assert.ok(seccomp);
    assert.ok(seccomp.architectures.includes("SCMP_ARCH_X86_64"));
    const denied = new Set(seccomp.syscalls.filter((rule) => rule.action === "SCMP_ACT_ERRNO" && !rule.args).flatMap((rule) => rule.names));
    for (const name of ["kexec_load", "init_module", "mount", "ptrace", "bpf", "unshare", "setns", "open_by_handle_at", "keyctl"]) {
      assert.ok(denied.has(name), name);
    }
    assert.equal(new Set(DENIED_SYSCALLS).size, DENIED_SYSCALLS.length);
    // io_uring as on a kernel without it (ENOSYS: runtimes fall back), not EPERM.
    const ioUring = seccomp.syscalls.find((rule) => rule.names.includes("io_uring_setup"));
    assert.deepEqual(ioUring && { names: ioUring.names, action: ioUring.action, errnoRet: ioUring.errnoRet }, {
      names: ["io_uring_setup", "io_uring_enter", "io_uring_register"],
      action: "SCMP_ACT_ERRNO",
      errnoRet: 38,
    });
  });

  it("refuses vsock sockets (they pass by the network namespace), and leaves clone3 to a gVisor sandbox's kernel (Debian's runsc would make it EPERM: no threads)", () => {
    const rules = (runtimeType: "container" | "gvisor") => buildOciSpec(sandbox({ runtimeType }), image, options).linux.seccomp?.syscalls ?? [];
    for (const runtimeType of ["container", "gvisor"] as const) {
      const vsock = rules(runtimeType).find((rule) => rule.names.includes("socket"));
      assert.deepEqual(vsock && { action: vsock.action, errnoRet: vsock.errnoRet, args: vsock.args }, {
        action: "SCMP_ACT_ERRNO",
        errnoRet: 97,
        args: [{ index: 0, value: 40, op: "SCMP_CMP_EQ" }],
      });
    }
    assert.deepEqual(
      rules("container").find((rule) => rule.names.includes("clone3")),
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
      "runc: ENOSYS, glibc falls back to clone, whose flags the filter sees",
    );
    assert.equal(
      rules("gvisor").find((rule) => rule.names.includes("clone3")),
      undefined,
    );
    assert.ok(
      rules("gvisor").some((rule) => rule.names.includes("clone") && rule.args),
      "clone with CLONE_NEWUSER stays refused",
    );
  });

  it("puts the sandbox into the agent's shim group", () => {
    assert.equal(buildOciSpec(sandbox(), image, options).annotations[SHIM_GROUP_ANNOTATION], "agent-1");
  });

  it("cuts the hostname to 63 characters", () => {
    assert.equal(buildOciSpec(sandbox({ name: "x".repeat(80) }), image, options).hostname.length, 63);
  });
});

describe("buildOciSpec with the helper", () => {
  const helper = { helper: { binaryPath: "/opt/fsb-helper", runDir: "/state/run/sb-1" }, ...options };

  it("runs the helper in / and hands it the working directory before the user's command", () => {
    const spec = buildOciSpec(sandbox({ command: ["sh", "-c", "-- pwd"], workingDir: "/work" }), image, helper);
    assert.equal(spec.process.cwd, "/");
    assert.deepEqual(spec.process.args, [HELPER_BINARY, "--workdir", "/work", "--", "sh", "-c", "-- pwd"]);
    assert.deepEqual(buildOciSpec(sandbox(), image, helper).process.args.slice(0, 5), [HELPER_BINARY, "--workdir", "/srv", "--", "/docker-entrypoint.sh"]);
    assert.deepEqual(buildOciSpec(sandbox(), { ...image, workingDir: "" }, helper).process.args.slice(0, 3), [HELPER_BINARY, "--workdir", "/"]);
  });

  it("runs process 1 as root and tells the helper to become a named USER of the image (never root for the command)", () => {
    const named = buildOciSpec(sandbox({ command: ["id"], workingDir: "/work" }), { ...image, user: "nobody" }, helper);
    assert.deepEqual(named.process.user, { uid: 0, gid: 0 });
    assert.deepEqual(named.process.args, [HELPER_BINARY, "--workdir", "/work", "--user", "nobody", "--", "id"]);
    const prepared = buildOciSpec(sandbox(), { ...image, user: "app:staff" }, { ...helper, helper: { ...helper.helper, prepared: true } });
    assert.deepEqual(prepared.process.args, [HELPER_BINARY, "--prepared", "--user", "app:staff"]);
    // A numeric USER stays the runtime's, as before.
    const numeric = buildOciSpec(sandbox({ command: ["id"] }), image, helper);
    assert.deepEqual(numeric.process.user, { uid: 101, gid: 102 });
    assert.ok(!numeric.process.args.includes("--user"));
  });

  it("mounts the helper read-only and its run directory writable but not executable", () => {
    const { mounts } = buildOciSpec(sandbox(), image, helper);
    const binary = mounts.find((mount) => mount.destination === HELPER_BINARY);
    const run = mounts.find((mount) => mount.destination === HELPER_RUN_DIR);
    assert.equal(binary?.source, "/opt/fsb-helper");
    assert.ok(binary?.options.includes("ro"));
    assert.equal(run?.source, "/state/run/sb-1");
    assert.ok(run?.options.includes("rw") && run.options.includes("noexec"));
  });

  it("gives the helper's directory a mount of its own, before the files in it, so the sandbox cannot rename it away", () => {
    const destinations = buildOciSpec(sandbox(), image, helper).mounts.map((mount) => mount.destination);
    const dir = destinations.indexOf(HELPER_DIR);
    assert.ok(dir >= 0, "a mount at the helper's directory");
    assert.ok(dir < destinations.indexOf(HELPER_BINARY) && dir < destinations.indexOf(HELPER_RUN_DIR));
    assert.ok(!buildOciSpec(sandbox(), image, options).mounts.some((mount) => mount.destination === HELPER_DIR), "none without a helper");
  });
});

describe("buildOciSpec with the in-sandbox daemon", () => {
  const isolatedNetwork = { netnsPath: "/run/netns/fsb-1", files: [] };
  const withEnvd = { helper: { binaryPath: "/opt/fsb-helper", runDir: "/state/run/sb-1", envdPath: "/opt/fsb-envd" }, ...options };

  it("mounts the daemon read-only beside the helper and names it to the helper, in a sandbox with its own network", () => {
    const spec = buildOciSpec(sandbox({ command: ["sleep", "9"], workingDir: "/work" }), image, { ...withEnvd, isolatedNetwork });
    assert.deepEqual(spec.process.args, [HELPER_BINARY, "--workdir", "/work", "--envd", ENVD_BINARY, "--", "sleep", "9"]);
    const daemon = spec.mounts.find((mount) => mount.destination === ENVD_BINARY);
    assert.equal(daemon?.source, "/opt/fsb-envd");
    assert.ok(daemon?.options.includes("ro"));
    assert.equal(sandboxWorkingDir(spec), "/work");
  });

  it("leaves it out of a sandbox that shares the agent's network, where its port would collide", () => {
    const spec = buildOciSpec(sandbox({ command: ["sleep", "9"] }), image, withEnvd);
    assert.ok(!spec.process.args.includes("--envd"));
    assert.equal(
      spec.mounts.find((mount) => mount.destination === ENVD_BINARY),
      undefined,
    );
  });
});

describe("sandboxNamedUser and execAsArgs", () => {
  const helper = { helper: { binaryPath: "/h", runDir: "/r" }, ...options };

  it("is the image's named USER of a cold or prepared sandbox, which its execs run as through the helper", () => {
    const cold = buildOciSpec(sandbox({ command: ["id"] }), { ...image, user: "nobody" }, helper);
    assert.equal(sandboxNamedUser(cold), "nobody");
    const prepared = buildOciSpec(sandbox(), { ...image, user: "app:staff" }, { ...helper, helper: { ...helper.helper, prepared: true } });
    assert.equal(sandboxNamedUser(prepared), "app:staff");
    assert.deepEqual(execAsArgs("app:staff", ["id", "-u"]), [HELPER_BINARY, "--exec-as", "app:staff", "--", "id", "-u"]);
  });

  it("is none for a numeric USER, without the helper, and for a command that merely says --user", () => {
    assert.equal(sandboxNamedUser(buildOciSpec(sandbox({ command: ["id"] }), image, helper)), undefined);
    assert.equal(sandboxNamedUser(buildOciSpec(sandbox({ command: ["id"] }), { ...image, user: "nobody" }, options)), undefined);
    assert.equal(sandboxNamedUser(buildOciSpec(sandbox({ command: ["useradd", "--user", "x"] }), image, helper)), undefined);
  });
});

describe("execProcessOf", () => {
  const helper = { helper: { binaryPath: "/h", runDir: "/r" }, ...options };
  const named = buildOciSpec(sandbox({ command: ["id"], workingDir: "/work" }), { ...image, user: "nobody" }, helper);

  it("runs as the image's named USER through the helper by default, with the request's env over the sandbox's and its cwd", () => {
    const process = execProcessOf(named, { command: ["id", "-u"], env: [{ name: "A", value: "1" }] }, true);
    assert.deepEqual(process.args, [HELPER_BINARY, "--exec-as", "nobody", "--", "id", "-u"]);
    assert.equal(process.terminal, false);
    assert.equal(process.cwd, "/work");
    assert.ok(process.env.includes("A=1"));
    assert.deepEqual(process.user, named.process.user);
    assert.equal(execProcessOf(named, { command: ["pwd"], workingDir: "/tmp" }, true).cwd, "/tmp");
  });

  it("runs as the requested user (root too) through the helper, which starts as root", () => {
    for (const user of ["root", "0", "app:staff", "1000:1000"]) {
      const process = execProcessOf(named, { command: ["id"], user }, true);
      assert.deepEqual(process.args, [HELPER_BINARY, "--exec-as", user, "--", "id"], user);
      assert.deepEqual(process.user, { uid: 0, gid: 0 }, user);
    }
    // The sandbox's own safety settings stay.
    const process = execProcessOf(named, { command: ["id"], user: "root" }, true);
    assert.equal(process.noNewPrivileges, named.process.noNewPrivileges);
    assert.deepEqual(process.capabilities, named.process.capabilities);
  });

  it("takes a numeric user directly where the helper cannot switch users, and refuses a name there", () => {
    assert.deepEqual(execProcessOf(named, { command: ["id"], user: "1000:50" }, false).user, { uid: 1000, gid: 50 });
    assert.deepEqual(execProcessOf(named, { command: ["id"], user: "0" }, false), {
      ...execProcessOf(named, { command: ["id"] }, false),
      user: { uid: 0, gid: 0 },
    });
    assert.deepEqual(execProcessOf(named, { command: ["id"] }, false).args, ["id"]);
    assert.throws(() => execProcessOf(named, { command: ["id"], user: "root" }, false), FailedPreconditionError);
  });

  it("refuses a user that is not one, naming the field", () => {
    assert.throws(
      () => execProcessOf(named, { command: ["id"], user: "a:b:c" }, true),
      (error: unknown) => error instanceof ValidationError && error.field === "user",
    );
  });
});

describe("sandboxWorkingDir", () => {
  it("is the helper's --workdir, which execs default to", () => {
    const spec = buildOciSpec(sandbox({ workingDir: "/work" }), image, { helper: { binaryPath: "/h", runDir: "/r" }, ...options });
    assert.equal(sandboxWorkingDir(spec), "/work");
  });

  it("is the process's cwd without the helper, and for sandboxes created before the helper took --workdir", () => {
    assert.equal(sandboxWorkingDir(buildOciSpec(sandbox({ workingDir: "/work" }), image, options)), "/work");
    assert.equal(
      sandboxWorkingDir({ process: { ...buildOciSpec(sandbox(), image, options).process, args: [HELPER_BINARY, "sleep", "1"], cwd: "/old" } }),
      "/old",
    );
    assert.equal(sandboxWorkingDir({ process: { ...buildOciSpec(sandbox(), image, options).process, cwd: "" } }), "/");
  });
});
