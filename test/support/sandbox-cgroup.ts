/**
 * A sandbox's cgroup on the host, for tests that read what the kernel enforces on it.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";

/**
 * The sandbox's cgroup directory in `hierarchy` (a v1 controller's mount, or the v2 root), found by
 * its container id under `cgroupRoot`: the sandbox id, or the prepared instance's id when the
 * sandbox claimed one.
 */
export function sandboxCgroup(hierarchy: string, cgroupRoot: string, containerId: string): string {
  const search = (directory: string, depth: number): string | undefined => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const path = join(directory, entry.name);
      if (entry.name === containerId) return path;
      const found = depth > 0 ? search(path, depth - 1) : undefined;
      if (found) return found;
    }
    return undefined;
  };
  const found = search(join(hierarchy, cgroupRoot), 3);
  if (!found) throw new Error(`no cgroup of container ${containerId} under ${join(hierarchy, cgroupRoot)}`);
  return found;
}
