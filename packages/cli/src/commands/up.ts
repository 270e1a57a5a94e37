import { spawn } from "node:child_process";
import { openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { startEmbeddedControlPlane, defaultPool } from "@fast-sandbox/controlplane";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { parseDuration, parseLoopbackListen } from "@fast-sandbox/janitor";
import { clearRunFiles, ensureToken, files, readIfExists, resolveDataDir, runningPid, writeSettings } from "../data-dir.js";

export interface UpOptions {
  dataDir?: string;
  detach?: boolean;
  host: string;
  port: string;
  image: string;
  containerdNamespace: string;
  containerdSocket: string;
  cgroupRoot: string;
  proxyHost: string;
  proxyPort: string;
  /** The proxy's public base URL. @default http://localhost:<proxy port> */
  proxyUrl?: string;
  /** Port of the E2B-compatible API (on `host`). */
  e2bPort: string;
  /** Start the supervised janitor (`--no-janitor` turns it off). */
  janitor: boolean;
  janitorInterval: string;
  janitorProtection: string;
  janitorMetrics?: string;
}

export async function up(options: UpOptions): Promise<void> {
  const dataDir = resolveDataDir(options.dataDir);
  const pid = runningPid(dataDir);
  if (pid) {
    throw new FsbError(
      "failed_precondition",
      `Fast Sandbox already runs for ${dataDir} (pid ${pid}) at ${readIfExists(files.url(dataDir)) ?? "?"}; stop it with 'fsb down' first`,
    );
  }
  const token = ensureToken(dataDir);
  // Checked before anything starts, also for --detach: a typo must not surface in a background log.
  if (options.janitorMetrics) parseLoopbackListen(options.janitorMetrics, "--janitor-metrics");
  const janitor = options.janitor
    ? {
        intervalMs: parseDuration(options.janitorInterval, "--janitor-interval"),
        protectionMs: parseDuration(options.janitorProtection, "--janitor-protection", { allowZero: true }),
        ...(options.janitorMetrics ? { metricsListen: options.janitorMetrics } : {}),
      }
    : undefined;
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValidationError("--port", `${options.port} is not a port number (0..65535)`);
  const proxyPort = Number(options.proxyPort);
  if (!Number.isInteger(proxyPort) || proxyPort < 0 || proxyPort > 65535) {
    throw new ValidationError("--proxy-port", `${options.proxyPort} is not a port number (0..65535)`);
  }
  const e2bPort = Number(options.e2bPort);
  if (!Number.isInteger(e2bPort) || e2bPort < 0 || e2bPort > 65535) {
    throw new ValidationError("--e2b-port", `${options.e2bPort} is not a port number (0..65535)`);
  }
  if (options.detach) return detach(options, dataDir);
  writeSettings(dataDir, { containerdNamespace: options.containerdNamespace, containerdSocket: options.containerdSocket, cgroupRoot: options.cgroupRoot });
  const controlPlane = await startEmbeddedControlPlane({
    dataDir,
    token,
    host: options.host,
    port,
    containerdNamespace: options.containerdNamespace,
    containerdSocket: options.containerdSocket,
    cgroupRoot: options.cgroupRoot,
    defaultPool: defaultPool(options.image),
    proxy: { host: options.proxyHost, port: proxyPort, ...(options.proxyUrl ? { baseUrl: options.proxyUrl } : {}) },
    e2b: { host: options.host, port: e2bPort },
    ...(janitor ? { janitor } : {}),
  });
  writeFileSync(files.url(dataDir), `${controlPlane.url}\n`);
  writeFileSync(files.pid(dataDir), `${process.pid}\n`);
  const agents = controlPlane.registry.listAgents();
  process.stdout.write(
    [
      `Fast Sandbox is listening on ${controlPlane.url}`,
      `  data directory: ${dataDir} (API token in ${files.token(dataDir)}, mode 0600)`,
      `  sandbox proxy: ${controlPlane.proxyUrl} (each sandbox's endpoints are in 'fsb ls'; send its access token as X-Access-Token)`,
      `  E2B-compatible API: ${controlPlane.e2bUrl} (for E2B's SDKs: eval "$(npx fsb e2b env)")`,
      `  containerd namespace: ${options.containerdNamespace}; default image: ${options.image}`,
      `  agents: ${agents.map((a) => `${a.name} (${a.endpoint}, pid ${a.pid ?? "?"})`).join(", ") || "starting"}`,
      `  janitor: ${controlPlane.janitor ? `pid ${controlPlane.janitor.pid ?? "?"}, log ${join(dataDir, "janitor.log")}` : "off (--no-janitor)"}`,
      `Try: npx fsb run -- sh -c 'echo hello'   (Ctrl-C stops; sandboxes keep running and are adopted at the next 'fsb up')`,
      "",
    ].join("\n"),
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  process.stdout.write("stopping Fast Sandbox…\n");
  await controlPlane.close();
  clearRunFiles(dataDir);
}

async function detach(options: UpOptions, dataDir: string): Promise<void> {
  const log = openSync(files.log(dataDir), "a");
  const args = [
    fileURLToPath(new URL("../../bin/fsb.js", import.meta.url)),
    "up",
    "--data-dir",
    dataDir,
    "--host",
    options.host,
    "--port",
    options.port,
    "--image",
    options.image,
    "--containerd-namespace",
    options.containerdNamespace,
    "--containerd-socket",
    options.containerdSocket,
    "--cgroup-root",
    options.cgroupRoot,
    "--proxy-host",
    options.proxyHost,
    "--proxy-port",
    options.proxyPort,
    ...(options.proxyUrl ? ["--proxy-url", options.proxyUrl] : []),
    "--e2b-port",
    options.e2bPort,
    ...(options.janitor ? ["--janitor-interval", options.janitorInterval, "--janitor-protection", options.janitorProtection] : ["--no-janitor"]),
    ...(options.janitor && options.janitorMetrics ? ["--janitor-metrics", options.janitorMetrics] : []),
  ];
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log] });
  child.unref();
  clearRunFiles(dataDir);
  for (let waited = 0; waited < 60_000; waited += 100) {
    const url = readIfExists(files.url(dataDir));
    if (url && runningPid(dataDir)) {
      process.stdout.write(`Fast Sandbox is listening on ${url} (pid ${child.pid ?? "?"}; log ${files.log(dataDir)})\n`);
      return;
    }
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  throw new FsbError("unavailable", `Fast Sandbox did not start; see ${files.log(dataDir)}`);
}
