/** Test support: a real agent process (its `main`, from source), started as a pool's Pod or the embedded mode starts it. */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pb, sendBearerToken } from "@fast-sandbox/api";
import { BASE_IMAGE } from "./containerd.js";

export interface AgentProcess {
  process: ChildProcess;
  /** host:port it serves on (its `listening` event). */
  endpoint: string;
}

/**
 * Starts the agent with `env` over the test's own environment and waits until it serves.
 * @param options.keepStdin give it a stdin pipe: the agent exits once that closes (as when its
 *   control plane goes); without it, it runs until signalled (as in a Pod).
 */
export async function startAgentProcess(env: Record<string, string>, options: { keepStdin?: boolean; timeoutMs?: number } = {}): Promise<AgentProcess> {
  const entry = fileURLToPath(import.meta.resolve("@fast-sandbox/agent/main"));
  const child = spawn(process.execPath, ["--conditions=development", "--import", "tsx", entry], {
    stdio: [options.keepStdin ? "pipe" : "ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const timeoutMs = options.timeoutMs ?? 30_000;
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the agent did not start in ${timeoutMs} ms`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited with ${String(code)}`));
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const event = JSON.parse(line) as { event?: string; endpoint?: string };
      if (event.event === "listening" && event.endpoint) {
        clearTimeout(timer);
        resolve(event.endpoint);
      }
    });
  });
  return { process: child, endpoint };
}

/** Ends the agent with `signal` and waits for its exit (nothing when it has exited already). */
export async function stopAgentProcess(agent: AgentProcess | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!agent || agent.process.exitCode !== null || agent.process.signalCode !== null) return;
  const exited = new Promise((resolve) => agent.process.once("exit", resolve));
  agent.process.kill(signal);
  await exited;
}

/** Creates `sleep 3600` sandboxes of the base image in isolated networks straight on the agent (no control plane); returns their addresses. */
export async function createIsolatedSleepers(
  agent: AgentProcess,
  token: string,
  sandboxes: { sandboxId: string; name: string; runtimeType: string }[],
): Promise<string[]> {
  const client = createClient(pb.AgentService, createGrpcTransport({ baseUrl: `http://${agent.endpoint}`, interceptors: [sendBearerToken(token)] }));
  const addresses: string[] = [];
  for (const { sandboxId, name, runtimeType } of sandboxes) {
    const created = await client.createSandbox({
      sandboxId,
      namespace: "team",
      name,
      image: BASE_IMAGE,
      command: ["sleep", "3600"],
      args: [],
      envs: [],
      runtimeType,
      slots: 0,
      exposedPorts: [],
      network: create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.ISOLATED }),
    });
    addresses.push(created.address);
  }
  return addresses;
}
