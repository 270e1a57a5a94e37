/**
 * gVisor through containerd without a runsc shim.
 *
 * Debian ships no `containerd-shim-runsc-v1`, so gVisor sandboxes run under the runc v2 shim
 * with `BinaryName` pointing at runsc (runc options, `containerd.runc.v1.Options`). runsc's
 * default network mode builds the sandbox's network from the interfaces of the network namespace
 * it runs in, and it refuses the host's namespace. An empty netns in the OCI spec is not enough:
 * unlike runc, runsc does not create a namespace for a `network` entry without a path, it stays
 * in the caller's (the shim's, i.e. the host's) namespace and fails with "cannot run with network
 * enabled in root network namespace". The shim passes no extra flags to its binary, so the
 * BinaryName is a small wrapper, one per network mode:
 *
 * - shared: `runsc-network-none` adds `--network=none` (loopback only inside the sandbox);
 * - isolated: the sandbox names its prepared namespace by path (network/), which runsc joins and
 *   takes its interfaces, address and routes from (its own netstack, `--network=sandbox`).
 *   `runsc-own-netns` works around gVisor issue #10704: runsc releases before its fix (Debian 12's
 *   among them) tell the host's namespace from others by whether /proc/sys/net/core/rmem_default
 *   exists, and Linux 6.x shows that file in every namespace, so they refuse every namespace. The
 *   wrapper runs runsc in a mount namespace of its own where /proc/sys/net is an empty tmpfs: the
 *   check then answers "not the host's", which for a sandbox with its own namespace is the truth.
 *   Nothing else changes (the sandbox has its own /proc; netstack reads no host network sysctl),
 *   and a fixed runsc is not affected by it.
 *
 * Both add `--overlay2=root:memory`: the sandbox's root file system changes live in an overlay in
 * its own memory (never in the host snapshot), so a checkpoint carries them and every copy restored
 * from it starts from the same read-only image snapshot (checkpoints.ts). Newer runsc releases do
 * this by default (`root:self`); Debian 12's writes through to the snapshot unless told.
 *
 * Both add `--host-fifo=open`: a prepared instance's helper waits on the FIFO `run/claim` of its
 * run directory (prepared-instances.ts), a host FIFO, which runsc refuses to open otherwise. The
 * sandbox sees no host FIFO but those of its own mounts: its run directory's (the claim FIFO is
 * removed once it served; a FIFO made inside the sandbox is the Sentry's own, not the host's) and
 * any in its image's layers, whose other end nothing on the host holds. A task stuck opening one
 * ignores the Sentry's SIGKILL and `runsc kill --all` hangs on it: a delete then kills the
 * sandbox's host processes through its cgroup (containerd-runtime.ts, stopTask).
 *
 * Both run runsc in the network namespace `fsb-runsc` (`/run/netns/fsb-runsc`, made by the agent's
 * start and, should it be gone, by the wrapper), never in the shim's, the host's: Debian 12's runsc
 * serves each sandbox's control API (urpc: run a process as root with every capability, signal,
 * checkpoint to a descriptor the caller passes) on an abstract unix socket, `@runsc-sandbox.<id>`,
 * which has no file permissions and lives in the network namespace of whoever ran `runsc create`;
 * it lets in root and the Sentry's uid (65534, nobody). In the host's namespace every root process
 * of it could take any gVisor sandbox over, a runc sandbox in the host's network (Shared, embedded)
 * included, and so could anything running as nobody. In `fsb-runsc` only runsc itself is: every
 * runsc command of every sandbox goes through these wrappers, so each finds its sandbox's socket
 * there. The sandbox's own network is unchanged (an Isolated one joins the namespace its spec names;
 * `--network=none` has none). A current runsc puts the socket in a file of its state directory
 * (root's) instead, and is as happy in `fsb-runsc`.
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** runsc's flag that keeps a sandbox's root file system changes in its memory. */
export const ROOT_OVERLAY_FLAG = "--overlay2=root:memory";

/** runsc's flag that lets a sandbox open the host FIFOs of its mounts (the claim FIFO of a prepared instance). */
export const HOST_FIFO_FLAG = "--host-fifo=open";

/**
 * runsc's flag that applies the spec's seccomp profile to the sandbox's processes, inside its kernel:
 * without it runsc ignores the profile ("Seccomp spec is being ignored"), and untrusted code would
 * have every syscall the Sentry implements (unshare of a user namespace, keyctl, ptrace…).
 */
export const OCI_SECCOMP_FLAG = "--oci-seccomp";

/** The network namespace runsc runs in (see the file comment); iproute2's name. */
export const RUNSC_NETNS = "fsb-runsc";

/**
 * The wrapper's first lines: makes `netnsPath` if it is not there (`ip netns add`, for a namespace
 * in iproute2's directory; two at once: one of them makes it), then the prefix that enters it.
 */
function enterRunscNetns(netnsPath: string): { setup: string; prefix: string } {
  const path = shellQuote(netnsPath);
  const name = shellQuote(netnsPath.split("/").at(-1) ?? "");
  return {
    setup: `[ -e ${path} ] || ip netns add ${name} 2>/dev/null || [ -e ${path} ] || { echo "fast-sandbox: runsc's network namespace ${netnsPath} is missing and could not be made" >&2; exit 1; }
`,
    prefix: `nsenter --net=${path} `,
  };
}

/** Writes (atomically, only when it changed) `<stateDir>/runsc-network-none` and returns its path. */
export function writeRunscWrapper(stateDir: string, runscPath: string, netnsPath = `/run/netns/${RUNSC_NETNS}`): string {
  const netns = enterRunscNetns(netnsPath);
  return writeWrapper(
    join(stateDir, "runsc-network-none"),
    `${netns.setup}exec ${netns.prefix}${shellQuote(runscPath)} --network=none ${ROOT_OVERLAY_FLAG} ${HOST_FIFO_FLAG} ${OCI_SECCOMP_FLAG} "$@"`,
  );
}

/** Writes (atomically, only when it changed) `<stateDir>/runsc-own-netns` and returns its path. */
export function writeRunscOwnNetnsWrapper(stateDir: string, runscPath: string, netnsPath = `/run/netns/${RUNSC_NETNS}`): string {
  const netns = enterRunscNetns(netnsPath);
  const hide = 'mount -t tmpfs -o size=4k,mode=0555 fsb-hidden /proc/sys/net && exec "$0" "$@"';
  return writeWrapper(
    join(stateDir, "runsc-own-netns"),
    `${netns.setup}exec ${netns.prefix}unshare --mount --propagation slave /bin/sh -c ${shellQuote(hide)} ${shellQuote(runscPath)} ${ROOT_OVERLAY_FLAG} ${HOST_FIFO_FLAG} ${OCI_SECCOMP_FLAG} "$@"`,
  );
}

function writeWrapper(path: string, command: string): string {
  const script = `#!/bin/sh\n# Written by the Fast Sandbox agent (gvisor-binary.ts).\n${command}\n`;
  let current: string | undefined;
  try {
    current = readFileSync(path, "utf8");
  } catch {
    current = undefined;
  }
  if (current !== script) {
    // Rename keeps a shim that starts right now from executing a half-written file.
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, script, { mode: 0o755 });
    chmodSync(temporary, 0o755);
    renameSync(temporary, path);
  }
  return path;
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
