/**
 * How a control plane process is started: the Node.js flags and environment every one runs with —
 * `fsb up` (foreground: `npm run up` passes them, a plain `fsb up` runs itself again with them;
 * detached: its own spawn), the controller image (ENTRYPOINT, ENV), and the benchmarks' control
 * planes. They must be there when the process starts: V8 sizes its heap then (a later
 * `v8.setFlagsFromString` changes nothing) and glibc reads its malloc settings then.
 * `control-plane-process.spec.ts` checks that each copy outside TypeScript says the same.
 *
 * At 10,000 sandboxes over 500 agents (`bench scale`, docs/PERFORMANCE.md) they keep the control
 * plane's RSS under 200 MB; without them a burst of creates leaves it at ~198–202 MiB:
 * - `--max-semi-space-size=4` caps V8's young generation at 2 × 4 MiB semi-spaces (Node 20's default
 *   is 16 MiB each on 64-bit): a burst grows it to its cap, and what it grew to stays resident. The
 *   price is more frequent, smaller scavenges; no cost on a create was measurable.
 * - `MALLOC_ARENA_MAX=2` keeps glibc from growing an arena per thread that allocates (up to 8 per
 *   core), whose freed memory stays mapped. An operator's own value wins.
 *
 * Only the control plane: the CLI's other commands start without the flags (any V8 flag makes Node
 * compile its internal modules without their built-in code cache: ~17 ms more per command).
 */
export const CONTROL_PLANE_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=4"]);

/** The control plane's environment defaults: a variable the environment already sets wins. */
export const CONTROL_PLANE_ENV: Readonly<Record<string, string>> = Object.freeze({ MALLOC_ARENA_MAX: "2" });

/** Whether a process started with `execArgv` and `nodeOptions` (NODE_OPTIONS) has every flag of CONTROL_PLANE_NODE_FLAGS. */
export function hasControlPlaneNodeFlags(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  const given = new Set([...execArgv, ...(nodeOptions ?? "").split(/\s+/).filter(Boolean)]);
  return CONTROL_PLANE_NODE_FLAGS.every((flag) => given.has(flag));
}

/** The environment of a control plane started from `env`: CONTROL_PLANE_ENV under it. */
export function controlPlaneEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...CONTROL_PLANE_ENV, ...env };
}
