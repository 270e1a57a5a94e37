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
  FsbError,
  listenCleartext,
  pb,
  requireBearerToken,
  sandboxPoolFromMessage,
  sandboxPoolToMessage,
  sandboxSpecFromMessage,
  sandboxStatsToMessage,
  sandboxToMessage,
  toConnectError,
  type Sandbox,
  type SandboxPool,
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
  /** The pools it holds, e.g. from `fakePool`; each has one agent, `<pool>-0`. @default none */
  pools?: SandboxPool[];
  /** The checkpoints it holds (DeleteCheckpoint of another is not found). @default any: every delete succeeds */
  checkpoints?: string[];
  /** GetSandboxPool answers permission denied, as for a Kubernetes user who may create sandboxes but not read pools. @default false */
  poolsUnreadable?: boolean;
}

export interface FakeControlPlane {
  url: string;
  /** The methods asked, in order, with the namespace and name asked for, e.g. `ListSandboxes team`, `DeleteSandbox default/web`. */
  calls: string[];
  /** The sandboxes it still holds, by `namespace/name`. */
  sandboxes: Map<string, Sandbox>;
  /** The pools it still holds, by `namespace/name`. */
  pools: Map<string, SandboxPool>;
  /** The CreateSandbox requests it answered (each makes a Running sandbox of the pool asked for). */
  creates: pb.CreateSandboxRequest[];
  /** The Logs requests it answered. */
  logsRequests: pb.LogsRequest[];
  /** The Exec requests it answered. */
  execRequests: pb.ExecRequest[];
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

/** A pool record (its spec as `fsb apply` of a minimal manifest sends it). */
export function fakePool(name: string, options: { namespace?: string; poolMax?: number } = {}): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace: options.namespace ?? "default" },
    spec: { capacity: { poolMin: 0, poolMax: options.poolMax ?? 1 }, maxSandboxesPerPod: 2 },
  };
}

/**
 * How Exec fails for these commands, as the agent passes runc's refusal through (an internal error:
 * containerd's Tasks/Start); any other command prints `ran` and exits 0.
 */
export const FAKE_EXEC_FAILURES: Readonly<Record<string, string>> = {
  nosuchcmd:
    'containerd containerd.services.tasks.v1.Tasks/Start: OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuchcmd": executable file not found in $PATH: unknown',
  "/etc/passwd":
    'containerd containerd.services.tasks.v1.Tasks/Start: OCI runtime exec failed: exec failed: unable to start container process: exec: "/etc/passwd": permission denied: unknown',
};

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
  diskLimitBytes: 0,
  nodeCpus: 4,
  nodeMemoryBytes: 2 ** 33,
};

export async function startFakeControlPlane(options: FakeControlPlaneOptions): Promise<FakeControlPlane> {
  const calls: string[] = [];
  const creates: pb.CreateSandboxRequest[] = [];
  const logsRequests: pb.LogsRequest[] = [];
  const execRequests: pb.ExecRequest[] = [];
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
  const pools = new Map((options.pools ?? []).map((pool) => [`${pool.metadata.namespace ?? "default"}/${pool.metadata.name}`, pool]));
  const checkpoints = options.checkpoints ? new Set(options.checkpoints) : undefined;
  const findPool = (request: { name: string; namespace: string }): SandboxPool => {
    const pool = pools.get(`${request.namespace || "default"}/${request.name}`);
    if (!pool) throw new ConnectError(`sandbox pool ${request.namespace || "default"}/${request.name} not found`, Code.NotFound);
    return pool;
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
          // The spec asked for (a restore's names no image: the checkpoint's, here fakeSandbox's).
          if (request.spec?.image) sandbox.spec = sandboxSpecFromMessage(request.spec);
          sandbox.spec.poolRef = request.spec?.poolRef || "default";
          if (Object.keys(request.labels).length > 0) sandbox.metadata.labels = { ...request.labels };
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
        updateSandbox: (request) => {
          const sandbox = find(request);
          const updated: Sandbox = {
            ...sandbox,
            metadata: { ...sandbox.metadata, ...(request.replaceLabels ? { labels: { ...request.labels } } : {}) },
            spec: request.spec ? sandboxSpecFromMessage(request.spec) : sandbox.spec,
          };
          sandboxes.set(`${request.namespace || "default"}/${request.name}`, updated);
          return sandboxToMessage(updated);
        },
        exec: async function* (request) {
          execRequests.push(request);
          find(request);
          const failure = FAKE_EXEC_FAILURES[request.command[0] ?? ""];
          if (failure) throw toConnectError(new FsbError("internal", failure));
          yield { event: { case: "stdout", value: Buffer.from("ran\n") } };
          yield { event: { case: "exitCode", value: 0 } };
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
        deleteCheckpoint: (request) => {
          if (checkpoints && !checkpoints.delete(request.name)) throw new ConnectError(`checkpoint ${request.name} not found`, Code.NotFound);
          return {};
        },
      });
      service(pb.PoolService, {
        getSandboxPool: (request) => {
          if (options.poolsUnreadable) {
            throw new ConnectError(
              `user "dev" may not get sandboxpools.sandbox.fast.io "${request.name}" in namespace "${request.namespace || "default"}"`,
              Code.PermissionDenied,
            );
          }
          return sandboxPoolToMessage(findPool(request));
        },
        listSandboxPools: (request) => ({
          pools: [...pools.values()]
            .filter((pool) => request.namespace === "*" || (pool.metadata.namespace ?? "default") === (request.namespace || "default"))
            .map((pool) => sandboxPoolToMessage(pool)),
        }),
        applySandboxPool: (request) => {
          if (!request.pool) throw new ConnectError("pool: is required", Code.InvalidArgument);
          const pool = sandboxPoolFromMessage(request.pool);
          const key = `${pool.metadata.namespace || "default"}/${pool.metadata.name}`;
          const applied: SandboxPool = {
            ...pool,
            metadata: { ...pool.metadata, namespace: pool.metadata.namespace || "default", labels: pool.metadata.labels ?? {} },
          };
          pools.set(key, applied);
          return sandboxPoolToMessage(applied);
        },
        deleteSandboxPool: (request) => {
          findPool(request);
          pools.delete(`${request.namespace || "default"}/${request.name}`);
          return {};
        },
        listAgents: (request) => ({
          agents: [...pools.values()]
            .filter((pool) => request.namespace === "*" || (pool.metadata.namespace ?? "default") === (request.namespace || "default"))
            .map((pool) => ({
              name: `${pool.metadata.name}-0`,
              namespace: pool.metadata.namespace ?? "default",
              pool: pool.metadata.name,
              endpoint: "127.0.0.1:1",
              capacity: pool.spec.maxSandboxesPerPod,
              ready: true,
            })),
        }),
      });
    },
  });
  const server = await listenCleartext(handler, "127.0.0.1", 0);
  return { url: `http://127.0.0.1:${server.port}`, calls, sandboxes, pools, creates, logsRequests, execRequests, deadlines, close: () => server.close() };
}
