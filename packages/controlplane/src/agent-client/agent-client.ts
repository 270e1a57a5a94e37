import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { UnavailableError, fromConnectError, pb, sendBearerToken } from "@fast-sandbox/api";

/** The control plane's port to one agent. */
export interface AgentClient {
  status(timeoutMs?: number): Promise<pb.AgentStatus>;
  createSandbox(request: Omit<pb.AgentCreateSandboxRequest, "$typeName" | "$unknown">): Promise<pb.AgentSandbox>;
  deleteSandbox(sandboxId: string, gracePeriodMs: number): Promise<void>;
  listSandboxes(): Promise<pb.AgentSandbox[]>;
  logs(sandboxId: string, follow: boolean, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  exec(request: Omit<pb.AgentExecRequest, "$typeName" | "$unknown">, signal?: AbortSignal): AsyncIterable<pb.ExecResponse>;
  /** Pulls an image on the agent (joining a pull of it in flight), streaming progress until it is unpacked. */
  pullImage(image: string, signal?: AbortSignal): AsyncIterable<pb.PullProgress>;
  close(): void;
}

/** Calls the agent over gRPC on a kept-alive HTTP/2 connection; errors arrive as FsbError. */
export function createAgentClient(endpoint: string, token: string): AgentClient {
  const baseUrl = `http://${endpoint}`;
  const sessions = new Http2SessionManager(baseUrl, { pingIntervalMs: 10_000, idleConnectionTimeoutMs: 60_000 });
  const transport = createGrpcTransport({ baseUrl, interceptors: [sendBearerToken(token)], sessionManager: sessions });
  const client: Client<typeof pb.AgentService> = createClient(pb.AgentService, transport);
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      // A unary call nobody cancelled that ends "canceled" lost its connection (the agent died).
      if (error instanceof ConnectError && error.code === Code.Canceled) {
        throw new UnavailableError(`agent at ${endpoint} dropped the connection: ${error.rawMessage}`, { cause: error });
      }
      throw fromConnectError(error);
    }
  };
  return {
    status: (timeoutMs = 5000) => call(() => client.status({}, { timeoutMs })),
    createSandbox: (request) => call(() => client.createSandbox(create(pb.AgentCreateSandboxRequestSchema, request), { timeoutMs: 60_000 })),
    deleteSandbox: async (sandboxId, gracePeriodMs) => {
      await call(() => client.deleteSandbox({ sandboxId, gracePeriodMs }, { timeoutMs: gracePeriodMs + 30_000 }));
    },
    listSandboxes: async () => (await call(() => client.listSandboxes({}, { timeoutMs: 10_000 }))).sandboxes,
    async *logs(sandboxId, follow, signal) {
      try {
        for await (const chunk of client.logs({ sandboxId, follow }, { ...(signal ? { signal } : {}) })) yield chunk.data;
      } catch (error) {
        throw fromConnectError(error);
      }
    },
    async *exec(request, signal) {
      try {
        yield* client.exec(create(pb.AgentExecRequestSchema, request), { ...(signal ? { signal } : {}) });
      } catch (error) {
        throw fromConnectError(error);
      }
    },
    async *pullImage(image, signal) {
      try {
        // No deadline: a large image takes what it takes; progress shows it moving, `signal` stops waiting.
        yield* client.pullImage({ image }, { ...(signal ? { signal } : {}) });
      } catch (error) {
        throw fromConnectError(error);
      }
    },
    close: () => sessions.abort(),
  };
}
