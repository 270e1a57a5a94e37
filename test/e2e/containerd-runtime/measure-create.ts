/**
 * Measures the sandbox create path through containerd's API (sequential, one step at a time)
 * against `ctr run -d` of the same image.
 *
 *   node --conditions=development --import tsx test/e2e/containerd-runtime/measure-create.ts [count]
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import pino from "pino";
import { createContainerdRuntime, type CreateTimings } from "../../../packages/agent/src/containerd/containerd-runtime.js";
import { BASE_IMAGE, importBaseImage, removeCgroupParent, removeNamespace } from "../../support/containerd.js";

const NAMESPACE = "fsb-measure-create";
const count = Number(process.argv[2] ?? 20);
const execFileAsync = promisify(execFile);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const workDir = mkdtempSync(join(tmpdir(), "fsb-measure-"));
importBaseImage(NAMESPACE);
const timings: CreateTimings[] = [];
const runtime = createContainerdRuntime({
  namespace: NAMESPACE,
  agentName: "measure",
  stateDir: join(workDir, "state"),
  logger: pino({ level: "warn" }),
  onCreateTimings: (timing) => timings.push(timing),
});

try {
  const spec = (index: number) => ({
    sandboxId: `measure-${index}`,
    namespace: "bench",
    name: `measure-${index}`,
    pool: "bench",
    image: BASE_IMAGE,
    command: ["sleep", "1000"],
    args: [],
    env: [],
    runtimeType: "container" as const,
    logPath: join(workDir, `measure-${index}.log`),
  });
  // Warm-up: fills the image cache and starts the group's shim, as on a running agent.
  await runtime.create(spec(0));
  timings.length = 0;
  for (let index = 1; index <= count; index++) await runtime.create(spec(index));

  const exec: number[] = [];
  for (let index = 0; index < 10; index++) {
    const started = performance.now();
    await runtime.exec("measure-1", { command: ["true"] }, { onStdout: () => undefined, onStderr: () => undefined });
    exec.push(performance.now() - started);
  }
  const mkfifo: number[] = [];
  for (let index = 0; index < 10; index++) {
    const started = performance.now();
    await execFileAsync("mkfifo", [join(workDir, `f${index}a`), join(workDir, `f${index}b`)]);
    mkfifo.push(performance.now() - started);
  }
  const deletes: number[] = [];
  for (let index = 0; index <= count; index++) {
    const started = performance.now();
    await runtime.delete(`measure-${index}`, { gracePeriodMs: 0 });
    deletes.push(performance.now() - started);
  }

  const ctrRuns: number[] = [];
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    execFileSync("ctr", ["-n", NAMESPACE, "run", "-d", BASE_IMAGE, `ctr-${index}`, "sleep", "1000"], { stdio: "ignore" });
    ctrRuns.push(performance.now() - started);
  }
  for (let index = 0; index < count; index++) {
    execFileSync("ctr", ["-n", NAMESPACE, "tasks", "kill", "-s", "SIGKILL", `ctr-${index}`], { stdio: "ignore" });
  }

  const row = (name: string, values: number[]) => console.log(`${name.padEnd(28)} ${median(values).toFixed(1).padStart(7)} ms`);
  console.log(`containerd API create path, ${count} sequential creates (median):`);
  for (const key of ["imageMs", "snapshotMs", "containerMs", "taskMs", "startMs", "totalMs"] as const) {
    row(
      `  ${key}`,
      timings.map((timing) => timing[key]),
    );
  }
  row("delete (grace 0)", deletes);
  row("exec `true` (round trip)", exec);
  row("mkfifo subprocess (2 pipes)", mkfifo);
  row("ctr run -d", ctrRuns);
} finally {
  runtime.close();
  removeNamespace(NAMESPACE);
  removeCgroupParent(`/${NAMESPACE}`);
  rmSync(workDir, { recursive: true, force: true });
}
