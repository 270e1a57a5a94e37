/**
 * The default seccomp profile of a sandbox (written for Fast Sandbox, not copied from Docker).
 *
 * Choice: a denylist (defaultAction SCMP_ACT_ALLOW) of the syscalls that reach the kernel's
 * most dangerous surfaces: module loading, kexec, reboot, swap, (re)mounting and the new mount
 * API, namespace creation and joining, BPF, perf, ptrace, the kernel keyring, handle-based opens
 * (container escape via open_by_handle_at), userfaultfd, clock and time changes, raw port I/O,
 * quotas, the kernel log, and obsolete syscalls. Most of these also need capabilities the
 * sandbox does not have; the filter is the second wall. An allowlist (defaultAction
 * SCMP_ACT_ERRNO) is stricter and is the intended next step once the allowed set is tested
 * against the images users run; a denylist cannot break an unknown but harmless syscall.
 *
 * io_uring fails with ENOSYS (as on a kernel without it), so runtimes fall back to ordinary syscalls.
 *
 * clone is allowed unless it asks for a new user namespace (unprivileged user namespaces are the
 * usual privilege escalation path); clone3 passes its flags in memory seccomp cannot inspect, so it
 * fails with ENOSYS and libc falls back to clone. Not so in a gVisor sandbox's profile (runsc
 * applies it inside its own kernel, `--oci-seccomp`): Debian 12's runsc returns EPERM for every
 * errno rule, whatever its errnoRet, and glibc 2.34+ falls back to clone on ENOSYS only, so
 * pthread_create failed there (threads of Python, Node.js, Java…). Its kernel has no clone3 and
 * answers ENOSYS itself; a current runsc's has one, whose namespaces are the Sentry's own.
 *
 * socket(AF_VSOCK) fails with EAFNOSUPPORT (as on a kernel without vsock): vsock is not in the
 * network namespace, so it would reach the hypervisor's and the host's vsock services past the
 * sandbox's network and egress rules.
 */

export interface SeccompRule {
  names: string[];
  action: "SCMP_ACT_ERRNO" | "SCMP_ACT_ALLOW";
  errnoRet?: number;
  args?: {
    index: number;
    value: number;
    valueTwo?: number;
    op: "SCMP_CMP_MASKED_EQ" | "SCMP_CMP_EQ";
  }[];
}

export interface SeccompProfile {
  defaultAction: "SCMP_ACT_ALLOW" | "SCMP_ACT_ERRNO";
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: SeccompRule[];
}

const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;
const AF_VSOCK = 40;
const CLONE_NEWUSER = 0x10000000;

export const DENIED_SYSCALLS: readonly string[] = [
  // kernel code and machine state
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "create_module",
  "get_kernel_syms",
  "query_module",
  "reboot",
  "swapon",
  "swapoff",
  "acct",
  "syslog",
  "lookup_dcookie",
  "nfsservctl",
  "uselib",
  "vhangup",
  "iopl",
  "ioperm",
  "quotactl",
  // mounts and namespaces
  "mount",
  "umount2",
  "pivot_root",
  "mount_setattr",
  "move_mount",
  "open_tree",
  "fsopen",
  "fsmount",
  "fspick",
  "unshare",
  "setns",
  // kernel attack surface and other processes
  "bpf",
  "perf_event_open",
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "userfaultfd",
  "keyctl",
  "add_key",
  "request_key",
  "open_by_handle_at",
  "name_to_handle_at",
  // host clock
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  "adjtimex",
];

export const IO_URING_SYSCALLS: readonly string[] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

export interface SeccompProfileOptions {
  /** The profile of a gVisor sandbox: no clone3 rule (see the file comment). @default false */
  gvisor?: boolean;
}

export function defaultSeccompProfile(options: SeccompProfileOptions = {}): SeccompProfile {
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    syscalls: [
      {
        names: [...DENIED_SYSCALLS],
        action: "SCMP_ACT_ERRNO",
        errnoRet: EPERM,
      },
      ...(options.gvisor ? [] : [{ names: ["clone3"], action: "SCMP_ACT_ERRNO" as const, errnoRet: ENOSYS }]),
      { names: ["socket"], action: "SCMP_ACT_ERRNO", errnoRet: EAFNOSUPPORT, args: [{ index: 0, value: AF_VSOCK, op: "SCMP_CMP_EQ" }] },
      // io_uring: a large kernel attack surface (Docker and ChromeOS block it too); ENOSYS, so
      // runtimes that try it (libuv, Tokio) fall back to ordinary syscalls as on an older kernel.
      { names: [...IO_URING_SYSCALLS], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS },
      {
        names: ["clone"],
        action: "SCMP_ACT_ERRNO",
        errnoRet: EPERM,
        args: [
          {
            index: 0,
            value: CLONE_NEWUSER,
            valueTwo: CLONE_NEWUSER,
            op: "SCMP_CMP_MASKED_EQ",
          },
        ],
      },
    ],
  };
}
