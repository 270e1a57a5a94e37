/**
 * The control plane of `bench scale` (scale.ts) in a process of its own, so that the memory it
 * reports is the control plane's alone (not the bench client's). It runs the built packages (dist:
 * what `fsb up` runs, no tsx; scale.ts transpiles this file and starts it with plain node) and talks
 * to the bench over the IPC channel of `fork` (`ScaleChildRequest` in, `ScaleChildMessage` out).
 *
 * `node scale-control-plane.js simulated DATA_DIR`: the embedded control plane with simulated agents
 * (simulated-agent.ts); the bench applies the pools through the API.
 * `node scale-control-plane.js idle-agent DATA_DIR`: the embedded control plane with real agents
 * (agent processes on containerd) and one pool of one agent, to which nothing is ever assigned.
 */
import { randomBytes } from "node:crypto";
import { destination, pino } from "pino";
import { API_VERSION } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import {
  IDLE_AGENT_NAMESPACE,
  IDLE_AGENT_POOL,
  procStatusMemory,
  type MemoryReport,
  type ScaleChildMessage,
  type ScaleChildRequest,
} from "./scale-protocol.js";
import { SimulatedAgents } from "./simulated-agent.js";

function memoryReport(): MemoryReport {
  const usage = process.memoryUsage();
  return {
    rssBytes: usage.rss,
    heapUsedBytes: usage.heapUsed,
    heapTotalBytes: usage.heapTotal,
    externalBytes: usage.external,
    arrayBuffersBytes: usage.arrayBuffers,
    status: procStatusMemory("self"),
  };
}

async function settledMemory(settleMs: number): Promise<MemoryReport> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("start the control plane process with --expose-gc");
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  gc();
  return memoryReport();
}

function send(message: ScaleChildMessage): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const [mode, dataDir] = process.argv.slice(2);
  if ((mode !== "simulated" && mode !== "idle-agent") || !dataDir) throw new Error("usage: scale-control-plane.js simulated|idle-agent DATA_DIR");
  if (!process.send) throw new Error("scale-control-plane.js runs as a child of the bench (fork), with an IPC channel");
  const token = randomBytes(24).toString("base64url");
  const logger = pino({ name: "fsb-bench-scale", level: "warn" }, destination(2));
  const simulated = mode === "simulated" ? new SimulatedAgents({ images: ["fast-sandbox.io/base:latest"] }) : undefined;
  const controlPlane: EmbeddedControlPlane = await startEmbeddedControlPlane({
    dataDir,
    token,
    logger,
    ...(simulated
      ? {
          agents: simulated,
          // Nothing may reach containerd: were `agents` ignored (a stale build), real agents fail to start here.
          containerdSocket: "/nonexistent/fsb-bench-scale/containerd.sock",
          cgroupRoot: "",
        }
      : {
          containerdNamespace: IDLE_AGENT_NAMESPACE,
          cgroupRoot: IDLE_AGENT_NAMESPACE,
          defaultPool: {
            apiVersion: API_VERSION,
            kind: "SandboxPool",
            metadata: { name: IDLE_AGENT_POOL, namespace: "default" },
            spec: { capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 }, maxSandboxesPerPod: 16, runtimeType: "container" },
          },
        }),
  });
  const agentPid = simulated ? undefined : controlPlane.fleet.listAgentProcesses()[0]?.pid;
  send({ type: "ready", url: controlPlane.url, token, pid: process.pid, memory: memoryReport(), ...(agentPid ? { agentPid } : {}) });

  process.on("message", (request: ScaleChildRequest) => {
    void (async () => {
      try {
        if (request.type === "memory") {
          const memory = await settledMemory(request.settleMs);
          send({
            type: "memory",
            memory,
            registry: { agents: controlPlane.registry.listAgents().length, placements: controlPlane.registry.placementCount },
            simulatedSandboxes: simulated?.sandboxCount ?? 0,
          });
        } else {
          await controlPlane.close();
          send({ type: "closed" });
          process.disconnect();
        }
      } catch (error) {
        send({ type: "error", message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      }
    })();
  });
}

main().catch((error: unknown) => {
  send({ type: "error", message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  process.exitCode = 1;
  process.disconnect?.();
});
