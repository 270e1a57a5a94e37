/**
 * The Node.js flags every control plane process runs with: `fsb up` (foreground through the `fsb`
 * launcher's `#!/usr/bin/env -S node …` line and `npm run up`, detached through its own spawn), the
 * controller image's ENTRYPOINT, and `bench scale`'s control plane. They are given on the command
 * line because V8 sizes its heap when the process starts: `v8.setFlagsFromString` later changes
 * nothing. `control-plane-node-flags.spec.ts` checks that each of those places says the same.
 *
 * `--max-semi-space-size=4` caps V8's young generation at 2 × 4 MiB semi-spaces (Node 20's default
 * is 16 MiB each on 64-bit). A burst of creates grows it to its cap, and what it grew to stays
 * resident: at 10,000 sandboxes over 500 agents the uncapped control plane read 198–202 MiB RSS
 * right after the burst against 186 MiB capped (docs/PERFORMANCE.md). The price is more frequent
 * scavenges, each of a smaller space; its cost on a create is measured there too.
 */
export const CONTROL_PLANE_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=4"]);
