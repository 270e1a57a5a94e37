/**
 * Entry point of a controller replica (the Deployment in config/manager): settings from the
 * environment (controller-config.ts), the API server through KUBECONFIG or the in-cluster service
 * account. A replica that stops leading exits, so it starts again clean as a follower (the
 * Deployment restarts it); SIGTERM steps down, releases the Lease and exits. Its Lease identity is
 * `<Pod name>_<random>`, new for every process. With the argument `proxy` it runs the sandbox
 * proxy instead (proxy-main.ts).
 */
import { randomBytes } from "node:crypto";
import { KubeConfig } from "@kubernetes/client-node";
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { controllerConfigFromEnv } from "./controller-config.js";
import { startKubernetesControlPlane } from "./kubernetes-control-plane.js";

const logger = stderrLogger({ name: "fsb-controller" });

async function main(): Promise<void> {
  const config = controllerConfigFromEnv();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  let stopping = false;
  const exit = (code: number, reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, "controller stopping");
    // Calls in flight get their time, but a stuck one must not keep the process.
    setTimeout(() => process.exit(code), 20_000).unref();
    void controlPlane.close().finally(() => process.exit(code));
  };
  const controlPlane = await startKubernetesControlPlane({
    kubeConfig,
    // The Pod's name plus this process's own suffix (as controller-runtime does): a replica restarted
    // in the same Pod is a new candidate, and never renews the Lease its dead predecessor held.
    identity: `${config.identity}_${randomBytes(4).toString("hex")}`,
    lease: { namespace: config.namespace, name: config.leaseName, durationSeconds: config.leaseDurationSeconds },
    podName: config.identity,
    token: config.token,
    kubernetesUsers: config.kubernetesUsers,
    agentToken: config.agentToken,
    agentTokenForOldPods: config.agentTokenForOldPods,
    host: config.host,
    port: config.port,
    agentPod: config.agentPod,
    agentTemplatePolicy: config.agentTemplatePolicy,
    ...(config.poolNamespaces ? { poolNamespaces: config.poolNamespaces } : {}),
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    proxyAddress: config.proxyAddress,
    ...(config.e2b ? { e2b: { ...config.e2b, namespace: config.namespace } } : {}),
    logger,
    onStoppedLeading: () => exit(1, "lost the leadership"),
  });
  logger.info({ url: controlPlane.url, e2bUrl: controlPlane.e2bUrl, identity: config.identity }, "controller serving");
  process.stdout.write(`${JSON.stringify({ event: "started", pid: process.pid, url: controlPlane.url, e2bUrl: controlPlane.e2bUrl })}\n`);
  process.on("SIGTERM", () => exit(0, "SIGTERM"));
  process.on("SIGINT", () => exit(0, "SIGINT"));
}

// `main.js proxy`: the same image in its other role, the sandbox proxy (config/proxy).
if (process.argv[2] === "proxy") await import("./proxy-main.js");
else
  main().catch((error: unknown) => {
    logger.fatal({ err: error }, "controller failed to start");
    process.exit(1);
  });
