/**
 * The Kubernetes composition root of the sandbox proxy (its own Deployment, config/proxy): the same
 * proxy as the embedded mode, over the Kubernetes store (an informer of Sandboxes) and the agent
 * Pods (an informer of Pods labelled with their pool), plus /healthz, /readyz and /metrics on a port
 * of their own.
 *
 * Where traffic goes: a Shared sandbox listens in its agent Pod's network, so `<agent Pod IP>:<port>`
 * is reachable from any node. An Isolated sandbox's address (`status.sandboxIP`) is on a bridge
 * inside its agent's network and not routable from anywhere else: the proxy dials it through the
 * relay of the agent that runs it (`CONNECT` on `<agent Pod IP>:<agent port>` with the agent token,
 * which only reaches that agent's own sandboxes).
 *
 * Sandboxes the E2B-compatible API created reach every port (E2B's `getHost(port)`), and E2B's
 * presigned file URLs go to the sandbox whose token signed them: the proxy derives those tokens from
 * the controllers' Secret (e2b/kubernetes-token-secret.ts), read at start and, while it does not
 * exist yet, again every `e2bSecretRetryMs`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { withProbeRoutes, type HttpHandler } from "@fast-sandbox/api";
import { agentTokenOf } from "../fleet/agent-token.js";
import { agentsByName } from "../fleet/agent-fleet.js";
import { KubernetesAgentFleet } from "../fleet/kubernetes-agent-fleet.js";
import { ProxyMetrics } from "../proxy/proxy-metrics.js";
import { SandboxDirectory } from "../proxy/sandbox-directory.js";
import { startSandboxProxy } from "../proxy/sandbox-proxy.js";
import { SignedFileLookup } from "../proxy/signed-file-lookup.js";
import { openKubernetesResourceStore } from "../store/kubernetes-resource-store.js";
import type { ProxyConfig } from "./proxy-config.js";
import { createdThroughE2b, SigningSandboxes } from "../e2b/signing-sandboxes.js";
import { readKubernetesTokenSecret } from "../e2b/kubernetes-token-secret.js";

export interface KubernetesSandboxProxy {
  port: number;
  probePort: number;
  close(): Promise<void>;
}

export async function startKubernetesSandboxProxy(options: {
  kubeConfig: KubeConfig;
  config: ProxyConfig;
  logger: Logger;
  /** @default 10000 */
  e2bSecretRetryMs?: number;
}): Promise<KubernetesSandboxProxy> {
  const { kubeConfig, config, logger } = options;
  let tokenSecret: Buffer | undefined;
  let secretTimer: NodeJS.Timeout | undefined;
  let closed = false;
  let toldAbsent = false;
  const secretNamespace = config.e2bSecretNamespace;
  const readSecret = async (): Promise<void> => {
    if (!secretNamespace) return;
    try {
      tokenSecret = await readKubernetesTokenSecret({ kubeConfig, namespace: secretNamespace });
      if (!tokenSecret && !toldAbsent) {
        toldAbsent = true;
        logger.info("no E2B token secret yet (the controllers make it): E2B's presigned file URLs are not routed until it exists");
      }
    } catch (error) {
      logger.warn({ err: error }, "could not read the E2B token secret; retrying");
    }
    if (!tokenSecret && !closed) secretTimer = setTimeout(() => void readSecret(), options.e2bSecretRetryMs ?? 10_000);
  };
  await readSecret();
  const store = openKubernetesResourceStore({ kubeConfig });
  const directory = new SandboxDirectory({ store, logger });
  const agents = new KubernetesAgentFleet({ kubeConfig, logger, pod: { port: config.agentPort } });
  const registry = new Registry();
  await agents.start();
  await directory.start();
  // A sandbox's agent is the agent of its namespace by that name: no traffic goes to a Pod of another namespace that has the name.
  const agentOf = agentsByName(agents, logger);
  const endpointOf = (agentName: string, namespace: string) => agentOf(agentName, namespace)?.endpoint;
  const signers = new SigningSandboxes(
    () => directory.list(),
    () => tokenSecret,
  );
  const proxy = await startSandboxProxy({
    sources: {
      lookup: (sandboxId) => directory.lookup(sandboxId),
      // Tunnels and WebSockets close when their sandbox's access token changes or the sandbox goes.
      onSandboxChange: (listener) => directory.onChange(listener),
      // The agent Pod's IP (its endpoint's host): a Shared sandbox listens there.
      agentAddress: (agentName, namespace) => endpointOf(agentName, namespace)?.replace(/:\d+$/, ""),
      // Its API's address, where its relay answers.
      agentRelay: endpointOf,
      domain: config.proxyAddress.domain,
      exposesEveryPort: createdThroughE2b,
      trafficTokenOf: (sandbox) => signers.trafficTokenOf(sandbox),
      signedFiles: new SignedFileLookup({ signers, lookup: (sandboxId) => directory.lookup(sandboxId) }),
    },
    // Each pool's agents have their own token, derived from the deployment's (agent-token.ts).
    agentToken: (relay) => {
      const agent = agents.listAgents().find((candidate) => candidate.endpoint === relay);
      return agent ? agentTokenOf(config.agentToken, agent, config.agentTokenForOldPods) : undefined;
    },
    host: config.host,
    port: config.port,
    metrics: new ProxyMetrics(registry),
    logger,
  });
  const notFound: HttpHandler = (_request, response) => {
    response.statusCode = 404;
    response.end();
  };
  const probes = http.createServer(
    withProbeRoutes(notFound, {
      // Ready once both informers have their first list (start resolved): lookups are answered from them.
      notReadyReason: () => Promise.resolve(undefined),
      metrics: async () => ({ contentType: registry.contentType, text: await registry.metrics() }),
    }) as http.RequestListener,
  );
  await new Promise<void>((resolve) => probes.listen(config.probePort, config.probeHost, resolve));
  return {
    port: proxy.port,
    probePort: (probes.address() as AddressInfo).port,
    async close() {
      closed = true;
      clearTimeout(secretTimer);
      await new Promise((resolve) => probes.close(resolve));
      await proxy.close();
      directory.stop();
      await agents.stop();
    },
  };
}
