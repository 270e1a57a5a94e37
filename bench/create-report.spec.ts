import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CreateBenchResult } from "./create.js";
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
import { summarize } from "./stats.js";

function result(overrides: Partial<CreateBenchResult> = {}): CreateBenchResult {
  const fsb = [8, 9, 10, 11, 12];
  const ctr = [70, 75, 80, 85, 90];
  return {
    benchmark: "create",
    count: 5,
    warmup: 1,
    concurrency: 1,
    agents: 1,
    image: "fast-sandbox.io/base:latest",
    runtimeType: "container",
    containerdNamespace: "fsb-bench",
    command: ["sleep", "3600"],
    network: "Isolated",
    prepared: 0,
    sdkProcess: false,
    order: "",
    fastSandbox: { create: summarize(fsb), delete: null, deleteErrors: [], samplesMs: fsb },
    ctrBaseline: { create: summarize(ctr), samplesMs: ctr },
    wallMs: { fastSandbox: 50, ctr: 400 },
    burstWallMs: { fastSandbox: [10, 10, 10, 10, 10], ctr: [80, 80, 80, 80, 80] },
    throughputPerSecond: { fastSandbox: 100, ctr: 12.5 },
    ratioP50: 10 / 80,
    machine: { cpus: 2, memoryGiB: 23.5, kernel: "6.18", node: "v20" },
    cleanup: { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 },
    ...overrides,
  };
}

const breakdown: NonNullable<CreateBenchResult["breakdown"]> = {
  agentDirectCreate: summarize([50, 60]),
  sdkGetRoundTrip: summarize([1, 2]),
  cpuMsPerCreate: { sdkAndControlPlane: 5.4, agents: 2.04 },
  handlerMeanMs: { controlPlane: null, agentClaim: null },
  agentRpcRoundTrip: null,
};

describe("createResultLine", () => {
  it("keeps create_p50_ms, baseline_ctr_p50_ms and ratio first, in that order, and appends prepared", () => {
    assert.equal(createResultLine(result()), "RESULT create_p50_ms=10.00 baseline_ctr_p50_ms=80.00 ratio=0.125 prepared=0 sdk_process=0");
    assert.match(
      createResultLine(result({ prepared: 2, sdkProcess: true })),
      /^RESULT create_p50_ms=\S+ baseline_ctr_p50_ms=\S+ ratio=\S+ prepared=2 sdk_process=1$/,
    );
  });
});

describe("sdkSetting", () => {
  it("says where the timed SDK ran", () => {
    assert.equal(sdkSetting(result()), "SDK in the bench's process, beside the control plane");
    assert.equal(sdkSetting(result({ sdkProcess: true })), "SDK in a process of its own");
  });
});

describe("preparedSetting", () => {
  it("tells a prepared run from a cold one", () => {
    assert.match(preparedSetting(2), /^prepared instances \(2 per agent; every burst .* full again\)$/);
    assert.equal(preparedSetting(0), "cold path (no prepared instances)");
  });
});

describe("cpuLine and throughputLine", () => {
  it("say that a prepared run's figures exclude the stock's refills", () => {
    const prepared = result({ prepared: 2, breakdown });
    assert.match(cpuLine(prepared)!, /^CPU per fast-sandbox create \(claim only, refill excluded[^)]*\): SDK \+ control plane 5\.4 ms, agent 2\.0 ms/);
    assert.match(throughputLine(prepared), /refill waits between bursts excluded\): fast-sandbox 100\.0, ctr 12\.5$/);
  });

  it("carry no such caveat for a cold run, and no CPU line without --breakdown", () => {
    const cold = result({ breakdown });
    assert.match(cpuLine(cold)!, /^CPU per fast-sandbox create: SDK \+ control plane 5\.4 ms/);
    assert.doesNotMatch(throughputLine(cold), /refill/);
    assert.equal(cpuLine(result()), undefined);
  });
});

describe("agentDirectLabel", () => {
  it("names the network the direct side created on", () => {
    assert.equal(agentDirectLabel(result()), "agent CreateSandbox direct (Isolated)");
    assert.equal(agentDirectLabel(result({ network: "Shared" })), "agent CreateSandbox direct (Shared)");
  });
});

describe("kubernetesRefusal", () => {
  const none = { breakdown: false, prepared: false, sdkProcess: false, runtime: "runc" };

  it("refuses --prepared, which the suite's pool cannot honour", () => {
    assert.match(kubernetesRefusal({ ...none, prepared: true })!, /^--prepared does not apply to --kubernetes/);
  });

  it("refuses --namespace, --image, --breakdown and another runtime, and accepts the rest", () => {
    assert.match(kubernetesRefusal({ ...none, namespace: "x" })!, /^--namespace /);
    assert.match(kubernetesRefusal({ ...none, image: "x" })!, /^--image /);
    assert.match(kubernetesRefusal({ ...none, breakdown: true })!, /^--breakdown /);
    assert.match(kubernetesRefusal({ ...none, runtime: "gvisor" })!, /^--runtime gvisor /);
    assert.match(kubernetesRefusal({ ...none, sdkProcess: true })!, /^--sdk-process does not apply to --kubernetes/);
    assert.equal(kubernetesRefusal(none), undefined);
  });
});

describe("burst report", () => {
  const burst = result({
    count: 300,
    concurrency: 100,
    prepared: 64,
    fastSandbox: { create: summarize([700, 750, 800]), delete: null, deleteErrors: [], samplesMs: [] },
    ctrBaseline: { create: summarize([2000, 3000, 4000]), samplesMs: [] },
    burstWallMs: { fastSandbox: [830, 790, 900], ctr: [4000, 5200, 4400] },
  });

  it("takes each side's median wall over the rounds, and their ratio", () => {
    const walls = burstWalls(burst);
    assert.equal(walls.rounds, 3);
    assert.equal(walls.fastSandboxMedian, 830);
    assert.equal(walls.ctrMedian, 4400);
    assert.ok(Math.abs(walls.ratio - 830 / 4400) < 1e-12);
    assert.match(
      burstWallsLine(walls),
      /^wall ms per round \(fsb first: fast-sandbox 830, ctr 4000; ctr first: fast-sandbox 790, ctr 5200; fsb first: .*\); median fast-sandbox 830, ctr 4400/,
    );
  });

  it("keeps burst_wall_ms, p50_ms, p99_ms, baseline_ctr_wall_ms first and appends the baseline's percentiles and the wall ratio", () => {
    assert.equal(
      burstResultLine(burst),
      "RESULT burst_wall_ms=830 p50_ms=750.00 p99_ms=799.00 baseline_ctr_wall_ms=4400 baseline_ctr_p50_ms=3000.00 baseline_ctr_p99_ms=3980.00 ratio_wall=0.189",
    );
  });

  it("refuses a run whose sides did not burst as often", () => {
    assert.throws(() => burstWalls(result({ burstWallMs: { fastSandbox: [1, 2], ctr: [1] } })), /as many measured bursts/);
    assert.throws(() => burstWalls(result({ burstWallMs: { fastSandbox: [], ctr: [] } })), /as many measured bursts/);
  });
});
