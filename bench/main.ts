/**
 * Benchmarks. `npm run bench -- create [--kubernetes] [--count N] [--warmup W] [--concurrency C] [--json]`,
 * `npm run bench -- exec [--count N] [--warmup W] [--json]` (exec.ts).
 *
 * Needs root and a running containerd (`--kubernetes`: also the built packages and the test
 * harness's cluster binaries). Tables go to stdout, progress to stderr; the last line of
 * stdout is `RESULT create_p50_ms=X baseline_ctr_p50_ms=Y ratio=Z`.
 */
import { parseArgs } from "node:util";
import type { NetworkMode } from "@fast-sandbox/api";
import { runCreateBench, type CreateBenchResult } from "./create.js";
import { runKubernetesCreateBench } from "./create-kubernetes.js";
import { runExecBench } from "./exec.js";
import { formatTable } from "./stats.js";

const USAGE = `usage: npm run bench -- create [options]
       npm run bench -- exec [--count N] [--warmup W] [--namespace NS] [--json]

  exec: 'true' run in a running Isolated sandbox through the in-sandbox daemon (Connect JSON through
  the sandbox proxy) vs through containerd's exec (the SDK's sandboxes.exec), in the same run
  (default 50 measured rounds, 5 warm-up; namespace fsb-bench-exec).

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
  --breakdown       also time the agent's CreateSandbox called directly (a third interleaved side)
                    and SDK get round trips, to split a create between control plane and agent
                    (embedded only)
  --network MODE    the bench pool's network: isolated (default: a network namespace per sandbox,
                    prepared ahead) or shared (the agent's network)
  --json            print the results as one JSON line before the RESULT line
  -h, --help`;

function positiveInt(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
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
      kubernetes: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [command, ...rest] = positionals;
  if (command === "exec" && rest.length === 0) {
    const result = await runExecBench({
      count: positiveInt("count", values.count, 50),
      warmup: positiveInt("warmup", values.warmup, 5, 0),
      image: values.image ?? "fast-sandbox.io/base:latest",
      namespace: values.namespace ?? "fsb-bench-exec",
      log: (message) => process.stderr.write(`bench: ${message}\n`),
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
  const sandboxCommand = ["sleep", "3600"];
  const log = (message: string) => process.stderr.write(`bench: ${message}\n`);

  let result: CreateBenchResult;
  if (values.kubernetes) {
    // The cluster's containerd namespace, image and agents are the e2e suite's (test/e2e/kubernetes/deploy).
    for (const flag of ["namespace", "image", "breakdown"] as const) {
      if (values[flag]) {
        console.error(`--${flag} does not apply to --kubernetes (containerd namespace fsb-e2e-kubernetes, image fast-sandbox.io/base:latest)\n\n${USAGE}`);
        process.exitCode = 2;
        return;
      }
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
    `create: ${count} measured (+${warmup} warm-up) per side, concurrency ${concurrency}, ${result.agents} agent(s), network ${network}, image ${result.image}, ` +
      `command '${result.command.join(" ")}', ${m.cpus} CPUs, ${m.memoryGiB} GiB, kernel ${m.kernel}, node ${m.node}`,
  );
  console.log(`order: ${result.order}`);
  console.log(
    formatTable([
      { label: "fast-sandbox create (SDK)", summary: result.fastSandbox.create },
      { label: "ctr run -d (baseline)", summary: result.ctrBaseline.create },
      ...(result.breakdown
        ? [
            { label: "agent CreateSandbox direct", summary: result.breakdown.agentDirectCreate },
            { label: "SDK get round trip", summary: result.breakdown.sdkGetRoundTrip },
          ]
        : []),
      ...(result.fastSandbox.delete ? [{ label: "fast-sandbox delete (SDK)", summary: result.fastSandbox.delete }] : []),
    ]),
  );
  console.log(
    `throughput (creates/s over the measured bursts): fast-sandbox ${result.throughputPerSecond.fastSandbox.toFixed(1)}, ctr ${result.throughputPerSecond.ctr.toFixed(1)}`,
  );
  console.log(
    `DELETE fsb_delete_p50_ms=${result.fastSandbox.delete?.p50.toFixed(2) ?? "n/a"} delete_errors=${result.fastSandbox.deleteErrors.length} leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}${result.cleanup.problems ? ` teardown_leftovers=${result.cleanup.problems.length}` : ""}`,
  );
  if (result.breakdown) {
    const c = result.breakdown.cpuMsPerCreate;
    console.log(`CPU per fast-sandbox create: SDK + control plane ${c.sdkAndControlPlane.toFixed(1)} ms, agent ${c.agents.toFixed(1)} ms (10 ms resolution)`);
  }
  if (values.json) console.log(JSON.stringify(result));
  console.log(
    `RESULT create_p50_ms=${result.fastSandbox.create.p50.toFixed(2)} baseline_ctr_p50_ms=${result.ctrBaseline.create.p50.toFixed(2)} ratio=${result.ratioP50.toFixed(3)}`,
  );
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
