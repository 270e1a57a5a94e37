/**
 * `bench exec`: running `true` in a running sandbox, through the in-sandbox daemon against through
 * containerd's exec, measured in the same run.
 *
 * Method. An in-process embedded control plane with one agent and one Isolated runc sandbox (the
 * daemon serves on its port 49983). Each round runs, in an order that alternates between rounds:
 * - daemon: `process.Process/Start {cmd: "true"}` as Connect JSON over HTTP/1.1 with keep-alive,
 *   through the sandbox proxy (routed by E2b-Sandbox-Id/-Port, authenticated by X-Access-Token) —
 *   what the SDKs and E2B's SDKs do; timed from the request to the end of its stream (the `end`
 *   event with the exit code);
 * - containerd exec: the SDK's `sandboxes.exec(name, ["true"])` — fast-path API, agent, containerd
 *   Tasks.Exec + Start + wait, the path `fsb exec` took before the daemon; timed to its exit code;
 * - daemon direct (breakdown, not in RESULT): the same Start sent to `<sandbox IP>:49983` directly.
 * Warm-up rounds are not recorded. The last line is
 * `RESULT exec_p50_ms=X containerd_exec_p50_ms=Y ratio=X/Y`.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { destination, pino } from "pino";
import { API_VERSION, SANDBOX_DAEMON_PORT } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { cleanNamespace, leftovers, removeCgroupTree } from "./ctr-baseline.js";
import { machine } from "./create.js";
import { summarize, type Summary } from "./stats.js";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DAEMON = join(REPO_ROOT, "packages/envd/build/fsb-envd");
const POOL = "bench-exec";

export interface ExecBenchOptions {
  count: number;
  warmup: number;
  image: string;
  namespace: string;
  log: (message: string) => void;
}

export interface ExecBenchResult {
  benchmark: "exec";
  count: number;
  warmup: number;
  image: string;
  daemon: Summary;
  daemonDirect: Summary;
  containerdExec: Summary;
  ratioP50: number;
  machine: ReturnType<typeof machine>;
  cleanup: { leftoverTasks: string[]; leftoverContainers: string[]; cgroupDirsLeft: number };
}

/** One Connect envelope (flags 0) holding `message` as JSON. */
function envelope(message: unknown): Uint8Array {
  const json = Buffer.from(JSON.stringify(message));
  const framed = Buffer.alloc(5 + json.length);
  framed.writeUInt32BE(json.length, 1);
  json.copy(framed, 5);
  return framed;
}

/** The JSON messages of a Connect stream's body; the end-of-stream envelope's error, if any, is thrown. */
function messages(body: Buffer): unknown[] {
  const out: unknown[] = [];
  for (let offset = 0; offset + 5 <= body.length;) {
    const flags = body[offset]!;
    const length = body.readUInt32BE(offset + 1);
    const json = JSON.parse(body.subarray(offset + 5, offset + 5 + length).toString() || "{}") as { error?: { message?: string } };
    offset += 5 + length;
    if (flags & 0x02) {
      if (json.error) throw new Error(`the daemon's stream ended with an error: ${json.error.message ?? JSON.stringify(json.error)}`);
    } else out.push(json);
  }
  return out;
}

/** Runs `true` through the daemon at `url` and returns its exit code. */
async function daemonRun(url: string, headers: Record<string, string>): Promise<number> {
  const response = await fetch(`${url}/process.Process/Start`, {
    method: "POST",
    headers: { "content-type": "application/connect+json", "connect-protocol-version": "1", ...headers },
    body: envelope({ process: { cmd: "true" } }),
  });
  const body = Buffer.from(await response.arrayBuffer());
  if (response.status !== 200) throw new Error(`Start answered ${response.status}: ${body.toString()}`);
  for (const message of messages(body) as { event?: { end?: { exitCode?: number; exited?: boolean } } }[]) {
    if (message.event?.end) return message.event.end.exitCode ?? 0;
  }
  throw new Error("the daemon's stream ended without an end event");
}

export async function runExecBench(options: ExecBenchOptions): Promise<ExecBenchResult> {
  const { count, warmup, image, namespace, log } = options;
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups, network namespaces)");
  if (!existsSync(DAEMON)) throw new Error(`${DAEMON} is missing: run 'npm run build' (scripts/build-envd.sh)`);
  log(`importing ${image} into containerd namespace ${namespace} (cached)`);
  execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], { stdio: ["ignore", "ignore", "inherit"] });
  await cleanNamespace({ namespace });

  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-exec-"));
  const token = randomBytes(24).toString("base64url");
  let controlPlane: EmbeddedControlPlane | undefined;
  let client: FastSandboxClient | undefined;
  const samples = { daemon: [] as number[], direct: [] as number[], containerd: [] as number[] };
  let cleanup: ExecBenchResult["cleanup"] = { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 };
  try {
    controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      host: "127.0.0.1",
      port: 0,
      containerdNamespace: namespace,
      cgroupRoot: namespace,
      logger: pino({ name: "fsb-bench", level: "warn" }, destination(2)),
    });
    client = new FastSandboxClient({ url: controlPlane.url, token });
    await client.pools.apply({
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: POOL, namespace: "default" },
      spec: { capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 }, maxSandboxesPerPod: 4, runtimeType: "container", image, network: { mode: "Isolated" } },
    });
    const sandbox = await client.sandboxes.create({ name: "exec-target", pool: POOL, image, command: ["sleep", "3600"] });
    const sandboxId = sandbox.status?.sandboxID ?? "";
    const address = sandbox.status?.sandboxIP ?? "";
    if (!sandboxId || !address) throw new Error("the bench sandbox has no sandboxID or sandboxIP (is its pool Isolated?)");
    const viaProxy = { "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": String(SANDBOX_DAEMON_PORT), "x-access-token": sandbox.accessToken };
    const proxyUrl = controlPlane.proxyUrl;
    const directUrl = `http://${address}:${SANDBOX_DAEMON_PORT}`;
    // The daemon starts with the sandbox; wait until it answers.
    for (let attempt = 0; ; attempt++) {
      try {
        await daemonRun(proxyUrl, viaProxy);
        break;
      } catch (error) {
        if (attempt > 100) throw error;
        await new Promise((done) => setTimeout(done, 50));
      }
    }
    const c = client;
    const sides: [keyof typeof samples, () => Promise<number>][] = [
      ["daemon", () => daemonRun(proxyUrl, viaProxy)],
      ["containerd", async () => (await c.sandboxes.exec("exec-target", ["true"])).exitCode],
      ["direct", () => daemonRun(directUrl, {})],
    ];
    log(`sandbox ${sandboxId} at ${address}; ${warmup} warm-up + ${count} measured rounds`);
    for (let round = 0; round < warmup + count; round++) {
      // Alternate the order, so neither side always runs right after the other.
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      for (const [side, run] of order) {
        const started = performance.now();
        const exitCode = await run();
        const elapsed = performance.now() - started;
        if (exitCode !== 0) throw new Error(`${side}: 'true' exited with ${exitCode}`);
        if (round >= warmup) samples[side].push(elapsed);
      }
    }
    await client.sandboxes.delete("exec-target", { gracePeriodMs: 0 });
  } finally {
    client?.close();
    await controlPlane?.close();
    await cleanNamespace({ namespace });
    const left = await leftovers({ namespace });
    cleanup = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft: removeCgroupTree(`/${namespace}`) };
    rmSync(dataDir, { recursive: true, force: true });
  }
  const daemon = summarize(samples.daemon);
  const containerdExec = summarize(samples.containerd);
  return {
    benchmark: "exec",
    count,
    warmup,
    image,
    daemon,
    daemonDirect: summarize(samples.direct),
    containerdExec,
    ratioP50: daemon.p50 / containerdExec.p50,
    machine: machine(),
    cleanup,
  };
}
