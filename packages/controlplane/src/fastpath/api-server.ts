import type { Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { fromConnectError, listenCleartext, pb, withProbeRoutes } from "@fast-sandbox/api";
import type { AgentClients, SandboxManager } from "./sandbox-manager.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { createSandboxService } from "./sandbox-service.js";
import type { CheckpointManager } from "./checkpoint-manager.js";
import type { SandboxPauses } from "./checkpoint-pauses.js";
import { createPoolService, type PoolAdmission } from "./pool-service.js";
import { createE2bService, type E2bApiAccess } from "./e2b-service.js";
import { ControlPlaneMetrics } from "./control-plane-metrics.js";
import { DEFAULT_NAMESPACE } from "./sandbox-manager.js";
import type { AccessReview } from "./access-review.js";
import { requireApiCaller } from "./api-caller-check.js";

export interface ApiServerOptions {
  manager: SandboxManager;
  store: ResourceStore;
  registry: AgentRegistry;
  /** The agents' clients (image pulls on a pool's agents). */
  agents: AgentClients;
  token: string;
  /** Kubernetes users' own tokens, each call authorized by their RBAC (api-caller-check.ts). @default the token only */
  review?: AccessReview;
  host: string;
  port: number;
  /** Served at `/metrics`; the API records create latencies in it. @default a new, empty one */
  metrics?: ControlPlaneMetrics;
  /** The E2B-compatible API this control plane serves, whose keys `E2bService` issues. @default none (its calls fail) */
  e2b?: E2bApiAccess;
  /** Checkpoints, restores and forks of gVisor sandboxes. */
  checkpoints: CheckpointManager;
  /** Pauses and resumes of gVisor sandboxes. @default none (PauseSandbox and ResumeSandbox fail) */
  pauses?: SandboxPauses;
  /** What the deployment refuses of a pool applied through the API (Kubernetes mode's policy). @default none */
  admitPool?: PoolAdmission;
}

export interface ApiServer {
  /** http://host:port — gRPC (HTTP/2 cleartext), gRPC-Web and Connect JSON (HTTP/1.1 or 2). */
  url: string;
  close(): Promise<void>;
}

/** Times CreateSandbox calls (after authentication) into the create latency histogram. */
function timeCreates(metrics: ControlPlaneMetrics): Interceptor {
  return (next) => async (request) => {
    if (request.service.typeName !== pb.SandboxService.typeName || request.method.name !== "CreateSandbox") return next(request);
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const response = await next(request);
      metrics.createFinished("ok", seconds());
      return response;
    } catch (error) {
      metrics.createFinished(fromConnectError(error).code, seconds());
      throw error;
    }
  };
}

/**
 * Why the control plane cannot take writes yet, if it cannot: writes are held until every agent
 * has reported after a start (crash recovery), and the store must answer.
 */
async function notReadyReason({ manager, store }: Pick<ApiServerOptions, "manager" | "store">): Promise<string | undefined> {
  if (!manager.writesReleased) return "recovering: writes wait until every agent has reported";
  try {
    await store.get("SandboxPool", { namespace: DEFAULT_NAMESPACE, name: "default" });
  } catch (error) {
    return `the store does not answer: ${error instanceof Error ? error.message : String(error)}`;
  }
  return undefined;
}

/**
 * The largest request the API reads, decompressed (Connect's default: 4 GiB). Its largest requests
 * carry a sandbox's command, arguments and environment (CreateSandbox, Exec), which Linux caps at a
 * quarter of the stack limit together (2 MiB with the usual 8 MiB), or a pool's agent template
 * (ApplySandboxPool), which Kubernetes caps at 1.5 MiB (an object in etcd): twice the larger fits
 * them with room for their JSON encoding.
 */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

/**
 * Serves the fast-path API (the bearer token, or a Kubernetes user's with `review`, required) and, without a token, `/healthz` (the process
 * is up), `/readyz` (writes released after recovery, store reachable) and `/metrics`.
 */
export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const metrics = options.metrics ?? new ControlPlaneMetrics();
  const auth = requireApiCaller({ token: options.token, ...(options.review ? { review: options.review } : {}) });
  const api = connectNodeAdapter({
    readMaxBytes: MAX_REQUEST_BYTES,
    interceptors: [auth, timeCreates(metrics)],
    routes: (router) => {
      router.service(pb.SandboxService, createSandboxService(options.manager, options.checkpoints, options.pauses));
      router.service(
        pb.PoolService,
        createPoolService({
          store: options.store,
          registry: options.registry,
          manager: options.manager,
          agents: options.agents,
          ...(options.admitPool ? { admitPool: options.admitPool } : {}),
        }),
      );
      router.service(pb.E2bService, createE2bService(options.e2b));
    },
  });
  // A request of nobody is refused before its body is read; the interceptor, after, stays.
  const handler = withProbeRoutes(auth.guard(api), { notReadyReason: () => notReadyReason(options), metrics: () => metrics.exposition() });
  const server = await listenCleartext(handler, options.host, options.port);
  return {
    // An IPv6 address is bracketed in a URL.
    url: `http://${options.host.includes(":") ? `[${options.host}]` : options.host}:${server.port}`,
    close: () => server.close(),
  };
}
