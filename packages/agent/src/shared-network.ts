/**
 * The network a `Shared` runc sandbox joins: its agent's own. A runc sandbox whose spec names no
 * network namespace stays in the namespace of the runtime that starts it — containerd's, the host's.
 * That is the agent's network when the agent runs on the host (the embedded mode), but not when it
 * runs in a Pod of its own network (the Kubernetes mode): there the sandbox would be root in the
 * node's network (its cloud metadata address, its loopback services, its ports), and not where the
 * proxy reaches it (the agent Pod's IP). So an agent in a network of its own exposes that namespace
 * under a name iproute2 knows (`/run/netns/fsb-agent-<agent>`, `ip netns attach`), which containerd
 * sees as the agent does (the directory is shared both ways with the host), and its Shared runc
 * sandboxes join it, with copies of the agent's own resolv.conf and hosts (the host's would point
 * at the node's resolvers, which the Pod's network may not reach).
 *
 * The name is removed when the agent stops (its sandboxes keep the namespace alive while they run);
 * one left by a crash is replaced by the next agent of the same name.
 */
import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { FsbError } from "@fast-sandbox/api/core";

const run = promisify(execFile);

/** Where iproute2 names network namespaces. */
const NETNS_DIR = "/run/netns";
/** The agent's resolver files its Shared sandboxes see. */
const NETWORK_FILES = ["/etc/resolv.conf", "/etc/hosts"] as const;

/** A network namespace for Shared runc sandboxes to join, and the files they see it through. */
export interface SharedNetwork {
  /** The namespace's path, as containerd (on the host) and the agent both see it. */
  netnsPath: string;
  /** Bind mounts (read-only) of the agent's resolver files: a host path, and where a sandbox sees it. */
  files: { source: string; destination: string }[];
}

export interface SharedNetworkOptions {
  agentName: string;
  /** The agent's state directory (a host path: containerd bind-mounts the copies from it). */
  stateDir: string;
  /** The namespace to expose. @default this process's, `/proc/self/ns/net` */
  ownNetns?: string;
  /** The process whose namespace `ip netns attach` names. @default this process */
  pid?: number;
}

/** The name under which the agent's network namespace is exposed. */
export function sharedNetworkName(agentName: string): string {
  return `fsb-agent-${agentName}`;
}

/**
 * Exposes this process's network namespace for its Shared sandboxes (idempotent: a name already
 * on this namespace is kept, one on another — a previous Pod's — is replaced), and copies its
 * resolver files beside its state.
 */
export async function exposeSharedNetwork(options: SharedNetworkOptions): Promise<SharedNetwork> {
  const name = sharedNetworkName(options.agentName);
  const netnsPath = join(NETNS_DIR, name);
  const own = options.ownNetns ?? "/proc/self/ns/net";
  if (existsSync(netnsPath) && !sameNamespace(netnsPath, own)) await ip(["netns", "delete", name]);
  if (!existsSync(netnsPath)) await ip(["netns", "attach", name, String(options.pid ?? process.pid)]);
  if (!sameNamespace(netnsPath, own)) {
    throw new FsbError("internal", `${netnsPath} does not name the agent's network namespace after 'ip netns attach ${name}'`);
  }
  const directory = join(options.stateDir, "shared-network");
  mkdirSync(directory, { recursive: true, mode: 0o755 });
  const files = NETWORK_FILES.filter((file) => existsSync(file)).map((destination) => {
    const source = join(directory, destination.slice(destination.lastIndexOf("/") + 1));
    copyFileSync(destination, source);
    return { source, destination };
  });
  return { netnsPath, files };
}

/** Removes the name (the namespace lives on while anything runs in it). */
export async function withdrawSharedNetwork(agentName: string): Promise<void> {
  const name = sharedNetworkName(agentName);
  if (existsSync(join(NETNS_DIR, name))) await ip(["netns", "delete", name]);
}

/** Whether two paths are the same namespace (nsfs: same device and inode). */
function sameNamespace(a: string, b: string): boolean {
  try {
    const first = statSync(a);
    const second = statSync(b);
    return first.dev === second.dev && first.ino === second.ino;
  } catch {
    return false;
  }
}

async function ip(args: string[]): Promise<void> {
  try {
    await run("ip", args, { timeout: 10_000 });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new FsbError("internal", `ip ${args.join(" ")} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}
