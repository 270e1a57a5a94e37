import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { listenCleartext, pb, requireBearerToken } from "@fast-sandbox/api";
import type { Runtime } from "../runtime/runtime.js";
import { createAgentService, type AgentIdentity } from "./agent-service.js";

export interface AgentServerOptions {
  identity: AgentIdentity;
  runtime: Runtime;
  token: string;
  stateDir: string;
  host: string;
  port: number;
}

export interface AgentServer {
  /** host:port the agent API listens on. */
  endpoint: string;
  close(): Promise<void>;
}

/** Serves the agent API (Connect, gRPC and gRPC-Web over cleartext HTTP/2 and HTTP/1.1) on one loopback port. */
export async function startAgentServer(options: AgentServerOptions): Promise<AgentServer> {
  const logDir = join(options.stateDir, "logs");
  mkdirSync(logDir, { recursive: true });
  const handler = connectNodeAdapter({
    interceptors: [requireBearerToken(options.token)],
    routes: (router) => {
      router.service(pb.AgentService, createAgentService({ identity: options.identity, runtime: options.runtime, logDir }));
    },
  });
  const server = await listenCleartext(handler, options.host, options.port);
  return {
    endpoint: `${options.host}:${server.port}`,
    close: () => server.close(),
  };
}
