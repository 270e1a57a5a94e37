/**
 * Benchmarks. `npm run bench -- create [--kubernetes] [--count N] [--warmup W] [--concurrency C] [--json]`,
 * `npm run bench -- exec [--count N] [--warmup W] [--json]` (exec.ts),
 * `npm run bench -- cli [--count N] [--warmup W] [--fsb FILE] [--json]` (cli.ts),
 * `npm run bench -- scale [--sandboxes N] [--agents M] [--pools P] [--concurrency C] [--skip-idle-agent] [--json]` (scale.ts),
 * `npm run bench -- transport [--count N] [--warmup W] [--gap MS] [--json]` (transport.ts).
 *
 * Needs root and a running containerd (`--kubernetes`: also the built packages and the test
 * harness's cluster binaries). Tables go to stdout, progress to stderr; the last line of
 * stdout is `RESULT create_p50_ms=X baseline_ctr_p50_ms=Y ratio=Z prepared=N sdk_process=S` (create-report.ts).
 */
import { parseArgs } from "node:util";
import type { NetworkMode, RuntimeType } from "@fast-sandbox/api";
import { runCreateBench, type CreateBenchResult } from "./create.js";
import { runKubernetesCreateBench } from "./create-kubernetes.js";
import { runExecBench } from "./exec.js";
import { runBurstBench } from "./burst.js";
import {
  agentDirectLabel,
  burstResultLine,
  burstWalls,
  burstWallsLine,
  cpuLine,
  createResultLine,
  kubernetesRefusal,
  preparedSetting,
  sdkSetting,
  throughputLine,
} from "./create-report.js";
import { formatScaleReport, runScaleBench } from "./scale.js";
import { formatCliBench, runCliBench } from "./cli.js";
import { formatRestoreBench, runRestoreBench } from "./restore.js";
import { formatTransportBench, runTransportBench } from "./transport.js";
import { formatTable } from "./stats.js";

const USAGE = `usage: npm run bench -- create [options]
       npm run bench -- exec [--count N] [--warmup W] [--namespace NS] [--json]
       npm run bench -- scale [--sandboxes N] [--agents M] [--pools P] [--concurrency C] [--skip-idle-agent] [--json]
       npm run bench -- cli [--count N] [--warmup W] [--namespace NS] [--fsb FILE] [--json]

  exec: 'true' run in a running Isolated sandbox through the in-sandbox daemon (Connect JSON through
  the sandbox proxy) vs through containerd's exec (the SDK's sandboxes.exec), in the same run
  (default 50 measured rounds, 5 warm-up; namespace fsb-bench-exec).

  cli: the time fsb ls, fsb get NAME and fsb run spend of their own (wall time minus node -e 0 and,
  for run, the SDK's create), against an embedded instance (default 20 measured rounds, 2 warm-up;
  namespace fsb-bench-cli; --fsb: the program, default packages/cli/bin/fsb.js).

  scale: the control plane's footprint (scale.ts): N sandboxes (default 10000) over M simulated agents
  (default 500, in P pools, default 5) on the real control plane and store, in a child process of
  the built packages (built first with tsc -b): list/get/create latency and its RSS; an idle real
  agent's RSS (root and containerd; --skip-idle-agent leaves it out); placement p99 of the registry
  at 10000 agents. Creates in flight while populating: --concurrency (default 32).

  Sandbox create latency (SDK call -> user process running) vs 'ctr run -d' of the same image,
  measured in the same run, interleaved by rounds.

  --kubernetes      against Fast Sandbox deployed on a cluster instead of embedded in this process:
                    starts the Kubernetes e2e suite's cluster (test/support/kubernetes-suite.ts),
                    applies the pool, calls a controller Pod, and removes it all at the end (exit 1
                    if anything is left); containerd namespace fsb-e2e-kubernetes, the base image.
                    One cluster run per machine: flock /tmp/fsb-k8s-suite.lock npm run bench -- ...

  --count N         measured creates per side (default 30)
  --warmup W        unrecorded creates per side first (default max(3, C))
  --concurrency C   creates in flight at once per side (default 1: one after another)
  --image REF       image (default fast-sandbox.io/base:latest, imported by scripts/build-base-image.sh;
                    not with --kubernetes)
  --namespace NS    dedicated containerd namespace (default fsb-bench); its containers are removed
                    (not with --kubernetes)
  --agents N        agents in the pool (default 1; each agent's sandboxes share one shim)
  --breakdown       also time the agent's CreateSandbox called directly (a third interleaved side,
                    on the pool's network as the control plane would send it) and SDK get round
                    trips, to split a create between control plane and agent; then agent calls
                    with an empty answer (one hop), and the control plane's and the agent's own
                    handler times from their metrics (embedded only)
  --network MODE    the bench pool's network: isolated (default: a network namespace per sandbox,
                    prepared ahead) or shared (the agent's network)
  --prepared        the pool keeps prepared instances (max(2, C) per agent) and every burst of either
                    side waits until each agent's stock is full again: a create claims one; the
                    refills run in those untimed waits (not with --kubernetes). RESULT ends with
                    prepared=N (instances per agent; 0: the cold path)
  --sdk-process     the timed SDK creates in a process of their own (a user's program is one) instead
                    of the bench's, which also runs the control plane; RESULT ends with sdk_process=1
                    (not with --kubernetes)
  --runtime R       runc (default) or gvisor: the pool's runtime, and the baseline's ('ctr run
                    --runc-binary' a wrapper of the agents' runsc with their flags; not with
                    --kubernetes)
  --json            print the results as one JSON line before the RESULT line
  -h, --help

       npm run bench -- burst [--count N] [--rounds R] [--cold] [--network MODE] [--json]

  burst: N creates at once (default 100) on a pool of ceil(N/64) agents keeping prepared instances
  (--cold: none), against N 'ctr run -d' at once, in the same run, R rounds (default 3) with the
  side going first alternating (burst.ts states the method). Prints RESULT burst_wall_ms=… p50_ms=…
  p99_ms=… baseline_ctr_wall_ms=… baseline_ctr_p50_ms=… baseline_ctr_p99_ms=… ratio_wall=…
  (wall times: medians over the rounds; percentiles: over every create)

       npm run bench -- restore [--count N] [--warmup W] [--forks F] [--namespace NS] [--json]

  restore: gVisor restores from one checkpoint of a running template (restore.ts states the method):
  N on-demand restores one after another (default 20, 2 warm-up), each round also a 'ctr run -d' of
  the same image on the same runsc (the baseline, order alternating), F forks of 4 and F checkpoints
  (default 3), and the agent's steps of each restore. Prints RESULT restore_p50_ms=…
  fork_k4_wall_ms=… pooled_claim_p50_ms=… baseline_ctr_runsc_p50_ms=… restore_vs_ctr_runsc=…

       npm run bench -- transport [--count N] [--warmup W] [--gap MS] [--json]

  transport: one round trip between two Node.js processes on loopback, by protocol (transport.ts
  states the method): raw TCP (the baseline), node:http2, Connect over HTTP/2 and over HTTP/1.1;
  N per protocol (default 300, 50 warm-up) back to back, then N with MS (default 20) before each.
  Prints RESULT tcp_p50_ms=… http2_p50_ms=… connect_h2_p50_ms=… connect_h1_p50_ms=… (with the gap)`;

function positiveInt(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

/** A report's lines, then the result as JSON when asked for (`--json`), then its last line (RESULT …). */
function printReport(lines: string[], json: unknown): void {
  const resultLine = lines.pop();
  for (const line of lines) console.log(line);
  if (json !== undefined) console.log(JSON.stringify(json));
  console.log(resultLine);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      count: { type: "string" },
      warmup: { type: "string" },
      concurrency: { type: "string" },
      image: { type: "string" },
      namespace: { type: "string" },
      json: { type: "boolean", default: false },
      breakdown: { type: "boolean", default: false },
      agents: { type: "string" },
      network: { type: "string", default: "isolated" },
      prepared: { type: "boolean", default: false },
      runtime: { type: "string", default: "runc" },
      cold: { type: "boolean", default: false },
      kubernetes: { type: "boolean", default: false },
      sandboxes: { type: "string" },
      pools: { type: "string" },
      "skip-idle-agent": { type: "boolean", default: false },
      fsb: { type: "string" },
      forks: { type: "string" },
      gap: { type: "string" },
      rounds: { type: "string" },
      "sdk-process": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [command, ...rest] = positionals;
  const log = (message: string) => process.stderr.write(`bench: ${message}\n`);
  if (command === "exec" && rest.length === 0) {
    const result = await runExecBench({
      count: positiveInt("count", values.count, 50),
      warmup: positiveInt("warmup", values.warmup, 5, 0),
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace: values.namespace ?? "fsb-bench-exec",
      log,
    });
    const m = result.machine;
    console.log(
      `exec: 'true', ${result.count} measured (+${result.warmup} warm-up) rounds, image ${result.image}, ${m.cpus} CPUs, kernel ${m.kernel}, node ${m.node}`,
    );
    console.log(
      formatTable([
        { label: "daemon via proxy (SDK path)", summary: result.daemon },
        { label: "daemon direct (breakdown)", summary: result.daemonDirect },
        { label: "containerd exec (SDK exec)", summary: result.containerdExec },
      ]),
    );
    console.log(`CLEANUP leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}`);
    if (values.json) console.log(JSON.stringify(result));
    console.log(
      `RESULT exec_p50_ms=${result.daemon.p50.toFixed(2)} containerd_exec_p50_ms=${result.containerdExec.p50.toFixed(2)} ratio=${result.ratioP50.toFixed(3)}`,
    );
    return;
  }
  if (command === "cli" && rest.length === 0) {
    const result = await runCliBench({
      count: positiveInt("count", values.count, 20),
      warmup: positiveInt("warmup", values.warmup, 2, 0),
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace: values.namespace ?? "fsb-bench-cli",
      ...(values.fsb ? { fsb: values.fsb } : {}),
      log,
    });
    if (values.json) console.log(JSON.stringify(result));
    console.log(formatCliBench(result));
    return;
  }
  if (command === "scale" && rest.length === 0) {
    const agents = positiveInt("agents", values.agents, 500);
    const result = await runScaleBench({
      sandboxes: positiveInt("sandboxes", values.sandboxes, 10_000),
      agents,
      pools: positiveInt("pools", values.pools, Math.min(5, agents)),
      concurrency: positiveInt("concurrency", values.concurrency, 32),
      gets: 1000,
      lists: 20,
      creates: 200,
      settleMs: 3000,
      skipIdleAgent: values["skip-idle-agent"],
      idleAgentSettleMs: 20_000,
      idleAgentWindowMs: 20_000,
      placementAgents: 10_000,
      placements: 200_000,
      log,
    });
    printReport(formatScaleReport(result), values.json ? result : undefined);
    return;
  }
  if (command === "transport" && rest.length === 0) {
    const result = await runTransportBench({
      count: positiveInt("count", values.count, 300),
      warmup: positiveInt("warmup", values.warmup, 50, 0),
      gapMs: positiveInt("gap", values.gap, 20, 0),
      log,
    });
    printReport(formatTransportBench(result), values.json ? result : undefined);
    return;
  }
  if (command === "restore" && rest.length === 0) {
    const result = await runRestoreBench({
      count: positiveInt("count", values.count, 20),
      warmup: positiveInt("warmup", values.warmup, 2, 0),
      forks: positiveInt("forks", values.forks, 3),
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace: values.namespace ?? "fsb-bench-restore",
      log,
    });
    printReport(formatRestoreBench(result), values.json ? result : undefined);
    return;
  }
  if (command === "burst" && rest.length === 0) {
    const networkName = { isolated: "Isolated", shared: "Shared" }[values.network] as NetworkMode | undefined;
    if (!networkName) throw new Error(`--network must be isolated or shared, got ${JSON.stringify(values.network)}`);
    const count = positiveInt("count", values.count, 100);
    if (count > 1000) throw new Error("--count must be at most 1000");
    const rounds = positiveInt("rounds", values.rounds, 3);
    if (rounds > 20) throw new Error("--rounds must be at most 20");
    const result = await runBurstBench({
      count,
      rounds,
      warmup: positiveInt("warmup", values.warmup, 2, 0),
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace: values.namespace ?? "fsb-bench-burst",
      network: networkName,
      cold: values.cold,
      log,
    });
    const m = result.machine;
    console.log(
      `burst: ${count} creates at once per side, ${rounds} round(s) (+${result.warmup} warm-up), ${result.agents} agent(s), network ${networkName}, ` +
        `${preparedSetting(result.prepared)}, ${m.cpus} CPUs, kernel ${m.kernel}, node ${m.node}`,
    );
    console.log(
      formatTable([
        { label: "fast-sandbox create (SDK), every round", summary: result.fastSandbox.create },
        { label: "ctr run -d (baseline), every round", summary: result.ctrBaseline.create },
      ]),
    );
    console.log(burstWallsLine(burstWalls(result)));
    console.log(`CLEANUP leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}`);
    if (values.json) console.log(JSON.stringify(result));
    console.log(burstResultLine(result));
    return;
  }
  if (command !== "create" || rest.length > 0) {
    console.error(USAGE);
    process.exitCode = 2;
    return;
  }
  const count = positiveInt("count", values.count, 30);
  const concurrency = positiveInt("concurrency", values.concurrency, 1);
  const warmup = positiveInt("warmup", values.warmup, Math.max(3, concurrency), 0);
  const namespace = values.namespace ?? "fsb-bench";
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(namespace)) throw new Error(`--namespace ${namespace} is not a valid containerd namespace`);
  if (count + warmup + concurrency > 1024) throw new Error("count + warmup + concurrency must stay within one agent's 1024 slots");
  const agents = positiveInt("agents", values.agents, 1);
  const networks: Record<string, NetworkMode> = { isolated: "Isolated", shared: "Shared" };
  const network = networks[values.network];
  if (!network) throw new Error(`--network must be isolated or shared, got ${JSON.stringify(values.network)}`);
  const runtimes: Record<string, RuntimeType> = { runc: "container", gvisor: "gvisor" };
  const runtimeType = runtimes[values.runtime];
  if (!runtimeType) throw new Error(`--runtime must be runc or gvisor, got ${JSON.stringify(values.runtime)}`);
  const sandboxCommand = ["sleep", "3600"];

  let result: CreateBenchResult;
  if (values.kubernetes) {
    // The cluster's containerd namespace, image, agents and pool are the e2e suite's (test/e2e/kubernetes/deploy).
    const refusal = kubernetesRefusal({
      ...(values.namespace !== undefined ? { namespace: values.namespace } : {}),
      ...(values.image !== undefined ? { image: values.image } : {}),
      breakdown: values.breakdown,
      prepared: values.prepared,
      sdkProcess: values["sdk-process"],
      runtime: values.runtime,
    });
    if (refusal) {
      console.error(`${refusal}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    result = await runKubernetesCreateBench({ count, warmup, concurrency, agents, network, command: sandboxCommand, log });
  } else {
    result = await runCreateBench({
      count,
      warmup,
      concurrency,
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace,
      cgroupRoot: namespace,
      command: sandboxCommand,
      breakdown: values.breakdown,
      agents,
      network,
      runtimeType,
      prepared: values.prepared,
      sdkProcess: values["sdk-process"],
      log,
    });
  }

  const m = result.machine;
  const k = result.kubernetes;
  if (k) {
    console.log(
      `kubernetes: controller Pod ${k.controllerUrl} (${k.controllerReplicas} Ready replicas, store kube-apiserver), pool ${k.namespace}/bench with ${result.agents} agent Pod(s); ` +
        `cluster + deployment ${(k.setupMs.clusterAndDeployment / 1000).toFixed(1)} s, pool ready ${(k.setupMs.poolReady / 1000).toFixed(1)} s`,
    );
  }
  console.log(
    `create: ${count} measured (+${warmup} warm-up) per side, concurrency ${concurrency}, ${result.agents} agent(s), runtime ${values.runtime}, network ${network}, ` +
      `${preparedSetting(result.prepared)}, ${sdkSetting(result)}, image ${result.image}, command '${result.command.join(" ")}', ${m.cpus} CPUs, ${m.memoryGiB} GiB, kernel ${m.kernel}, node ${m.node}`,
  );
  console.log(`order: ${result.order}`);
  console.log(
    formatTable([
      { label: "fast-sandbox create (SDK)", summary: result.fastSandbox.create },
      { label: "ctr run -d (baseline)", summary: result.ctrBaseline.create },
      ...(result.breakdown
        ? [
            { label: agentDirectLabel(result), summary: result.breakdown.agentDirectCreate },
            { label: "SDK get round trip", summary: result.breakdown.sdkGetRoundTrip },
            ...(result.breakdown.agentRpcRoundTrip ? [{ label: "agent RPC round trip (empty)", summary: result.breakdown.agentRpcRoundTrip }] : []),
          ]
        : []),
      ...(result.fastSandbox.delete ? [{ label: "fast-sandbox delete (SDK)", summary: result.fastSandbox.delete }] : []),
    ]),
  );
  console.log(throughputLine(result));
  console.log(
    `DELETE fsb_delete_p50_ms=${result.fastSandbox.delete?.p50.toFixed(2) ?? "n/a"} delete_errors=${result.fastSandbox.deleteErrors.length} leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}${result.cleanup.problems ? ` teardown_leftovers=${result.cleanup.problems.length}` : ""}`,
  );
  if (result.breakdown) {
    const cpu = cpuLine(result);
    if (cpu) console.log(cpu);
    const h = result.breakdown.handlerMeanMs;
    if (h) {
      const ms = (value: number | null) => (value === null ? "n/a" : `${value.toFixed(2)} ms`);
      console.log(
        `handlers (mean over every SDK create, warm-up included): control plane CreateSandbox ${ms(h.controlPlane)}, agent claim ${ms(h.agentClaim)}`,
      );
    }
  }
  if (values.json) console.log(JSON.stringify(result));
  console.log(createResultLine(result));
  // The cluster run must leave nothing: the numbers stand, the exit code says the clean-up failed.
  const problems = result.cleanup.problems ?? [];
  if (values.kubernetes && problems.length + result.cleanup.leftoverContainers.length + result.cleanup.leftoverTasks.length > 0) {
    console.error(
      `bench: FAILED: the run left something behind:\n  ${[...problems, ...result.cleanup.leftoverContainers.map((c) => `container ${c}`), ...result.cleanup.leftoverTasks.map((t) => `task ${t}`)].join("\n  ")}`,
    );
    process.exitCode = 1;
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (error: unknown) => {
    console.error(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
