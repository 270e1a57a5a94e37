/**
 * A stand-in for a Fast Sandbox's control plane, for the specs of commands that talk to one: the
 * fast-path calls they make, served over Connect on a loopback port, each one recorded (refused ones
 * too) so a spec can tell which instance was asked what. Test code only.
 */
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  ACCESS_TOKEN_RESPONSE_HEADER,
  API_VERSION,
  listenCleartext,
  pb,
  requireBearerToken,
  sandboxStatsToMessage,
  sandboxToMessage,
  type Sandbox,
  type SandboxStats,
} from "@fast-sandbox/api";

export interface FakeControlPlaneOptions {
  /** The API token it accepts. */
  token: string;
  /** The sandboxes it holds, e.g. from `fakeSandbox`. @default none */
  sandboxes?: Sandbox[];
  /** What GetSandboxProxy answers. @default http://127.0.0.1:1 (nothing listens there) */
  proxyUrl?: string;
  /** How long CreateSandbox takes (a large image pulled first). @default 0 */
  createDelayMs?: number;
}

export interface FakeControlPlane {
  url: string;
  /** The methods asked, in order, with the namespace and name asked for, e.g. `ListSandboxes team`, `DeleteSandbox default/web`. */
  calls: string[];
  /** The sandboxes it still holds, by `namespace/name`. */
  sandboxes: Map<string, Sandbox>;
  /** The CreateSandbox requests it answered (each makes a Running sandbox of the pool asked for). */
  creates: pb.CreateSandboxRequest[];
  /** The Logs requests it answered. */
  logsRequests: pb.LogsRequest[];
  /** The client's deadline of each call (its Connect-Timeout-Ms; undefined: none), as `calls` names them. */
  deadlines: { call: string; timeoutMs: number | undefined }[];
  close(): Promise<void>;
}

/** A running sandbox record with its exposed ports. */
export function fakeSandbox(name: string, options: { namespace?: string; exposedPorts?: number[]; endpoints?: string[] } = {}): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: options.namespace ?? "default" },
    spec: { image: "busybox", poolRef: "default", ...(options.exposedPorts ? { exposedPorts: options.exposedPorts } : {}) },
    status: {
      phase: "Running",
      assignedPod: "agent-0",
      sandboxID: `${name}0123456789abcdefghij`.slice(0, 20),
      ...(options.endpoints ? { endpoints: options.endpoints } : {}),
    },
  };
}

/** What GetSandboxStats answers for every sandbox it holds. */
export const FAKE_STATS: SandboxStats = {
  timestampMs: Date.UTC(2026, 0, 2, 3, 4, 5),
  cpuUsageNanos: 9e9,
  cpuUsedMillis: 120,
  cpuLimitMillis: 500,
  memoryUsedBytes: 2 ** 20,
  memoryCacheBytes: 0,
  memoryLimitBytes: 2 ** 28,
  pids: 3,
  diskUsedBytes: 4096,
  nodeCpus: 4,
  nodeMemoryBytes: 2 ** 33,
};

export async function startFakeControlPlane(options: FakeControlPlaneOptions): Promise<FakeControlPlane> {
  const calls: string[] = [];
  const creates: pb.CreateSandboxRequest[] = [];
  const logsRequests: pb.LogsRequest[] = [];
  const deadlines: FakeControlPlane["deadlines"] = [];
  const sandboxes = new Map((options.sandboxes ?? []).map((sandbox) => [`${sandbox.metadata.namespace ?? "default"}/${sandbox.metadata.name}`, sandbox]));
  const record: Interceptor = (next) => (request) => {
    const message = request.message as { name?: string; namespace?: string };
    const namespace = message.namespace || "default";
    const call = message.name
      ? `${request.method.name} ${namespace}/${message.name}`
      : message.namespace !== undefined
        ? `${request.method.name} ${namespace}`
        : request.method.name;
    calls.push(call);
    const timeout = request.header.get("connect-timeout-ms");
    deadlines.push({ call, timeoutMs: timeout === null ? undefined : Number(timeout) });
    return next(request);
  };
  const find = (request: { name: string; namespace: string }): Sandbox => {
    const sandbox = sandboxes.get(`${request.namespace || "default"}/${request.name}`);
    if (!sandbox) throw new ConnectError(`sandbox ${request.name} not found`, Code.NotFound);
    return sandbox;
  };
  const handler = connectNodeAdapter({
    interceptors: [record, requireBearerToken(options.token)],
    routes: ({ service }) => {
      service(pb.SandboxService, {
        getSandbox: (request) => sandboxToMessage(find(request)),
        createSandbox: async (request, context) => {
          const delayMs = options.createDelayMs ?? 0;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, delayMs);
            context.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
          });
          if (context.signal.aborted) throw new ConnectError("the client went", Code.Canceled);
          creates.push(request);
          const sandbox = fakeSandbox(request.name || "sb-0123456789", { namespace: request.namespace || "default" });
          sandbox.spec.poolRef = request.spec?.poolRef || "default";
          sandboxes.set(`${sandbox.metadata.namespace ?? "default"}/${sandbox.metadata.name}`, sandbox);
          context.responseHeader.set(ACCESS_TOKEN_RESPONSE_HEADER, `token-of-${sandbox.metadata.name}-0123456789`);
          return sandboxToMessage(sandbox);
        },
        listSandboxes: (request) => ({
          sandboxes: [...sandboxes.values()]
            .filter((sandbox) => request.namespace === "*" || (sandbox.metadata.namespace ?? "default") === (request.namespace || "default"))
            .map((sandbox) => sandboxToMessage(sandbox)),
        }),
        deleteSandbox: (request) => {
          find(request);
          sandboxes.delete(`${request.namespace || "default"}/${request.name}`);
          return {};
        },
        rotateAccessToken: (request) => ({ accessToken: `token-of-${request.name}-0123456789`, sandbox: sandboxToMessage(find(request)) }),
        getSandboxProxy: () => ({ url: options.proxyUrl ?? "http://127.0.0.1:1" }),
        // A line at once, then (follow) another every 20 ms until the client goes.
        logs: async function* (request, context) {
          logsRequests.push(request);
          find(request);
          for (let line = 1; !context.signal.aborted; line++) {
            yield { data: Buffer.from(`line ${line}\n`) };
            if (!request.follow) return;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        },
        getSandboxStats: (request) => {
          find(request);
          return sandboxStatsToMessage(FAKE_STATS);
        },
        pauseSandbox: (request) => {
          const sandbox = find(request);
          return sandboxToMessage({ ...sandbox, status: { ...sandbox.status, phase: "Paused" } });
        },
        resumeSandbox: (request) => sandboxToMessage(find(request)),
        listCheckpoints: () => ({ checkpoints: [] }),
        deleteCheckpoint: () => ({}),
      });
    },
  });
  const server = await listenCleartext(handler, "127.0.0.1", 0);
  return { url: `http://127.0.0.1:${server.port}`, calls, sandboxes, creates, logsRequests, deadlines, close: () => server.close() };
}
