/**
 * gVisor through containerd without a runsc shim.
 *
 * Debian ships no `containerd-shim-runsc-v1`, so gVisor sandboxes run under the runc v2 shim
 * with `BinaryName` pointing at runsc (runc options, `containerd.runc.v1.Options`). runsc's
 * default network mode builds the sandbox's network from the interfaces of the network namespace
 * it runs in, and it refuses the host's namespace. An empty netns in the OCI spec is not enough:
 * unlike runc, runsc does not create a namespace for a `network` entry without a path, it stays
 * in the caller's (the shim's, i.e. the host's) namespace and fails with "cannot run with network
 * enabled in root network namespace". The shim passes no extra flags to its binary, so BinaryName
 * is a two-line wrapper that adds `--network=none` (loopback only inside the sandbox, which is
 * what an isolated sandbox should get until sandboxes have their own network).
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Writes (atomically, only when it changed) `<stateDir>/runsc-network-none` and returns its path. */
export function writeRunscWrapper(stateDir: string, runscPath: string): string {
  const path = join(stateDir, "runsc-network-none");
  const script = `#!/bin/sh\n# Written by the Fast Sandbox agent (gvisor-binary.ts).\nexec ${shellQuote(runscPath)} --network=none "$@"\n`;
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
