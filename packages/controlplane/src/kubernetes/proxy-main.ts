/**
 * Entry point of the sandbox proxy Deployment (config/proxy): settings from the environment
 * (proxy-config.ts), the API server through KUBECONFIG or the in-cluster service account. SIGTERM
 * closes the listener and the connections, then exits.
 */
import { KubeConfig } from "@kubernetes/client-node";
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { proxyConfigFromEnv } from "./proxy-config.js";
import { startKubernetesSandboxProxy } from "./kubernetes-sandbox-proxy.js";

const logger = stderrLogger({ name: "fsb-proxy" });

async function main(): Promise<void> {
  const config = proxyConfigFromEnv();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  const proxy = await startKubernetesSandboxProxy({ kubeConfig, config, logger });
  logger.info({ port: proxy.port, probePort: proxy.probePort }, "sandbox proxy serving");
  const stop = () => void proxy.close().finally(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((error: unknown) => {
  logger.fatal({ err: error }, "sandbox proxy failed to start");
  process.exit(1);
});
