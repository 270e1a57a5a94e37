/**
 * Measures what an isolated network adds to a create (and a delete), sequentially, on the test's
 * own sandbox network: shared sandboxes against isolated ones that claim a prepared namespace and
 * isolated ones that make their own (no prepared namespace), for runc and runsc. Prints medians.
 *
 *   node --conditions=development --import tsx test/e2e/sandbox-network-isolation/measure-network.ts [rounds]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pino } from "pino";
import {
  DEFAULT_HELPER_PATH,
  createContainerdRuntime,
  type ContainerdRuntime,
  type CreateTimings,
  type RuntimeType,
  type SandboxNetworkSettings,
} from "@fast-sandbox/agent";
import { BASE_IMAGE, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { removeTestNetwork, testNetworkSettings } from "../../support/sandbox-network.js";

const NAMESPACE = `fsb-measure-network-${process.pid}`;
const rounds = Number(process.argv[2] ?? 15);
const workDir = mkdtempSync(join(tmpdir(), "fsb-measure-network-"));
const settings = testNetworkSettings();

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

const timings: CreateTimings[] = [];
function runtimeFor(agentName: string, network: SandboxNetworkSettings): ContainerdRuntime {
  return createContainerdRuntime({
    namespace: NAMESPACE,
    agentName,
    stateDir: join(workDir, agentName),
    cgroupParent: `/${NAMESPACE}/${agentName}`,
    helperPath: DEFAULT_HELPER_PATH,
    network,
    logger: pino({ level: "warn" }),
    onCreateTimings: (timing) => timings.push(timing),
  });
}

let counter = 0;
async function measure(runtime: ContainerdRuntime, runtimeType: RuntimeType, isolated: boolean, beforeEach?: () => Promise<void>) {
  const rows: (CreateTimings & { deleteMs: number })[] = [];
  for (let round = 0; round <= rounds; round++) {
    await beforeEach?.();
    counter += 1;
    const sandboxId = `measure-${String(counter).padStart(4, "0")}`;
    timings.length = 0;
    await runtime.create({
      sandboxId,
      namespace: "bench",
      name: sandboxId,
      pool: "bench",
      image: BASE_IMAGE,
      command: ["sleep", "1000"],
      args: [],
      env: [],
      runtimeType,
      logPath: join(workDir, `${sandboxId}.log`),
      ...(isolated ? { network: { mode: "isolated" as const, egress: { kind: "allowAll" as const } } } : {}),
    });
    const started = performance.now();
    await runtime.delete(sandboxId, { gracePeriodMs: 0 });
    const deleteMs = performance.now() - started;
    // The first round warms caches (image, shim) and is left out.
    if (round > 0 && timings[0]) rows.push({ ...timings[0], deleteMs });
  }
  return {
    totalMs: median(rows.map((row) => row.totalMs)),
    networkMs: median(rows.map((row) => row.networkMs)),
    taskMs: median(rows.map((row) => row.taskMs)),
    startMs: median(rows.map((row) => row.startMs)),
    deleteMs: median(rows.map((row) => row.deleteMs)),
  };
}

importBaseImage(NAMESPACE);
const prepared = runtimeFor("measure-prepared", { ...settings, preparedNamespaces: 2 });
const cold = runtimeFor("measure-cold", { ...settings, preparedNamespaces: 0 });
try {
  await prepared.prepare();
  await cold.prepare();
  const results: Record<string, Awaited<ReturnType<typeof measure>>> = {};
  for (const runtimeType of ["container", "gvisor"] as const) {
    results[`${runtimeType} shared`] = await measure(prepared, runtimeType, false);
    // A prepared namespace is there for each create (the pool refilled between creates).
    results[`${runtimeType} isolated, prepared`] = await measure(prepared, runtimeType, true, () => prepared.networks?.warm() ?? Promise.resolve());
    results[`${runtimeType} isolated, none prepared`] = await measure(cold, runtimeType, true);
  }
  console.log(`medians of ${rounds} sequential creates (ms), ${new Date().toISOString()}`);
  console.table(
    Object.fromEntries(
      Object.entries(results).map(([name, row]) => [name, Object.fromEntries(Object.entries(row).map(([key, value]) => [key, Math.round(value)]))]),
    ),
  );
} finally {
  for (const runtime of [prepared, cold]) {
    await runtime.unprepare();
    runtime.close();
  }
  await removeTestNetwork(settings);
  removeNamespace(NAMESPACE);
  removeCgroupTree(`/${NAMESPACE}`);
  rmSync(workDir, { recursive: true, force: true });
}
