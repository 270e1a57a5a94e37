import { mkdirSync } from "node:fs";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { listenCleartext, pb, requireBearerToken } from "@fast-sandbox/api";
import type { Runtime } from "../runtime/runtime.js";
import { sandboxLogDir } from "../state-layout.js";
import { createAgentService, type AgentIdentity } from "./agent-service.js";
import { CreatesInFlight } from "./creates-in-flight.js";

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
  /** Stops taking calls, lets creates in flight finish (up to `drainTimeoutMs`), then closes. */
  close(drainTimeoutMs?: number): Promise<void>;
}

/** Serves the agent API (Connect, gRPC and gRPC-Web over cleartext HTTP/2 and HTTP/1.1) on one loopback port. */
export async function startAgentServer(options: AgentServerOptions): Promise<AgentServer> {
  const logDir = sandboxLogDir(options.stateDir);
  mkdirSync(logDir, { recursive: true });
  const creates = new CreatesInFlight();
  const handler = connectNodeAdapter({
    interceptors: [requireBearerToken(options.token)],
    routes: (router) => {
      router.service(pb.AgentService, createAgentService({ identity: options.identity, runtime: options.runtime, logDir, creates }));
    },
  });
  const server = await listenCleartext(handler, options.host, options.port);
  return {
    endpoint: `${options.host}:${server.port}`,
    close: async (drainTimeoutMs = 0) => {
      const closed = server.close();
      await creates.drain(drainTimeoutMs);
      await closed;
    },
  };
}
