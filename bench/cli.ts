/**
 * `bench cli`: how long the `fsb` command line takes of its own, on top of Node's start-up and the
 * server's work (issue 10: at most 150 ms for `fsb ls` and `fsb run`).
 *
 * Method. An in-process embedded control plane (the default pool of `fsb up`, one agent on this
 * host's containerd, a dedicated namespace) and a data directory holding its URL and token, as `fsb up`
 * leaves them, so the commands find it as they do after `fsb up`. Each round runs, in an order that
 * rotates from round to round:
 * - `node -e 0`: Node's own start-up and exit;
 * - `fsb ls`, `fsb get NAME` (of a running sandbox) and `fsb run -- sleep 3600`: the real binary,
 *   run as a user's `fsb` runs, through its `#!/usr/bin/env -S node …` line (packages/cli/bin/fsb.js,
 *   which loads the bundle `npm run build` makes; since 2026-12-06, before which the bench ran
 *   `node packages/cli/bin/fsb.js`, without env's exec and the control plane's flags of that line;
 *   `--fsb FILE` runs another entry with `node FILE`, e.g. packages/cli/dist/main.js for the
 *   unbundled program), spawned and timed from spawn to exit (wall time);
 * - the server's side of `fsb run`: the calls `fsb run` makes (get the pool for its image, create the
 *   sandbox), through the SDK (`FastSandboxClient`) in this process on a warm connection.
 * The sandboxes the round created are deleted after it, untimed. Warm-up rounds are not recorded.
 *
 * A command's own time is the median of its wall time minus the median of `node -e 0`; for `fsb run`
 * also minus the median of the SDK's create (the sandbox create is the server's time, not the CLI's).
 * The p90 column subtracts the same medians from the p90. `ls` and `get` keep their round trip to the
 * control plane (a millisecond or two; connecting is the CLI's own cost). The last line is
 * `RESULT cli_own_ms=X node_ms=Y cli_ls_own_ms=… cli_get_own_ms=… cli_run_own_ms=…`: X the median
 * over the three commands' own times (issue 10's figure: with three, the middle one — so one slow
 * command does not show in it, hence each command's own time after it), Y the median of `node -e 0`.
 */
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { destination, pino } from "pino";
import { defaultPool, startEmbeddedControlPlane, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { cleanNamespace, leftovers, removeCgroupTree } from "./ctr-baseline.js";
import { machine } from "./create.js";
import { percentile } from "./stats.js";

const REPO_ROOT = resolve(import.meta.dirname, "..");
const FSB_BIN = join(REPO_ROOT, "packages/cli/bin/fsb.js");
const BUNDLE = join(REPO_ROOT, "packages/cli/dist/bundle/fsb.mjs");
const TARGET = "cli-target";
const RUN_COMMAND = ["sleep", "3600"];

export interface CliBenchOptions {
  count: number;
  warmup: number;
  image: string;
  namespace: string;
  /** The program to run. @default packages/cli/bin/fsb.js (the bundle) */
  fsb?: string;
  log: (message: string) => void;
}

type Side = "node" | "ls" | "get" | "run" | "sdkRun";

export interface CliCommandTimes {
  command: string;
  wallP50: number;
  wallP90: number;
  ownP50: number;
  ownP90: number;
}

export interface CliBenchResult {
  benchmark: "cli";
  count: number;
  warmup: number;
  image: string;
  fsb: string;
  nodeP50: number;
  nodeP90: number;
  sdkRunP50: number;
  sdkRunP90: number;
  commands: CliCommandTimes[];
  /** The median over the commands' own p50s. */
  cliOwnMs: number;
  machine: ReturnType<typeof machine>;
  cleanup: { leftoverTasks: string[]; leftoverContainers: string[]; cgroupDirsLeft: number };
}

/**
 * Whether bin/fsb.js runs the bundle: it exists and `tsc -b` rebuilt none of the bundled packages
 * after it (the rule of bin/fsb.js, which otherwise falls back to tsc's output).
 */
function bundleIsCurrent(): boolean {
  if (!existsSync(BUNDLE)) return false;
  const bundled = statSync(BUNDLE).mtimeMs;
  return ["cli", "sdk", "api"].every((name) => {
    const buildInfo = join(REPO_ROOT, "packages", name, "tsconfig.tsbuildinfo");
    return !existsSync(buildInfo) || statSync(buildInfo).mtimeMs <= bundled;
  });
}

/** Runs `file ARGS…` to its exit; returns the wall time (ms) and its stdout. Throws when it fails. */
function timed(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ elapsedMs: number; stdout: string }> {
  return new Promise((done, fail) => {
    const started = performance.now();
    let elapsedMs = 0;
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.on("exit", () => (elapsedMs = performance.now() - started));
    child.on("error", fail);
    child.on("close", (code) => {
      if (code === 0) done({ elapsedMs, stdout: Buffer.concat(stdout).toString() });
      else fail(new Error(`${file} ${args.join(" ")} exited with ${code}: ${Buffer.concat(stderr).toString().trim()}`));
    });
  });
}

export async function runCliBench(options: CliBenchOptions): Promise<CliBenchResult> {
  const { count, warmup, image, namespace, log } = options;
  const fsb = resolve(options.fsb ?? FSB_BIN);
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups, network namespaces)");
  if (!existsSync(fsb)) throw new Error(`${fsb} is missing: run 'npm run build'`);
  const checkBundle = options.fsb === undefined;
  if (checkBundle && !bundleIsCurrent()) throw new Error(`${relative(REPO_ROOT, BUNDLE)} is missing or older than tsc's output: run 'npm run build'`);
  log(`importing ${image} into containerd namespace ${namespace} (cached)`);
  execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], { stdio: ["ignore", "ignore", "inherit"] });
  await cleanNamespace({ namespace });

  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-cli-"));
  const token = randomBytes(24).toString("base64url");
  // What the commands read, as after `fsb up` (FSB_URL, FSB_TOKEN or KUBECONFIG would choose otherwise).
  const env: NodeJS.ProcessEnv = { ...process.env, FSB_DATA_DIR: dataDir };
  for (const name of ["FSB_URL", "FSB_TOKEN", "KUBECONFIG", "FSB_DEBUG", "NODE_OPTIONS"]) delete env[name];
  // The launcher's #! line finds node on the PATH, as a user's shell does: this node, first.
  env.PATH = `${dirname(process.execPath)}${delimiter}${env.PATH ?? ""}`;
  /** The default binary runs through its #! line, as `fsb` on a user's PATH; another entry (--fsb) with `node FILE`. */
  const timedFsb = (args: string[]) => (checkBundle ? timed(fsb, args, env) : timed(process.execPath, [fsb, ...args], env));
  const samples: Record<Side, number[]> = { node: [], ls: [], get: [], run: [], sdkRun: [] };
  let controlPlane: EmbeddedControlPlane | undefined;
  let client: FastSandboxClient | undefined;
  let cleanup: CliBenchResult["cleanup"] = { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 };
  try {
    writeFileSync(join(dataDir, "token"), `${token}\n`, { mode: 0o600 });
    controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      host: "127.0.0.1",
      port: 0,
      containerdNamespace: namespace,
      cgroupRoot: namespace,
      defaultPool: defaultPool(image),
      logger: pino({ name: "fsb-bench", level: "warn" }, destination(2)),
    });
    writeFileSync(join(dataDir, "url"), `${controlPlane.url}\n`);
    client = new FastSandboxClient({ url: controlPlane.url, token });
    const c = client;
    await c.sandboxes.create({ name: TARGET, pool: "default", image, command: RUN_COMMAND });

    const created: string[] = [];
    const sides: [Side, () => Promise<number>][] = [
      ["node", async () => (await timed(process.execPath, ["-e", "0"], env)).elapsedMs],
      ["ls", async () => (await timedFsb(["ls"])).elapsedMs],
      ["get", async () => (await timedFsb(["get", TARGET])).elapsedMs],
      [
        "run",
        async () => {
          const { elapsedMs, stdout } = await timedFsb(["run", "--", ...RUN_COMMAND]);
          const name = stdout.trim().split(/\s+/).at(-1) ?? "";
          if (!/^sb-/.test(name)) throw new Error(`fsb run printed no sandbox name last: ${stdout}`);
          created.push(name);
          return elapsedMs;
        },
      ],
      [
        "sdkRun",
        async () => {
          // The calls `fsb run` makes (commands/sandboxes.ts run): the pool for its image, then the create.
          const started = performance.now();
          const pool = await c.pools.get("default", { namespace: "default" });
          const sandbox = await c.sandboxes.create({
            namespace: "default",
            pool: "default",
            image: pool.spec.image ?? image,
            command: RUN_COMMAND,
            envs: [],
            exposedPorts: [],
          });
          const elapsedMs = performance.now() - started;
          created.push(sandbox.metadata.name);
          return elapsedMs;
        },
      ],
    ];
    log(`${fsb}: ${warmup} warm-up + ${count} measured rounds of node -e 0, fsb ls, fsb get, fsb run and the SDK's create`);
    for (let round = 0; round < warmup + count; round++) {
      // Rotate the order, so no side always runs first or right after another.
      const offset = round % sides.length;
      for (const [side, run] of [...sides.slice(offset), ...sides.slice(0, offset)]) {
        const elapsedMs = await run();
        if (round >= warmup) samples[side].push(elapsedMs);
      }
      for (const name of created.splice(0)) await c.sandboxes.delete(name, { gracePeriodMs: 0 });
    }
    await c.sandboxes.delete(TARGET, { gracePeriodMs: 0 });
    if (checkBundle && !bundleIsCurrent())
      throw new Error("tsc -b rebuilt a bundled package during the run (bin/fsb.js then falls back to tsc's output): run again");
  } finally {
    client?.close();
    await controlPlane?.close();
    await cleanNamespace({ namespace });
    const left = await leftovers({ namespace });
    cleanup = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft: removeCgroupTree(`/${namespace}`) };
    rmSync(dataDir, { recursive: true, force: true });
  }

  const p50 = (side: Side) => percentile(samples[side], 50);
  const p90 = (side: Side) => percentile(samples[side], 90);
  const commands = (
    [
      ["fsb ls", "ls", 0],
      ["fsb get NAME", "get", 0],
      ["fsb run", "run", p50("sdkRun")],
    ] as const
  ).map(([command, side, server]): CliCommandTimes => {
    const subtracted = p50("node") + server;
    return { command, wallP50: p50(side), wallP90: p90(side), ownP50: p50(side) - subtracted, ownP90: p90(side) - subtracted };
  });
  return {
    benchmark: "cli",
    count,
    warmup,
    image,
    fsb: relative(REPO_ROOT, fsb),
    nodeP50: p50("node"),
    nodeP90: p90("node"),
    sdkRunP50: p50("sdkRun"),
    sdkRunP90: p90("sdkRun"),
    commands,
    cliOwnMs: percentile(
      commands.map((command) => command.ownP50),
      50,
    ),
    machine: machine(),
    cleanup,
  };
}

/** The report: what ran, a table per command, the clean-up, then the RESULT line. */
export function formatCliBench(result: CliBenchResult): string {
  const m = result.machine;
  const cell = (value: number | string) => (typeof value === "number" ? value.toFixed(1) : value).padStart(10);
  const row = (label: string, values: (number | string)[]) => `${label.padEnd(40)}${values.map(cell).join("")}`;
  return [
    `cli: ${result.fsb}, ${result.count} measured (+${result.warmup} warm-up) rounds, image ${result.image}, ${m.cpus} CPUs, kernel ${m.kernel}, node ${m.node}`,
    row("ms", ["wall p50", "wall p90", "own p50", "own p90"]),
    ...result.commands.map((c) => row(c.command, [c.wallP50, c.wallP90, c.ownP50, c.ownP90])),
    row("node -e 0 (subtracted)", [result.nodeP50, result.nodeP90, "", ""]),
    row("SDK pool get + create (subtracted: run)", [result.sdkRunP50, result.sdkRunP90, "", ""]),
    `CLEANUP leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}`,
    cliResultLine(result),
  ].join("\n");
}

/** The command's own p50 by the name `runCliBench` gives it. */
function ownP50(result: CliBenchResult, command: string): string {
  const times = result.commands.find((c) => c.command === command);
  return times ? times.ownP50.toFixed(1) : "n/a";
}

/**
 * The last line: `cli_own_ms` (the median over the three commands' own p50s) and `node_ms` first,
 * as they were; then each command's own p50, which that median alone hides.
 */
export function cliResultLine(result: CliBenchResult): string {
  return (
    `RESULT cli_own_ms=${result.cliOwnMs.toFixed(1)} node_ms=${result.nodeP50.toFixed(1)} ` +
    `cli_ls_own_ms=${ownP50(result, "fsb ls")} cli_get_own_ms=${ownP50(result, "fsb get NAME")} cli_run_own_ms=${ownP50(result, "fsb run")}`
  );
}
