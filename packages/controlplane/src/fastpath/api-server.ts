import { connectNodeAdapter } from "@connectrpc/connect-node";
import { listenCleartext, pb, requireBearerToken } from "@fast-sandbox/api";
import type { AgentClients, SandboxManager } from "./sandbox-manager.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { createSandboxService } from "./sandbox-service.js";
import { createPoolService } from "./pool-service.js";

export interface ApiServerOptions {
  manager: SandboxManager;
  store: ResourceStore;
  registry: AgentRegistry;
  /** The agents' clients (image pulls on a pool's agents). */
  agents: AgentClients;
  token: string;
  host: string;
  port: number;
}

export interface ApiServer {
  /** http://host:port — gRPC (HTTP/2 cleartext), gRPC-Web and Connect JSON (HTTP/1.1 or 2). */
  url: string;
  close(): Promise<void>;
}

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const handler = connectNodeAdapter({
    interceptors: [requireBearerToken(options.token)],
    routes: (router) => {
      router.service(pb.SandboxService, createSandboxService(options.manager));
      router.service(pb.PoolService, createPoolService({ store: options.store, registry: options.registry, manager: options.manager, agents: options.agents }));
    },
  });
  const server = await listenCleartext(handler, options.host, options.port);
  return {
    url: `http://${options.host}:${server.port}`,
    close: () => server.close(),
  };
}
