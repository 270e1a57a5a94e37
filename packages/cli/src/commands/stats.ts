import { ValidationError, type SandboxStats } from "@fast-sandbox/api/core";
import { formatQuantityBytes } from "../byte-sizes.js";
import { connect, type GlobalOptions } from "../connection.js";
import { printFailure } from "../failures.js";
import { printObjects, printTable, type OutputFormat } from "../output.js";

const STATS_HEADERS = ["NAME", "CPU", "CPU LIMIT", "MEMORY", "MEMORY LIMIT", "PIDS", "DISK WRITTEN", "DISK LIMIT"];

/** Cores as kubectl writes CPU: `250m`, `1.5`; `-` for none. */
export function formatCpu(millis: number): string {
  if (millis >= 1000) return String(Math.round(millis / 100) / 10);
  return `${millis}m`;
}

/** A row of `fsb stats`: a CPU or memory limit of 0 is its node's bound, shown in parentheses; a disk limit of 0 is none. */
export function statsRow(name: string, stats: SandboxStats): string[] {
  return [
    name,
    formatCpu(stats.cpuUsedMillis),
    stats.cpuLimitMillis > 0 ? formatCpu(stats.cpuLimitMillis) : `none (${stats.nodeCpus} cpus)`,
    formatQuantityBytes(stats.memoryUsedBytes),
    stats.memoryLimitBytes > 0 ? formatQuantityBytes(stats.memoryLimitBytes) : `none (${formatQuantityBytes(stats.nodeMemoryBytes)})`,
    String(stats.pids),
    formatQuantityBytes(stats.diskUsedBytes),
    stats.diskLimitBytes > 0 ? formatQuantityBytes(stats.diskLimitBytes) : "none",
  ];
}

const HISTORY_HEADERS = ["TIME", "CPU", "MEMORY", "PIDS", "DISK WRITTEN"];

/** A row of `fsb stats --history`: one sample, its CPU over the time since the sample before. */
export function historyRow(stats: SandboxStats): string[] {
  return [
    new Date(stats.timestampMs).toISOString(),
    formatCpu(stats.cpuUsedMillis),
    formatQuantityBytes(stats.memoryUsedBytes),
    String(stats.pids),
    formatQuantityBytes(stats.diskUsedBytes),
  ];
}

/** `fsb stats NAME...`: each sandbox's resource use now, as its agent reads it; `--history`: one sandbox's samples, oldest first. */
export async function stats(names: string[], options: GlobalOptions & { namespace?: string; output: OutputFormat; history?: boolean }): Promise<void> {
  if (options.history && names.length !== 1) throw new ValidationError("--history", `shows one sandbox's samples; got ${names.length} names`);
  const { client, namespace } = await connect(options);
  if (options.history) {
    const samples = await client.sandboxes.statsHistory(names[0]!, { namespace });
    // A List of the samples, as every other -o json of the CLI prints.
    printObjects(options.output, { apiVersion: "v1", kind: "List", items: samples }, () => printTable(HISTORY_HEADERS, samples.map(historyRow)));
    return;
  }
  // Every name is read; one that fails is reported (`error: …`, exit 1 at the end) and the others are shown all the same.
  const read = await Promise.all(
    names.map((name) =>
      client.sandboxes.stats(name, { namespace }).then(
        (reading) => ({ name, stats: reading }),
        (error: unknown) => ({ name, error }),
      ),
    ),
  );
  const readings: { name: string; stats: SandboxStats }[] = [];
  for (const result of read) {
    if ("error" in result) printFailure(result.error);
    else readings.push(result);
  }
  if (readings.length < read.length) process.exitCode = 1;
  if (readings.length === 0) return;
  // A List for one name too, as `ls -o json` prints: its shape does not depend on how many were named.
  printObjects(options.output, { apiVersion: "v1", kind: "List", items: readings }, () =>
    printTable(
      STATS_HEADERS,
      readings.map((reading) => statsRow(reading.name, reading.stats)),
    ),
  );
}
